//! Replication commands: `status`, `conflicts` and `quarantine` (local, no network), and
//! `sync` and `agent` through a transport.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::{Db, Status};
use serde_json::json;

use crate::{EXIT_REFUSED, Failure, LinkArgs};

/// How often the agent looks for a status change to print.
const AGENT_TICK: Duration = Duration::from_millis(200);
/// How long a stopping agent waits for what is in flight.
const AGENT_DRAIN: Duration = Duration::from_secs(10);

/// `ferry status`: the replication state as one line of JSON.
pub fn status(db: &Db, out: &mut dyn Write) -> Result<(), Failure> {
    let _ = writeln!(out, "{}", json(&db.status())?);
    Ok(())
}

/// `ferry conflicts`: the conflict log, as a JSON array.
pub fn conflicts(db: &Db, limit: usize, out: &mut dyn Write) -> Result<(), Failure> {
    let _ = writeln!(out, "{}", json(&db.conflicts(limit)?)?);
    Ok(())
}

/// `ferry quarantine`: cloud changes this device could not apply, as a JSON array.
pub fn quarantine(db: &Db, limit: usize, out: &mut dyn Write) -> Result<(), Failure> {
    let _ = writeln!(out, "{}", json(&db.quarantine(limit)?)?);
    Ok(())
}

fn json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::failed("OutputError", e.to_string()))
}

/// `ferry sync`: sends everything pending and pulls every scope; fails naming what is left.
/// Through a running agent, its transport does it.
pub fn sync(
    db: &Db,
    link: &LinkArgs,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    if !db.status().attached {
        attach(db, link, None)?;
    }
    let result = db.sync(timeout);
    let status = db.status();
    match result {
        Ok(()) => {
            let _ = writeln!(
                out,
                "{}",
                json!({"synced": true, "pending": status.pending_changes, "cursors": status.cursors.len()})
            );
            Ok(())
        }
        Err(ferry::Error::SyncTimeout { pending }) => Err(Failure {
            code: "SyncTimeout",
            message: format!(
                "after {} s, {}{}",
                timeout.as_secs(),
                match pending {
                    0 => "every change is acknowledged but the pulls did not finish".to_string(),
                    _ => format!(
                        "{pending} changes ({} bytes) are not acknowledged",
                        status.pending_bytes
                    ),
                },
                status
                    .last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
            exit: EXIT_REFUSED,
        }),
        Err(e) => Err(e.into()),
    }
}

/// `ferry agent`: keeps the database in sync until SIGTERM or SIGINT, printing a status
/// line whenever the state changes; then finishes what is in flight and exits.
pub fn agent(db: &Db, dir: &Path, link: &LinkArgs, poll: Duration) -> Result<(), Failure> {
    if db.status().attached {
        return Err(Failure::invalid(
            "an agent already runs on this database".into(),
        ));
    }
    let stop = stop_on_signal()?;
    attach(db, link, Some(poll))?;
    // Other `ferry --db DIR` commands reach the database through this socket meanwhile.
    let _server = crate::serve::Server::start(dir, db.clone())?;
    let mut last = String::new();
    while !stop.load(Ordering::SeqCst) {
        let line = status_line(&db.status());
        if line != last {
            println!("{line}");
            last = line;
        }
        std::thread::sleep(AGENT_TICK);
    }
    // Offline is no failure: what did not leave stays in the outbox for the next run.
    let drained = db.sync(AGENT_DRAIN).is_ok();
    db.flush()?;
    println!(
        "stopped: {}",
        if drained {
            "everything acknowledged"
        } else {
            "changes left pending"
        }
    );
    Ok(())
}

/// A flag that SIGTERM or SIGINT raises.
pub fn stop_on_signal() -> Result<Arc<AtomicBool>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Failure::failed("SignalError", format!("cannot handle signals: {e}")))?;
    Ok(stop)
}

/// One line of what matters in `status`.
pub(crate) fn status_line(status: &Status) -> String {
    let mut line = format!(
        "{} pending={} bytes={} scopes={} conflicts={} quarantined={}",
        if status.connected {
            "connected"
        } else {
            "offline"
        },
        status.pending_changes,
        status.pending_bytes,
        status.cursors.len(),
        status.conflicts,
        status.quarantined,
    );
    if let Some(error) = &status.last_error {
        line.push_str(&format!(" error={error:?}"));
    }
    line
}

/// Attaches the transport `link` names, polling every `poll` when given.
fn attach(db: &Db, link: &LinkArgs, poll: Option<Duration>) -> Result<(), Failure> {
    let mut engine = ferry::EngineConfig::default();
    if let Some(poll) = poll {
        engine.poll_interval_ms = poll.as_millis() as u64;
    }
    let options = ferry::SyncOptions {
        engine,
        ..Default::default()
    };
    // A build without a transport uses neither.
    #[cfg(not(all(feature = "dynamo", feature = "relay")))]
    let _ = (db, &options);
    match (&link.dynamodb, &link.relay.url) {
        #[cfg(feature = "dynamo")]
        (Some(table), _) => crate::cloud::attach(db, table, &link.endpoint(), options),
        #[cfg(feature = "relay")]
        (_, Some(_)) => crate::relay::attach(db, &link.relay, options),
        (None, None) => Err(Failure::invalid(
            "no cloud to sync with: give --relay URL --token TOKEN, or --dynamodb TABLE".into(),
        )),
        #[allow(unreachable_patterns)]
        _ => Err(Failure::invalid(format!(
            "this ferry was built without {}",
            match link.dynamodb {
                Some(_) => "DynamoDB (feature dynamo)",
                None => "the relay transport (feature relay)",
            }
        ))),
    }
}
