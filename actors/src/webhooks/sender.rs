//! The sender: posts due deliveries to their endpoints, signed, and decides what follows each
//! attempt — DELIVERED on a 2xx, otherwise another try after a backoff that doubles from
//! `retry_base` up to `retry_max` (with up to a tenth more, at random, so endpoints that failed
//! together are not hit together again), until `retry_for` after the delivery was created; then
//! FAILED. Redirects are not followed (a 3xx is a failure: it could lead anywhere).
//!
//! A delivery is claimed before its attempt by moving its due time past the attempt's timeout,
//! so a sender killed mid-attempt leaves it due again shortly after: at least once. In a
//! cluster one node sends, the rendezvous owner of [`ROLE`].

use super::address::{self, PublicOnly};
use super::{signature, WebhookSettings};
use crate::cluster::ClusterView;
use crate::store::webhooks::{self as rows, AfterAttempt, DueDelivery, EndpointRow, OPERATOR};
use crate::store::Store;
use bazaar_protocol::webhooks::DeliveryAttempt;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tracing::warn;

/// The cluster role of the one sender.
pub const ROLE: &str = "webhooks";

/// How long past an attempt's timeout its claim holds.
const CLAIM_SLACK: Duration = Duration::from_secs(2);

/// Attempts in flight at once to one endpoint.
const PER_ENDPOINT: usize = 4;

/// How often finished deliveries older than the retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The wait before the try after failed attempt number `n` (1-based): `base`, doubled per
/// attempt, at most `max`.
pub fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
    let doublings = n.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << doublings).min(max)
}

/// What follows failed attempt number `n` of a delivery created at `created_at`, made at `now`
/// with `jitter` (0 to 1) of a tenth of the wait added.
pub fn after_failure(
    now: DateTime<Utc>,
    created_at: DateTime<Utc>,
    n: u32,
    settings: &WebhookSettings,
    jitter: f64,
) -> AfterAttempt {
    let wait = backoff(n, settings.retry_base, settings.retry_max);
    let wait = wait + wait.mul_f64(jitter.clamp(0.0, 1.0) / 10.0);
    let next = later(now, wait);
    let give_up = later(created_at, settings.retry_for);
    if next > give_up {
        AfterAttempt::Failed
    } else {
        AfterAttempt::RetryAt(next)
    }
}

/// `at` plus `span`, or the latest time there is.
fn later(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_add_signed(span))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at` less `span`, or the earliest time there is.
fn earlier(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The secrets that sign at `now`: the current one, and the one rotated out while it overlaps.
pub fn signing_secrets(endpoint: &EndpointRow, now: DateTime<Utc>) -> Vec<&str> {
    let mut secrets = vec![endpoint.secret.as_str()];
    if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_until) {
        if now < until {
            secrets.push(previous);
        }
    }
    secrets
}

/// Starts the sender; it stops when `shutdown` turns true (attempts in flight are dropped and
/// sent again when their claim runs out).
pub fn spawn(
    store: Store,
    view: Option<Arc<ClusterView>>,
    settings: Arc<WebhookSettings>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let build = |public_only: bool| {
        let builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the address rule.
            .no_proxy()
            .user_agent(concat!("bazaar-webhooks/", env!("CARGO_PKG_VERSION")));
        let builder = match public_only {
            true => builder.dns_resolver(Arc::new(PublicOnly)),
            false => builder,
        };
        builder.build()
    };
    let sender =
        Sender { guarded: build(!settings.allow_private)?, trusted: build(false)?, store, view, settings, wake };
    Ok(tokio::spawn(sender.run(shutdown)))
}

struct Sender {
    store: Store,
    view: Option<Arc<ClusterView>>,
    settings: Arc<WebhookSettings>,
    wake: Arc<Notify>,
    /// For sellers' endpoints: connects to public addresses only (unless allowed by setting).
    guarded: reqwest::Client,
    /// For the operator's endpoint, which the operator chose.
    trusted: reqwest::Client,
}

impl Sender {
    fn leading(&self) -> bool {
        self.view.as_ref().is_none_or(|view| view.leads(ROLE))
    }

    /// Claims and starts due deliveries, up to `room`; answers whether more may be due. Each
    /// attempt runs as a task of its own, so nothing here (nor a slow database) holds back an
    /// answer already on its way.
    async fn start_due(&self, room: usize, running: &mut Running) -> bool {
        let now = Utc::now();
        // Endpoints each get up to PER_ENDPOINT attempts, the one waiting longest first; one
        // that hangs never takes every slot from the others. Looked at: enough endpoints to fill
        // the room, plus those already at their cap.
        let looked = room.div_ceil(PER_ENDPOINT) + running.per_endpoint.len();
        let due_endpoints = match rows::due_endpoints(&self.store, now, looked as u32).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(reason = %e, "webhook deliveries unreadable; retrying");
                return false;
            }
        };
        let more = due_endpoints.len() >= looked;
        if due_endpoints.is_empty() {
            return false;
        }
        let endpoints: HashMap<String, EndpointRow> = match rows::live_endpoints(&self.store).await {
            Ok(rows) => rows.into_iter().map(|e| (e.id.clone(), e)).collect(),
            Err(e) => {
                warn!(reason = %e, "webhook endpoints unreadable; retrying");
                return false;
            }
        };
        let mut started = 0;
        for endpoint_id in due_endpoints {
            let busy = running.per_endpoint.get(&endpoint_id).copied().unwrap_or(0);
            let take = PER_ENDPOINT.saturating_sub(busy).min(room - started);
            if take == 0 {
                continue;
            }
            // A deleted endpoint's deliveries were ended with it; one deleted just now is skipped.
            let Some(endpoint) = endpoints.get(&endpoint_id) else { continue };
            // A delivery re-sent while its attempt runs is due again meanwhile: asked for with
            // room for those, which are skipped.
            let due = match rows::due(&self.store, &endpoint_id, now, (take + busy) as u32).await {
                Ok(due) => due,
                Err(e) => {
                    warn!(reason = %e, "webhook deliveries unreadable; retrying");
                    return false;
                }
            };
            let fresh: Vec<DueDelivery> =
                due.into_iter().filter(|d| !running.ids.contains_key(&d.id)).take(take).collect();
            for delivery in fresh {
                // The claim holds from now, not from when the look began.
                let lease = later(Utc::now(), self.settings.timeout + CLAIM_SLACK);
                let claim = match rows::claim(&self.store, &delivery, lease).await {
                    Ok(Some(claim)) => claim,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(reason = %e, "webhook delivery not claimed; retrying");
                        return false;
                    }
                };
                let client = if endpoint.owner_id == OPERATOR { self.trusted.clone() } else { self.guarded.clone() };
                let check_literal = endpoint.owner_id != OPERATOR && !self.settings.allow_private;
                running.ids.insert(delivery.id.clone(), endpoint.id.clone());
                *running.per_endpoint.entry(endpoint.id.clone()).or_default() += 1;
                let task = attempt(
                    self.store.clone(),
                    client,
                    check_literal,
                    endpoint.clone(),
                    delivery,
                    claim,
                    self.settings.clone(),
                );
                running.tasks.spawn(task);
                started += 1;
            }
            if started == room {
                return true;
            }
        }
        more
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running = Running::default();
        let mut purging: Option<JoinHandle<()>> = None;
        let mut last_purge: Option<Instant> = None;
        let mut look = true;
        // A deadline kept across turns: attempts completing one after another must not keep
        // pushing the next look (retries due, other nodes' deliveries) away.
        let mut next_poll = tokio::time::Instant::now() + self.settings.poll;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let leading = self.leading();
            let room = self.settings.max_in_flight.max(1).saturating_sub(running.ids.len());
            let mut more = false;
            if leading && look && room > 0 {
                more = self.start_due(room, &mut running).await;
            }
            if leading
                && last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY)
                && purging.as_ref().is_none_or(JoinHandle::is_finished)
            {
                last_purge = Some(Instant::now());
                let (store, before) = (self.store.clone(), earlier(Utc::now(), self.settings.retention));
                // Off this loop: a large purge must not hold back the attempts.
                purging = Some(tokio::spawn(async move {
                    match rows::purge(&store, before).await {
                        Ok(0) => {}
                        Ok(purged) => tracing::info!(purged, "old webhook deliveries deleted"),
                        Err(e) => warn!(reason = %e, "old webhook deliveries not deleted"),
                    }
                }));
            }
            look = false;
            // Which node is sending, and how much: an operator's view (and the cluster test's).
            metrics::gauge!("bazaar_webhook_attempts_in_flight").set(running.ids.len() as f64);
            tokio::select! {
                Some(done) = running.tasks.join_next(), if !running.tasks.is_empty() => {
                    if let Ok(id) = done {
                        running.finish(&id);
                    }
                    // Room again: look at once only if the last look left some behind.
                    look = more;
                }
                _ = self.wake.notified() => look = true,
                _ = tokio::time::sleep_until(next_poll) => {
                    look = true;
                    next_poll = tokio::time::Instant::now() + self.settings.poll;
                }
                _ = shutdown.changed() => {}
            }
        }
        // Attempts still running are dropped: their claims run out and they are sent again.
        running.tasks.abort_all();
    }
}

/// The attempts in flight: their tasks, and which delivery and endpoint each is for.
#[derive(Default)]
struct Running {
    tasks: JoinSet<String>,
    /// Delivery id to endpoint id.
    ids: HashMap<String, String>,
    per_endpoint: HashMap<String, usize>,
}

impl Running {
    fn finish(&mut self, delivery: &str) {
        if let Some(endpoint) = self.ids.remove(delivery) {
            if let Some(count) = self.per_endpoint.get_mut(&endpoint) {
                *count -= 1;
                if *count == 0 {
                    self.per_endpoint.remove(&endpoint);
                }
            }
        }
    }
}

/// One attempt of `delivery` to `endpoint`, recorded with what follows it; resolves to the
/// delivery's id.
async fn attempt(
    store: Store,
    client: reqwest::Client,
    check_literal: bool,
    endpoint: EndpointRow,
    delivery: DueDelivery,
    claim: String,
    settings: Arc<WebhookSettings>,
) -> String {
    let n = delivery.attempt_count.saturating_add(1);
    let at = Utc::now();
    let started = Instant::now();
    let outcome = post(&client, check_literal, &endpoint, &delivery, n, at).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (status_code, error) = match outcome {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (Some(status), Some(format!("HTTP {status}"))),
        Err(why) => (None, Some(why)),
    };
    let after = match error {
        None => AfterAttempt::Delivered,
        Some(_) => after_failure(Utc::now(), delivery.created_at, n, &settings, rand::random::<f64>()),
    };
    let label = match after {
        AfterAttempt::Delivered => "delivered",
        AfterAttempt::RetryAt(_) => "retry",
        AfterAttempt::Failed => "failed",
    };
    metrics::counter!("bazaar_webhook_attempts_total", "outcome" => label).increment(1);
    let record = DeliveryAttempt { at, status_code, error, duration_ms };
    if let Err(e) = rows::record_attempt(&store, &delivery.id, &claim, n, &record, after).await {
        // The claim runs out and the delivery is tried again: at least once.
        warn!(delivery = %delivery.id, reason = %e, "webhook attempt not recorded; it will be sent again");
    }
    delivery.id
}

/// Posts the delivery; answers the status, or why none came.
async fn post(
    client: &reqwest::Client,
    check_literal: bool,
    endpoint: &EndpointRow,
    delivery: &DueDelivery,
    n: u32,
    at: DateTime<Utc>,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("the endpoint's URL does not parse: {e}"))?;
    if check_literal {
        if let Some(why) = address::literal_refusal(&url) {
            return Err(format!("address not allowed: {why}"));
        }
    }
    let body = delivery.body.clone().into_bytes();
    let signed = signature::header(&signing_secrets(endpoint, at), at.timestamp(), &body);
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .header(signature::HEADER, signed)
        .header("bazaar-event-id", &delivery.event_id)
        .header("bazaar-event-type", &delivery.event_type)
        .header("bazaar-delivery-id", &delivery.id)
        .header("bazaar-attempt", n.to_string())
        .body(body)
        .send()
        .await;
    match answer {
        // The body is not read: only the status counts, and a receiver's page must not fill memory.
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => Err(describe(&e)),
    }
}

/// A failed request in a sentence, with its causes (the resolver's refusal among them).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "no answer in time".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            retry_for: Duration::from_secs(3 * 24 * 3600),
            ..WebhookSettings::default()
        }
    }

    #[test]
    fn the_wait_doubles_from_the_base_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        let waits: Vec<u64> = (1..=11).map(|n| backoff(n, base, max).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(backoff(u32::MAX, base, max), max);
    }

    #[test]
    fn retries_stop_once_the_next_would_fall_past_retry_for() {
        let s = settings();
        let created = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let soon = created + chrono::Duration::seconds(1);
        assert_eq!(
            after_failure(soon, created, 1, &s, 0.0),
            AfterAttempt::RetryAt(soon + chrono::Duration::seconds(10))
        );
        // Jitter adds at most a tenth.
        assert_eq!(
            after_failure(soon, created, 1, &s, 1.0),
            AfterAttempt::RetryAt(soon + chrono::Duration::seconds(11))
        );
        let near_the_end = created + chrono::Duration::seconds(3 * 24 * 3600 - 60);
        assert_eq!(after_failure(near_the_end, created, 40, &s, 0.0), AfterAttempt::Failed);
        // Three days at these settings is some eighty tries, not an unbounded number.
        let (mut now, mut n) = (created, 1);
        while let AfterAttempt::RetryAt(next) = after_failure(now, created, n, &s, 0.0) {
            (now, n) = (next, n + 1);
        }
        assert!((70..=90).contains(&n), "{n} tries");
    }

    #[test]
    fn a_rotated_out_secret_signs_until_its_overlap_ends() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let endpoint = EndpointRow {
            id: "e".into(),
            owner_id: "s".into(),
            url: "https://hooks.example.com/".into(),
            events: vec!["OrderPaid".into()],
            secret: "whsec_new".into(),
            previous_secret: Some("whsec_old".into()),
            previous_until: Some(now + chrono::Duration::seconds(60)),
            created_at: now,
        };
        assert_eq!(signing_secrets(&endpoint, now), ["whsec_new", "whsec_old"]);
        assert_eq!(signing_secrets(&endpoint, now + chrono::Duration::seconds(60)), ["whsec_new"]);
    }
}
