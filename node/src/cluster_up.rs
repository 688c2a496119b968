//! `bazaar cluster up`: every node of a cluster.toml as a child process of this one, each with its
//! own log file, a ready line per node, and a clean stop of all of them on Ctrl-C.
//!
//! A node that dies after it was ready is reported and started again after a short delay, while
//! the others keep serving: that is what lets a person watch a failover on one machine. A node
//! that dies before it was ever ready has its log's last lines shown on the terminal (a startup
//! error, such as a port in use, is not hidden in a file); after a few such failures in a row
//! the whole command stops, since retrying cannot fix a configuration.

use crate::config::{ClusterFile, ServeArgs, Settings};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How `cluster up` supervises its nodes (the command's flags).
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The cluster.toml listing the nodes.
    pub config: PathBuf,
    /// How long after a node's death it is started again.
    pub restart_delay: Duration,
    /// Starts in a row that end before the node is ready, after which `cluster up` gives up.
    pub max_start_failures: u32,
    /// Logs of earlier runs kept per node (`NODE.log.1` is the newest of them).
    pub keep_logs: u32,
}

/// Lines of a node's log shown on the terminal when it fails to start.
const LOG_TAIL_LINES: usize = 20;
/// How often the children are checked for an exit.
const POLL: Duration = Duration::from_millis(200);

/// One node of the cluster and the process running it now, if any.
struct Supervised {
    name: String,
    log: PathBuf,
    child: Option<Child>,
    /// Counts the node's starts; a ready line of an older start is not this one's.
    start: u64,
    ready: bool,
    failures_in_a_row: u32,
    restart_at: Option<Instant>,
}

/// Starts the nodes of `options.config` and supervises them until Ctrl-C or SIGTERM.
pub async fn run(options: &UpOptions) -> anyhow::Result<()> {
    let config = options.config.as_path();
    let nodes = ClusterFile::read(config)?.nodes;
    if nodes.is_empty() {
        bail!("{} lists no [[nodes]]", config.display());
    }
    let settings = Settings::load(&ServeArgs { config: Some(config.to_owned()), ..Default::default() })?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating the data directory {}", settings.data_dir.display()))?;
    // Resolve the cookie once so every child proves the same one.
    let cookie = settings.cluster_cookie()?;
    let logs = settings.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let exe = std::env::current_exe().context("locating the bazaar binary")?;
    let launcher = Launcher { exe, config: config.to_owned(), cookie };

    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(usize, u64, String)>();
    let mut supervised = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let log = logs.join(format!("{}.log", node.name));
        rotate(&log, options.keep_logs).with_context(|| format!("keeping the earlier logs of {}", log.display()))?;
        let mut member = Supervised {
            name: node.name.clone(),
            log,
            child: None,
            start: 0,
            ready: false,
            failures_in_a_row: 0,
            restart_at: None,
        };
        launcher.start(index, &mut member, &ready_tx)?;
        supervised.push(member);
    }

    let mut announced = false;
    let mut poll = tokio::time::interval(POLL);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            Some((index, start, rest)) = ready_rx.recv() => {
                let member = &mut supervised[index];
                if member.start != start {
                    continue;
                }
                member.ready = true;
                member.failures_in_a_row = 0;
                let pid = member.child.as_ref().and_then(Child::id).map_or_else(String::new, |pid| format!("pid {pid}, "));
                println!("node {} ready: {rest} ({pid}log: {})", member.name, member.log.display());
                if !announced && supervised.iter().all(|m| m.ready) {
                    announced = true;
                    println!("cluster ready: {} nodes (Ctrl-C stops them all)", supervised.len());
                }
            }
            _ = &mut shutdown => break Ok(()),
            _ = poll.tick() => {
                if let Err(gave_up) = supervise(&mut supervised, options, &launcher, &ready_tx) {
                    break Err(gave_up);
                }
            }
        }
    };
    stop_all(&mut supervised).await;
    outcome
}

/// Notices exits and restarts what is due; an error when a node keeps failing to start.
fn supervise(
    supervised: &mut [Supervised],
    options: &UpOptions,
    launcher: &Launcher,
    ready_tx: &mpsc::UnboundedSender<(usize, u64, String)>,
) -> anyhow::Result<()> {
    for (index, member) in supervised.iter_mut().enumerate() {
        if let Some(child) = member.child.as_mut() {
            let Ok(Some(status)) = child.try_wait() else { continue };
            member.child = None;
            if member.ready {
                println!(
                    "node {} exited ({status}); the others keep serving; restarting it in {} ms",
                    member.name,
                    options.restart_delay.as_millis()
                );
            } else {
                member.failures_in_a_row += 1;
                eprintln!("node {} failed to start ({status}); the end of {}:", member.name, member.log.display());
                for line in log_tail(&member.log, LOG_TAIL_LINES) {
                    eprintln!("  | {line}");
                }
                if member.failures_in_a_row >= options.max_start_failures {
                    bail!(
                        "node {} failed to start {} times in a row; stopping the others",
                        member.name,
                        member.failures_in_a_row
                    );
                }
                println!("restarting node {} in {} ms", member.name, options.restart_delay.as_millis());
            }
            member.ready = false;
            member.restart_at = Some(Instant::now() + options.restart_delay);
        } else if member.restart_at.is_some_and(|at| at <= Instant::now()) {
            member.restart_at = None;
            launcher.start(index, member, ready_tx)?;
        }
    }
    Ok(())
}

/// What every node's process is started with.
struct Launcher {
    exe: PathBuf,
    config: PathBuf,
    cookie: String,
}

impl Launcher {
    /// Starts `member`'s process, its output appended to its log, its ready line watched.
    fn start(
        &self,
        index: usize,
        member: &mut Supervised,
        ready_tx: &mpsc::UnboundedSender<(usize, u64, String)>,
    ) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .with_context(|| format!("opening {}", member.log.display()))?;
        let mut child = Command::new(&self.exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--node")
            .arg(&member.name)
            .env("BAZAAR_CLUSTER_COOKIE", &self.cookie)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {}", member.name))?;
        member.start += 1;
        let stdout = child.stdout.take().context("child stdout")?;
        let (start, ready_tx) = (member.start, ready_tx.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("bazaar ready ") {
                    let _ = ready_tx.send((index, start, rest.to_owned()));
                }
            }
        });
        member.child = Some(child);
        Ok(())
    }
}

/// Moves `log` to `log.1`, `log.1` to `log.2` and so on, keeping `keep` of them.
fn rotate(log: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    if keep == 0 {
        return match std::fs::remove_file(log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    if log.exists() {
        std::fs::rename(log, numbered(1))?;
    }
    Ok(())
}

/// The last `lines` lines of a log file (nothing if it cannot be read).
fn log_tail(log: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|l| (*l).to_owned()).collect()
}

/// SIGTERM to every child (each drains and stops cleanly), SIGKILL to any still running after 10 s.
async fn stop_all(supervised: &mut [Supervised]) {
    for member in supervised.iter() {
        if let Some(pid) = member.child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) with a pid we spawned and still own; no memory is touched.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for member in supervised.iter_mut() {
        let Some(child) = member.child.as_mut() else { continue };
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) => println!("node {} stopped ({status})", member.name),
            _ => {
                let _ = child.kill().await;
                println!("node {} killed after 10 s", member.name);
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_earlier_logs_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("n1.log");
        for run in 1..=4 {
            rotate(&log, 2).unwrap();
            std::fs::write(&log, format!("run {run}")).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).ok();
        assert_eq!(read("n1.log").as_deref(), Some("run 4"));
        assert_eq!(read("n1.log.1").as_deref(), Some("run 3"));
        assert_eq!(read("n1.log.2").as_deref(), Some("run 2"));
        assert_eq!(read("n1.log.3"), None, "only two earlier runs are kept");
    }

    #[test]
    fn the_tail_of_a_log_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("n1.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2), vec!["b", "c"]);
        assert_eq!(log_tail(&dir.path().join("missing.log"), 2), Vec::<String>::new());
    }
}
