//! `cargo xtask bench frames`: the relay's frame encoding, chosen by measurement (issue:
//! "one encoding, chosen by a benchmark"). The same push of changes (the `Reading` of the
//! other benchmarks) as `ferry-protocol` encodes it (the codec the store and journal use)
//! and as rkyv archives it, side by side: bytes on the wire, encode, decode to owned values
//! (what the relay needs to write a change to its store), and for rkyv the zero-copy access
//! it is chosen for (validated, then reading each change's scope, which is what a scope
//! check needs).

use std::time::Instant;

use anyhow::{Result, bail};
use ferry::journal::{Change, ChangeOp};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use rkyv::rancor::Error as RkyvError;

/// Changes per push frame (the engine's batches are up to 100 for DynamoDB).
const CHANGES: usize = 100;
/// Frames per round; rounds: the median is reported.
const FRAMES: usize = 2_000;
const ROUNDS: usize = 5;

/// A value as rkyv archives it (a mirror of `ferry_types::Value`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source)))]
pub(crate) enum WireValue {
    S(String),
    N(String),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(#[rkyv(omit_bounds)] Vec<(String, WireValue)>),
    L(#[rkyv(omit_bounds)] Vec<WireValue>),
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Vec<u8>>),
}

/// A change as rkyv archives it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct WireChange {
    model: String,
    hash: WireValue,
    sort: Option<WireValue>,
    delete: bool,
    version: String,
    scope: String,
    item: Option<Vec<(String, WireValue)>>,
}

/// A push frame as rkyv archives it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct WirePush {
    version: u8,
    id: u64,
    changes: Vec<WireChange>,
}

pub(crate) fn wire_value(value: &Value) -> WireValue {
    match value {
        Value::S(s) => WireValue::S(s.clone()),
        Value::N(n) => WireValue::N(n.as_str().to_string()),
        Value::B(b) => WireValue::B(b.clone()),
        Value::Bool(b) => WireValue::Bool(*b),
        Value::Null => WireValue::Null,
        Value::M(m) => WireValue::M(m.iter().map(|(k, v)| (k.clone(), wire_value(v))).collect()),
        Value::L(l) => WireValue::L(l.iter().map(wire_value).collect()),
        Value::Ss(s) => WireValue::Ss(s.iter().cloned().collect()),
        Value::Ns(s) => WireValue::Ns(s.iter().map(|n| n.as_str().to_string()).collect()),
        Value::Bs(s) => WireValue::Bs(s.iter().cloned().collect()),
    }
}

fn wire_change(change: &Change) -> WireChange {
    WireChange {
        model: change.model.clone(),
        hash: wire_value(&change.key.hash),
        sort: change.key.sort.as_ref().map(wire_value),
        delete: change.op == ChangeOp::Delete,
        version: change.version.to_text(),
        scope: change.scope.clone(),
        item: change.item.as_ref().map(|item| {
            item.iter()
                .map(|(k, v)| (k.clone(), wire_value(v)))
                .collect()
        }),
    }
}

fn reading(seq: usize) -> Change {
    let text = |s: String| Value::S(s);
    let device = format!("d{}", seq % 100);
    let key = Key {
        hash: text(format!("dev#{device}")),
        sort: Some(text(format!("reading#{seq:08}"))),
    };
    let mut item = Item::new();
    item.insert("pk".into(), key.hash.clone());
    item.insert("sk".into(), key.sort.clone().unwrap_or(Value::Null));
    item.insert("_type".into(), text("Reading".into()));
    item.insert("device".into(), text(device.clone()));
    item.insert(
        "temp".into(),
        Value::N("21.5".parse().unwrap_or_else(|_| 0i64.into())),
    );
    item.insert("humidity".into(), Value::int(40 + (seq % 30) as i64));
    item.insert("ok".into(), Value::Bool(!seq.is_multiple_of(7)));
    item.insert(
        "note".into(),
        text("steady reading from the north sensor, nominal, no alarm".into()),
    );
    Change {
        model: "Reading".into(),
        key,
        op: ChangeOp::Put,
        version: Version {
            hlc: Hlc::new(1_800_000_000_000 + seq as u64, 0),
            replica: ReplicaId::from_random(seq as u128 + 1),
        },
        scope: device,
        item: Some(item),
        base: None,
    }
}

/// Nanoseconds per frame of `op`, the median of the rounds.
fn per_frame(mut op: impl FnMut() -> Result<usize>) -> Result<f64> {
    let mut rounds = Vec::new();
    let mut sink = 0usize;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..FRAMES {
            sink = sink.wrapping_add(op()?);
        }
        rounds.push(started.elapsed().as_nanos() as f64 / FRAMES as f64);
    }
    std::hint::black_box(sink);
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[ROUNDS / 2])
}

pub fn run() -> Result<()> {
    use ferry_protocol::{Frame, decode, encode};
    let changes: Vec<Change> = (0..CHANGES).map(reading).collect();
    let frame = Frame::Push {
        id: 7,
        changes: changes.clone(),
    };
    let wire = WirePush {
        version: 1,
        id: 7,
        changes: changes.iter().map(wire_change).collect(),
    };

    let codec_bytes = encode(&frame);
    if decode(&codec_bytes)? != frame {
        bail!("the codec does not round-trip");
    }
    let rkyv_bytes = rkyv::to_bytes::<RkyvError>(&wire)?;
    let back: WirePush = rkyv::from_bytes::<WirePush, RkyvError>(&rkyv_bytes)?;
    if back != wire {
        bail!("rkyv does not round-trip");
    }

    let codec_encode = per_frame(|| Ok(encode(&frame).len()))?;
    let codec_decode = per_frame(|| match decode(&codec_bytes)? {
        Frame::Push { changes, .. } => Ok(changes.len()),
        _ => bail!("not a push"),
    })?;
    let codec_scopes = per_frame(|| match decode(&codec_bytes)? {
        Frame::Push { changes, .. } => Ok(changes.iter().map(|c| c.scope.len()).sum()),
        _ => bail!("not a push"),
    })?;
    let rkyv_encode = per_frame(|| Ok(rkyv::to_bytes::<RkyvError>(&wire)?.len()))?;
    let rkyv_decode = per_frame(|| {
        let push: WirePush = rkyv::from_bytes::<WirePush, RkyvError>(&rkyv_bytes)?;
        Ok(push.changes.len())
    })?;
    let rkyv_scopes = per_frame(|| {
        let push = rkyv::access::<ArchivedWirePush, RkyvError>(&rkyv_bytes)?;
        Ok(push.changes.iter().map(|c| c.scope.len()).sum())
    })?;

    let item_bytes: usize = changes
        .iter()
        .map(|c| c.item.as_ref().map_or(0, ferry::types::item_size))
        .sum::<usize>()
        / CHANGES;
    println!(
        "| a push of {CHANGES} changes ({item_bytes}-byte items) | ferry codec | rkyv | rkyv / codec |"
    );
    println!("|---|---:|---:|---:|");
    let row = |what: &str, a: f64, b: f64, unit: &str| {
        println!("| {what} | {a:.0}{unit} | {b:.0}{unit} | {:.2}x |", b / a);
    };
    row(
        "bytes per change on the wire",
        codec_bytes.len() as f64 / CHANGES as f64,
        rkyv_bytes.len() as f64 / CHANGES as f64,
        "",
    );
    row(
        "encode, ns per change",
        codec_encode / CHANGES as f64,
        rkyv_encode / CHANGES as f64,
        "",
    );
    row(
        "decode to owned, ns per change",
        codec_decode / CHANGES as f64,
        rkyv_decode / CHANGES as f64,
        "",
    );
    row(
        "check every scope, ns per change",
        codec_scopes / CHANGES as f64,
        rkyv_scopes / CHANGES as f64,
        "",
    );
    Ok(())
}
