//! `cargo xtask sim`: Ferry's deterministic replication simulator (docs/design.md section 9).
//!
//! Each seed plays a random schedule against 2-3 real `ferry::Db`s with skewed virtual
//! clocks (some boot a year behind or years ahead; wall clocks step by seconds to a year
//! either way, while sync's timers go on in virtual monotonic time) and one cloud: on even
//! seeds the reference cloud (`MemoryCloud`, whose feed shows changes up to W/2 late) behind
//! a faulty network (dropped, duplicated, late and unanswered pushes, short pull pages,
//! partitions); on odd seeds the relay, its own connection code, frame codec and embedded
//! store, reached by `ferry-ws` over in-memory pipes (connections cut mid-frame before the
//! request is whole or after the answer left, partitions, tokens expiring mid-session,
//! relay restarts and power losses, the relay's clock stepping), with crashes and reopens, writers whose `_seq` clocks are skewed,
//! bulk cloud writes of hundreds of rows (multi-page pulls and resyncs), poison changes
//! (the cloud's write rule refuses them; were one to land, no device could apply it),
//! unique tags that clash between devices, triggers that call back into
//! the database, and, for some seeds, a device offline past the tombstone horizon. After
//! every step it checks safety (no acknowledged write lost, journal and data agree, cursors
//! monotonic, no stale write wins in the cloud); after healing, that every replica
//! converged by its model's direction rule (quarantined keys aside, each quarantined for a
//! reason the run explains), that every applied cloud change fired one `Cloud` event, and
//! that each conflict was logged once and fired one `Conflict` event. Everything derives
//! from the seed: `--seed S` replays a failure. (Background drivers are real threads, so
//! they are tested by integration tests, not here.)
//!
//! - `model`: the schema, the per-seed parameters and the step schedule.
//! - `faults`: the fault-injecting transport of the reference cloud.
//! - `relay`: the relay path: the relay in process, and each device's transport to it.
//! - `cloud`: the cloud a seed uses, as the runner and the checks see it.
//! - `world`: the cloud, the devices and virtual time.
//! - `check`: the invariants.
//! - `run`: one seed from start to convergence.

mod check;
mod cloud;
mod faults;
mod model;
mod relay;
mod run;
mod world;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub const USAGE: &str = "  sim            the deterministic replication simulator
                 options: --seeds N (run seeds 0..N, default 1000), --seed S (replay one),
                 --verbose (print the schedule), --long (5,000 steps or more per seed, and
                 20 seeds unless --seeds says: over 100,000 steps)";

/// Runs `cargo xtask sim` with its arguments.
pub fn main(args: &[&str]) -> Result<()> {
    let mut options = Options::parse(args)?;
    if options.long && !options.seeds_given {
        options.seeds = LONG_SEEDS;
    }
    match options.seed {
        Some(seed) => run_seeds(seed..seed + 1, &options),
        None => run_seeds(0..options.seeds, &options),
    }
}

/// Seeds of a `--long` run: each runs 5,000 steps or more.
const LONG_SEEDS: u64 = 20;

#[derive(Debug)]
struct Options {
    seeds: u64,
    seeds_given: bool,
    seed: Option<u64>,
    verbose: bool,
    long: bool,
}

impl Options {
    fn parse(args: &[&str]) -> Result<Options> {
        let mut options = Options {
            seeds: 1000,
            seeds_given: false,
            seed: None,
            verbose: false,
            long: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64> {
                let text = args
                    .next()
                    .with_context(|| format!("{name} needs a number"))?;
                text.parse()
                    .with_context(|| format!("{name} {text}: not a number"))
            };
            match *arg {
                "--seeds" => {
                    options.seeds = number("--seeds")?;
                    options.seeds_given = true;
                }
                "--seed" => options.seed = Some(number("--seed")?),
                "--verbose" => options.verbose = true,
                "--long" => options.long = true,
                other => bail!("sim: unknown option {other}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// Runs `seeds`, on every core unless `--verbose` (whose output must stay in order). Each
/// seed runs start to end on one thread, so the thread count changes nothing in a seed.
fn run_seeds(seeds: Range<u64>, options: &Options) -> Result<()> {
    let started = Instant::now();
    let count = seeds.end - seeds.start;
    let threads = match options.verbose {
        true => 1,
        false => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let pool = Pool {
        next: AtomicU64::new(seeds.start),
        end: seeds.end,
        steps: AtomicU64::new(0),
        heal_steps: AtomicU64::new(0),
        pipelined_steps: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
    };
    std::thread::scope(|scope| {
        for _ in 0..threads.min(count as usize).max(1) {
            scope.spawn(|| pool.work(options));
        }
    });
    let failures = pool
        .failures
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    // The lowest failing seed, so that a rerun reports the same one.
    let failed = failures.len();
    if let Some((seed, failure)) = failures.into_iter().next() {
        // The plain tally line CI reads, then the first failure to replay.
        println!("sim: {} passed, {failed} failed", count - failed as u64);
        eprintln!(
            "sim: seed {seed} failed at step {}: {}",
            failure.step, failure.what
        );
        let long = if options.long { " --long" } else { "" };
        eprintln!("replay: cargo xtask sim --seed {seed}{long} --verbose");
        // The message above is the whole report: exit without an error's backtrace.
        std::process::exit(1);
    }
    println!(
        "sim: {count} seeds passed ({} steps, {} healing steps, {} with several batches in flight) in {:.1} s",
        pool.steps.into_inner(),
        pool.heal_steps.into_inner(),
        pool.pipelined_steps.into_inner(),
        started.elapsed().as_secs_f64()
    );
    println!("sim: {count} passed, 0 failed");
    Ok(())
}

/// Seeds handed out to worker threads, and what they found.
struct Pool {
    next: AtomicU64,
    end: u64,
    steps: AtomicU64,
    heal_steps: AtomicU64,
    pipelined_steps: AtomicU64,
    failures: Mutex<BTreeMap<u64, run::Failure>>,
}

impl Pool {
    fn work(&self, options: &Options) {
        loop {
            let seed = self.next.fetch_add(1, Ordering::Relaxed);
            if seed >= self.end {
                return;
            }
            match run::run(seed, options.long, options.verbose) {
                Ok(summary) => {
                    self.steps
                        .fetch_add(summary.steps as u64, Ordering::Relaxed);
                    let heal = summary.heal_steps as u64;
                    self.heal_steps.fetch_add(heal, Ordering::Relaxed);
                    (self.pipelined_steps).fetch_add(summary.pipelined_steps, Ordering::Relaxed);
                }
                Err(failure) => {
                    let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                    failures.insert(seed, failure);
                    // Stop handing out seeds; seeds already running finish.
                    self.next.store(self.end, Ordering::Relaxed);
                }
            }
        }
    }
}
