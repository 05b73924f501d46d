//! What the examples share: flags, logging, the backend switch and graceful shutdown on
//! SIGINT/SIGTERM.

use std::io::Write;

use sgi::{Config, DevServer, Gateway, PoolServer};

pub struct Args {
    pub bind: String,
    pub server: String,
    pub workers: Option<usize>,
    /// The example's own flags, for it to take with [`Args::take_value`] and
    /// [`Args::take_flag`]; [`Args::finish`] then rejects whatever is left.
    pub rest: Vec<String>,
}

/// The flags every example takes.
const COMMON_USAGE: &str =
    "[--bind ADDR | --port N] [--server dev|pool | --dev | --pool] [--workers N]";

/// Prints what went wrong and the usage, and exits with status 2.
pub fn usage_error(problem: &str, own_usage: &str) -> ! {
    let program = std::env::args().next().unwrap_or_else(|| "example".into());
    let program = program.rsplit('/').next().unwrap_or(&program).to_string();
    eprintln!("{program}: {problem}\nusage: {program} {COMMON_USAGE} {own_usage}");
    std::process::exit(2)
}

impl Args {
    /// Takes `--name VALUE` from the example's own flags, parsed.
    #[allow(dead_code)] // not every example has flags of its own
    pub fn take_value<T: std::str::FromStr>(&mut self, name: &str, own_usage: &str) -> Option<T> {
        let i = self.rest.iter().position(|a| a == name)?;
        if i + 1 >= self.rest.len() {
            usage_error(&format!("{name} needs a value"), own_usage);
        }
        let value = self.rest.remove(i + 1);
        self.rest.remove(i);
        match value.parse() {
            Ok(v) => Some(v),
            Err(_) => usage_error(&format!("{name}: cannot use {value:?}"), own_usage),
        }
    }

    /// Takes `--name` from the example's own flags; whether it was there.
    #[allow(dead_code)]
    pub fn take_flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// Rejects flags nobody took (a typo must not run with the defaults).
    pub fn finish(&self, own_usage: &str) {
        if let Some(unknown) = self.rest.first() {
            usage_error(&format!("unknown argument {unknown:?}"), own_usage);
        }
    }
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
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage_error(&format!("{name} needs a value"), "..."))
        };
        match arg.as_str() {
            "--bind" => args.bind = value("--bind"),
            "--port" => match value("--port").parse::<u16>() {
                Ok(port) => args.bind = format!("127.0.0.1:{port}"),
                Err(_) => usage_error("--port takes a number from 0 to 65535", "..."),
            },
            "--server" => {
                args.server = value("--server");
                if args.server != "dev" && args.server != "pool" {
                    let problem = format!("--server {:?}: dev or pool", args.server);
                    usage_error(&problem, "...");
                }
            }
            "--pool" => args.server = "pool".into(),
            "--dev" => args.server = "dev".into(),
            "--workers" => match value("--workers").parse() {
                Ok(n) if n > 0 => args.workers = Some(n),
                _ => usage_error("--workers takes a number above 0", "..."),
            },
            _ => args.rest.push(arg),
        }
    }
    if args.server == "dev" && args.workers.is_some() {
        eprintln!("note: --workers is for the pool; the dev server runs a thread per connection");
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
        other => usage_error(&format!("--server {other:?}: dev or pool"), "..."),
    }
}

fn announce(addr: std::net::SocketAddr, handle: sgi::Handle) {
    // The first signal starts a graceful shutdown; a second one, while it runs, exits now.
    ctrlc::set_handler(move || {
        if handle.is_shutting_down() {
            eprintln!("second signal: exiting without waiting for the shutdown");
            std::process::exit(130);
        }
        handle.shutdown();
    })
    .expect("install signal handler");
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}").unwrap();
    out.flush().unwrap();
}
