//! Starting and stopping everything the actor side runs on one node: storage, the regions, the
//! socket hub (with, on a Kafka cluster, its feed from the log), the outbox relay, the saga consumer, the webhook dispatcher and sender, the reservation hold sweep, housekeeping and, in a cluster, the router
//! and the membership loop.

use crate::cache::Cache;
use crate::checkout;
use crate::cluster::membership::{self, ClusterConfig, Membership};
use crate::cluster::router::{Local, PresenceUpdate, RoomFrame, Routed, Router, RouterArgs, RouterMsg};
use crate::cluster::{router_name, ClusterView, ROUTERS};
use crate::entity::{Ctx, EntitySettings};
use crate::event_log::embedded::{Appenders, EmbeddedLog};
use crate::event_log::kafka::{KafkaConfig, KafkaLog};
use crate::event_log::EventLog;
use crate::payment_gateway::{self, GatewaySettings};
use crate::region::RegionRef;
use crate::regions::Regions;
use crate::relay;
use crate::reservations;
use crate::saga;
use crate::socket_feed::{self, FeedSettings};
use crate::socket_hub::{self, HubArgs, HubMsg, SocketHub};
use crate::store::{self, Store, Tuning};
use crate::webhooks::{self, WebhookSettings, Webhooks};
use anyhow::Context;
use bazaar_protocol::events::Envelope;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What the actor side needs to start.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// `sqlite://path` of the database.
    pub database_url: String,
    /// How durable each commit is, and the SQLite page cache per connection.
    pub tuning: Tuning,
    /// Entity timing.
    pub entities: EntitySettings,
    /// Which payment gateway charges, and its settings.
    pub gateway: GatewaySettings,
    /// Outbox rows the relay moves per transaction.
    pub relay_batch: u32,
    /// How long idempotency keys are remembered.
    pub idempotency_retention: Duration,
    /// How to join a cluster; `None` runs the node alone.
    pub cluster: Option<ClusterConfig>,
    /// Most requests from peers handled at once.
    pub max_routed_in_flight: usize,
    /// Redis in front of SQL, or disabled.
    pub cache: Cache,
    /// Publish to and consume from Kafka; `None`: the embedded log in the database.
    pub kafka: Option<KafkaConfig>,
    /// Most saga records read and not yet done per partition (steps of different entities run
    /// side by side up to it).
    pub saga_max_in_flight: usize,
    /// How the socket hub's feed reads Kafka for this node's sockets (on a Kafka cluster).
    pub socket_feed: FeedSettings,
    /// Order pushes the hub remembers by event id.
    pub socket_push_dedup_window: usize,
    /// Outbound webhooks: retries, timeouts, address rules, the operator's endpoint.
    pub webhooks: WebhookSettings,
}

/// The running actor side of a node.
pub struct System {
    pub store: Store,
    pub regions: Regions,
    pub socket_hub: ActorRef<HubMsg>,
    /// The payment provider, for the notifications it posts (`POST /payments/webhooks/{name}`).
    pub payment_gateway: Arc<dyn payment_gateway::PaymentGateway>,
    pub settings: Arc<EntitySettings>,
    /// Sellers' webhook endpoints and their deliveries, for the front end.
    pub webhooks: Webhooks,
    /// The cluster as this node sees it, when in one.
    pub view: Option<Arc<ClusterView>>,
    router: Option<ActorRef<RouterMsg>>,
    membership: Option<Membership>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl System {
    /// Opens storage and starts every actor and background task.
    pub async fn start(config: SystemConfig) -> anyhow::Result<Self> {
        let store = Store::open(&config.database_url, config.tuning).await.context("opening the database")?;
        let payment_gateway =
            payment_gateway::build(&config.gateway, store.clone()).context("building the payment gateway")?;
        let settings = Arc::new(config.entities.clone());
        let view = config.cluster.as_ref().map(|c| Arc::new(ClusterView::new(c.node_name.clone(), c.max_frame_bytes)));
        let (live, live_rx) = broadcast::channel::<Arc<Envelope>>(65_536);
        let ctx = Ctx {
            store: store.clone(),
            gateway: payment_gateway.clone(),
            settings: settings.clone(),
            cluster: view.clone(),
            live: live.clone(),
        };
        let regions = Regions {
            users: RegionRef::spawn(ctx.clone()).await?,
            products: RegionRef::spawn(ctx.clone()).await?,
            orders: RegionRef::spawn(ctx.clone()).await?,
            payments: RegionRef::spawn(ctx.clone()).await?,
            rooms: RegionRef::spawn(ctx.clone()).await?,
            checkouts: RegionRef::spawn(ctx.clone()).await?,
        };
        let hub_args = HubArgs { view: view.clone(), dedup_window: config.socket_push_dedup_window };
        let (socket_hub, _) = Actor::spawn(None, SocketHub, hub_args).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let appended = Arc::new(Notify::new());
        let (log, kafka): (Arc<dyn EventLog>, Option<Arc<KafkaLog>>) = match &config.kafka {
            None => {
                // Alone, this node's relay is the log's only appender; in a cluster every node's is.
                let appenders = if view.is_some() { Appenders::AnyNode } else { Appenders::ThisNode };
                let tail = usize::try_from(config.relay_batch).unwrap_or(usize::MAX);
                (Arc::new(EmbeddedLog::new(store.clone(), appended.clone(), appenders, tail)), None)
            }
            Some(kafka) => {
                let kafka = Arc::new(KafkaLog::connect(kafka, appended.clone()).await.context("connecting to Kafka")?);
                (kafka.clone(), Some(kafka))
            }
        };
        // A charge waits for the gateway; the saga must wait a little longer than that.
        let charge_timeout = settings.gateway_timeout + settings.call_timeout;

        let (mut router, mut membership) = (None, None);
        if let (Some(cluster), Some(view)) = (config.cluster.clone(), view.clone()) {
            let args = RouterArgs {
                local: Arc::new(ThisNode { regions: regions.clone(), hub: socket_hub.clone() }),
                view: view.clone(),
                appended: appended.clone(),
                outbox_queued: store.commit_signal(),
                timeout: charge_timeout,
                max_remote_bytes: settings.max_remote_bytes,
                max_in_flight: config.max_routed_in_flight,
            };
            let (actor, _) = Actor::spawn(Some(router_name(&cluster.node_name)), Router, args)
                .await
                .context("starting the router")?;
            ractor::pg::join(ROUTERS.to_owned(), vec![actor.get_cell()]);
            let (on_regions, on_hub) = (regions.clone(), socket_hub.clone());
            let on_change = Box::new(move |members: Vec<String>| {
                on_regions.rebalance();
                let _ = on_hub.send_message(HubMsg::MembersChanged(members));
            });
            membership = Some(membership::start(cluster, view, on_change, shutdown_rx.clone()).await?);
            router = Some(actor);
        }

        let mut tasks = vec![
            socket_hub::forward(live_rx, socket_hub.clone()),
            relay::spawn(
                store.clone(),
                log.clone(),
                view.clone(),
                config.cache.clone(),
                config.relay_batch,
                appended.clone(),
                live,
                shutdown_rx.clone(),
            ),
            housekeeping(store.clone(), config.idempotency_retention, shutdown_rx.clone()),
            reservations::spawn(
                store.clone(),
                regions.clone(),
                view.clone(),
                settings.reservation_hold,
                shutdown_rx.clone(),
            ),
            checkout::sweep::spawn(
                store.clone(),
                regions.clone(),
                view.clone(),
                settings.checkout_timeout,
                shutdown_rx.clone(),
            ),
        ];
        // Alone, a node's sockets hear its own relay, a path no network cut can break; in a
        // cluster on Kafka they also read the log, so a node cut off from its peers keeps
        // delivering (docs/decisions.md, "Chat brokered by Kafka").
        if let (Some(kafka), Some(_)) = (&kafka, &view) {
            tasks.extend(socket_feed::spawn(
                kafka.clone(),
                socket_hub.clone(),
                config.socket_feed,
                shutdown_rx.clone(),
            ));
        }
        let webhook_settings = Arc::new(config.webhooks.clone());
        webhooks::configure_operator(&store, &webhook_settings, chrono::Utc::now())
            .await
            .context("writing the operator's webhook endpoint")?;
        let webhook_wake = Arc::new(Notify::new());
        let with_accounts = webhook_settings
            .operator
            .as_ref()
            .is_some_and(|operator| operator.events.iter().any(|e| e == "UserRegistered"));
        tasks.extend(webhooks::dispatch::spawn(
            store.clone(),
            log.clone(),
            view.clone(),
            with_accounts,
            webhook_wake.clone(),
            shutdown_rx.clone(),
        ));
        tasks.push(
            webhooks::sender::spawn(
                store.clone(),
                view.clone(),
                webhook_settings.clone(),
                webhook_wake.clone(),
                shutdown_rx.clone(),
            )
            .context("building the webhook sender's HTTP client")?,
        );
        let webhooks = Webhooks::new(store.clone(), webhook_settings, webhook_wake);
        tasks.extend(saga::spawn(
            store.clone(),
            log.clone(),
            regions.clone(),
            view.clone(),
            saga::SagaSettings { charge_timeout, max_in_flight: config.saga_max_in_flight.max(1) },
            shutdown_rx,
        ));
        info!(database = %redact(&config.database_url), log = log.kind(), clustered = view.is_some(), "actor system started");
        Ok(Self {
            store,
            regions,
            socket_hub,
            payment_gateway,
            settings,
            webhooks,
            view,
            router,
            membership,
            shutdown,
            tasks,
        })
    }

    /// Stops the background tasks (draining the outbox first), leaves the cluster, and stops the
    /// actors and storage.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                warn!("a background task did not stop in time");
            }
        }
        if let Some(membership) = self.membership {
            membership.stop().await;
        }
        if let Some(router) = self.router {
            router.stop(None);
        }
        self.regions.stop();
        self.socket_hub.stop(None);
        self.store.close().await;
    }
}

/// This node as its router reaches it: the regions for entity requests, the socket hub for what
/// its sockets get.
struct ThisNode {
    regions: Regions,
    hub: ActorRef<HubMsg>,
}

impl Local for ThisNode {
    fn dispatch(&self, kind: &str, id: &str, name: &str, payload: &str) -> Option<BoxFuture<'static, Routed>> {
        self.regions.dispatch(kind, id, name, payload)
    }

    fn live(&self) -> BoxFuture<'static, BTreeMap<String, usize>> {
        let regions = self.regions.clone();
        async move { regions.live().await }.boxed()
    }

    fn published(&self, envelope: Envelope) {
        let _ = self.hub.send_message(HubMsg::Published(Arc::new(envelope)));
    }

    fn presence(&self, update: PresenceUpdate) {
        let _ = self.hub.send_message(HubMsg::RemotePresence(update));
    }

    fn relay(&self, frame: RoomFrame) {
        let _ = self.hub.send_message(HubMsg::RemoteRelay(frame));
    }
}

/// Hides credentials in a database URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

fn housekeeping(store: Store, retention: Duration, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let cutoff =
                chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(1));
            match crate::idempotency::expire(&store, cutoff).await {
                Ok(0) => {}
                Ok(n) => info!(expired = n, "idempotency keys expired"),
                Err(e) => warn!(reason = %e, "idempotency expiry failed"),
            }
            if let Ok(backlog) = store::embedded_log::outbox_backlog(&store).await {
                metrics::gauge!("bazaar_outbox_backlog").set(backlog as f64);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = shutdown.changed() => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn database_passwords_never_reach_the_log() {
        assert_eq!(redact("postgres://bazaar:secret@db:5432/bazaar"), "postgres://***@db:5432/bazaar");
        assert_eq!(redact("sqlite://./data/bazaar.db"), "sqlite://./data/bazaar.db");
    }
}
