//! One seed's run: draw the parameters, play the schedule with a safety check after every
//! step, heal the faults, and check that every replica converged.

use anyhow::{Context, Result, bail};
use ferry::WriteOptions;
use ferry::replication::POLL_INTERVAL_MS;
use serde_json::json;

use crate::sim::check::{Checker, converged};
use crate::sim::cloud::Cloud;
use crate::sim::faults::{FaultRates, lock, write_checked};
use crate::sim::model::{LONG_OFFLINE_MS, Params, Step, WriteOp, draw_step};
use crate::sim::world::World;

/// Steps of virtual time while healing, and how many of them at most.
const HEAL_STEP_MS: i64 = 5_000;
const HEAL_STEPS_MAX: usize = 400;
/// Healing ends after this long with nothing pending anywhere: every scope of every device
/// has polled since (a poll, plus the longest retry backoff a failed pull may still wait).
const QUIET_MS: i64 = 2 * POLL_INTERVAL_MS as i64 + 60_000;
/// Steps a device stays partitioned after a long offline.
const LONG_OFFLINE_STEPS: u32 = 10;

/// Why a seed failed: at which step, and what broke.
#[derive(Debug)]
pub struct Failure {
    pub step: usize,
    pub what: String,
}

/// How a passing seed went, for the summary.
#[derive(Debug, Default)]
pub struct Summary {
    pub steps: usize,
    pub heal_steps: usize,
    /// Steps in which a device had several batches in flight.
    pub pipelined_steps: u64,
}

struct Sim {
    rng: fastrand::Rng,
    params: Params,
    world: World,
    checker: Checker,
    verbose: bool,
    pipelined_steps: u64,
}

/// Runs seed `seed`; `long`: many more steps; `verbose`: print every step.
pub fn run(seed: u64, long: bool, verbose: bool) -> Result<Summary, Failure> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let params = Params::draw(&mut rng, long, seed % 2 == 1);
    if verbose {
        println!("seed {seed}: {params:?}");
    }
    let setup = |what: anyhow::Error| Failure {
        step: 0,
        what: format!("setup: {what:#}"),
    };
    let world = World::new(seed, &params).map_err(setup)?;
    let checker = Checker::new(params.devices);
    let mut sim = Sim {
        rng,
        params,
        world,
        checker,
        verbose,
        pipelined_steps: 0,
    };
    let steps = sim.params.steps;
    for step in 1..=steps {
        sim.step(step).map_err(|e| Failure {
            step,
            what: format!("{e:#}"),
        })?;
    }
    let heal_steps = sim.heal().map_err(|e| Failure {
        step: steps + 1,
        what: format!("after healing: {e:#}"),
    })?;
    Ok(Summary {
        steps,
        heal_steps,
        pipelined_steps: sim.pipelined_steps,
    })
}

impl Sim {
    fn step(&mut self, number: usize) -> Result<()> {
        let step = match self.params.long_offline_at {
            Some(at) if at == number => Step::LongOffline {
                device: self.rng.usize(0..self.params.devices),
            },
            _ => draw_step(&mut self.rng, &self.params),
        };
        let note = self.play(&step)?;
        self.print_step(number, &step, &note);
        for device in &self.world.devices {
            let mut link = lock(&device.link);
            link.offline_steps = link.offline_steps.saturating_sub(1);
        }
        self.checker.safety(&self.world)
    }

    /// Carries out one step; returns what it did, for `--verbose`.
    fn play(&mut self, step: &Step) -> Result<String> {
        match step {
            Step::Local(op) => self.local_write(op),
            Step::Cloud(op) => Ok(self.world.cloud_write(op)),
            Step::Advance { ms } => {
                self.world.advance(*ms)?;
                Ok(String::new())
            }
            Step::Drive { device } => {
                self.drive(*device)?;
                Ok(String::new())
            }
            Step::DriveAll => {
                self.drive_all()?;
                Ok(String::new())
            }
            Step::Flush { device } => {
                self.world.devices[*device].flush()?;
                Ok(String::new())
            }
            Step::PowerLoss { device } => {
                self.world.devices[*device].power_loss(&self.world.cloud)?;
                // What was lost was never promised: outbox entries and cursors start again.
                self.checker.forget(*device);
                Ok(String::new())
            }
            Step::Crash { device } => {
                self.world.devices[*device].crash_and_reopen(&self.world.cloud)?;
                Ok(String::new())
            }
            Step::RelayRestart => {
                if let Cloud::Relay(relay) = &self.world.cloud {
                    relay.restart()?;
                }
                Ok(String::new())
            }
            Step::RelayClock { ms } => {
                self.world.step_relay_clock(*ms)?;
                Ok(String::new())
            }
            Step::WallClock { device, ms } => {
                self.world.step_clock(*device, *ms);
                Ok(String::new())
            }
            Step::Partition { device, steps } => {
                let mut link = lock(&self.world.devices[*device].link);
                link.offline_steps = link.offline_steps.max(*steps);
                Ok(String::new())
            }
            Step::DeliverLate => Ok(self.deliver_late()),
            Step::Bulk { count, value } => Ok(self.world.bulk_write(*count, *value)),
            Step::Poison { id } => Ok(self.world.poison_write(*id)),
            Step::LongOffline { device } => {
                let mut link = lock(&self.world.devices[*device].link);
                link.offline_steps = link.offline_steps.max(LONG_OFFLINE_STEPS);
                drop(link);
                self.world.advance(LONG_OFFLINE_MS)?;
                Ok(String::new())
            }
        }
    }

    fn local_write(&mut self, op: &WriteOp) -> Result<String> {
        let device = &self.world.devices[op.device];
        let db = device.db()?;
        let model = op.model.name;
        match op.value {
            Some(value) => {
                let mut props = json!({ "id": op.id, "value": value });
                if let Some(field) = op.model.local_field {
                    props[field] = json!(format!("{}-{value}", device.name));
                }
                if let Some(tag) = &op.tag {
                    props["tag"] = json!(tag);
                }
                match db.put(model, props) {
                    Ok(_) => Ok(String::new()),
                    // Another item holds the tag here: the app is told, nothing changes.
                    Err(e) if e.code() == "UniqueError" => Ok("(tag taken)".into()),
                    Err(e) => {
                        Err(e).with_context(|| format!("{}: put {model} {}", device.name, op.id))
                    }
                }
            }
            None => {
                let removed = db
                    .remove(model, json!({ "id": op.id }), &WriteOptions::default())
                    .with_context(|| format!("{}: remove {model} {}", device.name, op.id))?;
                Ok(if removed.is_some() { "" } else { "(absent)" }.to_string())
            }
        }
    }

    fn drive_all(&mut self) -> Result<()> {
        for device in 0..self.world.devices.len() {
            self.drive(device)?;
        }
        Ok(())
    }

    /// One step of `device`'s driver, counted when it sent several batches: the driver
    /// sends every ready batch before it takes any answer, so those were in flight at once.
    fn drive(&mut self, device: usize) -> Result<()> {
        if self.world.devices[device].drive()? > 1 {
            self.pipelined_steps += 1;
        }
        Ok(())
    }

    /// One held push of a random device reaches the cloud now, after newer ones.
    fn deliver_late(&mut self) -> String {
        let device = self.rng.usize(0..self.world.devices.len());
        let Cloud::Memory(cloud) = &self.world.cloud else {
            return "(nothing held on the relay path)".into();
        };
        let mut link = lock(&self.world.devices[device].link);
        let mut cloud = lock(cloud);
        let Some(changes) = link.take_held(cloud.now_ms()) else {
            return "(nothing held)".into();
        };
        let outcomes = write_checked(&mut cloud, changes, &mut link);
        format!("d{device}: {outcomes:?}")
    }

    /// Ends every fault, then runs time forward until nothing is pending anywhere and every
    /// scope has been polled since; then checks convergence. Returns the healing steps.
    fn heal(&mut self) -> Result<usize> {
        for device in &self.world.devices {
            let mut link = lock(&device.link);
            link.rates = FaultRates::default();
            link.offline_steps = 0;
            let link = &mut *link;
            if let Cloud::Memory(cloud) = &self.world.cloud {
                let mut cloud = lock(cloud);
                while let Some(changes) = link.take_held(cloud.now_ms()) {
                    write_checked(&mut cloud, changes, link);
                }
            }
        }
        let mut quiet_ms = 0;
        for heal_step in 1..=HEAL_STEPS_MAX {
            self.world.advance(HEAL_STEP_MS)?;
            self.drive_all()?;
            self.print_step(self.params.steps + heal_step, &Step::DriveAll, "(healing)");
            self.checker.safety(&self.world)?;
            let (mut pending, mut expired) = (0, 0);
            for device in &self.world.devices {
                pending += device.db()?.status().pending_changes;
                expired += std::mem::take(&mut lock(&device.link).expired);
            }
            let quiet = pending == 0 && expired == 0;
            quiet_ms = if quiet { quiet_ms + HEAL_STEP_MS } else { 0 };
            if quiet_ms >= QUIET_MS {
                converged(&self.world)?;
                return Ok(heal_step);
            }
        }
        let status: Vec<String> = (self.world.devices.iter())
            .filter_map(|d| Some(format!("{}: {:?}", d.name, d.db().ok()?.status())))
            .collect();
        bail!(
            "changes still pending or pulls still expiring after {HEAL_STEPS_MAX} healing steps: {}",
            status.join("; ")
        )
    }

    fn print_step(&self, number: usize, step: &Step, note: &str) {
        if !self.verbose {
            return;
        }
        let offline: Vec<&str> = (self.world.devices.iter())
            .filter(|d| d.offline())
            .map(|d| d.name.as_str())
            .collect();
        println!(
            "step {number}: {step} {note} (t={} offline={offline:?})",
            self.world.now_ms
        );
        for device in &self.world.devices {
            for event in std::mem::take(&mut lock(&device.link).events) {
                println!("    {}: {event}", device.name);
            }
        }
    }
}
