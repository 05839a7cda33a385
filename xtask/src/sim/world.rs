//! The simulated world: the cloud, the devices (real `ferry::Db`s on disk) and virtual time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ferry::Attach;
use ferry::replication::{EngineConfig, MemoryCloud, Models};
use ferry::types::{Hlc, HlcClock, Item, Key, ReplicaId, Value, Version};
use ferry::{Config, Db, Schema, SyncOptions};
use ferry_journal::{Change, ChangeOp};

use crate::sim::cloud::Cloud;
use crate::sim::faults::{FaultyTransport, Link, link, lock};
use crate::sim::model::{EPOCH_MS, ModelSpec, Params, SCHEMA, WriteOp};
use crate::sim::relay::{RelayNode, RelayTransport};

/// The scope every device reads besides its own.
pub const SHARED_SCOPE: &str = "*";
/// Longer than any run: no background fsync during a seed.
const FSYNC_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
/// How far the relay's clock runs behind the time at most. The relay is the cloud: a
/// device's version more than `AHEAD_MAX_MS` past its time is refused as ahead, so a relay
/// whose clock is far behind the world's refuses every honest device (docs/relay.md asks
/// its operator for a synchronized clock). Steps forward, and back again, go any distance.
const RELAY_BEHIND_MS_MAX: i64 = ferry::replication::AHEAD_MAX_MS as i64 / 2;
/// How far the cloud developer's clock may be pushed ahead by a row it overwrites.
const CLOUD_FORWARD_MS_MAX: u64 = 60 * 60 * 1000;

/// One device: a database in its own directory, its own clock and its own link.
pub struct Device {
    pub name: String,
    index: usize,
    /// Its clock minus the cloud's.
    pub skew_ms: i64,
    pub link: Link,
    dir: tempfile::TempDir,
    /// The directory as the last fsync left it: what a power loss goes back to (kept only
    /// when the seed has power losses).
    durable: tempfile::TempDir,
    power_losses: bool,
    /// Changes per pushed batch (the seed's).
    batch_changes_max: usize,
    db: Option<Db>,
    clock: Arc<AtomicI64>,
    /// Its monotonic clock, which sync's timers run on: virtual time, whatever its wall
    /// clock does.
    timer: Arc<AtomicI64>,
    /// Opens so far: each attach gets its own engine seed.
    opens: u64,
    seed: u64,
    /// What the triggers saw, across opens (since the last power loss).
    pub events: Arc<Mutex<Vec<Seen>>>,
    /// Conflicts in the log when `events` started (a power loss drops the events of
    /// applies it took back, and the log keeps what was fsynced).
    pub conflicts_before: usize,
    trigger: Option<ferry::TriggerId>,
}

impl Drop for Device {
    /// Closes the database: its trigger holds a handle of it, which would keep it (and its
    /// threads and caches) alive after the run.
    fn drop(&mut self) {
        self.close();
    }
}

/// One trigger event, as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub op: ferry::Op,
    pub origin: ferry::Origin,
    pub model: String,
    /// The item's `pk` and `sk` (of `new`, else `old`).
    pub key: (String, String),
    pub version: Option<String>,
}

impl Device {
    fn new(index: usize, params: &Params, seed: u64) -> Result<Device> {
        let dir = tempfile::tempdir_in(scratch_dir()).context("creating a device directory")?;
        let durable = tempfile::tempdir_in(scratch_dir()).context("creating a device directory")?;
        let device_seed = mix(seed, index as u64);
        let skew_ms = params.skews_ms[index];
        let writer_skew_ms = params.writer_skews_ms[index];
        Ok(Device {
            name: format!("d{index}"),
            index,
            skew_ms,
            link: link(device_seed, params.rates, writer_skew_ms),
            dir,
            durable,
            power_losses: params.power_losses,
            batch_changes_max: params.batch_changes_max,
            db: None,
            clock: Arc::new(AtomicI64::new(EPOCH_MS + skew_ms)),
            timer: Arc::new(AtomicI64::new(EPOCH_MS)),
            opens: 0,
            seed: device_seed,
            events: Arc::default(),
            conflicts_before: 0,
            trigger: None,
        })
    }

    /// The open database.
    pub fn db(&self) -> Result<&Db> {
        self.db
            .as_ref()
            .with_context(|| format!("device {} has no open database", self.name))
    }

    /// Opens the database (with the schema the first time, from disk after) and attaches
    /// it to a fresh faulty transport over the same link.
    fn open(&mut self, cloud: &Cloud) -> Result<()> {
        let schema = match self.opens {
            0 => Some(Schema::parse(SCHEMA).context("the simulator's schema does not load")?),
            _ => None,
        };
        let clock = Arc::clone(&self.clock);
        let timer = Arc::clone(&self.timer);
        let config = Config {
            schema,
            ttl_sweep: None,
            // The simulated crashes kill the process, not the machine: what reached the OS
            // survives, so background fsyncs would only cost time.
            sync_window: FSYNC_WINDOW,
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            timer: Arc::new(move || timer.load(Ordering::SeqCst)),
            // From the seed, so that version tie-breaks (and so the whole run) replay.
            replica: Some(ReplicaId::from_random(u128::from(self.seed))),
            on_fsync: self.power_losses.then(|| self.disk()),
            ..Config::default()
        }
        .context("deviceId", self.name.as_str());
        let db = Db::open(self.dir.path(), config)
            .with_context(|| format!("opening device {}", self.name))?;
        let options = SyncOptions {
            engine: EngineConfig {
                batch_changes_max: self.batch_changes_max,
                ..EngineConfig::default()
            },
            background: false,
            call_timeout: ferry::CALL_TIMEOUT,
            seed: mix(self.seed, self.opens),
        };
        self.trigger = Some(self.watch(&db)?);
        let link = Arc::clone(&self.link);
        let attached = match cloud {
            Cloud::Memory(cloud) => {
                let cloud = Arc::clone(cloud);
                db.attach(FaultyTransport { cloud, link }, options)
            }
            Cloud::Relay(node) => {
                let (node, replica) = (Arc::clone(node), db.status().replica);
                db.attach(
                    RelayTransport::new(node, link, self.index, replica),
                    options,
                )
            }
        };
        attached.with_context(|| format!("attaching device {}", self.name))?;
        self.opens += 1;
        self.db = Some(db);
        Ok(())
    }

    /// A trigger that records every event and, for a cloud change of a `Command`, calls
    /// back into the database the way an app does: it reads the status and writes.
    fn watch(&self, db: &Db) -> Result<ferry::TriggerId> {
        let (events, handle) = (Arc::clone(&self.events), db.clone());
        let trigger = db.on_change(None, move |event| {
            let item = event.new.as_ref().or(event.old.as_ref());
            let text = |name: &str| {
                let value = item.and_then(|i| i[name].as_str());
                value.unwrap_or_default().to_string()
            };
            let seen = Seen {
                op: event.op,
                origin: event.origin,
                model: event.model.clone(),
                key: (text("pk"), text("sk")),
                version: event.version.clone(),
            };
            lock(&events).push(seen);
            if event.origin == ferry::Origin::Cloud && event.model == "Command" {
                let pending = handle.status().pending_changes;
                let echo = serde_json::json!({"id": "echo", "value": pending});
                // A `none` model: the write stays on the device and changes no invariant.
                let _ = handle.put("Note", echo);
            }
        });
        trigger.context("registering the simulator's trigger")
    }

    /// A crash: the process dies (the database is dropped, nothing flushed by hand) and
    /// starts again from its directory, without a schema.
    pub fn crash_and_reopen(&mut self, cloud: &Cloud) -> Result<()> {
        self.close();
        self.open(cloud)
    }

    /// Fsyncs the database (its disk keeps a copy, see [`Device::disk`]).
    /// One step of the device's driver; returns how many batches it pushed.
    pub fn drive(&self) -> Result<u64> {
        let before = lock(&self.link).pushes;
        self.db()?.drive()?;
        Ok(lock(&self.link).pushes - before)
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.db()?.flush()?)
    }

    /// The simulated disk: after every fsync, what is in the directory is durable, and a
    /// power loss goes back to it. A copy that fails leaves the previous one, as a failed
    /// fsync would (the run then fails on what the device lost).
    fn disk(&self) -> ferry::FsyncHook {
        let (dir, durable) = (
            self.dir.path().to_path_buf(),
            self.durable.path().to_path_buf(),
        );
        Arc::new(move || {
            let _ = copy_dir(&dir, &durable);
            Ok(())
        })
    }

    /// A power loss: the directory goes back to the last fsync, then the device restarts.
    pub fn power_loss(&mut self, cloud: &Cloud) -> Result<()> {
        self.close();
        copy_dir(self.durable.path(), self.dir.path())?;
        self.open(cloud)?;
        lock(&self.events).clear();
        self.conflicts_before = self.db()?.status().conflicts;
        Ok(())
    }

    /// The process ends (nothing flushed by hand).
    fn close(&mut self) {
        let db = self.db.take();
        // The trigger holds a handle of the database: removing it lets the database close.
        if let (Some(db), Some(trigger)) = (&db, self.trigger.take()) {
            db.remove_trigger(trigger);
        }
        drop(db);
    }

    /// The scopes this device reads.
    pub fn scopes(&self) -> [&str; 2] {
        [SHARED_SCOPE, self.name.as_str()]
    }

    pub fn offline(&self) -> bool {
        lock(&self.link).offline_steps > 0
    }
}

/// The cloud, the devices and the time.
pub struct World {
    pub cloud: Cloud,
    pub devices: Vec<Device>,
    /// The cloud's wall clock (epoch ms); device clocks are this plus their skew.
    pub now_ms: i64,
    /// The relay's clock minus the cloud's (on the relay path).
    relay_skew_ms: i64,
    /// The clock a cloud developer stamps versions with.
    cloud_writer: HlcClock,
    cloud_replica: ReplicaId,
}

impl World {
    /// A cloud at [`EPOCH_MS`] (the relay, or a reference cloud whose feed shows changes up
    /// to `params.lag_ms_max` late), and `params.devices` freshly opened devices.
    pub fn new(seed: u64, params: &Params) -> Result<World> {
        let schema = Schema::parse(SCHEMA).context("the simulator's schema does not load")?;
        let models = Models::new(schema.cloud_directions(), schema.item_layout());
        let cloud = match params.relay {
            true => {
                let horizon_ms = MemoryCloud::default().horizon_ms();
                let relay = RelayNode::start(models, horizon_ms, EPOCH_MS, params.power_losses)?;
                Cloud::Relay(Arc::new(relay))
            }
            false => {
                let mut cloud = (MemoryCloud::default().with_lag(params.lag_ms_max, mix(seed, 7)))
                    .with_models(models);
                cloud.set_time_ms(EPOCH_MS as u64);
                Cloud::Memory(Arc::new(Mutex::new(cloud)))
            }
        };
        let mut devices = Vec::with_capacity(params.devices);
        for index in 0..params.devices {
            let mut device = Device::new(index, params, seed)?;
            device.open(&cloud)?;
            device.flush()?;
            devices.push(device);
        }
        Ok(World {
            cloud,
            devices,
            now_ms: EPOCH_MS,
            relay_skew_ms: 0,
            cloud_writer: HlcClock::new(Hlc::ZERO, CLOUD_FORWARD_MS_MAX),
            cloud_replica: ReplicaId::parse("cloud").context("the cloud's replica id")?,
        })
    }

    /// Moves the cloud's clock and every device's by `ms`.
    pub fn advance(&mut self, ms: i64) -> Result<()> {
        self.now_ms += ms;
        self.cloud.set_time(self.now_ms, self.relay_skew_ms)?;
        for device in &self.devices {
            device
                .clock
                .store(self.now_ms + device.skew_ms, Ordering::SeqCst);
            device.timer.store(self.now_ms, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Steps the relay's wall clock by `ms` (virtual time goes on), forward as far as a
    /// year, back no further than [`RELAY_BEHIND_MS_MAX`] behind the time.
    pub fn step_relay_clock(&mut self, ms: i64) -> Result<()> {
        self.relay_skew_ms = (self.relay_skew_ms + ms).max(-RELAY_BEHIND_MS_MAX);
        self.cloud.set_time(self.now_ms, self.relay_skew_ms)
    }

    /// Steps device `index`'s wall clock by `ms`; virtual time and its timers go on.
    pub fn step_clock(&mut self, index: usize, ms: i64) {
        let device = &mut self.devices[index];
        device.skew_ms += ms;
        device
            .clock
            .store(self.now_ms + device.skew_ms, Ordering::SeqCst);
    }

    /// Every scope anyone reads.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes = vec![SHARED_SCOPE.to_string()];
        scopes.extend(self.devices.iter().map(|d| d.name.clone()));
        scopes
    }

    /// A cloud developer's write: read the row, stamp a version past it, write conditionally.
    pub fn cloud_write(&mut self, op: &WriteOp) -> String {
        let device = format!("d{}", op.device);
        let key = key_of(op.model, &device, &op.id);
        let version = self.cloud_version(&key);
        let mut change = cloud_change(op, &device, key, version);
        // Written over the row it read, as a cloud service's read-modify-write is.
        change.base = self.held(&change.key).map(|c| c.version);
        self.cloud.write(change)
    }

    /// The cloud's row of `key`; one the relay cannot read counts as none (the checks
    /// read it again and fail the run).
    fn held(&self, key: &Key) -> Option<Change> {
        self.cloud.get(key).ok().flatten()
    }

    /// A version for a cloud developer's write of `key`, past the one the cloud holds.
    fn cloud_version(&mut self, key: &Key) -> Version {
        // The cloud developer's own clock: the time, whatever the relay's says.
        let now_ms = self.now_ms as u64;
        if let Some(row) = self.held(key) {
            self.cloud_writer.observe(row.version.hlc, now_ms);
        }
        Version {
            hlc: self.cloud_writer.tick(now_ms),
            replica: self.cloud_replica.clone(),
        }
    }

    /// `count` shared items written by the cloud at once (ids `b0`, `b1`, ...).
    pub fn bulk_write(&mut self, count: usize, value: i64) -> String {
        let shared = ModelSpec::named("Shared");
        let Some(model) = shared else {
            return "(no shared model)".into();
        };
        for n in 0..count {
            let op = WriteOp {
                model,
                device: 0,
                id: format!("b{n}"),
                value: Some(value),
                tag: None,
            };
            self.cloud_write(&op);
        }
        format!("{count} written")
    }

    /// A shared change whose item names another key than the change: the cloud's write rule
    /// refuses it (no device could apply it).
    pub fn poison_write(&mut self, id: u32) -> String {
        let Some(model) = ModelSpec::named("Shared") else {
            return "(no shared model)".into();
        };
        let op = WriteOp {
            model,
            device: 0,
            id: format!("p{id}"),
            value: Some(0),
            tag: None,
        };
        let key = key_of(model, "d0", &op.id);
        let version = self.cloud_version(&key);
        let mut change = cloud_change(&op, "d0", key, version);
        if let Some(item) = &mut change.item {
            item.insert("sk".into(), Value::S(format!("shared#not-p{id}")));
        }
        self.cloud.write(change)
    }
}

/// The primary key of an item of `model` with `id` in `device`'s scope (shared models
/// ignore the device), as the schema's value templates build it.
pub fn key_of(model: &ModelSpec, device: &str, id: &str) -> Key {
    let prefix = model.name.to_lowercase();
    let hash = match model.per_device {
        true => format!("{prefix}#{device}"),
        false => format!("{prefix}#"),
    };
    Key {
        hash: Value::S(hash),
        sort: Some(Value::S(format!("{prefix}#{id}"))),
    }
}

/// The change a cloud developer writes: the item as a device would store it (its
/// attributes, `_type`), without the device-only field.
fn cloud_change(op: &WriteOp, device: &str, key: Key, version: Version) -> Change {
    let scope = match op.model.per_device {
        true => device.to_string(),
        false => SHARED_SCOPE.to_string(),
    };
    let item = op.value.map(|value| {
        let mut item = Item::new();
        item.insert("pk".into(), key.hash.clone());
        if let Some(sort) = &key.sort {
            item.insert("sk".into(), sort.clone());
        }
        item.insert("_type".into(), Value::S(op.model.name.into()));
        item.insert("id".into(), Value::S(op.id.clone()));
        item.insert("value".into(), Value::int(value));
        if let Some(tag) = &op.tag {
            item.insert("tag".into(), Value::S(tag.clone()));
        }
        if op.model.per_device {
            item.insert("deviceId".into(), Value::S(device.into()));
        }
        item
    });
    Change {
        model: op.model.name.to_string(),
        op: match item {
            Some(_) => ChangeOp::Put,
            None => ChangeOp::Delete,
        },
        key,
        version,
        scope,
        item,
        base: None,
    }
}

/// Where device directories go: `FERRY_SIM_DIR`, else shared memory where the system has
/// it (creating fjall's files on a real disk costs more than the whole simulated run, and
/// simulated crashes never need the disk), else the system's temporary directory.
pub fn scratch_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("FERRY_SIM_DIR") {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    match shm.is_dir() {
        true => shm.to_path_buf(),
        false => std::env::temp_dir(),
    }
}

/// Makes `to` an exact copy of `from` (files only: a database directory has no links).
/// Files whose length and modification time match are left as they are: a store's
/// segments never change once written, and its journals grow.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let mut stale: std::collections::BTreeSet<std::ffi::OsString> = std::fs::read_dir(to)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        stale.remove(&entry.file_name());
        let target = to.join(entry.file_name());
        let meta = entry.metadata()?;
        if meta.is_dir() {
            copy_dir(&entry.path(), &target)?;
            continue;
        }
        let same = std::fs::metadata(&target).is_ok_and(|old| {
            old.is_file() && old.len() == meta.len() && old.modified().ok() == meta.modified().ok()
        });
        if !same {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            // The copy's time is the original's, so that the next copy can skip it.
            if let Ok(modified) = meta.modified() {
                let file = std::fs::File::options().write(true).open(&target)?;
                file.set_modified(modified)?;
            }
        }
    }
    for name in stale {
        let path = to.join(name);
        match path.is_dir() {
            true => std::fs::remove_dir_all(&path)?,
            false => std::fs::remove_file(&path)?,
        }
    }
    Ok(())
}

/// splitmix64's finalizer: independent seeds for the parts of a run from one seed.
pub fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
