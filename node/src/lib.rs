//! The `bazaar` node: configuration ([`config`]), credentials and edge limits ([`tokens`],
//! [`passwords`], [`rate_limit`]), the state handlers share ([`app`]), the warp front end
//! ([`http`], one module per resource plus the WebSocket in [`http::ws`]), startup ([`Node`]) and
//! `bazaar cluster up` ([`cluster_up`]), `bazaar demo` ([`demo`]), log lines ([`logging`]). A request enters a route in [`http`], is checked into domain values, and
//! becomes a request to an entity's region in `bazaar_actors`; the reply (or its error, mapped in
//! one place per error enum) goes back as JSON.

pub mod allocator;
pub mod app;
pub mod cluster_up;
pub mod config;
pub mod demo;
pub mod http;
pub mod logging;
pub mod passwords;
pub mod rate_limit;
pub mod tokens;

use anyhow::Context;
use app::App;
use bazaar_actors::cache::Cache;
use bazaar_actors::cluster::membership::ClusterConfig;
use bazaar_actors::entity::EntitySettings;
use bazaar_actors::event_log::kafka::KafkaConfig;
use bazaar_actors::login_sessions::LoginSessions;
use bazaar_actors::read_side::ReadSide;
use bazaar_actors::socket_feed::FeedSettings;
use bazaar_actors::store::Tuning;
use bazaar_actors::system::{System, SystemConfig};
use config::Settings;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;

/// A node that is bound and ready to serve.
pub struct Node {
    app: Arc<App>,
    system: System,
    listener: tokio::net::TcpListener,
    /// The operations endpoints' own listener (`ops_http_addr`), when set.
    ops_listener: Option<tokio::net::TcpListener>,
    /// Where following the revoked sessions goes on from (they were read up to here at build).
    revocations_since: chrono::DateTime<chrono::Utc>,
}

fn metrics_handle() -> PrometheusHandle {
    const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let builder = || PrometheusBuilder::new().set_buckets(SECONDS).expect("the bucket list is not empty");
    match builder().install_recorder() {
        Ok(handle) => handle,
        // Another node in this process (tests) installed the global recorder first.
        Err(_) => builder().build_recorder().handle(),
    }
}

/// The Kafka side of the settings; `None` when no brokers are configured.
fn kafka_config(settings: &Settings) -> Option<KafkaConfig> {
    let brokers: Vec<String> =
        settings.kafka_brokers.split(',').map(str::trim).filter(|b| !b.is_empty()).map(str::to_owned).collect();
    (!brokers.is_empty()).then(|| KafkaConfig {
        brokers,
        topic_prefix: settings.kafka_topic_prefix.clone(),
        partitions: settings.kafka_partitions.min(1024) as i32,
        replication: settings.kafka_replication.min(i16::MAX as u16) as i16,
        connect_timeout: Duration::from_millis(settings.kafka_connect_timeout_ms),
    })
}

/// The node's bound HTTP listeners, from [`bind`].
pub struct Listeners {
    /// The API's (`http_addr`).
    pub http: tokio::net::TcpListener,
    /// The operations endpoints' own (`ops_http_addr`), when set.
    pub ops: Option<tokio::net::TcpListener>,
}

/// Binds the HTTP listeners (port 0 allowed). It comes first at startup, before anything is
/// written: a node that cannot have its ports leaves no data directory (or generated secret)
/// behind.
pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    let listen = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
    };
    let http = listen(settings.http_addr).await?;
    let ops = match settings.ops_http_addr()? {
        Some(addr) => Some(listen(addr).await?),
        None => None,
    };
    Ok(Listeners { http, ops })
}

impl Node {
    /// Opens storage and starts the actors behind `listeners` (from [`bind`]), which
    /// connections wait on until [`Node::run_until`] serves them.
    pub async fn build(
        mut settings: Settings,
        listeners: Listeners,
        cluster: Option<ClusterConfig>,
        nodes: Vec<config::NodeEntry>,
    ) -> anyhow::Result<Self> {
        let Listeners { http: listener, ops: ops_listener } = listeners;
        settings.http_addr = listener.local_addr()?;
        if let Some(ops) = &ops_listener {
            settings.ops_http_addr = ops.local_addr()?.to_string();
        }
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating the data directory {}", settings.data_dir.display()))?;
        let secret = settings.jwt_secret()?;
        // The recorder goes in first: whatever the actors report while starting is kept.
        let metrics = metrics_handle();
        let cache = if settings.redis_url.is_empty() {
            Cache::disabled()
        } else {
            Cache::connect(&settings.redis_url, Duration::from_millis(settings.redis_timeout_ms.max(1)))
                .context("configuring the Redis cache")?
        };
        let system = System::start(SystemConfig {
            database_url: settings.database_url(),
            tuning: Tuning {
                durability: settings.durability()?,
                sqlite_cache_kib: settings.sqlite_cache_kib,
                lock_wait: Duration::from_millis(settings.db_lock_wait_ms.max(1)),
                migration_wait: Duration::from_millis(settings.db_migration_wait_ms.max(1)),
                connect_wait: Duration::from_millis(settings.db_connect_wait_ms),
            },
            entities: EntitySettings {
                gateway_timeout: Duration::from_millis(settings.gateway_timeout_ms),
                call_timeout: settings.call_timeout(),
                hibernate_after: Duration::from_secs(settings.hibernate_after_secs.max(1)),
                passivate_after: Duration::from_secs(settings.passivate_after_secs.max(1)),
                max_remote_bytes: settings.cluster_max_frame_bytes,
                reservation_hold: Duration::from_secs(settings.reservation_hold_secs),
                order_timeline_max_events: settings.order_timeline_max_events,
                cart_max_items: settings.cart_max_items,
                checkout_timeout: Duration::from_millis(settings.checkout_timeout_ms),
                chat_room_answers_waiting: settings.chat_room_answers_waiting,
            },
            gateway: settings.gateway_settings(),
            relay_batch: settings.relay_batch.max(1),
            idempotency_retention: Duration::from_secs(settings.idempotency_retention_hours * 3600),
            cluster,
            max_routed_in_flight: settings.cluster_max_routed_in_flight,
            cache: cache.clone(),
            kafka: kafka_config(&settings),
            saga_max_in_flight: settings.saga_max_in_flight,
            socket_feed: FeedSettings {
                fetch_records: settings.socket_feed_fetch_records,
                idle_poll: Duration::from_millis(settings.socket_feed_poll_ms),
                retry_max: Duration::from_millis(settings.socket_feed_retry_max_ms),
            },
            socket_push_dedup_window: settings.socket_push_dedup_window,
            webhooks: settings.webhook_settings()?,
        })
        .await?;
        let app = Arc::new(App {
            tokens: Arc::new(tokens::TokenService::new(
                &secret,
                Duration::from_secs(settings.access_token_ttl_secs),
                Duration::from_secs(settings.refresh_token_ttl_secs),
            )),
            logins: rate_limit::KeyedBuckets::new(settings.login_attempts_per_minute),
            webhook_senders: rate_limit::KeyedBuckets::new(settings.webhook_notices_per_minute),
            auth_limits: rate_limit::AuthLimits::new(
                settings.auth_attempts_per_minute_per_client,
                settings.auth_attempts_per_second,
            ),
            passwords: passwords::Passwords::new(settings.password_workers, settings.password_queue),
            cache,
            user_slots: rate_limit::UserSlots::new(settings.max_in_flight_per_user),
            nodes,
            regions: system.regions.clone(),
            view: system.view.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight_requests)),
            reads: ReadSide::new(system.store.clone()),
            login_sessions: LoginSessions::new(system.store.clone()),
            webhooks: system.webhooks.clone(),
            socket_hub: system.socket_hub.clone(),
            payment_gateway: system.payment_gateway.clone(),
            sockets: Mutex::new(HashMap::new()),
            metrics,
            settings,
        });
        // Before the node answers anything: a token revoked before a restart stays refused.
        let revocations_since =
            tokens::load_revocations(&app.tokens, &app.login_sessions).await.context("reading the revoked sessions")?;
        Ok(Self { app, system, listener, ops_listener, revocations_since })
    }

    /// Where the HTTP front end listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.app.settings.http_addr
    }

    /// Where the operations endpoints listen, when they have a listener of their own.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains requests (for at most `shutdown_grace_ms`)
    /// and stops the actors.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Node { app, system, listener, ops_listener, revocations_since } = self;
        info!(node = %app.settings.node_name, http = %app.settings.http_addr, "serving");
        let (stop_following, following) = tokio::sync::watch::channel(false);
        let revocations = tokens::follow_revocations(
            app.tokens.clone(),
            app.login_sessions.clone(),
            Duration::from_millis(app.settings.revocation_sync_ms.max(1)),
            revocations_since,
            following.clone(),
        );
        let trimmer = allocator::spawn_trimmer(Duration::from_millis(app.settings.memory_trim_interval_ms), following);
        let limits = http::server::ServerLimits::from_settings(&app.settings);
        // The operations listener stops with the API's: one shutdown, seen by both.
        let (stop_ops, ops_stopping) = tokio::sync::watch::channel(false);
        let ops_server = ops_listener.map(|ops| {
            info!(ops = %app.settings.ops_http_addr, "serving the operations endpoints on their own listener");
            let mut stopping = ops_stopping;
            let shutdown = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            tokio::spawn(http::server::serve(ops, app.clone(), http::Listener::Operations, limits, shutdown))
        });
        http::server::serve(listener, app, http::Listener::Api, limits, shutdown).await;
        let _ = stop_ops.send(true);
        if let Some(ops_server) = ops_server {
            let _ = ops_server.await;
        }
        info!("shutting down");
        let _ = stop_following.send(true);
        let _ = revocations.await;
        let _ = trimmer.await;
        system.stop().await;
        Ok(())
    }
}
