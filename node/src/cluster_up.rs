//! `bazaar cluster up`: every node of a cluster.toml as a child process of this one, each with its
//! own log file, a ready line per node, and a clean stop of all of them on Ctrl-C (or when one
//! dies, since a partial cluster started by this command is not what was asked for).

use crate::config::{ClusterFile, ServeArgs, Settings};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Starts the nodes of `config` and supervises them until Ctrl-C or SIGTERM.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let nodes = ClusterFile::read(config)?.nodes;
    if nodes.is_empty() {
        bail!("{} lists no [[nodes]]", config.display());
    }
    let settings = Settings::load(&ServeArgs { config: Some(config.to_owned()), ..Default::default() })?;
    std::fs::create_dir_all(&settings.data_dir)?;
    // Resolve the cookie once so every child proves the same one.
    let cookie = settings.cluster_cookie()?;
    let logs = settings.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let exe = std::env::current_exe().context("locating the bazaar binary")?;

    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<String>();
    let mut children: Vec<(String, Child)> = Vec::new();
    for node in &nodes {
        let log_path = logs.join(format!("{}.log", node.name));
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--node")
            .arg(&node.name)
            .env("BAZAAR_CLUSTER_COOKIE", &cookie)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {}", node.name))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (name, ready_tx) = (node.name.clone(), ready_tx.clone());
        let log_display = log_path.display().to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("bazaar ready ") {
                    println!("node {name} ready: {rest} (log: {log_display})");
                    let _ = ready_tx.send(name.clone());
                }
            }
        });
        children.push((node.name.clone(), child));
    }
    drop(ready_tx);

    let mut ready = 0;
    let outcome = loop {
        tokio::select! {
            Some(_) = ready_rx.recv() => {
                ready += 1;
                if ready == children.len() {
                    println!("cluster ready: {} nodes (Ctrl-C stops them all)", children.len());
                }
            }
            _ = shutdown_signal() => break Ok(()),
            (name, status) = first_exit(&mut children) => {
                break Err(anyhow::anyhow!("node {name} exited ({status}); stopping the others"));
            }
        }
    };
    stop_all(&mut children).await;
    outcome
}

async fn first_exit(children: &mut [(String, Child)]) -> (String, String) {
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (name.clone(), status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to every child (each drains and stops cleanly), SIGKILL to any still running after 10 s.
async fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with a pid we spawned and still own; no memory is touched.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) => println!("node {name} stopped ({status})"),
            _ => {
                let _ = child.kill().await;
                println!("node {name} killed after 10 s");
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
