//! What the examples share: flags, logging, the backend switch and graceful shutdown on
//! SIGINT/SIGTERM.

use std::io::Write;

use sgi::{Config, DevServer, Gateway, PoolServer};

pub struct Args {
    pub bind: String,
    pub server: String,
    pub workers: Option<usize>,
    pub rest: Vec<String>,
}

pub fn args() -> Args {
    let mut args = Args {
        bind: "127.0.0.1:8000".into(),
        server: "pool".into(),
        workers: None,
        rest: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bind" => args.bind = value("--bind"),
            "--port" => args.bind = format!("127.0.0.1:{}", value("--port")),
            "--server" => args.server = value("--server"),
            "--pool" => args.server = "pool".into(),
            "--dev" => args.server = "dev".into(),
            "--workers" => {
                args.workers = Some(
                    value("--workers")
                        .parse()
                        .expect("--workers takes a number"),
                )
            }
            _ => args.rest.push(arg),
        }
    }
    args
}

/// Serves `gateway` on the chosen backend until SIGINT or SIGTERM, then shuts down gracefully.
pub fn serve<G: Gateway>(args: &Args, config: Config, gateway: G) -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match args.workers {
        Some(n) => config.workers(n),
        None => config,
    };
    match args.server.as_str() {
        "dev" => {
            let server = DevServer::bind_with(args.bind.as_str(), config)?;
            announce(server.local_addr(), server.handle());
            server.serve(gateway)
        }
        "pool" => {
            let server = PoolServer::bind_with(args.bind.as_str(), config)?;
            announce(server.local_addr(), server.handle());
            server.serve(gateway)
        }
        other => panic!("unknown --server {other:?} (dev or pool)"),
    }
}

fn announce(addr: std::net::SocketAddr, handle: sgi::Handle) {
    ctrlc::set_handler(move || handle.shutdown()).expect("install signal handler");
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}").unwrap();
    out.flush().unwrap();
}
