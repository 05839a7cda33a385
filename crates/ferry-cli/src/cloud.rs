//! DynamoDB commands: `table create` and `table check`, and the direct transport that
//! `sync` and `agent` attach.

use std::sync::Arc;

use ferry::dynamo::{Dynamo, DynamoTransport, Endpoint, Settings, Table};
use ferry::{Attach, Db, Schema, SyncOptions};

use crate::{Cli, CloudCommand, EXIT_FAILED, EXIT_INVALID, EXIT_REFUSED, Failure};

impl From<ferry::dynamo::Error> for Failure {
    fn from(e: ferry::dynamo::Error) -> Failure {
        let exit = match &e {
            ferry::dynamo::Error::Argument(_) | ferry::dynamo::Error::Schema(_) => EXIT_INVALID,
            ferry::dynamo::Error::Table { .. } | ferry::dynamo::Error::Refused { .. } => {
                EXIT_REFUSED
            }
            _ => EXIT_FAILED,
        };
        Failure {
            code: e.code(),
            message: e.to_string().replace('\n', " "),
            exit,
        }
    }
}

/// A runtime for this command's calls, and a client made on it.
fn connect(endpoint: &Endpoint) -> Result<(tokio::runtime::Runtime, Dynamo), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed("RuntimeError", e.to_string()))?;
    let dynamo = rt.block_on(Dynamo::connect(endpoint));
    Ok((rt, dynamo))
}

/// `ferry table create`: creates the table from the schema (or checks an existing one),
/// with a line on stderr for each stage while it becomes active.
pub fn create(
    schema: &Schema,
    name: &str,
    endpoint: &Endpoint,
    settings: Settings,
    stream: ferry::dynamo::Stream,
) -> Result<(), Failure> {
    let (rt, dynamo) = connect(endpoint)?;
    let table = Table {
        dynamo: &dynamo,
        name,
        schema,
    };
    let spinner = indicatif::ProgressBar::new_spinner();
    let mut progress = |line: &str| {
        if spinner.is_hidden() {
            eprintln!("{line}");
        } else {
            spinner.set_message(line.to_string());
            spinner.tick();
        }
    };
    rt.block_on(table.create(settings, stream, &mut progress))?;
    spinner.finish_and_clear();
    // What the table has: an existing table keeps its own settings.
    let settings = rt.block_on(table.settings())?;
    println!(
        "{}",
        serde_json::json!({"table": name, "horizon_ms": settings.horizon_ms, "window_ms": settings.window_ms})
    );
    Ok(())
}

/// `ferry table check`: a line per difference and exit 1, or a line saying it matches.
pub fn check(schema: &Schema, name: &str, endpoint: &Endpoint) -> Result<(), Failure> {
    let (rt, dynamo) = connect(endpoint)?;
    let table = Table {
        dynamo: &dynamo,
        name,
        schema,
    };
    let differences = rt.block_on(table.check())?;
    for difference in &differences {
        println!("{difference}");
    }
    if differences.is_empty() {
        println!("table {name} matches the schema");
        return Ok(());
    }
    Err(Failure {
        code: "TableError",
        message: format!(
            "table {name} does not match the schema ({} differences)",
            differences.len()
        ),
        exit: EXIT_REFUSED,
    })
}

/// Attaches the direct transport to `table`, writing as this database's replica. A table
/// that is missing or refuses the credentials fails here, at once; a network that is down
/// does not (the driver retries).
pub fn attach(
    db: &Db,
    table: &str,
    endpoint: &Endpoint,
    options: SyncOptions,
) -> Result<(), Failure> {
    let (rt, dynamo) = connect(endpoint)?;
    let probe = Table {
        dynamo: &dynamo,
        name: table,
        schema: db.schema(),
    };
    match rt.block_on(probe.settings()) {
        Err(ferry::dynamo::Error::Call(failure)) if failure.retryable() => {}
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let replica = db.status().replica;
    let schema = Arc::new(db.schema().clone());
    let transport = DynamoTransport::new(endpoint.clone(), table, schema, &replica);
    Ok(db.attach(transport, options)?)
}

/// `ferry cloud follow`: adopts foreign writes until SIGTERM or SIGINT, a line for each.
pub fn follow(schema: &Schema, table: &str, endpoint: &Endpoint) -> Result<(), Failure> {
    let stop = crate::sync::stop_on_signal()?;
    let (rt, dynamo) = connect(endpoint)?;
    let id = cloud_replica_id();
    let writer = ferry::dynamo::Writer::new(dynamo, table, Arc::new(schema.clone()), &id);
    let follower = ferry::dynamo::Follower::new(writer);
    eprintln!("following table {table} as {id}");
    let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
    let mut report = |adopted: &ferry::dynamo::Adopted| match adopted {
        ferry::dynamo::Adopted::Put(what) => println!("adopted put {what}"),
        ferry::dynamo::Adopted::Delete(what) => println!("adopted delete {what}"),
        ferry::dynamo::Adopted::Skipped(why) => eprintln!("skipped a foreign write: {why}"),
        ferry::dynamo::Adopted::Retrying(why) => eprintln!("retrying: {why}"),
    };
    rt.block_on(follower.run(&stopped, &mut report))?;
    Ok(())
}

/// A replica id of its own for each cloud process, from the clock and the process id (this
/// binary has no other randomness).
pub(crate) fn cloud_replica_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let bits = nanos ^ (u128::from(std::process::id()) << 96);
    ferry::types::ReplicaId::from_random(bits).to_string()
}

/// `ferry cloud create|get|update|remove|find`: the table as a cloud replica, or the cloud
/// through a relay with a service token (`--relay URL --token T`), with the device
/// commands' arguments, output and exit statuses.
pub fn replica_command(cli: &Cli, schema: &Schema, command: &CloudCommand) -> Result<(), Failure> {
    let at = command.at();
    if let Some(url) = &at.relay.url {
        #[cfg(feature = "relay")]
        return {
            let _ = url;
            crate::relay::cloud_command(cli, schema, command, &at.relay)
        };
        #[cfg(not(feature = "relay"))]
        return Err(Failure::invalid(format!(
            "--relay {url}: this build has no relay"
        )));
    }
    let (rt, dynamo) = connect(&at.aws.endpoint())?;
    let writer = ferry::dynamo::Writer::new(
        dynamo,
        at.table()?,
        Arc::new(schema.clone()),
        &cloud_replica_id(),
    );
    let crypto = crate::ops::crypto(cli)?;
    let service = rt.block_on(ferry::dynamo::DynamoRows::cloud_replica(writer, crypto))?;
    run_cloud(cli, &rt, &service, command)
}

/// Runs a cloud command on `service` (DynamoDB's rows, or the relay's) and prints its
/// answer as the device commands do; each call blocks on `rt` until the cloud answers.
pub(crate) fn run_cloud<R: ferry::service::Rows>(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    service: &ferry::service::Service<R>,
    command: &CloudCommand,
) -> Result<(), Failure>
where
    Failure: From<R::Error>,
{
    use crate::ops::{parse, print};
    let out = &mut std::io::stdout().lock();
    match command {
        CloudCommand::Follow { .. } => {}
        CloudCommand::Create { model, json, .. } => {
            let item = rt.block_on(service.create(model, &parse(json, "item")?))?;
            print(out, &item)
        }
        CloudCommand::Get { model, json, .. } => {
            match rt.block_on(service.get(model, &parse(json, "key")?, cli.hidden))? {
                Some(item) => print(out, &item),
                None => return Err(crate::ops::not_found(model, json)),
            }
        }
        CloudCommand::Update {
            model, json, how, ..
        } => {
            let (item, ops) = (parse(json, "item")?, how.ops()?);
            print(
                out,
                &rt.block_on(service.update(model, &item, &ops, how.upsert))?,
            )
        }
        CloudCommand::Remove { model, json, .. } => {
            let removed = rt.block_on(service.remove(model, &parse(json, "key")?))?;
            let answer = serde_json::json!({ "removed": usize::from(removed.is_some()) });
            print(out, &answer)
        }
        CloudCommand::Find {
            model, json, page, ..
        } => {
            let props = crate::ops::find_props(json.as_deref())?;
            let options = ferry::service::CloudFind {
                index: page.index.as_deref(),
                limit: page.limit,
                next: page.next.as_deref(),
                reverse: page.reverse,
            };
            let found = rt.block_on(service.find(model, &props, &options))?;
            print(
                out,
                &serde_json::json!({ "items": found.items, "next": found.next }),
            )
        }
    }
    Ok(())
}
