//! The nemesis: on a schedule, it applies one fault (or a combination) to the cluster, holds it,
//! heals everything, and lets the cluster run clean for a while before the next. Faults are taken
//! in turn from the schedule, so even a short run applies each kind at least once.
//!
//! Every fault window is written to `faults.jsonl` on the history's clock, which is how the
//! results table finds the longest unavailability around each fault.

use super::cluster::Cluster;
use super::history::Recorder;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// One node cut off from every peer (the storage and the log stay reachable).
    Isolate,
    /// The nodes split into a majority and a minority that cannot reach each other (with three
    /// nodes: one against two, a different node each time than `isolate` picks).
    Split,
    /// Two nodes cannot reach each other, while both still reach the third: a partition that
    /// does not split the cluster into two sides.
    Bridge,
    /// One node stopped by SIGSTOP for longer than the heartbeat timeout, then continued.
    Pause,
    /// One node killed by SIGKILL and started again.
    Kill,
    /// A backend restarted by the operator's command (`--restart NAME=COMMAND`).
    Restart(String),
    /// A partition of one node while another is killed.
    IsolateAndKill,
    /// A node paused while a backend restarts.
    PauseAndRestart(String),
}

impl Fault {
    /// The fault's name in `--schedule` and the results.
    pub fn name(&self) -> String {
        match self {
            Fault::Isolate => "isolate".into(),
            Fault::Split => "split".into(),
            Fault::Bridge => "bridge".into(),
            Fault::Pause => "pause".into(),
            Fault::Kill => "kill".into(),
            Fault::Restart(backend) => format!("restart-{backend}"),
            Fault::IsolateAndKill => "isolate+kill".into(),
            Fault::PauseAndRestart(backend) => format!("pause+restart-{backend}"),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Ok(match raw {
            "isolate" => Fault::Isolate,
            "split" => Fault::Split,
            "bridge" => Fault::Bridge,
            "pause" => Fault::Pause,
            "kill" => Fault::Kill,
            "isolate+kill" => Fault::IsolateAndKill,
            other => {
                if let Some(backend) = other.strip_prefix("pause+restart-") {
                    Fault::PauseAndRestart(backend.to_owned())
                } else if let Some(backend) = other.strip_prefix("restart-") {
                    Fault::Restart(backend.to_owned())
                } else {
                    return Err(format!(
                        "unknown fault {other:?}: isolate, split, bridge, pause, kill, isolate+kill, restart-NAME, pause+restart-NAME"
                    ));
                }
            }
        })
    }
}

/// A `--restart NAME=COMMAND`: how the operator restarts a backend (a shell command run to its end).
#[derive(Debug, Clone)]
pub struct Restart {
    /// The backend's name, as the schedule's `restart-NAME` says it.
    pub name: String,
    /// The shell command that restarts it.
    pub command: String,
}

impl FromStr for Restart {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.split_once('=') {
            Some((name, command)) if !name.is_empty() && !command.trim().is_empty() => {
                Ok(Restart { name: name.to_owned(), command: command.to_owned() })
            }
            _ => Err(format!("--restart takes NAME=COMMAND, got {raw:?}")),
        }
    }
}

/// One applied fault, on the history's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// The fault's name.
    pub fault: String,
    /// What exactly was done, e.g. `n2 cut off from n1, n3`.
    pub detail: String,
    /// When it was applied.
    pub start_ns: u64,
    /// When everything was healed (restarted nodes ready again).
    pub healed_ns: u64,
}

/// The schedule's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a fault is held.
    pub hold: Duration,
    /// How long the cluster runs clean between faults.
    pub quiet: Duration,
}

/// Applies the faults of `schedule` in turn until `until`, then heals everything. Returns the
/// windows it applied.
pub async fn run(
    cluster: &mut Cluster,
    schedule: &[Fault],
    restarts: &[Restart],
    timing: Timing,
    recorder: &Recorder,
    until: Instant,
    log: &Path,
) -> anyhow::Result<Vec<Window>> {
    let mut out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut windows = Vec::new();
    let size = cluster.size();
    for (round, fault) in schedule.iter().cycle().enumerate() {
        tokio::time::sleep(timing.quiet).await;
        if Instant::now() + timing.hold >= until {
            break;
        }
        let victim = round % size;
        let other = (victim + 1) % size;
        let start_ns = recorder.now_ns();
        let detail = apply(cluster, fault, victim, other, restarts).await?;
        eprintln!("  nemesis: {} ({detail})", fault.name());
        tokio::time::sleep(timing.hold).await;
        cluster.heal_all().await?;
        let window = Window { fault: fault.name(), detail, start_ns, healed_ns: recorder.now_ns() };
        writeln!(out, "{}", serde_json::to_string(&window)?)?;
        windows.push(window);
    }
    cluster.heal_all().await?;
    Ok(windows)
}

fn names(cluster: &Cluster, indices: impl IntoIterator<Item = usize>) -> String {
    indices.into_iter().map(|i| cluster.nodes[i].name.clone()).collect::<Vec<_>>().join(", ")
}

async fn apply(
    cluster: &mut Cluster,
    fault: &Fault,
    victim: usize,
    other: usize,
    restarts: &[Restart],
) -> anyhow::Result<String> {
    let size = cluster.size();
    Ok(match fault {
        Fault::Isolate => {
            cluster.partition(&[victim]);
            format!(
                "{} cut off from {}",
                cluster.nodes[victim].name,
                names(cluster, (0..size).filter(|i| *i != victim))
            )
        }
        Fault::Split => {
            // The minority: the smaller half, starting past the victim `isolate` would take.
            let minority: Vec<usize> = (0..size / 2).map(|k| (other + k) % size).collect();
            cluster.partition(&minority);
            format!(
                "{{{}}} split from {{{}}}",
                names(cluster, minority.iter().copied()),
                names(cluster, (0..size).filter(|i| !minority.contains(i)))
            )
        }
        Fault::Bridge => {
            cluster.set_link(victim, other, true);
            format!(
                "{} and {} cannot reach each other; both reach the rest",
                cluster.nodes[victim].name, cluster.nodes[other].name
            )
        }
        Fault::Pause => {
            cluster.pause(victim, true);
            format!("{} stopped (SIGSTOP)", cluster.nodes[victim].name)
        }
        Fault::Kill => {
            cluster.kill(victim).await;
            format!("{} killed (SIGKILL)", cluster.nodes[victim].name)
        }
        Fault::Restart(backend) => restart(restarts, backend).await?,
        Fault::IsolateAndKill => {
            cluster.partition(&[victim]);
            cluster.kill(other).await;
            format!("{} cut off, {} killed", cluster.nodes[victim].name, cluster.nodes[other].name)
        }
        Fault::PauseAndRestart(backend) => {
            cluster.pause(victim, true);
            let restarted = restart(restarts, backend).await?;
            format!("{} stopped (SIGSTOP), {restarted}", cluster.nodes[victim].name)
        }
    })
}

/// Runs the operator's restart command of `backend` to its end.
async fn restart(restarts: &[Restart], backend: &str) -> anyhow::Result<String> {
    let Some(restart) = restarts.iter().find(|r| r.name == backend) else {
        bail!("the schedule restarts {backend:?}, but no --restart {backend}=COMMAND says how");
    };
    let status = tokio::process::Command::new("sh")
        .args(["-c", &restart.command])
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running the restart command of {backend}"))?;
    if !status.success() {
        bail!("the restart command of {backend} ({}) failed: {status}", restart.command);
    }
    Ok(format!("{backend} restarted"))
}
