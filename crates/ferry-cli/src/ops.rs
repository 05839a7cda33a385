//! The data commands: open the database from the global options and run one operation.

use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::Duration;

use ferry::{Config, Db, FindOptions, Schema, Write, WriteOptions};
use serde_json::{Map, Value as Json, json};

use crate::{Cli, Command, Failure, sync};

/// Items per transaction when loading seed data.
const LOAD_BATCH_ITEMS: usize = 100;

/// `ferry schema check FILE`: loads the schema and prints its models and indexes.
pub fn schema_check(file: &Path) -> Result<(), Failure> {
    let schema = Schema::from_path(file)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "schema {} is valid", file.display());
    for index in schema.indexes() {
        let sort = index
            .sort
            .as_deref()
            .map(|s| format!(", sort {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "index {} ({:?}): hash {}{sort}, project {:?}",
            index.name, index.kind, index.hash, index.project
        );
    }
    for model in schema.models() {
        let fields: Vec<&str> = model.fields.iter().map(|f| f.name.as_str()).collect();
        let control = &model.control;
        let _ = writeln!(
            out,
            "model {}: enable {:?}, sync {:?}; fields {}",
            model.name,
            control.enable,
            control.sync,
            fields.join(", ")
        );
    }
    Ok(())
}

/// Runs a data command: on the database, or through the agent that holds it.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    match open(cli) {
        Ok(db) => run_on(&db, cli, &mut std::io::stdout().lock()),
        Err(failure) if failure.code == LOCKED => crate::serve::forward(cli, failure),
        Err(failure) => Err(failure),
    }
}

/// The code of the failure to open a database another process holds.
pub const LOCKED: &str = "LockedError";

/// Runs a data command on `db`, writing what it prints to `out`.
pub fn run_on(db: &Db, cli: &Cli, out: &mut dyn std::io::Write) -> Result<(), Failure> {
    let hidden = cli.hidden;
    match &cli.command {
        Command::Create { model, json } => print(out, &db.create(model, parse(json, "item")?)?),
        Command::Get { model, json } => {
            let options = FindOptions {
                hidden,
                ..FindOptions::default()
            };
            match db.get_text(model, parse(json, "key")?, &options)? {
                Some(item) => {
                    let _ = writeln!(out, "{item}");
                }
                None => return Err(not_found(model, json)),
            }
        }
        Command::Update { model, json, how } => {
            let options = WriteOptions {
                upsert: how.upsert,
                ops: how.ops()?,
                hidden,
                ..WriteOptions::default()
            };
            print(out, &db.update(model, parse(json, "item")?, &options)?);
        }
        Command::Remove { model, json, many } => {
            let props = parse(json, "key")?;
            let removed = if *many {
                db.remove_many(model, props, &FindOptions::default())?
            } else {
                usize::from(db.remove(model, props, &WriteOptions::default())?.is_some())
            };
            print(out, &json!({ "removed": removed }));
        }
        Command::Find {
            model,
            json,
            condition,
            page,
        } => {
            let options = FindOptions {
                index: page.index.clone(),
                condition: condition.clone(),
                limit: page.limit,
                next: page.next.clone(),
                reverse: page.reverse,
                hidden,
                ..FindOptions::default()
            };
            let page = db.find_text(model, find_props(json.as_deref())?, &options)?;
            // The items' text as the database wrote it: no JSON value is built.
            let next = Json::from(page.next);
            let _ = writeln!(
                out,
                "{{\"items\":[{}],\"next\":{next}}}",
                page.items.join(",")
            );
        }
        Command::Load { file } => load(db, file, out)?,
        Command::Export => export(db, hidden, out)?,
        Command::Status => sync::status(db, out)?,
        Command::Conflicts { limit } => sync::conflicts(db, *limit, out)?,
        Command::Quarantine { limit } => sync::quarantine(db, *limit, out)?,
        Command::Sync { link, timeout } => {
            sync::sync(db, link, Duration::from_secs(*timeout), out)?
        }
        Command::Agent { link, poll } => {
            let dir = cli.db.as_deref().unwrap_or(std::path::Path::new("."));
            sync::agent(db, dir, link, Duration::from_secs_f64(*poll))?
        }
        #[cfg(feature = "dynamo")]
        Command::Table { .. } | Command::Cloud { .. } => {}
        #[cfg(feature = "relay")]
        Command::Relay { .. } => {}
        Command::Demo { .. } | Command::Schema { .. } => {}
    }
    Ok(())
}

pub(crate) fn open(cli: &Cli) -> Result<Db, Failure> {
    let dir = cli
        .db
        .as_ref()
        .ok_or_else(|| Failure::invalid("no database: give --db DIR or set FERRY_DB".into()))?;
    let mut config = Config::default();
    if let Some(path) = &cli.schema {
        config.schema = Some(Schema::from_path(path)?);
    }
    config.crypto = crypto(cli)?;
    if let Some(device) = &cli.device {
        config = config.context("deviceId", device.as_str());
    }
    for pair in &cli.context {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| Failure::invalid(format!("--context '{pair}' must be KEY=VALUE")))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_string()));
        config = config.context(name, value);
    }
    Db::open(dir, config).map_err(|e| match e.is_locked() {
        true => Failure {
            code: LOCKED,
            message: e.to_string(),
            exit: crate::EXIT_FAILED,
        },
        false => e.into(),
    })
}

/// The properties of a find: the JSON given, or none.
pub(crate) fn find_props(json: Option<&str>) -> Result<Json, Failure> {
    json.map_or(Ok(json!({})), |text| parse(text, "properties"))
}

/// A get that found nothing, as the device and cloud commands report it.
pub(crate) fn not_found(model: &str, key: &str) -> Failure {
    ferry::Error::NotFound {
        model: model.to_string(),
        key: key.to_string(),
    }
    .into()
}

/// The key of `crypt` fields, from `--crypto FILE` (OneTable's configuration, as JSON).
pub(crate) fn crypto(cli: &Cli) -> Result<Option<ferry::schema::Crypto>, Failure> {
    let Some(path) = &cli.crypto else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| Failure::invalid(format!("{} is not JSON: {e}", path.display())))?;
    ferry::schema::Crypto::from_json(&json)
        .map(Some)
        .map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))
}

/// Parses a JSON object argument; `@FILE` reads it from a file and `-` from stdin (for
/// items larger than a command line can hold).
pub(crate) fn parse(text: &str, what: &str) -> Result<Json, Failure> {
    let read = |result: std::io::Result<String>, from: &str| {
        result.map_err(|e| Failure::invalid(format!("cannot read the {what} from {from}: {e}")))
    };
    let owned;
    let text = if text == "-" {
        owned = read(std::io::read_to_string(std::io::stdin()), "stdin")?;
        owned.as_str()
    } else if let Some(path) = text.strip_prefix('@') {
        owned = read(std::fs::read_to_string(path), path)?;
        owned.as_str()
    } else {
        text
    };
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Failure::invalid(format!("the {what} is not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(Failure::invalid(format!(
            "the {what} must be a JSON object"
        )));
    }
    Ok(json)
}

pub(crate) fn parse_object(text: Option<&str>, option: &str) -> Result<Map<String, Json>, Failure> {
    match text {
        None => Ok(Map::new()),
        Some(text) => match parse(text, option)? {
            Json::Object(map) => Ok(map),
            _ => Ok(Map::new()),
        },
    }
}

pub(crate) fn parse_list(text: Option<&str>) -> Result<Vec<String>, Failure> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    serde_json::from_str(text).map_err(|e| {
        Failure::invalid(format!(
            "--remove '{text}' must be a JSON array of field names: {e}"
        ))
    })
}

pub(crate) fn print(out: &mut dyn std::io::Write, json: &Json) {
    let _ = writeln!(out, "{json}");
}

/// `ferry load FILE`: puts every item of `{Model: [items]}`, a transaction per batch.
fn load(db: &Db, file: &Path, out: &mut dyn std::io::Write) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", file.display())))?;
    let data: Map<String, Json> = serde_json::from_str(&text).map_err(|e| {
        Failure::invalid(format!(
            "{} must be a JSON object {{\"Model\": [items]}}: {e}",
            file.display()
        ))
    })?;
    let mut writes = Vec::new();
    for (model, items) in &data {
        let items = items.as_array().ok_or_else(|| {
            Failure::invalid(format!(
                "{}: '{model}' must be an array of items",
                file.display()
            ))
        })?;
        writes.extend(items.iter().map(|item| Write::Put {
            model: model.clone(),
            props: item.clone(),
        }));
    }
    let bar = indicatif::ProgressBar::new(writes.len() as u64);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for chunk in writes.chunks(LOAD_BATCH_ITEMS) {
        db.transaction(chunk)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    print(out, &json!({ "loaded": writes.len() }));
    Ok(())
}

/// `ferry export`: every item, grouped by model, as one JSON object.
fn export(db: &Db, hidden: bool, out: &mut dyn std::io::Write) -> Result<(), Failure> {
    let mut items_of: Map<String, Json> = Map::new();
    db.scan(None, hidden, |model, item| {
        if let Json::Array(items) = items_of
            .entry(model)
            .or_insert_with(|| Json::Array(Vec::new()))
        {
            items.push(item);
        }
        true
    })?;
    print(out, &Json::Object(items_of));
    Ok(())
}
