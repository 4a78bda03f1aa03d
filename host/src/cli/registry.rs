//! `rivulet registry`: the development schema registry (Confluent's REST API subset that
//! serializers use; in memory, compatibility NONE). Not for production.

use super::run::stop_on_signals;
use clap::Args;
use rivulet::registry::DEFAULT_LISTEN;
use rivulet::registry::server::RegistryServer;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
}

/// Starts the registry, prints its URL on standard output, serves until Ctrl-C.
pub fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let server = start(&args.listen)?;
    println!("{}", server.url());
    let stop = stop_on_signals()?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts the registry at `listen`, with its startup line on standard error.
pub fn start(listen: &str) -> anyhow::Result<RegistryServer> {
    let server = RegistryServer::start(listen).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen at {listen}: the address is in use (another registry? try --listen 127.0.0.1:0)")
        } else {
            anyhow::anyhow!("cannot listen at {listen}: {err}")
        }
    })?;
    eprintln!(
        "schema registry (development only: in memory, compatibility NONE, no authentication, gone on exit) at {}; Ctrl-C to stop",
        server.url()
    );
    Ok(server)
}
