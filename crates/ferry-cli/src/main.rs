//! The `ferry` command: schema checks, data operations, seed loading, export and the demo.
//!
//! Exit status: 0 success; 1 when the data said no (not found, condition failed, unique
//! violation, several matches); 2 for invalid input (usage, schema, validation, a write the
//! model's control forbids, an oversize item); 3 for anything else.

#[cfg(feature = "dynamo")]
mod cloud;
mod demo;
mod ops;
#[cfg(feature = "relay")]
mod relay;
mod serve;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when the data refused the operation.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Exit status for invalid input.
pub(crate) const EXIT_INVALID: u8 = 2;
/// Exit status for any other failure.
pub(crate) const EXIT_FAILED: u8 = 3;

/// Ferry: an embedded, DynamoDB-compatible database for devices.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    /// The database directory.
    #[arg(long, global = true, env = "FERRY_DB")]
    db: Option<PathBuf>,
    /// The OneTable schema (JSON or JSON5); needed to create a database or change its schema.
    #[arg(long, global = true, env = "FERRY_SCHEMA")]
    schema: Option<PathBuf>,
    /// This device's id (sets the context property deviceId).
    #[arg(long, global = true)]
    device: Option<String>,
    /// A context property, KEY=VALUE (VALUE is JSON if it parses as JSON, else text).
    #[arg(long = "context", global = true, value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Include hidden fields in output.
    #[arg(long, global = true)]
    hidden: bool,
    /// The key of `crypt` fields: a JSON file in OneTable's format,
    /// {"primary": {"cipher": "aes-256-gcm", "password": "..."}}.
    #[arg(long, global = true, env = "FERRY_CRYPTO", value_name = "FILE")]
    crypto: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ferry at work on the example schema: a device database, then two devices and a
    /// cloud syncing (an offline period, a conflict); exits non-zero unless all converged.
    Demo {
        /// Keep the databases in DIR (else a temporary directory).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Sync through this DynamoDB table (created if missing) instead of the in-memory
        /// reference cloud.
        #[cfg(feature = "dynamo")]
        #[arg(long, value_name = "TABLE")]
        dynamodb: Option<String>,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Schema commands.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Create an item (fails if it exists). JSON arguments may be `@FILE` or `-` (stdin).
    Create { model: String, json: String },
    /// Read an item by key.
    Get { model: String, json: String },
    /// Update an item.
    Update {
        model: String,
        json: String,
        #[command(flatten)]
        how: UpdateArgs,
    },
    /// Remove an item by key, or every match with --many.
    Remove {
        model: String,
        json: String,
        /// Remove every item a find with these properties matches.
        #[arg(long)]
        many: bool,
    },
    /// Find items by key condition and filters.
    Find {
        model: String,
        json: Option<String>,
        /// A where expression: '${status} = {active}'.
        #[arg(long = "where")]
        condition: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Load seed data: a JSON file {"Model": [items]}.
    Load { file: PathBuf },
    /// Print every item as {"Model": [items]}.
    Export,
    /// Replication state as one line of JSON: pending changes, cursors, conflicts, errors.
    Status,
    /// The conflict log (last-writer-wins losers), as JSON.
    Conflicts {
        /// Most records to print.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Cloud changes this device could not apply, as JSON.
    Quarantine {
        /// Most records to print.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Send everything pending and pull every scope; exit 0 only when all is done.
    Sync {
        #[command(flatten)]
        link: LinkArgs,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Keep the database in sync until SIGTERM or SIGINT, printing status changes.
    Agent {
        #[command(flatten)]
        link: LinkArgs,
        /// Seconds between pulls while idle.
        #[arg(long, default_value_t = 5.0)]
        poll: f64,
    },
    /// DynamoDB tables from the schema.
    #[cfg(feature = "dynamo")]
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
    /// The relay devices connect to.
    #[cfg(feature = "relay")]
    Relay {
        #[command(subcommand)]
        command: RelayCommand,
    },
    /// The cloud side of a DynamoDB table.
    #[cfg(feature = "dynamo")]
    Cloud {
        #[command(subcommand)]
        command: CloudCommand,
    },
}

#[cfg(feature = "relay")]
#[derive(Subcommand)]
enum RelayCommand {
    /// Serve devices over WebSocket until SIGTERM or SIGINT; `GET /metrics` on the same
    /// address. Prints `listening on ADDR` once it accepts.
    Serve(relay::ServeArgs),
    /// Print a signed, expiring token for a device, or with --service for a cloud service
    /// that writes the models the cloud owns (the relay checks it in the handshake).
    Token {
        /// The relay's signing secret: a file of at least 32 bytes.
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
        /// The device's id.
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        device: Option<String>,
        /// A cloud service's name: the token writes as the cloud ('down' and 'both' models).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// A scope the holder may read and write (repeat it); none: its own and `*`.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// How long the token is valid: 30d, 12h, 90s.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30d")]
        ttl: std::time::Duration,
    },
}

#[cfg(feature = "dynamo")]
#[derive(Subcommand)]
enum CloudCommand {
    /// Follow the table's stream until SIGTERM or SIGINT: writes by plain SDK or OneTable
    /// apps (put, update, delete) get versions so that they reach the devices.
    Follow {
        #[command(flatten)]
        at: TableArgs,
    },
    /// Create an item in the table (fails if it exists), as a replica devices hear from.
    Create {
        model: String,
        json: String,
        #[command(flatten)]
        at: TableArgs,
    },
    /// Read an item of the table by key.
    Get {
        model: String,
        json: String,
        #[command(flatten)]
        at: TableArgs,
    },
    /// Update an item of the table.
    Update {
        model: String,
        json: String,
        #[command(flatten)]
        how: UpdateArgs,
        #[command(flatten)]
        at: TableArgs,
    },
    /// Remove an item of the table by key (devices remove it too).
    Remove {
        model: String,
        json: String,
        #[command(flatten)]
        at: TableArgs,
    },
    /// Find items of the table by key condition and filters.
    Find {
        model: String,
        json: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        at: TableArgs,
    },
}

/// The cloud a cloud command works on: a DynamoDB table, or the cloud behind a relay.
#[cfg(feature = "dynamo")]
#[derive(clap::Args)]
struct TableArgs {
    /// The table's name (or --relay, with a service token).
    #[arg(long, required_unless_present = "relay", conflicts_with = "relay")]
    table: Option<String>,
    #[command(flatten)]
    relay: RelayArgs,
    #[command(flatten)]
    aws: AwsArgs,
}

#[cfg(feature = "dynamo")]
impl TableArgs {
    /// The table, for a command that needs one.
    fn table(&self) -> Result<&str, Failure> {
        (self.table.as_deref())
            .ok_or_else(|| Failure::invalid("this command needs --table TABLE".into()))
    }
}

#[cfg(feature = "dynamo")]
impl CloudCommand {
    /// Where the command works.
    fn at(&self) -> &TableArgs {
        match self {
            CloudCommand::Follow { at }
            | CloudCommand::Create { at, .. }
            | CloudCommand::Get { at, .. }
            | CloudCommand::Update { at, .. }
            | CloudCommand::Remove { at, .. }
            | CloudCommand::Find { at, .. } => at,
        }
    }
}

/// Which page of a find (device and cloud alike).
#[derive(clap::Args)]
struct PageArgs {
    /// Query this secondary index.
    #[arg(long)]
    index: Option<String>,
    /// Most items to return.
    #[arg(long)]
    limit: Option<usize>,
    /// The cursor a previous find printed as next.
    #[arg(long)]
    next: Option<String>,
    /// Descending order.
    #[arg(long)]
    reverse: bool,
}

/// How an update changes its item besides the properties given (device and cloud alike).
#[derive(clap::Args)]
struct UpdateArgs {
    /// Create the item if it does not exist.
    #[arg(long)]
    upsert: bool,
    /// Fields to set to expressions, as a JSON object: '{"balance": "${balance} + {10}"}'.
    #[arg(long)]
    set: Option<String>,
    /// Numbers to add or set values to union, as a JSON object.
    #[arg(long)]
    add: Option<String>,
    /// Fields to remove, as a JSON array.
    #[arg(long)]
    remove: Option<String>,
}

impl UpdateArgs {
    /// The update operations the options give.
    fn ops(&self) -> Result<ferry::UpdateOps, Failure> {
        Ok(ferry::UpdateOps {
            set: ops::parse_object(self.set.as_deref(), "--set")?,
            add: ops::parse_object(self.add.as_deref(), "--add")?,
            remove: ops::parse_list(self.remove.as_deref())?,
            ..ferry::UpdateOps::default()
        })
    }
}

/// Where `sync` and `agent` reach the cloud.
#[derive(clap::Args)]
struct LinkArgs {
    /// Sync straight with this DynamoDB table.
    #[arg(long, value_name = "TABLE", conflicts_with = "relay")]
    dynamodb: Option<String>,
    #[command(flatten)]
    relay: RelayArgs,
    #[command(flatten)]
    aws: AwsArgs,
}

/// How a command reaches Ferry's relay.
#[derive(clap::Args)]
struct RelayArgs {
    /// Go through Ferry's relay at this URL (ws://HOST:PORT or wss://HOST).
    #[arg(long = "relay", id = "relay", value_name = "URL", requires = "token")]
    url: Option<String>,
    /// The token the relay's operator issued (`ferry relay token`: a device's, or a
    /// service's for `ferry cloud`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For wss: trust the certificates in this PEM file too (a private CA).
    #[arg(long, value_name = "FILE")]
    relay_ca: Option<PathBuf>,
}

/// How to reach DynamoDB; credentials come the usual AWS ways (environment, profile).
#[derive(clap::Args, Clone)]
struct AwsArgs {
    /// An endpoint URL, for local servers (DynamoDB Local).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The AWS region (else the environment's or profile's).
    #[arg(long)]
    region: Option<String>,
}

impl LinkArgs {
    #[cfg(feature = "dynamo")]
    fn endpoint(&self) -> ferry::dynamo::Endpoint {
        self.aws.endpoint()
    }
}

impl AwsArgs {
    #[cfg(feature = "dynamo")]
    fn endpoint(&self) -> ferry::dynamo::Endpoint {
        ferry::dynamo::Endpoint {
            url: self.endpoint.clone(),
            region: self.region.clone(),
        }
    }
}

#[cfg(feature = "dynamo")]
#[derive(Subcommand)]
enum TableCommand {
    /// Create the table from the schema (or check that an existing one matches).
    Create {
        /// The table's name.
        #[arg(long)]
        table: String,
        #[command(flatten)]
        aws: AwsArgs,
        /// How long tombstones live (a device offline longer resyncs): 30d, 12h, 90s.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30d")]
        horizon: std::time::Duration,
        /// How late a write may become visible in the change feed (W).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        window: std::time::Duration,
        /// No stream: no `ferry cloud follow` will run on this table.
        #[arg(long)]
        no_stream: bool,
    },
    /// Check that the table matches the schema: a line per difference, exit 1 if any.
    Check {
        /// The table's name.
        #[arg(long)]
        table: String,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Validate a schema and print a summary of its models and indexes.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.code.is_empty() {
                eprintln!("{}: {}", failure.code, failure.message);
            }
            ExitCode::from(failure.exit)
        }
    }
}

/// The cloud `ferry demo` syncs with.
fn demo_cloud(cli: &Cli, aws: &AwsArgs) -> demo::DemoCloud {
    let _ = aws;
    match &cli.command {
        #[cfg(feature = "dynamo")]
        Command::Demo {
            dynamodb: Some(table),
            ..
        } => demo::DemoCloud::Dynamo {
            table: table.clone(),
            endpoint: aws.endpoint(),
        },
        _ => demo::DemoCloud::Local,
    }
}

/// The schema of a cloud command: the database's when `--db` is given, else `--schema`.
#[cfg(any(feature = "dynamo", feature = "relay"))]
fn table_schema(cli: &Cli) -> Result<ferry::Schema, Failure> {
    match (&cli.db, &cli.schema) {
        (Some(_), _) => Ok(ops::open(cli)?.schema().clone()),
        (None, Some(path)) => Ok(ferry::Schema::from_path(path)?),
        (None, None) => Err(Failure::invalid(
            "no schema: give --schema FILE (or set FERRY_SCHEMA), or --db DIR".into(),
        )),
    }
}

/// `ferry table ...`.
#[cfg(feature = "dynamo")]
fn table(cli: &Cli, command: &TableCommand) -> Result<(), Failure> {
    let schema = table_schema(cli)?;
    match command {
        TableCommand::Create {
            table,
            aws,
            horizon,
            window,
            no_stream,
        } => {
            let settings = ferry::dynamo::Settings {
                horizon_ms: horizon.as_millis() as u64,
                window_ms: window.as_millis() as u64,
            };
            let stream = match no_stream {
                true => ferry::dynamo::Stream::Off,
                false => ferry::dynamo::Stream::ForFollower,
            };
            cloud::create(&schema, table, &aws.endpoint(), settings, stream)
        }
        TableCommand::Check { table, aws } => cloud::check(&schema, table, &aws.endpoint()),
    }
}

/// A failure as the command reports it: code, one-line message and exit status.
struct Failure {
    code: &'static str,
    message: String,
    exit: u8,
}

impl From<ferry::Error> for Failure {
    fn from(e: ferry::Error) -> Failure {
        let exit = match e.kind() {
            ferry::ErrorKind::Refused => EXIT_REFUSED,
            ferry::ErrorKind::Invalid => EXIT_INVALID,
            _ => EXIT_FAILED,
        };
        Failure {
            code: e.code(),
            message: e.to_string().replace('\n', " "),
            exit,
        }
    }
}

impl From<ferry::schema::Error> for Failure {
    fn from(e: ferry::schema::Error) -> Failure {
        ferry::Error::from(e).into()
    }
}

impl Failure {
    fn invalid(message: String) -> Failure {
        Failure {
            code: "ArgumentError",
            message,
            exit: EXIT_INVALID,
        }
    }

    /// A failure whose message is already printed (an agent's answer): only its status.
    fn printed(exit: u8) -> Failure {
        Failure {
            code: "",
            message: String::new(),
            exit,
        }
    }

    fn failed(code: &'static str, message: String) -> Failure {
        Failure {
            code,
            message,
            exit: EXIT_FAILED,
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Demo { keep, aws, .. } => {
            let cloud = demo_cloud(&cli, aws);
            demo::run(keep.as_deref(), cloud)
                .map_err(|e| Failure::failed("DemoError", format!("{e:#}")))
        }
        Command::Schema {
            command: SchemaCommand::Check { file },
        } => ops::schema_check(file),
        #[cfg(feature = "dynamo")]
        Command::Table { command } => table(&cli, command),
        #[cfg(feature = "relay")]
        Command::Relay {
            command: RelayCommand::Serve(args),
        } => relay::serve(&cli, args),
        #[cfg(feature = "relay")]
        Command::Relay {
            command:
                RelayCommand::Token {
                    secret_file,
                    device,
                    service,
                    scopes,
                    ttl,
                },
        } => {
            use ferry::replication::Role;
            let invalid = |e: ferry_relay::TokenError| Failure::invalid(e.to_string());
            let secret = ferry_relay::Secret::from_file(secret_file).map_err(invalid)?;
            let scopes = scopes.iter().cloned().collect();
            let (role, name) = match (device, service) {
                (_, Some(service)) => (Role::Service, service),
                (Some(device), None) => (Role::Device, device),
                (None, None) => return Err(Failure::invalid("give --device or --service".into())),
            };
            let token = (secret.sign_as(role, name, scopes, ttl.as_secs())).map_err(invalid)?;
            println!("{token}");
            Ok(())
        }
        #[cfg(feature = "dynamo")]
        Command::Cloud {
            command: CloudCommand::Follow { at },
        } => cloud::follow(&table_schema(&cli)?, at.table()?, &at.aws.endpoint()),
        #[cfg(feature = "dynamo")]
        Command::Cloud { command } => cloud::replica_command(&cli, &table_schema(&cli)?, command),
        _ => ops::run(&cli),
    }
}
