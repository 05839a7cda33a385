//! How a database is opened.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_schema::{Context, Crypto, Schema};
use ferry_store::Durability;
use ferry_types::ReplicaId;

/// A source of time in milliseconds (replaceable in tests): the wall clock in epoch
/// milliseconds, or a monotonic clock from any start.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Options for [`crate::Db::open`].
#[derive(Clone)]
pub struct Config {
    /// The schema. Needed to create a database or to change its schema; otherwise the
    /// stored one is used.
    pub schema: Option<Schema>,
    /// Context properties (`deviceId`, `accountId`, ...) injected into every operation.
    pub context: Context,
    /// Durability of every write unless a model or a call asks for more.
    pub durability: Durability,
    /// Longest time a committed write waits for its fsync at [`Durability::Default`].
    pub sync_window: Duration,
    /// How often expired items are removed (`None`: only by [`crate::Db::sweep_expired`]).
    pub ttl_sweep: Option<Duration>,
    /// The wall clock.
    pub clock: Clock,
    /// A monotonic clock (milliseconds from any start) that sync's timers run on: a step
    /// of the wall clock (NTP correcting a device that booted without a real-time clock)
    /// neither stalls them, as a step back would, nor fires them at once. A test that sets
    /// `clock` by hand sets this too.
    pub timer: Clock,
    /// Pending uploads the outbox holds at most; past it a write fails with `OutboxFull`
    /// and nothing is dropped (default [`ferry_store::OUTBOX_CHANGES_MAX`]).
    pub outbox_changes_max: usize,
    /// Called after every fsync of the database (a simulator's disk copies it then).
    #[doc(hidden)]
    pub on_fsync: Option<ferry_store::FsyncHook>,
    /// Asked before every commit; an error fails it as the disk's would (tests of a
    /// failing disk).
    #[doc(hidden)]
    pub on_commit: Option<ferry_store::CommitHook>,
    /// The replica id a new database takes (default: random). Ignored once the database
    /// exists: its id is stored. Simulations fix it so that version ties replay exactly.
    pub replica: Option<ReplicaId>,
    /// The key of `crypt` fields, in OneTable's configuration
    /// (`Crypto::from_json(json!({"primary": {"cipher": "aes-256-gcm", "password": ...}}))`).
    /// A schema with crypt fields does not open without it.
    pub crypto: Option<Crypto>,
}

impl Config {
    /// Defaults, with a schema.
    pub fn with_schema(schema: Schema) -> Config {
        Config {
            schema: Some(schema),
            ..Config::default()
        }
    }

    /// Adds a context property such as `deviceId`.
    pub fn context(mut self, name: &str, value: impl Into<serde_json::Value>) -> Config {
        self.context.insert(name.to_string(), value.into());
        self
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            schema: None,
            context: Context::new(),
            durability: Durability::Default,
            sync_window: Duration::from_millis(100),
            ttl_sweep: Some(Duration::from_secs(60)),
            clock: Arc::new(system_ms),
            timer: Arc::new(monotonic_ms),
            replica: None,
            on_fsync: None,
            on_commit: None,
            outbox_changes_max: ferry_store::OUTBOX_CHANGES_MAX,
            crypto: None,
        }
    }
}

/// Milliseconds since this process first asked.
fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as i64
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
