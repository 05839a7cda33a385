//! The store against an in-memory model, with reopen in the mix.

use std::collections::BTreeMap;

use ferry_journal::{Change, ChangeOp, ConflictRecord, OutboxEntry, Tombstone};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_types::table::{Index, IndexKind, Projection, SortCondition};
use ferry_types::{Hlc, Item, Key, Number, ReplicaId, Value, Version};
use proptest::prelude::*;

use crate::{Acked, Claims, Durability, Error, Kind, Options, Query, Store, StoreLayout};

/// Kind `T` with a keys-only index `gs1` on (kind, n), a unique `code` and an expiry
/// `exp`; `memory`: a kind `Live` too, kept in memory only, and `gs1` projecting all.
fn layout(memory: bool) -> StoreLayout {
    let index = |name: &str, hash: &str, sort: &str, kind, project| Index {
        name: name.into(),
        hash: hash.into(),
        sort: Some(sort.into()),
        kind,
        project,
    };
    let gs1 = match memory {
        true => Projection::All,
        false => Projection::Keys,
    };
    let claims: Claims = Arc::new(|item: &Item| match item.get("code") {
        Some(Value::S(code)) => vec![("code".to_string(), format!("T:code:{code}"))],
        _ => Vec::new(),
    });
    let t = Kind {
        ttl: Some("exp".into()),
        memory: false,
        claims: Some(claims),
    };
    let mut kinds = BTreeMap::from([("T".to_string(), t)]);
    if memory {
        let live = Kind {
            memory: true,
            ..Kind::default()
        };
        kinds.insert("Live".into(), live);
    }
    StoreLayout {
        primary: index("primary", "pk", "sk", IndexKind::Primary, Projection::All),
        indexes: vec![index("gs1", "kind", "n", IndexKind::Global, gs1)],
        type_field: "_type".into(),
        kinds,
        document: format!("a test layout, memory: {memory}").into_bytes(),
    }
}

/// Opens the store in `dir` with [`layout`].
fn open_with(dir: &std::path::Path, memory: bool) -> Store {
    let (store, ()) = Store::open(dir, &Options::default(), |_| {
        Ok::<_, Error>((layout(memory), ()))
    })
    .unwrap();
    store
}

fn open(dir: &std::path::Path) -> Store {
    open_with(dir, false)
}

fn item(pk: u8, sk: i64, kind: Option<u8>, n: i64) -> Item {
    let mut item = Item::new();
    item.insert("_type".into(), Value::S("T".into()));
    item.insert("pk".into(), Value::S(format!("p{pk}")));
    item.insert("sk".into(), Value::N(Number::from(sk)));
    if let Some(kind) = kind {
        item.insert("kind".into(), Value::S(format!("k{kind}")));
        item.insert("n".into(), Value::N(Number::from(n)));
    }
    item
}

fn key(pk: u8, sk: i64) -> Key {
    Key {
        hash: Value::S(format!("p{pk}")),
        sort: Some(Value::N(Number::from(sk))),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put {
        pk: u8,
        sk: i64,
        kind: Option<u8>,
        n: i64,
    },
    Delete {
        pk: u8,
        sk: i64,
    },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3u8, -5..5i64, proptest::option::of(0..2u8), -3..3i64).prop_map(|(pk, sk, kind, n)| Step::Put { pk, sk, kind, n }),
        3 => (0..3u8, -5..5i64).prop_map(|(pk, sk)| Step::Delete { pk, sk }),
        1 => Just(Step::Reopen),
    ]
}

fn query(
    store: &Store,
    index: &str,
    hash: Value,
    sort: Option<SortCondition>,
    reverse: bool,
) -> Vec<Item> {
    let q = Query {
        index: index.into(),
        hash,
        sort,
        reverse,
        after: None,
    };
    store
        .rows(&q)
        .unwrap()
        .map(|r| r.unwrap().item().unwrap())
        .collect()
}

/// Everything the model says must be visible: gets, primary queries in both directions,
/// and the sparse index with its keys-only projection.
fn check(store: &Store, model: &BTreeMap<(u8, i64), Item>) {
    for pk in 0..3u8 {
        for sk in -5..5i64 {
            assert_eq!(
                store.get(&key(pk, sk)).unwrap().as_ref(),
                model.get(&(pk, sk))
            );
        }
        let want: Vec<Item> = model
            .range((pk, i64::MIN)..=(pk, i64::MAX))
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(
            query(store, "primary", Value::S(format!("p{pk}")), None, false),
            want
        );
        let mut reversed = want.clone();
        reversed.reverse();
        assert_eq!(
            query(store, "primary", Value::S(format!("p{pk}")), None, true),
            reversed
        );
    }
    for kind in 0..2u8 {
        let kind_value = Value::S(format!("k{kind}"));
        let mut want: Vec<(Value, Value, Value)> = model
            .values()
            .filter(|i| i.get("kind") == Some(&kind_value))
            .map(|i| (i["n"].clone(), i["pk"].clone(), i["sk"].clone()))
            .collect();
        // Index order: index sort key numerically, then the primary key.
        want.sort_by(|a, b| {
            (a.0.as_number(), a.1.as_str(), a.2.as_number()).cmp(&(
                b.0.as_number(),
                b.1.as_str(),
                b.2.as_number(),
            ))
        });
        let got: Vec<(Value, Value, Value)> = query(store, "gs1", kind_value, None, false)
            .into_iter()
            .map(|i| (i["n"].clone(), i["pk"].clone(), i["sk"].clone()))
            .collect();
        assert_eq!(got, want, "index gs1 for k{kind}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap_across_reopens(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut model = BTreeMap::new();
        for step in steps {
            match step {
                Step::Put { pk, sk, kind, n } => {
                    let it = item(pk, sk, kind, n);
                    store.write(Durability::Default, |tx| tx.put(it.clone()).map(|_| ())).unwrap();
                    model.insert((pk, sk), it);
                }
                Step::Delete { pk, sk } => {
                    store.write(Durability::Default, |tx| tx.delete(&key(pk, sk)).map(|_| ())).unwrap();
                    model.remove(&(pk, sk));
                }
                Step::Reopen => {
                    drop(store);
                    store = open(dir.path());
                }
            }
            check(&store, &model);
        }
    }
}

#[test]
fn sort_conditions_select_exact_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(Durability::Default, |tx| {
            for sk in -3..=3 {
                tx.put(item(0, sk, None, 0))?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    let sks = |cond: SortCondition| -> Vec<i64> {
        query(&store, "primary", Value::S("p0".into()), Some(cond), false)
            .iter()
            .map(|i| i["sk"].as_number().unwrap().as_i64().unwrap())
            .collect()
    };
    let n = |v: i64| Value::N(Number::from(v));
    assert_eq!(sks(SortCondition::Eq(n(1))), vec![1]);
    assert_eq!(sks(SortCondition::Lt(n(0))), vec![-3, -2, -1]);
    assert_eq!(sks(SortCondition::Le(n(0))), vec![-3, -2, -1, 0]);
    assert_eq!(sks(SortCondition::Gt(n(1))), vec![2, 3]);
    assert_eq!(sks(SortCondition::Ge(n(1))), vec![1, 2, 3]);
    assert_eq!(sks(SortCondition::Between(n(-1), n(1))), vec![-1, 0, 1]);
}

#[test]
fn a_failed_batch_leaves_nothing_and_unique_claims_move_with_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let with_code = |pk, code: &str| {
        let mut it = item(pk, 0, None, 0);
        it.insert("code".into(), Value::S(code.into()));
        it
    };
    store
        .write(Durability::Immediate, |tx| {
            tx.put(with_code(0, "a")).map(|_| ())
        })
        .unwrap();
    // A second item with the same code fails, and its other write in the batch is dropped.
    let result = store.write(Durability::Default, |tx| {
        tx.put(item(1, 5, None, 0))?;
        tx.put(with_code(2, "a"))
    });
    assert!(
        matches!(result, Err(Error::Unique { ref field, .. }) if field == "code"),
        "{result:?}"
    );
    assert_eq!(
        store.get(&key(1, 5)).unwrap(),
        None,
        "nothing of the failed batch is stored"
    );
    // Changing the code releases the old claim.
    store
        .write(Durability::Default, |tx| {
            tx.put(with_code(0, "b")).map(|_| ())
        })
        .unwrap();
    store
        .write(Durability::Default, |tx| {
            tx.put(with_code(2, "a")).map(|_| ())
        })
        .unwrap();
}

#[test]
fn expiry_records_follow_the_ttl_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut it = item(0, 1, None, 0);
    it.insert("exp".into(), Value::N(Number::from(100i64)));
    store
        .write(Durability::Default, |tx| tx.put(it.clone()).map(|_| ()))
        .unwrap();
    assert_eq!(store.expired(99, 10).unwrap(), vec![]);
    assert_eq!(store.expired(100, 10).unwrap(), vec![key(0, 1)]);
    it.insert("exp".into(), Value::N(Number::from(500i64)));
    store
        .write(Durability::Default, |tx| tx.put(it.clone()).map(|_| ()))
        .unwrap();
    assert_eq!(
        store.expired(499, 10).unwrap(),
        vec![],
        "the old expiry record is gone"
    );
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    for bytes in [&[][..], &[9, 1, 2][..], &[1, 5, 0][..], &[1, 200][..]] {
        assert!(crate::layout::decode_item(bytes).is_err(), "{bytes:?}");
    }
}

#[test]
fn memory_models_start_empty_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_with(dir.path(), true);
    let store = open();
    let mut live = item(1, 1, Some(0), 7);
    live.insert("_type".into(), Value::S("Live".into()));
    store
        .write(Durability::Default, |tx| {
            tx.put(item(0, 1, Some(0), 1))?;
            tx.put(live.clone())
        })
        .unwrap();
    assert_eq!(store.get(&key(1, 1)).unwrap(), Some(live));
    drop(store);
    let store = open();
    assert_eq!(
        store.get(&key(1, 1)).unwrap(),
        None,
        "a mem model is not persisted"
    );
    assert!(store.get(&key(0, 1)).unwrap().is_some(), "other models are");
    let in_index = query(&store, "gs1", Value::S("k0".into()), None, false);
    assert_eq!(in_index.len(), 1, "the mem item's index entry is gone too");
}

/// Only with fast reopen (the CLI's feature, on in the workspace's test run): without it a
/// reopen replays the journal, as fjall does.
#[cfg(feature = "fast-reopen")]
#[test]
fn a_clean_close_leaves_no_journal_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let journals = || -> Vec<std::path::PathBuf> {
        let paths = std::fs::read_dir(dir.path()).unwrap();
        let paths = paths.map(|entry| entry.unwrap().path());
        paths
            .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
            .collect()
    };
    let journal_bytes = || -> u64 {
        journals()
            .iter()
            .map(|path| path.metadata().unwrap().len())
            .sum()
    };
    let store = open(dir.path());
    for sk in 0..2000 {
        store
            .write(Durability::Default, |tx| {
                tx.put(item(1, sk, Some(0), sk)).map(|_| ())
            })
            .unwrap();
    }
    assert!(journal_bytes() > 0, "writes are journaled");
    drop(store);
    let store = open(dir.path());
    assert_eq!(journal_bytes(), 0, "the reopen found nothing to replay");
    assert!((0..2000).all(|sk| store.get(&key(1, sk)).unwrap().is_some()));
    let before = journals();
    drop(store);
    drop(open(dir.path()));
    assert_eq!(
        journals(),
        before,
        "closing an unchanged store starts no journal"
    );
}

#[test]
fn items_are_stored_compressed_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let note = "a reading of moderate length, like a device would keep; ".repeat(8);
    let written = |sk| {
        let mut item = item(1, sk, None, 0);
        item.insert("note".into(), Value::S(format!("{sk}: {note}")));
        item
    };
    let mut raw = 0;
    for sk in 0..2000 {
        let item = written(sk);
        raw += crate::layout::encode_item(&item).len() as u64;
        store
            .write(Durability::Default, |tx| tx.put(item).map(|_| ()))
            .unwrap();
    }
    store.items.rotate_memtable_and_wait().unwrap();
    let on_disk = store.items.disk_space();
    assert!(
        on_disk * 4 < raw,
        "{on_disk} bytes on disk for {raw} bytes of repetitive items: the blocks are compressed"
    );
    drop(store);
    let store = open(dir.path());
    for sk in 0..2000 {
        assert_eq!(store.get(&key(1, sk)).unwrap(), Some(written(sk)));
    }
}

/// Diagnostics for tuning (run by hand): `cargo test --release -p ferry-store -- --ignored --nocapture lsm_shape`.
#[test]
#[ignore = "a manual tuning aid: loads many items and prints the LSM shape"]
fn lsm_shape_after_bulk_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let n: i64 = std::env::var("ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let started = Instant::now();
    for i in 0..n {
        let mut it = item((i % 200) as u8, i, Some((i % 2) as u8), i);
        it.insert(
            "note".into(),
            Value::S("a reading of moderate length, like a device would keep".into()),
        );
        store
            .write(Durability::Default, |tx| tx.put(it).map(|_| ()))
            .unwrap();
    }
    eprintln!("loaded {n} in {:?}", started.elapsed());
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap()
            .to_string()
    };
    for (name, ks) in [("items", &store.items), ("gs1", &store.indexes[0].1)] {
        eprintln!(
            "{name}: tables {} l0 {} sealed {}",
            ks.table_count(),
            ks.l0_table_count(),
            ks.sealed_memtable_count()
        );
    }
    eprintln!(
        "journals {} write buffer {} {}",
        store.db.journal_count(),
        store.db.write_buffer_size(),
        rss()
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (name, ks) in [("items", &store.items), ("gs1", &store.indexes[0].1)] {
        eprintln!(
            "{name} after 2s: tables {} l0 {} sealed {} disk {}",
            ks.table_count(),
            ks.l0_table_count(),
            ks.sealed_memtable_count(),
            ks.disk_space()
        );
    }
    let out = std::process::Command::new("du")
        .arg("-a")
        .arg(dir.path())
        .output()
        .unwrap();
    eprintln!(
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("tables/") || l.ends_with("tables"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(store);
    let store = open(dir.path());
    eprintln!("after reopen: {}", rss());
    let started = Instant::now();
    for i in 0..100_000i64 {
        let k = (i * 7919) % n;
        assert!(store.get(&key((k % 200) as u8, k)).unwrap().is_some());
    }
    eprintln!("100k gets in {:?}; {}", started.elapsed(), rss());
}

// Replication records: outbox, tombstones, conflicts and sync state.

fn version(hlc: u64) -> Version {
    Version {
        hlc: Hlc::from_u64(hlc),
        replica: ReplicaId::parse("dev1").unwrap(),
    }
}

fn entry(pk: u8, hlc: u64) -> OutboxEntry {
    OutboxEntry {
        change: Change {
            model: "T".into(),
            key: key(pk, 0),
            op: ChangeOp::Put,
            version: version(hlc),
            scope: "*".into(),
            item: Some(item(pk, 0, None, 0)),
            base: None,
        },
        queued_ms: hlc,
    }
}

fn tombstone(deleted_ms: u64) -> Tombstone {
    Tombstone {
        model: "T".into(),
        version: version(deleted_ms),
        deleted_ms,
    }
}

fn conflict(pk: u8, at_ms: u64, loser_hlc: u64) -> ConflictRecord {
    ConflictRecord {
        winner: version(100),
        loser: entry(pk, loser_hlc).change,
        at_ms,
    }
}

#[test]
fn a_failed_write_leaves_no_outbox_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let result = store.write(Durability::Default, |tx| {
        tx.put(item(0, 0, None, 0))?;
        tx.queue(entry(0, 1))?;
        tx.set_tombstone(&key(1, 0), tombstone(1));
        Err::<(), _>(Error::Key("refused by the caller".into()))
    });
    assert!(result.is_err());
    assert_eq!(store.get(&key(0, 0)).unwrap(), None);
    assert_eq!(store.pending(&key(0, 0)).unwrap(), None);
    assert_eq!(store.tombstone(&key(1, 0)).unwrap(), None);
}

/// Entries queued, the commits of [`write_between`] after them (or none: `between`
/// false), then a settle that names the commit that queued each acknowledged version:
/// an entry newer than its acknowledgement stays either way, and the outbox's count is
/// right.
fn settle_around(between: bool, others: u32) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let queued_by = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let heard = Arc::clone(&queued_by);
    store
        .write(Durability::Default, move |tx| {
            tx.after_commit_queued(move |_, commit| heard.store(commit, Ordering::Relaxed));
            (0..5).try_for_each(|pk| tx.queue(entry(pk, 1)).map(|_| ()))
        })
        .unwrap();
    if between {
        write_between(&store, others);
    }
    let acked: Vec<_> = [0, 1, 2, 3, 4, 0]
        .into_iter()
        .map(|pk| Acked {
            key: key(pk, 0),
            version: version(1),
            queued_by: Some(queued_by.load(Ordering::Relaxed)),
        })
        .collect();
    store.settle(&acked).unwrap();

    assert_eq!(
        store.pending(&key(0, 0)).unwrap(),
        None,
        "settled, twice over"
    );
    let (newer, requeued) = match between {
        true => (Some(entry(1, 5)), Some(entry(3, 7))),
        false => (None, None),
    };
    assert_eq!(
        store.pending(&key(1, 0)).unwrap(),
        newer,
        "a newer write after the one acknowledged stays pending"
    );
    assert_eq!(store.pending(&key(2, 0)).unwrap(), None);
    assert_eq!(
        store.pending(&key(3, 0)).unwrap(),
        requeued,
        "an entry settled and queued again stays pending"
    );
    assert_eq!(store.pending(&key(4, 0)).unwrap(), None);
    let held = store.outbox().count();
    assert_eq!(store.outbox_len(), held, "the count is the entries held");
}

/// Queues a newer entry of key 1, settles key 2 and settles and requeues key 3 (three
/// commits), besides `others` entries of other keys first.
fn write_between(store: &Store, others: u32) {
    store
        .write(Durability::Default, |tx| {
            for sort in 0..others {
                let mut other = entry(9, 1);
                other.change.key = key(9, i64::from(sort));
                tx.queue(other)?;
            }
            tx.queue(entry(1, 5)).map(|_| ())
        })
        .unwrap();
    store
        .write(Durability::Default, |tx| tx.settle(&key(2, 0), &version(1)))
        .unwrap();
    store
        .write(Durability::Default, |tx| {
            tx.settle(&key(3, 0), &version(1))?;
            tx.queue(entry(3, 7)).map(|_| ())
        })
        .unwrap();
}

/// Queues `entry` in a commit of its own; returns the commit's number.
fn queue_alone(store: &Store, entry: OutboxEntry) -> u64 {
    let queued_by = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let heard = Arc::clone(&queued_by);
    store
        .write(Durability::Default, move |tx| {
            tx.after_commit_queued(move |_, commit| heard.store(commit, Ordering::Relaxed));
            tx.queue(entry).map(|_| ())
        })
        .unwrap();
    queued_by.load(Ordering::Relaxed)
}

fn acked(pk: u8, hlc: u64, queued_by: Option<u64>) -> Acked {
    Acked {
        key: key(pk, 0),
        version: version(hlc),
        queued_by,
    }
}

#[test]
fn a_settle_of_versions_their_own_commits_queued_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let commits: Vec<u64> = (0..5).map(|pk| queue_alone(&store, entry(pk, 1))).collect();
    let reads = store.pending_reads.load(Ordering::Relaxed);
    let all: Vec<_> = (0..5u8)
        .map(|pk| acked(pk, 1, Some(commits[usize::from(pk)])))
        .collect();
    store.settle(&all).unwrap();
    assert_eq!(
        store.pending_reads.load(Ordering::Relaxed),
        reads,
        "no entry read"
    );
    assert_eq!((store.outbox_len(), store.outbox().count()), (0, 0));
}

#[test]
fn a_settle_naming_a_commit_that_did_not_queue_its_version_reads_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let queued = queue_alone(&store, entry(0, 5));
    let other = queue_alone(&store, entry(1, 5));
    // `queued` queued version 5, not the 1 acknowledged.
    for named in [u64::MAX, other, queued - 1, queued] {
        store.settle(&[acked(0, 1, Some(named))]).unwrap();
        assert_eq!(
            store.pending(&key(0, 0)).unwrap(),
            Some(entry(0, 5)),
            "commit {named} did not queue version 1: the newer entry stays"
        );
        store.settle(&[acked(2, 1, Some(named))]).unwrap();
        assert_eq!(
            store.outbox_len(),
            2,
            "settling an absent entry removes nothing"
        );
    }
}

#[test]
fn a_commit_the_log_has_forgotten_costs_its_own_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = queue_alone(&store, entry(0, 1));
    store
        .write(Durability::Default, |tx| {
            for sort in 0..5000 {
                let mut other = entry(9, 1);
                other.change.key = key(9, sort);
                tx.queue(other)?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    let fresh = queue_alone(&store, entry(1, 1));
    let reads = store.pending_reads.load(Ordering::Relaxed);
    store
        .settle(&[acked(0, 1, Some(old)), acked(1, 1, Some(fresh))])
        .unwrap();
    assert_eq!(store.pending_reads.load(Ordering::Relaxed), reads + 1);
    assert_eq!(store.pending(&key(0, 0)).unwrap(), None);
    assert_eq!(store.pending(&key(1, 0)).unwrap(), None);
}

#[test]
fn a_settle_keeps_what_was_written_after_the_commit_it_names() {
    settle_around(false, 0);
    settle_around(true, 0);
    // More keys than the log of outbox writes holds: the settle reads the entries.
    settle_around(true, 5000);
}

#[test]
fn replication_records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(Durability::Default, |tx| {
            tx.put(item(0, 0, None, 0))?;
            tx.queue(entry(0, 1))?;
            tx.set_tombstone(&key(1, 0), tombstone(10));
            // Two conflicts of one key in one millisecond are both kept.
            tx.log_conflict(conflict(0, 50, 1))?;
            tx.log_conflict(conflict(0, 50, 2))?;
            tx.set_meta("clock", vec![1, 2]);
            Ok::<_, Error>(())
        })
        .unwrap();
    store
        .write(Durability::Default, |tx| {
            tx.log_conflict(conflict(0, 50, 3))
        })
        .unwrap();
    drop(store);
    let mut kept = None;
    let (store, ()) = Store::open(dir.path(), &Options::default(), |document| {
        kept = document.map(<[u8]>::to_vec);
        Ok::<_, Error>((layout(false), ()))
    })
    .unwrap();
    assert!(store.get(&key(0, 0)).unwrap().is_some());
    assert_eq!(store.pending(&key(0, 0)).unwrap(), Some(entry(0, 1)));
    assert_eq!(store.tombstone(&key(1, 0)).unwrap(), Some(tombstone(10)));
    assert_eq!(store.meta("clock").unwrap(), Some(vec![1, 2]));
    assert_eq!(store.meta("cursor").unwrap(), None);
    assert_eq!(
        kept,
        Some(layout(false).document),
        "sync state leaves the layout's document alone"
    );
    let losers = |limit| -> Vec<u64> {
        let conflicts = store.conflicts(limit).unwrap();
        conflicts
            .iter()
            .map(|c| c.loser.version.hlc.as_u64())
            .collect()
    };
    assert_eq!(losers(10), vec![3, 2, 1], "newest first");
    assert_eq!(losers(2), vec![3, 2]);
}

#[test]
fn conflicts_are_ordered_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (pk, at_ms) in [(2, 30), (0, 10), (1, 20)] {
        let record = conflict(pk, at_ms, u64::from(pk));
        store
            .write(Durability::Default, |tx| tx.log_conflict(record.clone()))
            .unwrap();
    }
    let times: Vec<u64> = store
        .conflicts(10)
        .unwrap()
        .iter()
        .map(|c| c.at_ms)
        .collect();
    assert_eq!(times, vec![30, 20, 10]);
    assert_eq!(store.conflicts(10).unwrap()[0], conflict(2, 30, 2));
}

#[test]
fn the_conflict_log_keeps_the_newest_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let max = ferry_journal::CONFLICTS_MAX as u64;
    store
        .write(Durability::Default, |tx| {
            (0..max).try_for_each(|at| tx.log_conflict(conflict(0, at, at)))
        })
        .unwrap();
    store
        .write(Durability::Default, |tx| {
            (max..max + 5).try_for_each(|at| tx.log_conflict(conflict(0, at, at)))
        })
        .unwrap();
    let kept = store.conflicts(usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, max, "the log is bounded");
    assert_eq!(
        kept.first().map(|c| c.at_ms),
        Some(max + 4),
        "the newest is kept"
    );
    assert_eq!(
        kept.last().map(|c| c.at_ms),
        Some(5),
        "the five oldest went"
    );
}

#[test]
fn tombstones_round_trip_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(Durability::Default, |tx| {
            tx.set_tombstone(&key(0, 0), tombstone(10));
            tx.set_tombstone(&key(1, 0), tombstone(5));
            tx.set_tombstone(&key(2, 0), tombstone(30));
            assert_eq!(tx.tombstone(&key(0, 0))?, Some(tombstone(10)));
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(
        store.expired_tombstones(20, 10).unwrap(),
        vec![key(0, 0), key(1, 0)]
    );
    assert_eq!(store.expired_tombstones(20, 1).unwrap(), vec![key(0, 0)]);
    store
        .write(Durability::Default, |tx| {
            assert!(tx.take_tombstone(&key(0, 0))?.is_some());
            assert_eq!(tx.tombstone(&key(0, 0))?, None);
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.tombstone(&key(0, 0)).unwrap(), None);
    assert_eq!(store.expired_tombstones(20, 10).unwrap(), vec![key(1, 0)]);
}

#[test]
fn corrupt_journal_records_name_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .outbox
        .insert(crate::layout::key_bytes(&key(0, 0)), [1, 200])
        .unwrap();
    let err = store.pending(&key(0, 0)).unwrap_err().to_string();
    assert!(err.starts_with("corrupt outbox entry in "), "{err}");
}

#[test]
fn a_malformed_sync_number_or_text_is_corruption_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(Durability::Default, |tx| {
            tx.set_meta("cursor:*", vec![1, 2, 3]);
            tx.set_meta("replica", vec![0xff, 0xfe]);
            tx.set_meta("hlc", 7u64.to_be_bytes().to_vec());
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.meta_u64("hlc").unwrap(), Some(7));
    assert_eq!(store.meta_u64("absent").unwrap(), None);
    for error in [
        store.meta_u64("cursor:*").unwrap_err(),
        store.meta_text("replica").unwrap_err(),
    ] {
        assert!(matches!(error, Error::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("meta record"), "{error}");
    }
}

/// A persist that runs while a write is about to commit (here: from the commit hook) does
/// not cover the write, so the next persist fsyncs it. A mark taken meanwhile (as by a
/// reader who meets the batch before the commit ends) holds the commit: no fsync before
/// its end covers it.
#[test]
fn a_persist_racing_a_commit_leaves_the_commit_for_the_next_fsync() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, Weak};

    let dir = tempfile::tempdir().unwrap();
    let fsyncs = Arc::new(AtomicU64::new(0));
    let store_cell: Arc<OnceLock<Weak<Store>>> = Arc::default();
    let counted = fsyncs.clone();
    let racing = store_cell.clone();
    let marked: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let marking = marked.clone();
    let options = Options {
        on_fsync: Some(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })),
        on_commit: Some(Arc::new(move || {
            if let Some(store) = racing.get().and_then(Weak::upgrade) {
                store.persist().map_err(std::io::Error::other)?;
                let mark = store.commit_mark();
                marking
                    .lock()
                    .unwrap()
                    .push((mark, store.is_persisted(mark)));
            }
            Ok(())
        })),
        ..Options::default()
    };
    let store = Arc::new(
        Store::open(dir.path(), &options, |_| {
            Ok::<_, Error>((layout(false), ()))
        })
        .unwrap()
        .0,
    );
    store_cell.set(Arc::downgrade(&store)).unwrap();
    store
        .write(Durability::Default, |tx| tx.put(item(1, 1, None, 0)))
        .unwrap();
    let (mark_in_commit, covered_in_commit) = marked.lock().unwrap()[0];
    assert!(
        !covered_in_commit,
        "a persist before the commit ended covered its mark"
    );
    let mark = store.commit_mark();
    assert_eq!(mark, mark_in_commit);
    assert!(
        !store.is_persisted(mark),
        "the racing persist did not cover it"
    );
    let before = fsyncs.load(Ordering::SeqCst);
    store.persist().unwrap();
    assert_eq!(
        fsyncs.load(Ordering::SeqCst),
        before + 1,
        "the write is fsynced by the persist after it"
    );
    assert!(store.is_persisted(mark));
}

/// A commit's mark is persisted once an fsync covers it: an explicit persist, an
/// `Immediate` commit after it, or the syncer's own within its window. The fsync goes to
/// the journal files where fjall keeps them (a layout change would fail here, not skip it).
#[test]
fn a_commit_mark_is_persisted_once_an_fsync_covers_it() {
    let open = |dir: &std::path::Path, window_ms| {
        let options = Options {
            sync_window: Duration::from_millis(window_ms),
            ..Options::default()
        };
        let layout = |_: Option<&[u8]>| Ok::<_, Error>((layout(false), ()));
        Store::open(dir, &options, layout).unwrap().0
    };
    let put = |store: &Store, n: u8, durability| {
        store
            .write(durability, |tx| tx.put(item(n, 1, None, 0)))
            .unwrap();
        store.commit_mark()
    };
    // A syncer that never runs in the test's time first, on a store opened again.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 3_600_000));
    let store = open(dir.path(), 3_600_000);
    let opened = store.commit_mark();
    assert!(
        !store.is_persisted(opened),
        "what the last process left may be in the OS's cache only"
    );
    store.persist().unwrap();
    assert!(store.is_persisted(opened));
    // Journals it cannot list: fjall's own fsync, not a failure.
    let nowhere = dir.path().join("not-a-directory");
    crate::durability::fsync_journal(&store.db, &nowhere, fjall::PersistMode::SyncAll).unwrap();
    let journals = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| {
            (entry.as_ref().unwrap().path().extension()).is_some_and(|ext| ext == "jnl")
        })
        .count();
    assert!(
        journals > 0,
        "no journal file where the fsync looks for one"
    );

    let first = put(&store, 1, Durability::Default);
    let second = put(&store, 2, Durability::Default);
    assert!(second > first);
    let immediate = put(&store, 3, Durability::Immediate);
    assert!(store.is_persisted(first) && store.is_persisted(immediate));

    let mut mark = put(&store, 4, Durability::Default);
    assert!(!store.is_persisted(mark));
    store.persist().unwrap();
    assert!(store.is_persisted(mark));

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 20);
    mark = put(&store, 5, Durability::Default);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.is_persisted(mark) {
        assert!(Instant::now() < deadline, "the syncer never covered it");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every persist while a commit is under way fsyncs for it (its batch may be in the OS and
/// shown to readers already), and none of them covers it.
#[test]
fn a_persist_during_a_commit_fsyncs_for_it() {
    let flushes = crate::durability::Flushes::default();
    let fsyncs = std::cell::Cell::new(0);
    let fsync = || {
        fsyncs.set(fsyncs.get() + 1);
        Ok::<_, ()>(())
    };
    flushes.fsync_if_uncovered(fsync).unwrap();
    let commit = flushes.begin();
    flushes.fsync_if_uncovered(fsync).unwrap(); // before the batch was written
    flushes.fsync_if_uncovered(fsync).unwrap(); // a reader who met the batch
    assert_eq!(fsyncs.get(), 3, "the reader's persist fsynced");
    let ended = commit.end();
    assert!(
        !flushes.is_covered(ended),
        "no fsync after its end covered it yet"
    );
    flushes.fsync_if_uncovered(fsync).unwrap();
    assert!(flushes.is_covered(ended));
}

/// A commit that panics half way still ends: later marks can be covered.
#[test]
fn a_commit_that_panics_leaves_later_marks_to_be_covered() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let panicked = Arc::new(AtomicBool::new(false));
    let once = panicked.clone();
    let options = Options {
        on_commit: Some(Arc::new(move || {
            if !once.swap(true, Ordering::SeqCst) {
                panic!("a hook that panics once");
            }
            Ok(())
        })),
        ..Options::default()
    };
    let layout = |_: Option<&[u8]>| Ok::<_, Error>((layout(false), ()));
    let (store, ()) = Store::open(dir.path(), &options, layout).unwrap();
    let write = |n| store.write(Durability::Default, |tx| tx.put(item(n, 1, None, 0)));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(1)));
    assert!(caught.is_err() && panicked.load(Ordering::SeqCst));
    write(2).unwrap();
    store.persist().unwrap();
    assert!(store.is_persisted(store.commit_mark()));
}
