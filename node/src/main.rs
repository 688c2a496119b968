use bazaar_node::cluster_up::{self, shutdown_signal};
use bazaar_node::config::{Cli, ClusterCommand, ClusterFile, Command, ServeArgs, Settings};
use bazaar_node::{logging, Node};
use clap::Parser;
use std::io::Write;
use std::time::Duration;

/// A failed start (a bad setting, a port in use, a database that cannot be reached) is a message
/// for a person: printed with its causes and nothing else, never a backtrace, whatever
/// `RUST_BACKTRACE` says.
fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bazaar: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            bazaar_node::logging::fatal(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bazaar_node::allocator::return_large_allocations();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Cluster {
            action: ClusterCommand::Up { config, restart_delay_ms, max_start_failures, keep_logs },
        }) => {
            logging::init(logging::format_from_env());
            let options = cluster_up::UpOptions {
                config,
                restart_delay: Duration::from_millis(restart_delay_ms),
                max_start_failures,
                keep_logs,
            };
            return cluster_up::run(&options).await;
        }
        Some(Command::Demo { url }) => {
            logging::init(logging::format_from_env());
            return bazaar_node::demo::run(&url).await;
        }
        Some(Command::Config(args)) => {
            // The same loading and checks as `serve`; an error exits non-zero like a failed start.
            let settings = Settings::load(&args)?;
            println!("{:#}", settings.describe(&args)?);
            return Ok(());
        }
        None => ServeArgs::default(),
    };
    let settings = Settings::load(&args)?;
    // The log format is a setting: lines start once the settings are read (a refused setting is
    // printed by `main`).
    logging::init(settings.log_format()?);
    let listeners = bazaar_node::bind(&settings).await?;
    let cluster = settings.cluster(&args)?;
    let nodes = match (&args.config, &cluster) {
        (Some(path), Some(_)) => ClusterFile::read(path)?.nodes,
        _ => Vec::new(),
    };
    let node = Node::build(settings.clone(), listeners, cluster, nodes).await?;
    // Scripts and tests wait for this line (and read the bound ports from it).
    match node.ops_addr() {
        Some(ops) => println!("bazaar ready node={} http={} ops={ops}", settings.node_name, node.http_addr()),
        None => println!("bazaar ready node={} http={}", settings.node_name, node.http_addr()),
    }
    std::io::stdout().flush()?;
    node.run_until(shutdown_signal()).await
}
