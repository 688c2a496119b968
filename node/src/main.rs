use bazaar_node::cluster_up::{self, shutdown_signal};
use bazaar_node::config::{Cli, ClusterCommand, ClusterFile, Command, ServeArgs, Settings};
use bazaar_node::Node;
use clap::Parser;
use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bazaar_node::allocator::return_large_allocations();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BAZAAR_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,rskafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Cluster { action: ClusterCommand::Up { config } }) => return cluster_up::run(&config).await,
        Some(Command::Config(args)) => {
            // The same loading and checks as `serve`; an error exits non-zero like a failed start.
            let settings = Settings::load(&args)?;
            println!("{:#}", settings.describe(&args)?);
            return Ok(());
        }
        None => ServeArgs::default(),
    };
    let settings = Settings::load(&args)?;
    let cluster = settings.cluster(&args)?;
    let nodes = match (&args.config, &cluster) {
        (Some(path), Some(_)) => ClusterFile::read(path)?.nodes,
        _ => Vec::new(),
    };
    let node = Node::build(settings.clone(), cluster, nodes).await?;
    // Scripts and tests wait for this line (and read the bound port from it).
    println!("bazaar ready node={} http={}", settings.node_name, node.http_addr());
    std::io::stdout().flush()?;
    node.run_until(shutdown_signal()).await
}
