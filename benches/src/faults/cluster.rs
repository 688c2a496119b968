//! The cluster a fault run drives: three (or more) `bazaar serve` processes on one shared store,
//! each with its own config file that names every peer at a [`Link`] of that ordered pair, so the
//! nemesis can cut any node off from any other while the storage and the log stay reachable.
//! Ports are fixed for the run, so a killed node comes back where its peers and clients expect it.

use super::proxy::Link;
use crate::sys::Proc;
use anyhow::{bail, Context};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a node may take to print its ready line (a debug build on a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a node that exits before it is ready is started, before the run gives up.
const START_TRIES: u32 = 5;

/// One node: its name, its HTTP address, its config file and its process while it runs.
pub struct Node {
    /// `n1`, `n2`, ...
    pub name: String,
    /// Where clients reach it (fixed for the run).
    pub http: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    /// The process, while it runs.
    pub proc: Option<Proc>,
    /// Whether the process is stopped by SIGSTOP.
    pub paused: bool,
    /// How often it was started; start `k` logs to `NAME.k.log`.
    pub starts: u32,
}

/// The nodes and the links between them; `links[from][to]` is what `from` dials to reach `to`.
pub struct Cluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<Node>,
    links: Vec<Vec<Option<Link>>>,
    bazaar: PathBuf,
    env: Vec<(String, String)>,
}

/// Settings every node of a fault run gets: a heartbeat that notices a partition or a paused node
/// within a couple of seconds, and no limits meant for many clients behind one address.
fn node_settings() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        crate::scenarios::node_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.push(("BAZAAR_PASSIVATE_AFTER_SECS".into(), "30".into()));
    env
}

impl Cluster {
    /// Writes the config files of `size` nodes sharing `data_dir` and starts the links; starts no node.
    pub async fn configure(
        dir: &Path,
        size: usize,
        bazaar: &Path,
        heartbeat_ms: u64,
        heartbeat_timeout_ms: u64,
        extra_env: Vec<(String, String)>,
    ) -> anyhow::Result<Cluster> {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let ports = free_ports(size * 2)?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut links: Vec<Vec<Option<Link>>> = Vec::new();
        for from in 0..size {
            let mut row = Vec::new();
            for to in 0..size {
                row.push(if from == to { None } else { Some(Link::start(addr(ports[2 * to + 1])).await?) });
            }
            links.push(row);
        }
        let mut nodes = Vec::new();
        for i in 0..size {
            let name = format!("n{}", i + 1);
            let mut toml = format!(
                "[settings]\ndata_dir = {:?}\ncluster_heartbeat_ms = {heartbeat_ms}\ncluster_heartbeat_timeout_ms = {heartbeat_timeout_ms}\n",
                data_dir.display().to_string()
            );
            for j in 0..size {
                let cluster = match &links[i][j] {
                    None => addr(ports[2 * j + 1]),
                    Some(link) => link.listen,
                };
                toml.push_str(&format!(
                    "\n[[nodes]]\nname = \"n{}\"\nhttp_addr = \"{}\"\ncluster_addr = \"{cluster}\"\n",
                    j + 1,
                    addr(ports[2 * j])
                ));
            }
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(&config, toml)?;
            nodes.push(Node {
                log: dir.join(format!("{name}.log")),
                name,
                http: addr(ports[2 * i]),
                config,
                proc: None,
                paused: false,
                starts: 0,
            });
        }
        let mut env = node_settings();
        env.push(("BAZAAR_CLUSTER_COOKIE".into(), uuid::Uuid::new_v4().simple().to_string()));
        env.push((
            "BAZAAR_JWT_SECRET".into(),
            format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
        ));
        env.extend(extra_env);
        Ok(Cluster { nodes, links, bazaar: bazaar.to_owned(), env })
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Starts node `index` and waits for its ready line, starting it again (like a supervisor:
    /// systemd, Kubernetes) when it exits first, up to [`START_TRIES`] times: a node refuses to
    /// start while a backend it needs does not answer, which a backend fault can make so.
    pub async fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        if node.proc.is_some() {
            bail!("node {} is already running", node.name);
        }
        let args: Vec<String> = vec![
            "serve".into(),
            "--config".into(),
            node.config.display().to_string(),
            "--node".into(),
            node.name.clone(),
        ];
        let mut tries = 0;
        loop {
            tries += 1;
            node.starts += 1;
            let log = node.log.with_extension(format!("{}.log", node.starts));
            match Proc::start(&node.name, &self.bazaar, &args, &self.env, log, "bazaar ready", READY_TIMEOUT).await {
                Ok((proc, _)) => {
                    node.proc = Some(proc);
                    node.paused = false;
                    return Ok(());
                }
                Err(e) if tries < START_TRIES => {
                    eprintln!("  {} did not start (try {tries} of {START_TRIES}), starting it again: {e:#}", node.name);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e.context(format!("{} did not start in {START_TRIES} tries", node.name))),
            }
        }
    }

    /// Kills node `index` with SIGKILL (a paused one too) and waits until it is gone.
    pub async fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(proc) = node.proc.take() {
            proc.stop().await;
        }
        node.paused = false;
    }

    /// Stops (`true`) or continues (`false`) node `index` with SIGSTOP / SIGCONT.
    pub fn pause(&mut self, index: usize, pause: bool) {
        let node = &mut self.nodes[index];
        if let Some(proc) = &node.proc {
            let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) with a pid this tool started and still owns (not yet reaped).
            unsafe {
                libc::kill(proc.pid as libc::pid_t, signal);
            }
            node.paused = pause;
        }
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    pub fn set_link(&self, a: usize, b: usize, cut: bool) {
        for (from, to) in [(a, b), (b, a)] {
            if let Some(link) = &self.links[from][to] {
                if cut {
                    link.cut();
                } else {
                    link.heal();
                }
            }
        }
    }

    /// Cuts every link between a node of `side` and a node outside it.
    pub fn partition(&self, side: &[usize]) {
        for a in side {
            for b in 0..self.size() {
                if !side.contains(&b) {
                    self.set_link(*a, b, true);
                }
            }
        }
    }

    /// Heals every link, continues every paused node and starts every stopped one.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        for a in 0..self.size() {
            for b in 0..self.size() {
                if a != b {
                    self.set_link(a, b, false);
                }
            }
        }
        for index in 0..self.size() {
            if self.nodes[index].paused {
                self.pause(index, false);
            }
            if self.nodes[index].proc.is_none() {
                self.start(index).await?;
            }
        }
        Ok(())
    }

    /// Waits until every node lists every node `up`.
    pub async fn wait_until_formed(&self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + within;
        for node in &self.nodes {
            loop {
                let view: Value = match client.get(format!("http://{}/cluster", node.http)).send().await {
                    Ok(response) => response.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                let up = view["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["status"] == "up").count());
                if up == self.size() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {} does not see all {} nodes up within {within:?}: {view}", node.name, self.size());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every start's log of every node, for a failed run's report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            for start in 1..=node.starts {
                let path = node.log.with_extension(format!("{start}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                out.push_str(&format!("---- {} (start {start}, {}) ----\n", node.name, path.display()));
                for line in &all[all.len().saturating_sub(lines)..] {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// `n` distinct free loopback ports outside the kernel's ephemeral range: a port from that range
/// could be taken by one of the proxies' outgoing connections while its node is down.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999));
    let (start, end) = if low > 12_000 { (10_000u64, u64::from(low)) } else { (u64::from(high) + 1, 65_536) };
    if start >= end {
        bail!("no ports outside the ephemeral range {low}-{high} to give the nodes");
    }
    let mut listeners = Vec::new();
    // Scattered over the range so concurrent runs rarely try the same ports.
    let mut port = start + (u64::from(std::process::id()) * 7919) % (end - start);
    for _ in start..end {
        if listeners.len() == n {
            break;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            listeners.push(listener);
        }
        port = if port + 1 >= end { start } else { port + 1 };
    }
    if listeners.len() < n {
        bail!("no {n} free ports between {start} and {end}");
    }
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).context("a bound port")).collect()
}
