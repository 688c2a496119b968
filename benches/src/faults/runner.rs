//! `bazaar-bench faults`: a 3-node cluster behind cuttable links, the workload's client tasks,
//! the nemesis, then, once everything has healed, the final state read over the API (and the
//! simulated gateway's ledger from the store), and the checker's verdict over the whole history.
//!
//! Files, in `--out`: `history.jsonl` (every operation), `faults.jsonl` (every fault window),
//! `final.json` (the final state), `nodes/` (each node's config and one log per start);
//! `bazaar-bench check-history` re-checks the history against the final state.
//! The results (the checker's table and the fault table) go to stdout and `results/faults.json`.

use super::check::{self, Report};
use super::cluster::Cluster;
use super::final_state::{EntityVersion, FinalState, LedgerCharge, RoomHistory};
use super::history::{self, Call, Entry, Recorder};
use super::nemesis::{self, Fault, Timing, Window};
use super::workload::{self, Account, Buyer, Client, World, REQUEST_TIMEOUT};
use crate::scenarios::Ctx;
use crate::FaultArgs;
use anyhow::{bail, Context};
use bazaar_actors::store::{self, payments, Durability, Store};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::HistoryPage;
use bazaar_protocol::orders::{Order, OrderStatus};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::values::Role;
use bazaar_protocol::{Page, PaymentId};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the cluster may take to form (at the start, and again after the faults healed).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the whole fault run; `Ok(false)` when the checker found a violation.
pub async fn faults(ctx: &Ctx, args: &FaultArgs) -> anyhow::Result<bool> {
    if args.nodes < 3 {
        bail!("--nodes must be at least 3 (a majority and a minority)");
    }
    for (flag, value) in [("--clients", args.clients), ("--sellers", args.sellers), ("--products", args.products)] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if args.stock < 1 {
        bail!("--stock must be at least 1");
    }
    let schedule = &args.schedule;
    for fault in schedule {
        if let Fault::Restart(name) | Fault::PauseAndRestart(name) = fault {
            if !args.restart.iter().any(|r| &r.name == name) {
                bail!("the schedule restarts {name:?}: give --restart {name}=COMMAND");
            }
        }
    }
    let out = args.out.clone().unwrap_or_else(|| ctx.results.join("faults"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // The nodes' configs, logs and (on SQLite) data stay beside the history, for a failed run.
    let dir = out.join("nodes");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let database_url = std::env::var("BAZAAR_DATABASE_URL").ok().filter(|url| !url.is_empty());
    let extra_env = vec![
        // Tokens outlive the longest run; the hold is short enough that expiry happens in the run.
        ("BAZAAR_ACCESS_TOKEN_TTL_SECS".to_owned(), (args.common.seconds + 3600).to_string()),
        ("BAZAAR_RESERVATION_HOLD_SECS".to_owned(), args.reservation_hold_secs.to_string()),
    ];
    let mut cluster =
        Cluster::configure(&dir, args.nodes, &ctx.bazaar, args.heartbeat_ms, args.heartbeat_timeout_ms, extra_env)
            .await?;
    eprintln!("== starting {} nodes (logs in {})", args.nodes, dir.display());
    for index in 0..cluster.size() {
        cluster.start(index).await?;
    }
    let result = drive(ctx, args, &mut cluster, &out, database_url.as_deref(), &dir).await;
    match &result {
        Ok(true) => {}
        Ok(false) | Err(_) => eprintln!("== the nodes' last log lines\n{}", cluster.log_tails(30)),
    }
    for index in 0..cluster.size() {
        cluster.kill(index).await;
    }
    result
}

async fn drive(
    ctx: &Ctx,
    args: &FaultArgs,
    cluster: &mut Cluster,
    out: &std::path::Path,
    database_url: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<bool> {
    cluster.wait_until_formed(FORM_TIMEOUT).await?;
    let recorder = Arc::new(Recorder::create(&out.join("history.jsonl"))?);
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build()?;
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http).collect();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    eprintln!("== setting up {} sellers, {} products, {} buyers", args.sellers, args.products, args.clients);
    let mut world =
        World { nodes: nodes.clone(), sellers: Vec::new(), products: Vec::new(), recorder: recorder.clone(), http };
    for n in 0..args.sellers {
        world.sellers.push(workload::account(&world, &run, Role::Seller, n).await?);
    }
    for n in 0..args.products {
        let listed = workload::product(&world, &run, n % args.sellers, n, args.stock).await?;
        world.products.push(listed);
    }
    let mut buyers = Vec::new();
    for n in 0..args.clients {
        let account = workload::account(&world, &run, Role::Buyer, n).await?;
        let rooms = workload::rooms(&world, &account).await?;
        buyers.push(Buyer { account, rooms });
    }
    let world = Arc::new(world);

    let started = Instant::now();
    let until = started + Duration::from_secs(args.common.seconds);
    eprintln!(
        "== {} clients for {} s under the nemesis ({})",
        args.clients,
        args.common.seconds,
        schedule_names(&args.schedule)
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (i, buyer) in buyers.iter().enumerate() {
        let client = Client::new(i as u32 + 1, world.clone(), buyer.clone(), args.seed.wrapping_add(i as u64));
        tasks.spawn(client.run(until));
    }
    let timing = Timing { hold: Duration::from_millis(args.hold_ms), quiet: Duration::from_millis(args.quiet_ms) };
    let windows =
        nemesis::run(cluster, &args.schedule, &args.restart, timing, &recorder, until, &out.join("faults.jsonl"))
            .await?;
    let mut issued = 0;
    while let Some(joined) = tasks.join_next().await {
        issued += joined.context("a client task panicked")??;
    }
    eprintln!("== {issued} operations issued, {} faults applied; healing", windows.len());
    cluster.heal_all().await?;
    cluster.wait_until_formed(FORM_TIMEOUT).await?;

    let entries = history::read(&out.join("history.jsonl"))?;
    let url = database_url
        .map_or_else(|| format!("sqlite://{}", dir.join("data").join("bazaar.db").display()), str::to_owned);
    let store = Store::open(&url, Durability::Normal).await.context("opening the cluster's store for the ledger")?;
    let reader = Reader { world: &world, buyers: &buyers, entries: &entries, store: &store };
    let healed = Instant::now();
    let settle = Duration::from_secs(args.settle_secs);
    let (state, settled_after) = loop {
        let state = reader.read().await?;
        let unsettled = unsettled(&entries, &state);
        if unsettled.is_empty() {
            break (state, Some(healed.elapsed()));
        }
        if healed.elapsed() > settle {
            eprintln!("== not settled {settle:?} after the heal: {}", unsettled.join("; "));
            break (state, None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    std::fs::write(out.join("final.json"), serde_json::to_string_pretty(&state)?)?;
    let report = check::check(&entries, &state);
    let outages = unavailability(&entries, &windows);
    print!("{}", report.table());
    print!("{}", fault_table(&windows, &outages));
    match settled_after {
        Some(after) => println!("every order, payment and stock settled {:.1} s after the heal", after.as_secs_f64()),
        None => println!("NOT every order, payment and stock settled within {} s of the heal", args.settle_secs),
    }
    write_results(ctx, args, &report, &windows, &outages, out)?;
    Ok(report.violations.is_empty())
}

fn schedule_names(schedule: &[Fault]) -> String {
    schedule.iter().map(Fault::name).collect::<Vec<_>>().join(", ")
}

/// What is still moving: orders PAYMENT_PENDING, payments REQUESTED, refunds the gateway has not
/// carried out yet, and units of cancelled or refunded orders not back in stock yet (the saga
/// releases them after the order has moved, so a lagging log shows them missing for a while).
/// The final state is read once none is left (or the bound has passed).
fn unsettled(history: &[Entry], state: &FinalState) -> Vec<String> {
    let mut left = Vec::new();
    for balance in check::stock_balances(history, state) {
        if !balance.conserved() {
            left.push(format!("product {} stock not settled: {balance}", balance.product));
        }
    }
    for order in &state.orders {
        if order.status == OrderStatus::PaymentPending {
            left.push(format!("order {} PAYMENT_PENDING", order.id));
        }
    }
    let ledger: BTreeMap<&PaymentId, &LedgerCharge> = state.ledger.iter().map(|c| (&c.payment_id, c)).collect();
    for payment in &state.payments {
        if payment.status == PaymentStatus::Requested {
            left.push(format!("payment {} REQUESTED", payment.id));
        }
        if let Some(charge) = ledger.get(&payment.id) {
            if charge.approved() && charge.refunded_amount != payment.refunded_amount {
                left.push(format!("payment {} refund not at the gateway yet", payment.id));
            }
        }
    }
    left
}

/// Reads the final state over the API (as the run's own users) and the ledger from the store.
struct Reader<'a> {
    world: &'a World,
    buyers: &'a [Buyer],
    entries: &'a [Entry],
    store: &'a Store,
}

impl Reader<'_> {
    /// One GET that must succeed, tried on every node in turn while the answers are uncertain.
    async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> anyhow::Result<T> {
        let mut last = String::new();
        for attempt in 0..20 {
            let node = self.world.nodes[attempt % self.world.nodes.len()];
            let response = self
                .world
                .http
                .get(format!("http://{node}{path}"))
                .bearer_auth(token)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    return response.json().await.with_context(|| format!("GET {path}: not the expected body"));
                }
                Ok(response) if response.status().is_client_error() => {
                    bail!("GET {path}: {} {}", response.status(), response.text().await.unwrap_or_default());
                }
                Ok(response) => last = response.status().to_string(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("GET {path}: no answer in 20 tries (last: {last})")
    }

    async fn pages<T: DeserializeOwned>(&self, path: &str, token: &str) -> anyhow::Result<Vec<T>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(cursor) => format!("{path}{sep}limit=100&cursor={cursor}"),
                None => format!("{path}{sep}limit=100"),
            };
            let page: Page<T> = self.get(&url, token).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(items),
            }
        }
        bail!("{path}: more than 10,000 pages")
    }

    async fn read(&self) -> anyhow::Result<FinalState> {
        let any = &self.buyers[0].account.token;
        let mut state = FinalState::default();
        for seller in &self.world.sellers {
            state.products.extend(self.pages::<Product>(&format!("/products?sellerId={}", seller.id), any).await?);
        }
        let mut tokens: BTreeMap<String, &Account> = BTreeMap::new();
        for buyer in self.buyers {
            let orders: Vec<Order> = self.pages("/orders?role=buyer", &buyer.account.token).await?;
            for order in &orders {
                tokens.insert(order.id.to_string(), &buyer.account);
            }
            state.orders.extend(orders);
        }
        let mut payment_ids: BTreeMap<PaymentId, &Account> = BTreeMap::new();
        for order in &state.orders {
            if let (Some(id), Some(account)) = (&order.payment_id, tokens.get(order.id.as_str())) {
                payment_ids.insert(id.clone(), *account);
            }
        }
        for entry in self.entries {
            if let Call::Pay { request, outcome } = &entry.call {
                if let (Some(payment), Some(account)) = (outcome.acknowledged(), tokens.get(request.order_id.as_str()))
                {
                    payment_ids.insert(payment.id.clone(), *account);
                }
            }
        }
        for (id, account) in &payment_ids {
            state.payments.push(self.get::<Payment>(&format!("/payments/{id}"), &account.token).await?);
        }
        let mut rooms = BTreeSet::new();
        for buyer in self.buyers {
            for room in &buyer.rooms {
                if rooms.insert(room.clone()) {
                    let mut messages = Vec::new();
                    let mut before: Option<i64> = None;
                    for _ in 0..100_000 {
                        let path = match before {
                            Some(before) => format!("/chat/rooms/{room}/messages?limit=200&before={before}"),
                            None => format!("/chat/rooms/{room}/messages?limit=200"),
                        };
                        let page: HistoryPage = self.get(&path, &buyer.account.token).await?;
                        messages.extend(page.items);
                        match page.next_before {
                            Some(next) => before = Some(next),
                            None => break,
                        }
                    }
                    state.rooms.push(RoomHistory { id: room.clone(), messages });
                }
            }
        }
        for (entity_id, seq, event_id) in store::event_versions(self.store).await.context("reading the events")? {
            state.versions.push(EntityVersion { entity_id, seq, event_id });
        }
        for (payment_id, charge) in payments::ledger_charges(self.store).await.context("reading the ledger")? {
            state.ledger.push(LedgerCharge {
                payment_id: payment_id.into(),
                amount: charge.amount,
                outcome: charge.outcome,
                refunded_amount: charge.refunded_amount,
            });
        }
        Ok(state)
    }
}

/// The longest stretch around each fault window (from its start to 10 s after its heal) in which
/// no client got any acknowledgement: what a user saw of the fault.
fn unavailability(entries: &[Entry], windows: &[Window]) -> Vec<Duration> {
    let mut acks: Vec<u64> = entries
        .iter()
        .filter(|e| match &e.call {
            Call::Signup { outcome, .. } => outcome.acknowledged().is_some(),
            Call::CreateProduct { outcome, .. } => outcome.acknowledged().is_some(),
            Call::PlaceOrder { outcome, .. } | Call::GetOrder { outcome, .. } | Call::Cancel { outcome, .. } => {
                outcome.acknowledged().is_some()
            }
            Call::Pay { outcome, .. } | Call::GetPayment { outcome, .. } | Call::Refund { outcome, .. } => {
                outcome.acknowledged().is_some()
            }
            Call::ChatPost { outcome, .. } => outcome.acknowledged().is_some(),
            Call::HistoryRead { outcome, .. } => outcome.acknowledged().is_some(),
        })
        .map(|e| e.complete_ns)
        .collect();
    acks.sort_unstable();
    windows
        .iter()
        .map(|w| {
            let from = w.start_ns;
            let to = w.healed_ns + 10_000_000_000;
            let mut last = from;
            let mut longest = 0;
            for &at in acks.iter().filter(|at| **at > from && **at <= to) {
                longest = longest.max(at - last);
                last = at;
            }
            // No acknowledgement after the last one seen: unavailable to the window's end (or the
            // run's, when the cluster never answered again).
            let run_end = entries.iter().map(|e| e.complete_ns).max().unwrap_or(to);
            longest = longest.max(to.min(run_end).saturating_sub(last));
            Duration::from_nanos(longest)
        })
        .collect()
}

/// The fault table: per kind, how often it was applied and the longest unavailability it caused.
fn fault_table(windows: &[Window], outages: &[Duration]) -> String {
    let mut by_kind: BTreeMap<&str, (u32, Duration)> = BTreeMap::new();
    for (window, outage) in windows.iter().zip(outages) {
        let slot = by_kind.entry(window.fault.as_str()).or_default();
        slot.0 += 1;
        slot.1 = slot.1.max(*outage);
    }
    let mut out = String::from("\n| fault | applied | longest unavailability (s) |\n|---|---|---|\n");
    for (kind, (applied, longest)) in by_kind {
        out.push_str(&format!("| {kind} | {applied} | {:.1} |\n", longest.as_secs_f64()));
    }
    out
}

fn write_results(
    ctx: &Ctx,
    args: &FaultArgs,
    report: &Report,
    windows: &[Window],
    outages: &[Duration],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let counts: Vec<_> = report
        .counts
        .iter()
        .map(|(kind, c)| {
            json!({"operation": kind.as_str(), "issued": c.issued, "acknowledged": c.acknowledged,
                "failedClearly": c.failed_clearly, "indefinite": c.indefinite, "lost": c.lost, "doubled": c.doubled})
        })
        .collect();
    let faults: Vec<_> = windows
        .iter()
        .zip(outages)
        .map(|(w, outage)| {
            json!({"fault": w.fault, "detail": w.detail, "startS": w.start_ns as f64 / 1e9,
                "healedS": w.healed_ns as f64 / 1e9, "longestUnavailabilityS": outage.as_secs_f64()})
        })
        .collect();
    let total = report.total();
    let body = json!({
        "seconds": args.common.seconds,
        "clients": args.clients,
        "nodes": args.nodes,
        "database": std::env::var("BAZAAR_DATABASE_URL").map(|u| u.split(':').next().unwrap_or("").to_owned()).unwrap_or_else(|_| "sqlite".into()),
        "kafka": std::env::var("BAZAAR_KAFKA_BROKERS").is_ok(),
        "redis": std::env::var("BAZAAR_REDIS_URL").is_ok(),
        "schedule": schedule_names(&args.schedule),
        "counts": counts,
        "total": {"issued": total.issued, "acknowledged": total.acknowledged, "failedClearly": total.failed_clearly,
            "indefinite": total.indefinite, "lost": total.lost, "doubled": total.doubled},
        "faults": faults,
        "violations": report.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "files": out.display().to_string(),
    });
    let path = crate::report::write_json(&ctx.results, "faults", ctx.started, body)?;
    println!("  wrote {}", path.display());
    Ok(())
}
