//! The DynamoDB commands as a user runs them: real `ferry` processes against DynamoDB
//! Local, agents stopped by SIGTERM and killed by SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::dynamo::{SCHEMA, Via, endpoint, table_name};
use crate::relay::RelayProcess;
use crate::support::{Killed, ferry, ferry_bin};

over_both_transports!(
    the_cli_syncs_two_devices_and_reports_status,
    an_agent_delivers_cloud_changes_and_stops_cleanly_on_sigterm,
    a_killed_agent_restarts_and_loses_nothing_and_a_new_device_gets_all_of_a_large_scope,
    while_an_agent_runs_other_commands_go_through_it,
    an_agent_whose_clock_steps_receives_every_cloud_change,
);

/// A directory with the test schema and room for device databases, and the cloud its
/// devices sync with: a DynamoDB Local table, or a relay process.
pub struct Site {
    pub dir: tempfile::TempDir,
    table: String,
    endpoint: String,
    pub relay: Option<RelayProcess>,
}

impl Site {
    pub fn new(test: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema.json5"), SCHEMA).unwrap();
        Site {
            dir,
            table: table_name(test),
            endpoint: endpoint().url.unwrap(),
            relay: None,
        }
    }

    /// A site whose devices reach the cloud `via`; its table (for DynamoDB) created.
    pub fn over(via: Via, test: &str) -> Site {
        let mut site = Site::new(test);
        match via {
            Via::Dynamo => assert_eq!(site.create_table(&[]).0, 0),
            Via::Relay => site.relay = Some(RelayProcess::start(&[])),
            other => panic!("a CLI site runs over DynamoDB or the relay, not {other:?}"),
        }
        site
    }

    /// How device `db` reaches the cloud, as `sync` and `agent` arguments.
    fn link_args(&self, db: &str) -> Vec<String> {
        match &self.relay {
            Some(relay) => vec![
                "--relay".into(),
                relay.url(),
                "--token".into(),
                relay.token(db, &[]),
            ],
            None => vec![
                "--dynamodb".into(),
                self.table.clone(),
                "--endpoint".into(),
                self.endpoint.clone(),
            ],
        }
    }

    pub fn schema(&self) -> String {
        self.dir.path().join("schema.json5").display().to_string()
    }

    pub fn db(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ferry table create` for this site's table.
    fn create_table(&self, extra: &[&str]) -> (i32, String, String) {
        let schema = self.schema();
        let mut args = vec![
            "table",
            "create",
            "--schema",
            &schema,
            "--table",
            &self.table,
        ];
        args.extend(["--endpoint", &self.endpoint]);
        args.extend(extra);
        ferry(&args)
    }

    /// `ferry cloud ARGS...` as the cloud's own service: on the table, or through the
    /// relay with a service token.
    pub fn cloud(&self, args: &[&str]) -> (i32, String, String) {
        let schema = self.schema();
        let mut all = vec!["--schema", &schema, "cloud"];
        all.extend(args);
        let link = match &self.relay {
            Some(relay) => {
                let grant = ferry::replication::Grant::service("ops", None);
                vec![
                    "--relay".into(),
                    relay.url(),
                    "--token".into(),
                    relay.token_for(&grant),
                ]
            }
            None => vec![
                "--table".into(),
                self.table.clone(),
                "--endpoint".into(),
                self.endpoint.clone(),
            ],
        };
        all.extend(link.iter().map(String::as_str));
        ferry(&all)
    }

    /// `ferry --db DIR ARGS...` with the cloud's link appended to sync.
    pub fn run(&self, db: &str, args: &[&str]) -> (i32, String, String) {
        let dir = self.db(db).display().to_string();
        let schema = self.schema();
        let mut all = vec!["--db", &dir, "--schema", &schema, "--device", db];
        all.extend(args);
        let link = self.link_args(db);
        if matches!(args.first(), Some(&"sync")) {
            all.extend(link.iter().map(String::as_str));
        }
        ferry(&all)
    }

    /// `ferry --db DIR agent` in the background, its stdout lines on a channel.
    pub fn agent(&self, db: &str) -> Agent {
        self.agent_with(db, &[])
    }

    /// [`Site::agent`] with `envs` added to its environment.
    pub fn agent_with(&self, db: &str, envs: &[(&str, String)]) -> Agent {
        let mut child = Command::new(ferry_bin())
            .envs(envs.iter().map(|(key, value)| (key, value)))
            .arg("--db")
            .arg(self.db(db))
            .args(["--schema", &self.schema(), "--device", db, "agent"])
            .args(self.link_args(db))
            .args(["--poll", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        Agent {
            process: Killed(child),
            lines,
        }
    }
}

/// A child's stdout, a line at a time on a channel, read by a thread of its own.
fn lines_of(stdout: std::process::ChildStdout) -> Receiver<String> {
    let (send, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

pub struct Agent {
    process: Killed,
    lines: Receiver<String>,
}

impl Agent {
    /// Waits for a status line that `wanted` accepts; panics naming the last one seen.
    pub fn wait_for(&self, wanted: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => last = line,
                Err(_) => break,
            }
        }
        panic!("no such status line within {timeout:?}; last: {last}");
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(mut self) -> i32 {
        crate::support::terminate(&mut self.process.0)
    }
}

fn json_line(text: &str) -> Json {
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn count_items(site: &Site, db: &str, model: &str) -> usize {
    let (code, out, err) = site.run(db, &["export"]);
    assert_eq!(code, 0, "{err}");
    json_line(&out)[model].as_array().map_or(0, Vec::len)
}

/// A clock a device reads through libfaketime: its offset from the true time is a file
/// the test rewrites (the library reads it again at most once a second). Timers stay on
/// the true monotonic clock, as they do when NTP steps a real device's clock.
struct SteppedClock {
    file: PathBuf,
    library: String,
}

impl SteppedClock {
    fn new(dir: &std::path::Path, offset: &str) -> SteppedClock {
        let library = std::env::var("FERRY_TEST_FAKETIME").expect(
            "FERRY_TEST_FAKETIME is not set: run the suite with `cargo xtask test`, which finds \
             or unpacks Debian's libfaketime, or point it at libfaketime.so.1",
        );
        let clock = SteppedClock {
            file: dir.join("faketime"),
            library,
        };
        clock.step(offset);
        clock
    }

    /// Sets the offset (`-1d`, `+0`, `+365d`) and waits out the library's cache.
    fn step(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    }

    /// The environment that puts a process on this clock.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.library.clone()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ]
    }
}

/// A gateway without a real-time clock: the agent boots a day slow, syncs, then NTP steps
/// its clock forward to the true time, later back a year and forward again. Every change
/// the cloud writes (at the true time) after each step still reaches it, and what it
/// writes reaches the cloud.
fn an_agent_whose_clock_steps_receives_every_cloud_change(via: Via) {
    let site = Site::over(via, "cli-clock");
    let clock = SteppedClock::new(site.dir.path(), "-1d");
    let agent = site.agent_with("b", &clock.env());
    agent.wait_for(|l| l.starts_with("connected"), Duration::from_secs(20));
    let config = |name: &str| {
        site.run(
            "b",
            &["get", "Config", &json!({ "name": name }).to_string()],
        )
    };
    let arrives = |name: &str| {
        let (code, _, err) = site.cloud(&[
            "create",
            "Config",
            &json!({ "name": name, "value": "v" }).to_string(),
        ]);
        assert_eq!(code, 0, "the cloud writes {name}: {err}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while config(name).0 != 0 {
            assert!(
                Instant::now() < deadline,
                "{name}, written by the cloud, never reached the agent"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    arrives("slow");
    let (code, _, err) = site.run("b", &["create", "Shared", r#"{"id":"slow","name":"x"}"#]);
    assert_eq!(code, 0, "{err}");

    clock.step("+0");
    arrives("stepped-forward");
    clock.step("-365d");
    arrives("stepped-back");
    let (code, _, err) = site.run("b", &["create", "Shared", r#"{"id":"back","name":"y"}"#]);
    assert_eq!(code, 0, "{err}");
    clock.step("+0");
    arrives("stepped-forward-again");
    let (code, out, err) = site.run("b", &["sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(agent.terminate(), 0);

    // What it wrote on either wrong clock reached the cloud.
    assert_eq!(site.run("fresh", &["sync"]).0, 0);
    assert_eq!(count_items(&site, "fresh", "Shared"), 2);
    assert_eq!(count_items(&site, "fresh", "Config"), 4);
}

#[test]
fn table_create_and_check_through_the_cli() {
    let site = Site::new("cli-table");
    let (code, out, err) = site.create_table(&["--horizon", "2h", "--window", "5s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["horizon_ms"], json!(7_200_000));
    let schema = site.schema();
    let check = |schema: &str| {
        ferry(&[
            "table",
            "check",
            "--schema",
            schema,
            "--table",
            &site.table,
            "--endpoint",
            &site.endpoint,
        ])
    };
    let (code, out, err) = check(&schema);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("table {} matches the schema", site.table).as_str()
        ),
        "{err}"
    );

    let other = site.dir.path().join("other.json5");
    std::fs::write(&other, SCHEMA.replace("gs1:", "gs9:")).unwrap();
    let (code, out, err) = check(&other.display().to_string());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.lines().any(|l| l == "index gs9 is missing"), "{out}");
    assert!(
        out.lines().any(|l| l == "index gs1 is not in the schema"),
        "{out}"
    );
    assert!(err.starts_with("TableError: "), "{err}");

    let (code, _, err) = site.create_table(&["--horizon", "1s"]);
    assert_eq!(
        code, 2,
        "a horizon shorter than 4 windows is refused: {err}"
    );
    assert!(err.contains("horizon"), "{err}");
}

fn the_cli_syncs_two_devices_and_reports_status(via: Via) {
    let site = Site::over(via, "cli-sync");
    let (code, _, err) = site.run("a", &["create", "Shared", r#"{"id":"s1","name":"from a"}"#]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = site.run("a", &["status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["pending_changes"], json!(1));

    let (code, out, err) = site.run("a", &["sync"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["synced"], json!(true));
    let (code, _, err) = site.run("b", &["sync"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = site.run("b", &["get", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!(
        (code, json_line(&out)["name"].clone()),
        (0, json!("from a")),
        "{err}"
    );
    let (_, out, _) = site.run("b", &["status"]);
    let status = json_line(&out);
    assert_eq!(status["pending_changes"], json!(0));
    assert_eq!(
        status["cursors"].as_array().map(Vec::len),
        Some(2),
        "b reads '*' and 'b': {status}"
    );
    let (code, out, _) = site.run("b", &["conflicts"]);
    assert_eq!((code, json_line(&out)), (0, json!([])));
    let (code, out, _) = site.run("b", &["quarantine"]);
    assert_eq!((code, json_line(&out)), (0, json!([])));
}

#[test]
fn a_missing_table_and_an_unreachable_cloud_are_named() {
    let site = Site::over(Via::Dynamo, "cli-missing");
    // What is left, named: a missing table at once, an unreachable cloud at the timeout.
    let (code, _, err) = site.run("a", &["create", "Shared", r#"{"id":"s2","name":"n"}"#]);
    assert_eq!(code, 0, "{err}");
    let dir = site.db("a").display().to_string();
    let (code, _, err) = ferry(&[
        "--db",
        &dir,
        "sync",
        "--dynamodb",
        "no-such-table",
        "--endpoint",
        &site.endpoint,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-table does not exist"), "{err}");
    let dead = "http://127.0.0.1:9";
    let (code, _, err) = ferry(&[
        "--db",
        &dir,
        "sync",
        "--dynamodb",
        &site.table,
        "--endpoint",
        dead,
        "--timeout",
        "2",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("SyncTimeout: after 2 s, 1 changes"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

fn an_agent_delivers_cloud_changes_and_stops_cleanly_on_sigterm(via: Via) {
    let site = Site::over(via, "cli-agent");
    site.run("b", &["status"]);
    let agent = site.agent("b");
    agent.wait_for(|l| l.starts_with("connected"), Duration::from_secs(20));
    site.run(
        "a",
        &["create", "Shared", r#"{"id":"live","name":"hello"}"#],
    );
    assert_eq!(site.run("a", &["sync"]).0, 0);
    // The agent pulls every 0.2 s; give it a few rounds.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.terminate(), 0, "SIGTERM is a clean stop");
    let (code, out, err) = site.run("b", &["get", "Shared", r#"{"id":"live"}"#]);
    assert_eq!(
        (code, json_line(&out)["name"].clone()),
        (0, json!("hello")),
        "{err}"
    );
}

fn a_killed_agent_restarts_and_loses_nothing_and_a_new_device_gets_all_of_a_large_scope(via: Via) {
    const ITEMS: usize = 1500;
    let site = Site::over(via, "cli-kill");
    let items: Vec<Json> = (0..ITEMS)
        .map(|i| json!({"id": format!("s{i:04}"), "name": "x".repeat(100)}))
        .collect();
    let seed = site.dir.path().join("seed.json");
    std::fs::write(&seed, json!({ "Shared": items }).to_string()).unwrap();
    let (code, _, err) = site.run("a", &["load", &seed.display().to_string()]);
    assert_eq!(code, 0, "{err}");

    let agent = site.agent("a");
    agent.wait_for(|l| l.starts_with("connected"), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(150));
    drop(agent); // SIGKILL, mid-upload or just after
    let agent = site.agent("a");
    agent.wait_for(
        |l| l.starts_with("connected pending=0 "),
        Duration::from_secs(60),
    );
    assert_eq!(agent.terminate(), 0);

    let (code, _, err) = site.run("fresh", &["sync"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        count_items(&site, "fresh", "Shared"),
        ITEMS,
        "every item reached the new device"
    );
}

fn while_an_agent_runs_other_commands_go_through_it(via: Via) {
    let site = Site::over(via, "cli-socket");
    let (code, _, err) = site.run("b", &["create", "Shared", r#"{"id":"before","name":"x"}"#]);
    assert_eq!(code, 0, "{err}");
    let agent = site.agent("b");
    agent.wait_for(|l| l.starts_with("connected"), Duration::from_secs(20));
    // A command runs with the agent's rights: its socket is its owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let socket = std::fs::metadata(site.db("b").join("agent.sock")).unwrap();
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);
    // A client that trickles (never ends its line) holds one place until its deadline and
    // keeps no one else waiting.
    let mut trickle =
        std::os::unix::net::UnixStream::connect(site.db("b").join("agent.sock")).unwrap();
    std::io::Write::write_all(&mut trickle, b"{\"args\": [").unwrap();

    let (code, out, err) = site.run("b", &["create", "Shared", r#"{"id":"during","name":"y"}"#]);
    assert_eq!(
        (code, json_line(&out)["id"].clone()),
        (0, json!("during")),
        "{err}"
    );
    let (code, out, err) = site.run("b", &["get", "Shared", r#"{"id":"before"}"#]);
    assert_eq!(
        (code, json_line(&out)["name"].clone()),
        (0, json!("x")),
        "{err}"
    );
    let (code, _, err) = site.run("b", &["get", "Shared", r#"{"id":"missing"}"#]);
    assert_eq!(code, 1, "exit statuses come through: {err}");
    assert!(err.starts_with("NotFoundError: "), "{err}");
    let file = site.dir.path().join("item.json");
    std::fs::write(&file, r#"{"id":"from-file","name":"z"}"#).unwrap();
    let arg = format!("@{}", file.display());
    let (code, _, err) = site.run("b", &["create", "Shared", &arg]);
    assert_eq!(code, 0, "@FILE is read by the client: {err}");
    let (code, out, err) = site.run("b", &["status"]);
    assert_eq!(
        (code, json_line(&out)["attached"].clone()),
        (0, json!(true)),
        "{err}"
    );
    let (code, out, err) = site.run("b", &["sync"]);
    assert_eq!(
        (code, json_line(&out)["synced"].clone()),
        (0, json!(true)),
        "{err}"
    );
    assert_eq!(count_items(&site, "b", "Shared"), 3);
    let (code, _, err) = site.run("b", &["agent"]);
    assert_eq!(code, 2, "one agent per database: {err}");
    // It serves 16 commands at once: with the trickling client and 15 more silent ones,
    // the next is told it is busy (and not queued for good).
    let silent: Vec<_> = (0..15)
        .map(|_| std::os::unix::net::UnixStream::connect(site.db("b").join("agent.sock")).unwrap())
        .collect();
    // The agent takes them up as it gets to them: on a busy machine that can take longer
    // than any fixed wait, so the next command is tried until it is turned away.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, err) = loop {
        std::thread::sleep(Duration::from_millis(200));
        let (code, _, err) = site.run("b", &["status"]);
        if code != 0 || Instant::now() > deadline {
            break (code, err);
        }
    };
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("serves as many commands as it may"), "{err}");
    drop((silent, trickle));
    assert_eq!(agent.terminate(), 0);

    // The agent's writes reached the cloud; a fresh device sees them.
    assert_eq!(site.run("fresh", &["sync"]).0, 0);
    assert_eq!(count_items(&site, "fresh", "Shared"), 3);
}

#[test]
fn a_database_held_without_an_agent_says_so() {
    let site = Site::new("cli-held");
    let (code, _, err) = site.run("a", &["create", "Shared", r#"{"id":"s","name":"n"}"#]);
    assert_eq!(code, 0, "{err}");
    let held = ferry::Db::open(site.db("a"), ferry::Config::default()).unwrap();
    let (code, _, err) = site.run("a", &["get", "Shared", r#"{"id":"s"}"#]);
    assert_eq!(code, 3, "{err}");
    assert!(err.starts_with("LockedError: "), "{err}");
    assert!(
        err.contains("held by another process") && err.contains("no agent serves it"),
        "{err}"
    );
    drop(held);
}

#[test]
fn cloud_commands_read_and_write_the_table_as_a_replica_devices_hear_from() {
    let site = Site::new("cli-cloud");
    assert_eq!(site.create_table(&["--no-stream"]).0, 0);
    let schema = site.schema();
    let cloud = |args: &[&str]| {
        let mut all = vec!["cloud"];
        all.extend(args);
        all.extend([
            "--schema",
            &schema,
            "--table",
            &site.table,
            "--endpoint",
            &site.endpoint,
        ]);
        ferry(&all)
    };
    let (code, out, err) = cloud(&["create", "Config", r#"{"name":"mode","value":"cloud"}"#]);
    assert_eq!(
        (code, json_line(&out)["value"].clone()),
        (0, json!("cloud")),
        "{err}"
    );
    let (code, _, err) = cloud(&["create", "Config", r#"{"name":"mode","value":"again"}"#]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("ConditionalCheckFailed: "), "{err}");
    let (code, _, err) = cloud(&["create", "Shared", r#"{"name":"no id"}"#]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("ValidationError: "), "{err}");
    // A key of a downloading model stays in its scope: the devices of "a" would keep it.
    let (code, _, err) = cloud(&["create", "Gadget", r#"{"name":"g1","deviceId":"a"}"#]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cloud(&["update", "Gadget", r#"{"name":"g1","deviceId":"b"}"#]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("may not move to 'b'"), "{err}");

    // A device hears of the cloud's write; the cloud reads the device's.
    assert_eq!(
        site.run("a", &["create", "Shared", r#"{"id":"s1","name":"by a"}"#])
            .0,
        0
    );
    assert_eq!(site.run("a", &["sync"]).0, 0);
    let (_, out, _) = site.run("a", &["get", "Config", r#"{"name":"mode"}"#]);
    assert_eq!(json_line(&out)["value"], json!("cloud"));
    let (code, out, err) = cloud(&["get", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!(
        (code, json_line(&out)["name"].clone()),
        (0, json!("by a")),
        "{err}"
    );
    let (code, _, err) = cloud(&["create", "Shared", r#"{"id":"s9","name":"by the cloud"}"#]);
    assert_eq!(code, 0, "{err}");
    let ids = |out: &str| -> Vec<Json> {
        let items = json_line(out)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        items.iter().map(|item| item["id"].clone()).collect()
    };
    let (code, out, err) = cloud(&["find", "Shared", "{}"]);
    assert_eq!(
        (code, ids(&out)),
        (0, vec![json!("s1"), json!("s9")]),
        "{err}"
    );
    let (code, out, err) = cloud(&["find", "Shared", "{}", "--reverse", "--limit", "1"]);
    assert_eq!((code, ids(&out)), (0, vec![json!("s9")]), "{err}");
    let next = json_line(&out)["next"].as_str().unwrap().to_string();
    let (code, out, err) = cloud(&["find", "Shared", "{}", "--reverse", "--next", &next]);
    assert_eq!((code, ids(&out)), (0, vec![json!("s1")]), "{err}");
    assert_eq!(cloud(&["remove", "Shared", r#"{"id":"s9"}"#]).0, 0);

    // Its update and its remove reach the device too.
    let (code, _, err) = cloud(&[
        "update",
        "Shared",
        r#"{"id":"s1","name":"edited in the cloud"}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(site.run("a", &["sync"]).0, 0);
    let (_, out, _) = site.run("a", &["get", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!(json_line(&out)["name"], json!("edited in the cloud"));
    let (code, out, err) = cloud(&["remove", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!((code, json_line(&out)), (0, json!({"removed": 1})), "{err}");
    assert_eq!(site.run("a", &["sync"]).0, 0);
    assert_eq!(
        site.run("a", &["get", "Shared", r#"{"id":"s1"}"#]).0,
        1,
        "removed on the device"
    );
    let (code, _, err) = cloud(&["get", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("NotFoundError: "), "{err}");
    assert_eq!(site.run("a", &["status"]).0, 0);
    let (_, out, _) = site.run("a", &["status"]);
    assert_eq!(json_line(&out)["conflicts"], json!(0));
}

/// One layer of OneTable's operations: a mistake reads the same on a device and in cloud
/// mode on either cloud (before, cloud mode named neither the key's attributes nor its
/// properties the way a device does).
#[test]
fn the_same_mistake_reads_the_same_on_a_device_and_in_cloud_mode_on_either_cloud() {
    let on_dynamo = Site::over(Via::Dynamo, "cli-same-words");
    let on_relay = Site::over(Via::Relay, "cli-same-words");
    let mistakes: [&[&str]; 3] = [
        &["remove", "Shared", "{}"],
        &["get", "Shared", r#"{"id":"s1","colour":"red"}"#],
        &["create", "Shared", r#"{"name":"no id"}"#],
    ];
    for mistake in mistakes {
        let (code, _, device) = on_dynamo.run("a", mistake);
        assert_eq!(code, 2, "{device}");
        for site in [&on_dynamo, &on_relay] {
            let (code, _, cloud) = site.cloud(mistake);
            assert_eq!(
                (code, cloud.as_str()),
                (2, device.as_str()),
                "{mistake:?} on a device and in cloud mode"
            );
        }
    }
}

#[test]
fn ferry_cloud_follow_adopts_a_plain_sdk_write_and_stops_on_sigterm() {
    use ferry::dynamo::sdk::types::AttributeValue;
    let site = Site::new("cli-follow");
    assert_eq!(site.create_table(&[]).0, 0);
    let mut follower = Command::new(ferry_bin())
        .args([
            "cloud",
            "follow",
            "--schema",
            &site.schema(),
            "--table",
            &site.table,
        ])
        .args(["--endpoint", &site.endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(follower.stdout.take().unwrap());
    let follower = Killed(follower);

    let rt = crate::dynamo::runtime();
    let dynamo = rt.block_on(ferry::dynamo::Dynamo::connect(&endpoint()));
    let text = |s: &str| AttributeValue::S(s.to_string());
    let put = (dynamo.client.put_item())
        .table_name(&site.table)
        .item("pk", text("config#"))
        .item("sk", text("config#plain"))
        .item("_type", text("Config"))
        .item("name", text("plain"))
        .item("value", text("from the SDK"))
        .send();
    rt.block_on(put).unwrap();
    let adopted = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the follower reports");
    assert_eq!(adopted, "adopted put Config config#/config#plain");

    let (code, out, err) = site.run("a", &["sync"]);
    assert_eq!(code, 0, "{err}{out}");
    let (code, out, err) = site.run("a", &["get", "Config", r#"{"name":"plain"}"#]);
    assert_eq!(
        (code, json_line(&out)["value"].clone()),
        (0, json!("from the SDK")),
        "{err}"
    );

    let mut follower = follower;
    assert_eq!(
        crate::support::terminate(&mut follower.0),
        0,
        "SIGTERM is a clean stop"
    );
}

#[test]
fn the_demo_converges_through_its_relay_and_through_dynamodb_and_keeps_its_data_when_asked() {
    let keep = tempfile::tempdir().unwrap();
    let kept = keep.path().join("demo");
    let kept = kept.display().to_string();
    let (code, out, err) = ferry(&["demo", "--keep", &kept]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sync through Ferry's relay at ws://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("everything converged"), "{out}");
    assert!(
        out.contains("ok   the losing write is in a conflict log"),
        "{out}"
    );
    for device in ["pump-7", "pump-8", "relay"] {
        assert!(
            keep.path().join("demo").join(device).exists(),
            "--keep kept {device}"
        );
    }

    let site = Site::new("cli-demo");
    let (code, out, err) = ferry(&[
        "demo",
        "--dynamodb",
        &site.table,
        "--endpoint",
        &site.endpoint,
    ]);
    assert_eq!(code, 0, "{err}{out}");
    assert!(
        out.contains(&format!("sync through DynamoDB table {}", site.table)),
        "{out}"
    );
    assert!(out.contains("everything converged"), "{out}");
}
