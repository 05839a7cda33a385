//! The `ferry` command: schema checks, data operations, seed loading, export and the demo.
//!
//! Exit status: 0 success; 1 when the data said no (not found, condition failed, unique
//! violation, several matches); 2 for invalid input (usage, schema, validation, a write the
//! model's control forbids, an oversize item); 3 for anything else.

mod demo;
mod ops;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when the data refused the operation.
const EXIT_REFUSED: u8 = 1;
/// Exit status for invalid input.
const EXIT_INVALID: u8 = 2;
/// Exit status for any other failure.
const EXIT_FAILED: u8 = 3;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the local database at work on an example schema, in a temporary directory.
    Demo,
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
        /// Query this secondary index.
        #[arg(long)]
        index: Option<String>,
        /// A where expression: '${status} = {active}'.
        #[arg(long = "where")]
        condition: Option<String>,
        /// Most items to return.
        #[arg(long)]
        limit: Option<usize>,
        /// The cursor a previous find printed as next.
        #[arg(long)]
        next: Option<String>,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
    },
    /// Load seed data: a JSON file {"Model": [items]}.
    Load { file: PathBuf },
    /// Print every item as {"Model": [items]}.
    Export,
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
            eprintln!("{}: {}", failure.code, failure.message);
            ExitCode::from(failure.exit)
        }
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
        Command::Demo => demo::run().map_err(|e| Failure::failed("DemoError", format!("{e:#}"))),
        Command::Schema {
            command: SchemaCommand::Check { file },
        } => ops::schema_check(file),
        _ => ops::run(&cli),
    }
}
