//! While an agent runs on a database, the other `ferry --db DIR` commands reach the
//! database through it: the agent serves a Unix socket in DIR (`agent.sock`), one command
//! per connection, and runs it on its open database. Only one process may hold a database,
//! so without this a second process could only fail.
//!
//! The client sends its arguments with `-` and `@FILE` arguments already read and paths
//! made absolute, so the agent reads nothing of the client's; the answer is what the
//! command printed and its exit status.
//!
//! The socket is its owner's alone (mode 0600, set before it appears under its name: the
//! system checks it at every connect), since a command runs with the agent's rights. A
//! request is bounded in bytes and in time, and so are the connections served at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use clap::Parser;
use ferry::Db;
use serde::{Deserialize, Serialize};

use crate::{Cli, Command, EXIT_INVALID, Failure};

/// The socket's file name in the database directory.
pub const SOCKET: &str = "agent.sock";
/// How long the agent waits for a connected client's whole request (a client that
/// trickles bytes gets no longer).
const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// The largest request: a command line with the files its `@FILE` arguments name.
const REQUEST_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Connections served at once; more are told the agent is busy.
const CONNECTIONS_MAX: usize = 16;

/// One command for the agent.
#[derive(Serialize, Deserialize)]
struct Request {
    args: Vec<String>,
}

/// What the command printed, and its exit status.
#[derive(Serialize, Deserialize)]
struct Answer {
    exit: u8,
    stdout: String,
    stderr: String,
}

/// The agent's socket, removed when the agent stops.
pub struct Server {
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Server {
    /// Serves `db` on `dir/agent.sock` (replacing a socket a killed agent left).
    pub fn start(dir: &Path, db: Db) -> Result<Server, Failure> {
        let path = dir.join(SOCKET);
        let failed = |e: std::io::Error| {
            Failure::failed(
                "AgentError",
                format!("cannot serve {}: {e}", path.display()),
            )
        };
        // Bound under a name no client looks for, made its owner's, then renamed into
        // place: no client ever meets it open to others.
        let private = dir.join(format!(".{SOCKET}.{}", std::process::id()));
        let _ = std::fs::remove_file(&private);
        let listener = UnixListener::bind(&private).map_err(failed)?;
        use std::os::unix::fs::PermissionsExt;
        let owner_only = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&private, owner_only)
            .and_then(|()| std::fs::rename(&private, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&private);
                failed(e)
            })?;
        let serving = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("ferry-agent-socket".into())
            .spawn(move || {
                for mut stream in listener.incoming().flatten() {
                    let (db, serving) = (db.clone(), serving.clone());
                    if serving.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
                        serving.fetch_sub(1, Ordering::AcqRel);
                        let busy =
                            "AgentError: the agent serves as many commands as it may: try again\n";
                        answer(&mut stream, &refusal(busy.into()));
                        discard_request(&stream);
                        continue;
                    }
                    let done = serving.clone();
                    let spawned = std::thread::Builder::new().spawn(move || {
                        serve(&db, stream);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                    if spawned.is_err() {
                        // No thread for it: the client sees its connection close.
                        serving.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })
            .map_err(|e| {
                Failure::failed("AgentError", format!("cannot start the socket thread: {e}"))
            })?;
        Ok(Server { path })
    }
}

fn serve(db: &Db, mut stream: UnixStream) {
    // A client that connects and says nothing, or trickles, does not hold a thread.
    let reply = match read_request(&stream, REQUEST_WAIT, REQUEST_BYTES_MAX) {
        Ok(args) => run(db, args),
        Err(why) => refusal(format!("AgentError: {why}\n")),
    };
    answer(&mut stream, &reply);
}

/// The command a client sends: one line of JSON, within `wait` however it trickles, and
/// within `bytes_max`.
fn read_request(
    stream: &UnixStream,
    wait: std::time::Duration,
    bytes_max: u64,
) -> Result<Vec<String>, String> {
    let reader = Deadline {
        inner: stream,
        deadline: std::time::Instant::now() + wait,
    };
    let mut line = String::new();
    let read = BufReader::new(reader.take(bytes_max)).read_line(&mut line);
    match read {
        Err(e) => Err(format!("the request did not arrive: {e}")),
        Ok(_) if !line.ends_with('\n') => Err(format!(
            "a request ends with a newline within {bytes_max} bytes"
        )),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => Ok(request.args),
            Err(e) => Err(format!("a malformed request: {e}")),
        },
    }
}

/// Reads a little of a request that will not be served, briefly, before the socket
/// closes: closing with it unread would reset the connection before the client reads the
/// answer.
fn discard_request(stream: &UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    let _ = std::io::copy(&mut stream.take(64 * 1024), &mut std::io::sink());
}

/// An answer that runs nothing: exit status 2 (invalid input) with `stderr`.
fn refusal(stderr: String) -> Answer {
    Answer {
        exit: EXIT_INVALID,
        stdout: String::new(),
        stderr,
    }
}

fn answer(stream: &mut UnixStream, reply: &Answer) {
    let _ = stream.set_write_timeout(Some(REQUEST_WAIT));
    if let Ok(text) = serde_json::to_string(reply) {
        let _ = writeln!(stream, "{text}");
    }
}

/// A socket's reader that fails once `deadline` passes, however the bytes trickle in.
struct Deadline<'s> {
    inner: &'s UnixStream,
    deadline: std::time::Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.inner.set_read_timeout(Some(left))?;
        self.inner.read(buf)
    }
}

/// Runs a command line on the agent's database, as the command would have on its own.
fn run(db: &Db, args: Vec<String>) -> Answer {
    let mut stdout = Vec::new();
    let result = match Cli::try_parse_from(args) {
        Ok(cli) => match &cli.command {
            Command::Demo { .. } | Command::Schema { .. } | Command::Agent { .. } => Err(
                Failure::invalid("this command does not run through an agent".into()),
            ),
            _ => crate::ops::run_on(db, &cli, &mut stdout),
        },
        Err(e) => Err(Failure::invalid(e.to_string().trim().replace('\n', " "))),
    };
    let (exit, stderr) = match result {
        Ok(()) => (0, String::new()),
        Err(failure) => (
            failure.exit,
            format!("{}: {}\n", failure.code, failure.message),
        ),
    };
    Answer {
        exit,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
    }
}

/// Sends this process's command to the agent serving `cli.db`; `locked` is the failure to
/// report when none does.
pub fn forward(cli: &Cli, locked: Failure) -> Result<(), Failure> {
    let dir = cli.db.clone().unwrap_or_default();
    let path = dir.join(SOCKET);
    let Ok(mut stream) = UnixStream::connect(&path) else {
        return Err(Failure {
            message: format!(
                "{}: no agent serves it ({} does not answer); stop the other process or run \
                 commands through `ferry --db {} agent`",
                locked.message,
                path.display(),
                dir.display()
            ),
            ..locked
        });
    };
    let request = Request {
        args: portable_args(cli)?,
    };
    let sent = serde_json::to_string(&request)
        .map_err(|e| Failure::failed("AgentError", e.to_string()))
        .and_then(|text| {
            writeln!(stream, "{text}").map_err(|e| Failure::failed("AgentError", e.to_string()))
        });
    sent?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| Failure::failed("AgentError", format!("the agent did not answer: {e}")))?;
    let answer: Answer = serde_json::from_str(&text).map_err(|e| {
        Failure::failed(
            "AgentError",
            format!("the agent's answer is malformed: {e}"),
        )
    })?;
    print!("{}", answer.stdout);
    eprint!("{}", answer.stderr);
    match answer.exit {
        0 => Ok(()),
        exit => Err(Failure::printed(exit)),
    }
}

/// This process's arguments with `-` and `@FILE` replaced by what they name and a loaded
/// file's path made absolute, so that they mean the same in the agent.
fn portable_args(cli: &Cli) -> Result<Vec<String>, Failure> {
    let load_file = match &cli.command {
        Command::Load { file } => Some(file.clone()),
        _ => None,
    };
    let mut args = Vec::new();
    for arg in std::env::args() {
        let arg = if arg == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| Failure::invalid(format!("cannot read stdin: {e}")))?
        } else if let Some(path) = arg.strip_prefix('@') {
            std::fs::read_to_string(path)
                .map_err(|e| Failure::invalid(format!("cannot read {path}: {e}")))?
        } else if load_file.as_deref() == Some(Path::new(&arg)) {
            std::path::absolute(&arg)
                .map_err(|e| Failure::invalid(format!("{arg}: {e}")))?
                .display()
                .to_string()
        } else {
            arg
        };
        args.push(arg);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A client that trickles gets its deadline, not a byte's timeout per byte; one that
    /// sends more than the bound is refused at the bound.
    #[test]
    fn a_request_is_bounded_in_time_however_it_trickles_and_in_bytes() {
        let (mut client, agent) = UnixStream::pair().unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..20 {
                if client.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let refused = read_request(&agent, Duration::from_millis(300), 1024).unwrap_err();
        assert!(refused.contains("did not arrive"), "{refused}");
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "{:?}",
            started.elapsed()
        );
        drop(agent);
        let _ = trickle.join();
        let (mut client, agent) = UnixStream::pair().unwrap();
        client.write_all(&[b'x'; 2048]).unwrap();
        let refused = read_request(&agent, Duration::from_secs(5), 1024).unwrap_err();
        assert!(refused.contains("within 1024 bytes"), "{refused}");
        let (mut client, agent) = UnixStream::pair().unwrap();
        client
            .write_all(b"{\"args\": [\"ferry\", \"status\"]}\n")
            .unwrap();
        let args = read_request(&agent, Duration::from_secs(5), 1024).unwrap();
        assert_eq!(args, ["ferry", "status"]);
    }
}
