//! The memory scenarios: `entities` (RSS per active and per hibernated entity) and `footprint`
//! (a fresh idle node's RSS, and its RSS 10 s after a burst of orders and sockets).

use crate::api::{Api, User};
use crate::report::{self, Row, Series, XAxis};
use crate::scenarios::{each, node_env, ratio, Ctx, Plot};
use crate::sys;
use crate::ws;
use crate::{EntitiesArgs, FootprintArgs};
use anyhow::bail;
use futures_util::{stream, StreamExt};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sum of a Prometheus metric's series carrying every label in `labels`.
fn metric(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Products in memory on the node: (active, all), from `/metrics`.
async fn product_counts(api: &Api) -> anyhow::Result<(u64, u64)> {
    let scrape = api.text("/metrics").await?;
    let active = metric(&scrape, "bazaar_entities_active", &["kind=\"product\""]) as u64;
    let live = metric(&scrape, "bazaar_entities_live", &["kind=\"product\""]) as u64;
    Ok((active, live))
}

/// Waits until no product is active (every one hibernated or gone).
async fn until_no_active_products(api: &Api, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (active, _) = product_counts(api).await?;
        if active == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{active} products still active after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One node filled with `n` products, each created and read once.
struct Filled {
    rss_before: u64,
    rss_after: u64,
    /// Products in memory added, active or hibernated as the run asked.
    counted: u64,
    curve: Vec<(f64, f64)>,
}

async fn fill(
    ctx: &Ctx,
    name: &str,
    hibernate_after_secs: u64,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Filled> {
    let hibernating = hibernate_after_secs < 86_400;
    let mut env = node_env();
    env.push(("BAZAAR_PASSIVATE_AFTER_SECS", "86400".into()));
    env.push(("BAZAAR_HIBERNATE_AFTER_SECS", hibernate_after_secs.to_string()));
    let (node, addr) = ctx.node(name, &env).await?;
    let api = Api::new(addr);
    let seller = api.user("SELLER").await?;
    // Warm the code paths and the SQLite cache with one product first.
    let first = api.product(&seller, 1).await?;
    api.get(&format!("/products/{first}"), None).await?;
    if hibernating {
        until_no_active_products(&api, Duration::from_secs(30)).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (active_before, live_before) = product_counts(&api).await?;
    let rss_before = node.rss()?;
    let step = (n / 40).max(1);
    let curve = Arc::new(std::sync::Mutex::new(vec![(0.0, rss_before as f64 / (1 << 20) as f64)]));
    let created = Arc::new(AtomicU64::new(0));
    let ids = each(&format!("{name}: creating products"), (0..n).collect(), concurrency, |_| {
        let (api, seller, created, curve) = (api.clone(), seller.clone(), created.clone(), curve.clone());
        let pid = node.pid;
        async move {
            let id = api.product(&seller, 1).await?;
            let k = created.fetch_add(1, Ordering::Relaxed) + 1;
            if k as usize % step == 0 {
                if let Ok(rss) = sys::rss_of(pid) {
                    curve.lock().unwrap_or_else(|p| p.into_inner()).push((k as f64, rss as f64 / (1 << 20) as f64));
                }
            }
            Ok(id)
        }
    })
    .await?;
    each(&format!("{name}: reading each product"), ids, concurrency, |id| {
        let api = api.clone();
        async move { api.get(&format!("/products/{id}"), None).await }
    })
    .await?;
    if hibernating {
        until_no_active_products(&api, Duration::from_secs(120)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = node.rss()?;
    let (active_after, live_after) = product_counts(&api).await?;
    node.stop().await;
    let counted = if hibernating {
        (live_after - active_after).saturating_sub(live_before - active_before)
    } else {
        active_after.saturating_sub(active_before)
    };
    let curve = curve.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Filled { rss_before, rss_after, counted, curve })
}

pub async fn entities(ctx: &Ctx, args: &EntitiesArgs) -> anyhow::Result<()> {
    let active = fill(ctx, "active", 86_400, args.count, args.concurrency).await?;
    let asleep = fill(ctx, "hibernated", 1, args.hibernated, args.concurrency).await?;
    let per = |f: &Filled| (f.rss_after as f64 - f.rss_before as f64) / f.counted.max(1) as f64;
    let (per_active, per_asleep) = (per(&active), per(&asleep));

    let n = args.count;
    let (peer, line) = ctx.baseline("ractor-idle", &["__ractor-idle".into(), "--count".into(), n.to_string()]).await?;
    let word = |key: &str| -> f64 {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    };
    let base_per = (word("after=") - word("before=")) / n as f64;
    peer.stop().await;

    let before_after =
        |f: &Filled| format!("{} -> {}", report::fmt_bytes(f.rss_before as f64), report::fmt_bytes(f.rss_after as f64));
    let rows = vec![
        Row::new(
            "products in memory added (active / hibernated)",
            format!("{} / {}", active.counted, asleep.counted),
            n.to_string(),
        ),
        Row::new("RSS before -> after (active run)", before_after(&active), String::new()),
        Row::new("RSS per active entity", report::fmt_bytes(per_active), report::fmt_bytes(base_per)).judged(
            format!("{:.2}x", ratio(per_active, base_per)),
            "≤ 8 KiB",
            per_active <= 8192.0 && active.counted as usize >= args.count,
        ),
        Row::new("RSS before -> after (hibernated run)", before_after(&asleep), String::new()),
        Row::new("RSS per hibernated entity", report::fmt_bytes(per_asleep), report::fmt_bytes(base_per)).judged(
            format!("{:.2}x", ratio(per_asleep, base_per)),
            "≤ 2 KiB",
            per_asleep <= 2048.0 && asleep.counted as usize >= args.hibernated,
        ),
    ];
    let notes = vec![
        format!(
            "active run: {} products created by one seller (POST /products, {} at a time) and each read once, \
             hibernation and passivation set to 1 day; active products from /metrics bazaar_entities_active",
            args.count, args.concurrency
        ),
        format!(
            "hibernated run: {} products the same way on a fresh node with hibernate_after_secs = 1 and passivation \
             set to 1 day, measured once none is active (bazaar_entities_live - bazaar_entities_active)",
            args.hibernated
        ),
        "the RSS delta also holds what creating them left behind (allocator pages, SQLite cache): an upper bound \
         per entity"
            .into(),
        format!("baseline: {n} bare ractor actors (no state) spawned in a separate process"),
    ];
    let body = json!({
        "params": {"active": args.count, "hibernated": args.hibernated, "concurrency": args.concurrency},
        "active": {"rssBefore": active.rss_before, "rssAfter": active.rss_after, "entities": active.counted,
                   "bytesPerEntity": per_active, "rssMiBByCreated": active.curve},
        "hibernated": {"rssBefore": asleep.rss_before, "rssAfter": asleep.rss_after, "entities": asleep.counted,
                       "bytesPerEntity": per_asleep, "rssMiBByCreated": asleep.curve},
        "baseline": {"actors": n, "bytesPerActor": base_per, "readyLine": line},
        "target": {"bytesPerActiveEntityAtMost": 8192, "bytesPerHibernatedEntityAtMost": 2048},
    });
    let plot = Plot {
        title: "entities: node RSS by products created".into(),
        x: XAxis::Linear("products created".into()),
        y: "RSS (MiB)".into(),
        series: vec![
            Series { label: "active".into(), points: active.curve },
            Series { label: "hibernated".into(), points: asleep.curve },
        ],
    };
    ctx.finish("entities", &rows, &notes, body, plot)
}

// ---------------------------------------------------------------------------------------------

/// The allocator's figures from `/metrics`: (in use, of which SQLite's, free in its arenas,
/// mapped), in bytes.
async fn heap(api: &Api) -> anyhow::Result<(f64, f64, f64, f64)> {
    let scrape = api.text("/metrics").await?;
    let of = |state: &str| metric(&scrape, "bazaar_heap_bytes", &[&format!("state=\"{state}\"")]);
    Ok((of("in_use"), metric(&scrape, "bazaar_sqlite_memory_bytes", &[]), of("free"), of("mapped")))
}

/// Samples the node's RSS every `every` for `total`, as (seconds since `t0`, MiB) points.
async fn sample(pid: u32, t0: Instant, every: Duration, total: Duration, curve: &mut Vec<(f64, f64)>) -> u64 {
    let end = Instant::now() + total;
    let mut last = sys::rss_of(pid).unwrap_or(0);
    while Instant::now() < end {
        tokio::time::sleep(every).await;
        last = sys::rss_of(pid).unwrap_or(last);
        curve.push((t0.elapsed().as_secs_f64(), last as f64 / (1 << 20) as f64));
    }
    last
}

pub async fn footprint(ctx: &Ctx, args: &FootprintArgs) -> anyhow::Result<()> {
    // The baseline: the bare hyper server, idle.
    let (hello, _) = ctx.baseline("hello-server", &["__hello-server".into()]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hello_rss = hello.rss()?;
    hello.stop().await;

    let mut env = node_env();
    // Entities leave memory soon after the burst, so what stays is what the burst left behind
    // (allocator pages, caches), not entities still cached by design.
    env.push(("BAZAAR_HIBERNATE_AFTER_SECS", "1".into()));
    env.push(("BAZAAR_PASSIVATE_AFTER_SECS", args.passivate_after_secs.to_string()));
    env.push(("BAZAAR_WS_MAX_CONNECTIONS_PER_USER", "100000000".into()));
    let t0 = Instant::now();
    let (node, addr) = ctx.node("node1", &env).await?;
    let started_rss = node.rss()?;
    let mut curve = vec![(t0.elapsed().as_secs_f64(), started_rss as f64 / (1 << 20) as f64)];
    let idle_rss = sample(node.pid, t0, Duration::from_millis(500), Duration::from_secs(5), &mut curve).await;

    let api = Api::new(addr);
    let seller = api.user("SELLER").await?;
    let buyers: Vec<User> = each("signing up buyers", (0..args.buyers).collect(), 8, |_| {
        let api = api.clone();
        async move { api.user("BUYER").await }
    })
    .await?;
    let product = api.product(&seller, (args.orders + 1) as i64).await?;
    // Settle again after the setup, which is not the burst.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_rss = sys::rss_of(node.pid)?;
    let heap_before = heap(&api).await?;
    curve.push((t0.elapsed().as_secs_f64(), before_rss as f64 / (1 << 20) as f64));

    let burst_started = Instant::now();
    let orders = args.orders;
    let placed = each("burst: placing orders", (0..orders).collect(), args.concurrency, |i| {
        let (api, buyer, product) = (api.clone(), buyers[i % buyers.len()].clone(), product.clone());
        async move { api.order(&buyer, &product).await }
    })
    .await?;
    let peak_orders = sys::rss_of(node.pid)?;
    curve.push((t0.elapsed().as_secs_f64(), peak_orders as f64 / (1 << 20) as f64));
    let per_ip = ws::ports_per_source();
    let token = buyers[0].token.clone();
    let sockets: Vec<_> = stream::iter(0..args.sockets)
        .map(|i| {
            let token = token.clone();
            async move { ws::open(addr, "/ws", Some(&token), Some(ws::source_for(i, per_ip))).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let opened = sockets.iter().filter(|s| s.is_ok()).count();
    let peak = sys::rss_of(node.pid)?.max(peak_orders);
    curve.push((t0.elapsed().as_secs_f64(), peak as f64 / (1 << 20) as f64));
    drop(sockets);
    let burst_secs = burst_started.elapsed().as_secs_f64();
    let after_rss = sample(node.pid, t0, Duration::from_millis(500), Duration::from_secs(10), &mut curve).await;
    let heap_after = heap(&api).await?;
    let (_, live_after) = product_counts(&api).await?;
    node.stop().await;

    let mib = |b: u64| report::fmt_bytes(b as f64);
    let growth = ratio(after_rss as f64, before_rss as f64);
    let rows = vec![
        Row::new("RSS of a fresh idle node (5 s after ready)", mib(idle_rss), mib(hello_rss)).judged(
            format!("{:.1}x", ratio(idle_rss as f64, hello_rss as f64)),
            "≤ 64 MB",
            idle_rss <= 64_000_000,
        ),
        Row::new(
            "burst",
            format!(
                "{} orders, {opened} of {} sockets opened then closed, {burst_secs:.1} s",
                placed.len(),
                args.sockets
            ),
            String::new(),
        ),
        Row::new("RSS before the burst -> peak", format!("{} -> {}", mib(before_rss), mib(peak)), String::new()),
        Row::new("RSS 10 s after the burst", mib(after_rss), mib(before_rss)).judged(
            format!("{growth:.2}x"),
            "≤ 1.2x before",
            growth <= 1.2 && opened == args.sockets,
        ),
    ];
    let heap_row = |(in_use, sqlite, free, mapped): (f64, f64, f64, f64)| {
        format!(
            "{} in use ({} of it SQLite's), {} free in arenas, {} mapped",
            report::fmt_bytes(in_use),
            report::fmt_bytes(sqlite),
            report::fmt_bytes(free),
            report::fmt_bytes(mapped)
        )
    };
    let mut rows = rows;
    rows.push(Row::new("allocator before the burst", heap_row(heap_before), String::new()));
    rows.push(Row::new("allocator 10 s after the burst", heap_row(heap_after), String::new()));
    let notes = vec![
        "RSS is VmRSS of the process; the baseline of the idle row is the bare hyper server, idle".into(),
        "allocator figures are glibc's mallinfo2 (bazaar_heap_bytes on /metrics); free bytes in arenas are \
         resident only where a page is partly used, since the node trims whole free pages every 5 s"
            .into(),
        format!(
            "burst: {} orders (POST /orders, {} at a time, {} buyers) on one product, then {} authenticated \
             WebSockets opened 64 at a time and closed together; 'before' is after sign-ups and the product, \
             settled 3 s",
            args.orders, args.concurrency, args.buyers, args.sockets
        ),
        format!(
            "entities hibernate after 1 s and leave memory after {} s, so the after-burst figure holds what the \
             burst left behind, not entities kept on purpose",
            args.passivate_after_secs
        ),
    ];
    let body = json!({
        "params": {"orders": args.orders, "sockets": args.sockets, "concurrency": args.concurrency,
                   "buyers": args.buyers, "passivateAfterSecs": args.passivate_after_secs},
        "bazaar": {"rssStarted": started_rss, "rssIdle": idle_rss, "rssBeforeBurst": before_rss, "rssPeak": peak,
                   "rssAfterBurst": after_rss, "socketsOpened": opened, "burstSeconds": burst_secs,
                   "heapBefore": heap_before, "heapAfter": heap_after, "productsInMemoryAfter": live_after,
                   "rssMiBBySeconds": curve},
        "baseline": {"helloServerIdleRss": hello_rss},
        "target": {"idleRssAtMost": 64_000_000, "afterBurstAtMost": 1.2},
    });
    let plot = Plot {
        title: "footprint: node RSS over time (idle, burst, after)".into(),
        x: XAxis::Linear("seconds since start".into()),
        y: "RSS (MiB)".into(),
        series: vec![Series { label: "bazaar node".into(), points: curve }],
    };
    ctx.finish("footprint", &rows, &notes, body, plot)
}
