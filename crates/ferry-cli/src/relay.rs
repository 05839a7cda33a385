//! Relay commands: `relay serve` (the server, over the embedded store or a DynamoDB table),
//! and the device side's transport that `sync --relay` and `agent --relay` attach.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Cli, Failure, RelayArgs};
use ferry::ws::WsTransport;
use ferry::{Attach, Db, SyncOptions};
use ferry_relay::{EmbeddedStore, RelayConfig, Secret};

/// `ferry relay serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0: any free port, printed when listening).
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: String,
    /// Where the cloud's rows live: `embedded:DIR` (this relay's own directory) or
    /// `dynamodb:TABLE` (shared with other relays). Either needs the schema (--schema): the
    /// write rule checks each change's model against it.
    #[arg(long, value_name = "STORE")]
    store: String,
    /// DynamoDB endpoint URL, for local servers (DynamoDB Local).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The AWS region (else the environment's or profile's).
    #[arg(long)]
    region: Option<String>,
    /// The secret device tokens are signed with: a file of at least 32 bytes.
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
    /// Serve wss with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long tombstones stay in the embedded store (a DynamoDB table has its own).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30d")]
    horizon: Duration,
    /// How often, over DynamoDB, the feeds of connected devices are read for what other
    /// relays wrote.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    poll_interval: Duration,
    /// Connections served at once.
    #[arg(long, default_value_t = 10_000)]
    connections_max: usize,
    /// Serve /metrics on this address instead of the devices' port.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Sessions one device (a token's subject) holds at once, one per replica (a new
    /// session of a replica replaces its old one); past it, new sessions are refused.
    #[arg(long, default_value_t = 16)]
    sessions_per_device: usize,
    /// How often a quiet session is pinged.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    ping_interval: Duration,
    /// A session that sends nothing, not even a pong, for this long is ended (its link is
    /// gone).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "90s")]
    idle_timeout: Duration,
    /// A frame a device does not take within this long ends its session.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    write_timeout: Duration,
}

/// `ferry relay serve`: runs until SIGTERM or SIGINT, then drains.
pub fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), Failure> {
    init_logs();
    // A connection is a file descriptor: take as many as the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let invalid = |what: String| Failure::invalid(what);
    let secret = Secret::from_file(&args.secret_file).map_err(|e| invalid(e.to_string()))?;
    let mut config = RelayConfig::new(secret);
    config.connections_max = args.connections_max;
    config.sessions_per_device_max = args.sessions_per_device;
    let metrics_at = match &args.metrics_listen {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address).map_err(|e| {
                Failure::failed("ListenError", format!("cannot listen on {address}: {e}"))
            })?;
            let at = (listener.local_addr())
                .map_err(|e| Failure::failed("ListenError", e.to_string()))?;
            config.metrics_listener = Some(listener);
            Some(at)
        }
        None => None,
    };
    config.poll_interval = args.poll_interval;
    if args.ping_interval.is_zero() || args.idle_timeout <= args.ping_interval {
        return Err(invalid(format!(
            "--ping-interval {:?} and --idle-timeout {:?}: the interval must be above zero \
             and the timeout longer (a quiet device answers a ping per interval)",
            args.ping_interval, args.idle_timeout
        )));
    }
    config.ping_interval = args.ping_interval;
    config.idle_timeout = args.idle_timeout;
    config.write_timeout = args.write_timeout;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(ferry_relay::tls_config(cert, key).map_err(|e| invalid(e.to_string()))?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed("RuntimeError", e.to_string()))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&args.listen))
        .map_err(|e| {
            Failure::failed(
                "ListenError",
                format!("cannot listen on {}: {e}", args.listen),
            )
        })?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::failed("ListenError", e.to_string()))?;
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let announce = || match metrics_at {
        Some(at) => println!(
            "listening on {address} ({scheme}://{address}, metrics at http://{at}/metrics)"
        ),
        None => println!("listening on {address} ({scheme}://{address}, metrics at /metrics)"),
    };
    let schema = crate::table_schema(cli)?;
    match args.store.split_once(':') {
        Some(("embedded", dir)) if !dir.is_empty() => {
            let horizon_ms = args.horizon.as_millis() as u64;
            let models =
                ferry::replication::Models::new(schema.cloud_directions(), schema.item_layout());
            let store = EmbeddedStore::open(dir.as_ref(), horizon_ms, models)
                .map_err(|e| Failure::failed("StoreError", format!("embedded store {dir}: {e}")))?;
            run(&rt, listener, store, config, announce);
        }
        #[cfg(feature = "dynamo")]
        Some(("dynamodb", table)) if !table.is_empty() => {
            let endpoint = ferry::dynamo::Endpoint {
                url: args.endpoint.clone(),
                region: args.region.clone(),
            };
            let id = crate::cloud::cloud_replica_id();
            let schema = std::sync::Arc::new(schema);
            let table_link = ferry::dynamo::DynamoTransport::new(endpoint, table, schema, &id);
            let store = ferry_relay::DynamoStore::new(table_link);
            // Read the table's settings now: a missing table is an error at start, not
            // at the first device.
            rt.block_on(ferry_relay::CloudStore::session(&store))
                .map_err(|e| {
                    Failure::failed("StoreError", format!("DynamoDB table {table}: {e}"))
                })?;
            run(&rt, listener, store, config, announce);
        }
        _ => {
            return Err(invalid(format!(
                "--store {}: give embedded:DIR{}",
                args.store,
                if cfg!(feature = "dynamo") {
                    " or dynamodb:TABLE"
                } else {
                    ""
                }
            )));
        }
    }
    println!("stopped");
    Ok(())
}

/// Says where it listens, then serves `store` until SIGTERM or SIGINT.
fn run(
    rt: &tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    store: impl ferry_relay::CloudStore,
    config: RelayConfig,
    announce: impl FnOnce(),
) {
    announce();
    rt.block_on(ferry_relay::serve(
        listener,
        store,
        config,
        shutdown_signal(),
    ));
}

/// Resolves at SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

/// Structured logs on stderr; `RUST_LOG` filters them (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

impl RelayArgs {
    /// The transport to the relay for `replica`: its URL, token and CA (for wss).
    fn transport(&self, replica: &str) -> Result<WsTransport, Failure> {
        let invalid = |e: ferry::ws::ConfigError| Failure::invalid(e.to_string());
        let (url, token) = (self.url.as_deref(), self.token.as_deref());
        let url = url.ok_or_else(|| Failure::invalid("no --relay URL".into()))?;
        let mut transport =
            WsTransport::new(url, token.unwrap_or_default(), replica).map_err(invalid)?;
        if let Some(ca) = &self.relay_ca {
            transport = transport.with_ca_file(ca).map_err(invalid)?;
        }
        Ok(transport)
    }
}

/// Attaches the relay transport: the relay's URL with its token (and CA, for wss).
pub fn attach(db: &Db, relay: &RelayArgs, options: SyncOptions) -> Result<(), Failure> {
    let transport = relay.transport(&db.status().replica)?;
    Ok(db.attach(transport, options)?)
}

/// `ferry cloud create|get|update|remove|find --relay URL --token T`: cloud mode through
/// the relay, writing as a service (the token's role decides what it may write).
#[cfg(feature = "dynamo")]
pub fn cloud_command(
    cli: &Cli,
    schema: &ferry::Schema,
    command: &crate::CloudCommand,
    relay: &RelayArgs,
) -> Result<(), Failure> {
    let replica = crate::cloud::cloud_replica_id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed("RuntimeError", e.to_string()))?;
    let transport = relay.transport(&replica)?;
    let schema = std::sync::Arc::new(schema.clone());
    let crypto = crate::ops::crypto(cli)?;
    let connect = ferry::service::Service::connect(transport, schema, &replica, crypto);
    let service = rt.block_on(connect)?;
    crate::cloud::run_cloud(cli, &rt, &service, command)
}

impl From<ferry::service::Error> for Failure {
    fn from(e: ferry::service::Error) -> Failure {
        use ferry::replication::TransportError;
        use ferry::service::Error;
        let exit = match &e {
            Error::Argument(_) | Error::Schema(_) => crate::EXIT_INVALID,
            // Refusals for good: a scope or row not granted, credentials refused.
            Error::Refused { .. }
            | Error::Transport(TransportError::Rejected(_) | TransportError::Unauthorized(_)) => {
                crate::EXIT_REFUSED
            }
            Error::Transport(_) => crate::EXIT_FAILED,
        };
        Failure {
            code: e.code(),
            message: e.to_string().replace('\n', " "),
            exit,
        }
    }
}
