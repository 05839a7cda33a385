//! What a seed simulates: the schema, the per-seed parameters and the step schedule.
//!
//! Everything here is drawn from one `fastrand::Rng` seeded with the simulation seed, so a
//! seed names one schedule exactly. Steps are drawn one at a time as the run goes, from the
//! RNG alone (never from the run's state), which keeps the schedule a pure function of the seed.

use crate::sim::faults::FaultRates;

/// One model of every direction, per-device scoped through `deviceId`, plus a shared one.
pub const SCHEMA: &str = r#"{
    version: '1.0.0',
    format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Reading: {
            pk: { type: 'string', value: 'reading#${deviceId}' },
            sk: { type: 'string', value: 'reading#${id}' },
            deviceId: { type: 'string', required: true },
            id: { type: 'string', required: true },
            value: { type: 'number' },
        },
        Command: {
            pk: { type: 'string', value: 'command#${deviceId}' },
            sk: { type: 'string', value: 'command#${id}' },
            deviceId: { type: 'string', required: true },
            id: { type: 'string', required: true },
            value: { type: 'number' },
        },
        Setting: {
            pk: { type: 'string', value: 'setting#${deviceId}' },
            sk: { type: 'string', value: 'setting#${id}' },
            deviceId: { type: 'string', required: true },
            id: { type: 'string', required: true },
            value: { type: 'number' },
            secret: { type: 'string', sync: 'none' },
        },
        Note: {
            pk: { type: 'string', value: 'note#${deviceId}' },
            sk: { type: 'string', value: 'note#${id}' },
            deviceId: { type: 'string', required: true },
            id: { type: 'string', required: true },
            value: { type: 'number' },
        },
        Shared: {
            pk: { type: 'string', value: 'shared#' },
            sk: { type: 'string', value: 'shared#${id}' },
            id: { type: 'string', required: true },
            value: { type: 'number' },
            tag: { type: 'string', unique: true },
        },
    },
    control: {
        Reading: { sync: 'up' },
        Command: { sync: 'down' },
        Setting: { sync: 'both' },
        Note: { sync: 'none' },
        Shared: { sync: 'both', scope: '*' },
    },
}"#;

/// How a model replicates, as the simulator checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
    None,
}

/// A model of [`SCHEMA`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: &'static str,
    pub direction: Direction,
    /// Scoped per device (`deviceId` field); otherwise shared (`*`).
    pub per_device: bool,
    /// A field that never leaves the device (`sync: 'none'`).
    pub local_field: Option<&'static str>,
}

pub const MODELS: [ModelSpec; 5] = [
    ModelSpec {
        name: "Reading",
        direction: Direction::Up,
        per_device: true,
        local_field: None,
    },
    ModelSpec {
        name: "Command",
        direction: Direction::Down,
        per_device: true,
        local_field: None,
    },
    ModelSpec {
        name: "Setting",
        direction: Direction::Both,
        per_device: true,
        local_field: Some("secret"),
    },
    ModelSpec {
        name: "Note",
        direction: Direction::None,
        per_device: true,
        local_field: None,
    },
    ModelSpec {
        name: "Shared",
        direction: Direction::Both,
        per_device: false,
        local_field: None,
    },
];

impl ModelSpec {
    /// The model's spec by name.
    pub fn named(name: &str) -> Option<&'static ModelSpec> {
        MODELS.iter().find(|m| m.name == name)
    }

    /// May a device write it? (`down` models are the cloud's.)
    pub fn device_writes(&self) -> bool {
        self.direction != Direction::Down
    }

    /// May the cloud write it? (`up` models are the device's; `none` never leave it.)
    pub fn cloud_writes(&self) -> bool {
        matches!(self.direction, Direction::Down | Direction::Both)
    }
}

/// Item ids per model and scope: few, so that writes collide and conflict.
pub const IDS: u32 = 5;
/// Unique tags a `Shared` put may carry: few, so that offline devices clash.
pub const TAGS: u32 = 3;
/// Items a bulk cloud write puts in the shared scope at most: several pages each.
pub const BULK_ITEMS_MAX: usize = 300;
/// Cloud time at the start of every run (epoch ms, 2023-11-14).
pub const EPOCH_MS: i64 = 1_700_000_000_000;
pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
pub const YEAR_MS: i64 = 365 * DAY_MS;
/// Long offline: past the cloud's 30-day tombstone horizon.
pub const LONG_OFFLINE_MS: i64 = 31 * DAY_MS;

/// The shape of one seed's run.
#[derive(Debug, Clone)]
pub struct Params {
    pub devices: usize,
    pub steps: usize,
    /// Per device: its clock minus the cloud's, in ms.
    pub skews_ms: Vec<i64>,
    pub rates: FaultRates,
    /// At which step a device goes offline past the horizon, if it does.
    pub long_offline_at: Option<usize>,
    /// How late a landed change may become visible in the feed (at most W/2).
    pub lag_ms_max: u64,
    /// Per device: how far its transport's `_seq` clock is off the cloud's (within W/4:
    /// writers' clocks are disciplined by the server's).
    pub writer_skews_ms: Vec<i64>,
    /// Devices may lose power (what they did not fsync is gone). Only some seeds: the
    /// simulated disk copies the directory at every fsync, which costs.
    pub power_losses: bool,
    /// The devices sync through the relay (`relay.rs`) instead of the reference cloud:
    /// odd seeds, so that every run covers both paths.
    pub relay: bool,
    /// Changes per pushed batch: small in most seeds, so that several batches are in
    /// flight at once and their answers come back in any order.
    pub batch_changes_max: usize,
}

impl Params {
    /// Draws the parameters of a seed. `long`: many more steps.
    pub fn draw(rng: &mut fastrand::Rng, long: bool, relay: bool) -> Params {
        let devices = rng.usize(2..=3);
        let steps = if long {
            rng.usize(5_000..=6_000)
        } else {
            rng.usize(50..=90)
        };
        // Most seeds keep clocks within two minutes of the cloud; one in eight goes hours off
        // (past the HLC's one-hour forward bound); one in sixteen boots a device a year in
        // the past (no real-time clock) or years ahead.
        let skew_max_ms = if rng.u32(0..8) == 0 {
            6 * 60 * MINUTE_MS
        } else {
            2 * MINUTE_MS
        };
        let skews_ms = (0..devices)
            .map(|_| match rng.u32(0..16) {
                0 => -rng.i64(DAY_MS..=YEAR_MS),
                1 => rng.i64(YEAR_MS..=3 * YEAR_MS),
                _ => rng.i64(-skew_max_ms..=skew_max_ms),
            })
            .collect();
        let rates = FaultRates {
            drop: rng.u32(0..=15),
            lose_answer: rng.u32(0..=10),
            duplicate: rng.u32(0..=10),
            delay: rng.u32(0..=10),
            truncate: rng.u32(0..=40),
        };
        let long_offline_at = (rng.u32(0..10) == 0).then(|| rng.usize(steps / 4..steps));
        let window_ms = ferry::replication::CATCHUP_WINDOW_MS;
        let lag_ms_max = match rng.u32(0..4) {
            0 => 0,
            _ => rng.u64(0..=window_ms / 2),
        };
        let quarter = window_ms as i64 / 4;
        let writer_skews_ms = (0..devices).map(|_| rng.i64(-quarter..=quarter)).collect();
        Params {
            devices,
            steps,
            skews_ms,
            rates,
            long_offline_at,
            lag_ms_max,
            writer_skews_ms,
            power_losses: rng.u32(0..4) == 0,
            relay,
            batch_changes_max: match rng.u32(0..4) {
                0 => ferry::replication::BATCH_CHANGES_MAX,
                _ => rng.usize(1..=4),
            },
        }
    }
}

/// A write by a device or the cloud: `value: None` removes the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    pub model: &'static ModelSpec,
    /// The scope's device (per-device models), by index.
    pub device: usize,
    pub id: String,
    pub value: Option<i64>,
    /// A unique tag (`Shared` only).
    pub tag: Option<String>,
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A local put or remove on a device.
    Local(WriteOp),
    /// A cloud developer's put or remove, with a fresh cloud version.
    Cloud(WriteOp),
    /// Virtual time moves for the cloud and every device clock.
    Advance { ms: i64 },
    /// One device runs the sync work that is due.
    Drive { device: usize },
    /// Every device does.
    DriveAll,
    /// A device's process dies and starts again from its directory.
    Crash { device: usize },
    /// A device fsyncs everything it committed (`Db::flush`).
    Flush { device: usize },
    /// A device loses power: what it committed after its last fsync is gone, and it starts
    /// again from what reached the disk.
    PowerLoss { device: usize },
    /// A device's wall clock steps by `ms` (NTP correcting it, or a bad time source);
    /// its monotonic clock goes on.
    WallClock { device: usize, ms: i64 },
    /// A device's link goes down for `steps` steps.
    Partition { device: usize, steps: u32 },
    /// A held (delayed) push reaches the cloud, late.
    DeliverLate,
    /// A device is offline past the horizon: 31 days pass with it partitioned.
    LongOffline { device: usize },
    /// The cloud writes `count` shared items at once (pages of pulls, resyncs of many rows).
    Bulk { count: usize, value: i64 },
    /// The cloud holds a change no device can apply (its item names another key): every
    /// device quarantines it and moves on.
    Poison { id: u32 },
    /// The relay's process dies and starts again (in a seed with power losses, its host
    /// loses power: what it did not fsync is gone).
    RelayRestart,
    /// The relay's wall clock steps by `ms`.
    RelayClock { ms: i64 },
}

/// Draws the next step.
pub fn draw_step(rng: &mut fastrand::Rng, params: &Params) -> Step {
    let device = rng.usize(0..params.devices);
    match rng.u32(0..100) {
        0..30 => Step::Local(draw_write(rng, device, ModelSpec::device_writes)),
        30..40 => Step::Cloud(draw_write(rng, device, ModelSpec::cloud_writes)),
        40..60 => Step::Advance {
            ms: draw_advance_ms(rng),
        },
        60..82 => Step::Drive { device },
        82..88 => Step::DriveAll,
        88..90 => Step::Crash { device },
        90..94 => Step::Partition {
            device,
            steps: rng.u32(1..=20),
        },
        // Rare, since each one is hundreds of writes and pages of pulls on every device.
        94 if rng.u32(0..5) == 0 => Step::Bulk {
            count: rng.usize(50..=BULK_ITEMS_MAX),
            value: rng.i64(0..1000),
        },
        95 => Step::Poison {
            id: rng.u32(0..IDS),
        },
        96 if params.power_losses => Step::Flush { device },
        97 if params.power_losses => Step::PowerLoss { device },
        98 => Step::WallClock {
            device,
            ms: draw_clock_step_ms(rng),
        },
        // On the relay path, no push is held for a late delivery (one connection neither
        // duplicates nor reorders): the relay restarts or its clock steps instead.
        _ if params.relay => match rng.bool() {
            true => Step::RelayRestart,
            false => Step::RelayClock {
                ms: draw_clock_step_ms(rng),
            },
        },
        _ => Step::DeliverLate,
    }
}

fn draw_write(rng: &mut fastrand::Rng, device: usize, allowed: fn(&ModelSpec) -> bool) -> WriteOp {
    let models: Vec<&'static ModelSpec> = MODELS.iter().filter(|m| allowed(m)).collect();
    let model = models[rng.usize(0..models.len())];
    let value = (rng.u32(0..100) >= 20).then(|| rng.i64(0..1000));
    let tag = (model.name == "Shared" && value.is_some() && rng.u32(0..5) == 0)
        .then(|| format!("t{}", rng.u32(0..TAGS)));
    WriteOp {
        model,
        device,
        id: format!("k{}", rng.u32(0..IDS)),
        value,
        tag,
    }
}

/// Mostly less than the sync delay and the poll interval, sometimes minutes.
fn draw_advance_ms(rng: &mut fastrand::Rng) -> i64 {
    match rng.u32(0..10) {
        0 => rng.i64(MINUTE_MS..=5 * MINUTE_MS),
        1..4 => rng.i64(5_000..=30_000),
        _ => rng.i64(100..=5_000),
    }
}

/// Seconds to a year, forward or back.
fn draw_clock_step_ms(rng: &mut fastrand::Rng) -> i64 {
    let magnitude = match rng.u32(0..4) {
        0 => rng.i64(1_000..=60_000),
        1 => rng.i64(MINUTE_MS..=60 * MINUTE_MS),
        2 => rng.i64(60 * MINUTE_MS..=DAY_MS),
        _ => rng.i64(DAY_MS..=YEAR_MS),
    };
    if rng.bool() { magnitude } else { -magnitude }
}

impl std::fmt::Display for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = match self.model.per_device {
            true => format!("d{}", self.device),
            false => "*".into(),
        };
        match self.value {
            Some(value) => {
                write!(f, "put {} {}/{} = {value}", self.model.name, scope, self.id)?;
                match &self.tag {
                    Some(tag) => write!(f, " tag {tag}"),
                    None => Ok(()),
                }
            }
            None => write!(f, "remove {} {}/{}", self.model.name, scope, self.id),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Local(op) => write!(f, "d{}: {op}", op.device),
            Step::Cloud(op) => write!(f, "cloud: {op}"),
            Step::Advance { ms } => write!(f, "advance {ms} ms"),
            Step::Drive { device } => write!(f, "d{device}: drive"),
            Step::DriveAll => write!(f, "drive all"),
            Step::Crash { device } => write!(f, "d{device}: crash and reopen"),
            Step::Flush { device } => write!(f, "d{device}: fsync"),
            Step::PowerLoss { device } => write!(f, "d{device}: power loss and reopen"),
            Step::Partition { device, steps } => write!(f, "d{device}: offline {steps} steps"),
            Step::WallClock { device, ms } => write!(f, "d{device}: wall clock steps {ms} ms"),
            Step::DeliverLate => write!(f, "deliver a held push late"),
            Step::RelayRestart => write!(f, "relay: restart"),
            Step::RelayClock { ms } => write!(f, "relay: wall clock steps {ms} ms"),
            Step::LongOffline { device } => write!(f, "d{device}: offline for 31 days"),
            Step::Bulk { count, value } => write!(f, "cloud: bulk {count} shared items = {value}"),
            Step::Poison { id } => write!(f, "cloud: poison change of shared/p{id}"),
        }
    }
}
