//! Processes the tool starts (bazaar nodes and the baseline servers), their memory, the file
//! descriptor limit and what the machine is.

use anyhow::{bail, Context};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child process started by the tool. It is killed when dropped, and (through
/// `PR_SET_PDEATHSIG`) when the tool itself dies.
pub struct Proc {
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program args` with `envs`, stderr to `log`, and waits up to `timeout` for a stdout
    /// line starting with `ready_prefix`; returns the process and that line.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: PathBuf,
        ready_prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Proc, String)> {
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when the
        // thread that forked it (a runtime worker, alive as long as the tool) goes away.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("child has no pid")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut proc = Proc { pid, log, child };
        let wait = async {
            loop {
                match lines.next_line().await? {
                    Some(line) if line.starts_with(ready_prefix) => return Ok::<_, anyhow::Error>(Some(line)),
                    Some(_) => continue,
                    None => return Ok(None),
                }
            }
        };
        let line = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = proc.child.wait().await.ok();
                bail!("{name} exited before it was ready ({status:?}); its log begins:\n{}", proc.log_head(20));
            }
            Err(_) => bail!("{name} printed no ready line within {timeout:?}; its log begins:\n{}", proc.log_head(20)),
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((proc, line))
    }

    /// The first `n` lines of the child's stderr log (where a startup error is).
    pub fn log_head(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().take(n).collect::<Vec<_>>().join("\n")
    }

    /// Resident set size in bytes (VmRSS of /proc/PID/status).
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid)
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// VmRSS of a process, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_kb(&status, "VmRSS:").map(|kb| kb * 1024).context("no VmRSS")
}

fn status_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Parses `KEY=ADDR` out of a ready line (`bazaar ready node=n http=127.0.0.1:1234`).
pub fn addr_in(line: &str, key: &str) -> anyhow::Result<SocketAddr> {
    let prefix = format!("{key}=");
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .with_context(|| format!("no {key}= in ready line {line:?}"))?;
    value.parse().with_context(|| format!("bad address in ready line {line:?}"))
}

/// Raises RLIMIT_NOFILE (soft and, as far as allowed, hard) to at least `want`; children inherit
/// it. Returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok());
    let want = want.min(nr_open.unwrap_or(1 << 20));
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a stack value.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur >= want {
            return limit.rlim_cur;
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: want.max(limit.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            // Not allowed to raise the hard limit: take what it allows.
            let soft = libc::rlimit { rlim_cur: limit.rlim_max.min(want), rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// What the machine is, for the JSON results.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpuModel": model,
        "memTotalBytes": status_kb(&meminfo, "MemTotal:").map(|kb| kb * 1024),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}
