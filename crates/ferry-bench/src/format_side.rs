//! `cargo xtask bench format`: the on-disk item format, chosen by measurement. The items
//! of `bench local`, as the store keeps them, in three readings side by side:
//!
//! - the codec decoded to an owned `Item` (the read path before the zero-copy work);
//! - a borrowed view of the same codec bytes (`ItemRef`: one pass builds a table of
//!   borrowed attributes, looked up by binary search);
//! - rkyv 0.8 archives of the same attributes (mirror types), validated as any read of
//!   disk bytes must be. fjall hands values back at no particular alignment, and rkyv
//!   needs its archive aligned, so a read first copies the value into an aligned buffer;
//!   the copy is measured in the "rkyv" column and left out of "rkyv, aligned already".
//!
//! Each reading answers what the read path asks: one attribute (the model check), and
//! every attribute to JSON (what a get or page returns).

use std::time::Instant;

use anyhow::{Result, bail};
use ferry::types::{ItemRef, Value, codec, json::item_to_json};
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;
use serde_json::{Map, Value as Json};

use crate::frames_side::{ArchivedWireValue, WireValue, wire_value};

/// Items per round; rounds: the median is reported.
const ITEMS: usize = 1_000;
const ROUNDS: usize = 7;

type WireItem = Vec<(String, WireValue)>;
type ArchivedWireItem = rkyv::Archived<WireItem>;

/// The stored form of `bench local`'s item `seq` (keys, templates and timestamps included).
pub(crate) fn stored(seq: u64) -> ferry::types::Item {
    let text = |s: String| Value::S(s);
    let number = |n: u64| Value::int(n as i64);
    let dev = seq / crate::ITEMS_PER_DEVICE;
    [
        ("pk", text(format!("dev#{dev}"))),
        ("sk", text(format!("r#{seq:012}"))),
        ("gs1pk", text(format!("kind#k{}", seq % 16))),
        ("gs1sk", text(format!("{seq:012}"))),
        ("_type", text("Reading".into())),
        ("dev", number(dev)),
        ("seq", number(seq)),
        ("kind", text(format!("k{}", seq % 16))),
        ("value", number(seq % 1000)),
        (
            "note",
            text("a reading of moderate length, like a device would keep".into()),
        ),
        ("created", number(1_800_000_000_000 + seq)),
        ("updated", number(1_800_000_000_000 + seq)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

fn archived_json(value: &ArchivedWireValue) -> Json {
    // The same mapping of numbers and binaries as the codec's view, so both do one job.
    use ferry::types::json::{base64_json as b64, number_text_to_json as number};
    match value {
        ArchivedWireValue::S(s) => Json::String(s.to_string()),
        ArchivedWireValue::N(n) => number(n),
        ArchivedWireValue::B(b) => b64(b),
        ArchivedWireValue::Bool(b) => Json::Bool(*b),
        ArchivedWireValue::Null => Json::Null,
        ArchivedWireValue::M(m) => Json::Object(
            m.iter()
                .map(|pair| (pair.0.to_string(), archived_json(&pair.1)))
                .collect(),
        ),
        ArchivedWireValue::L(l) => Json::Array(l.iter().map(archived_json).collect()),
        ArchivedWireValue::Ss(s) => {
            Json::Array(s.iter().map(|s| Json::String(s.to_string())).collect())
        }
        ArchivedWireValue::Ns(s) => Json::Array(s.iter().map(|n| number(n)).collect()),
        ArchivedWireValue::Bs(s) => Json::Array(s.iter().map(|b| b64(b)).collect()),
    }
}

fn archived_item_json(item: &ArchivedWireItem) -> Map<String, Json> {
    item.iter()
        .map(|pair| (pair.0.to_string(), archived_json(&pair.1)))
        .collect()
}

/// The type attribute of an archived item (names are in order: a binary search).
fn archived_type(item: &ArchivedWireItem) -> Option<&str> {
    let at = item
        .binary_search_by(|pair| pair.0.as_str().cmp("_type"))
        .ok()?;
    match &item[at].1 {
        ArchivedWireValue::S(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Nanoseconds per item of `read` over every stored item, the median of the rounds.
fn per_item<B>(stored: &[B], mut read: impl FnMut(&B) -> Result<usize>) -> Result<f64> {
    let mut rounds = Vec::new();
    let mut sink = 0usize;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for bytes in stored {
            sink = sink.wrapping_add(read(bytes)?);
        }
        rounds.push(started.elapsed().as_nanos() as f64 / stored.len() as f64);
    }
    std::hint::black_box(sink);
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[ROUNDS / 2])
}

/// An rkyv archive as fjall would hand it back: at an odd address.
fn unaligned(archive: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(archive);
    bytes
}

pub fn run() -> Result<()> {
    let items: Vec<_> = (0..ITEMS as u64).map(|seq| stored(seq * 7919)).collect();
    let codec_bytes: Vec<Vec<u8>> = items
        .iter()
        .map(|item| {
            let mut out = Vec::new();
            codec::encode_item(item, &mut out);
            out
        })
        .collect();
    let wire: Vec<WireItem> = items
        .iter()
        .map(|item| {
            item.iter()
                .map(|(k, v)| (k.clone(), wire_value(v)))
                .collect()
        })
        .collect();
    let archives: Vec<AlignedVec> = wire
        .iter()
        .map(rkyv::to_bytes::<RkyvError>)
        .collect::<Result<_, _>>()?;
    let stored_archives: Vec<Vec<u8>> = archives.iter().map(|a| unaligned(a)).collect();
    for (archive, item) in archives.iter().zip(&items) {
        let archived = rkyv::access::<ArchivedWireItem, RkyvError>(archive)?;
        if Json::Object(archived_item_json(archived)) != Json::Object(item_to_json(item)) {
            bail!("rkyv does not read back the item");
        }
    }

    let access = |stored: &Vec<u8>, aligned: &mut AlignedVec| -> Result<usize> {
        aligned.clear();
        aligned.extend_from_slice(&stored[1..]);
        let item = rkyv::access::<ArchivedWireItem, RkyvError>(aligned)?;
        Ok(archived_type(item).map_or(0, str::len))
    };
    let mut aligned = AlignedVec::new();
    let type_owned = per_item(&codec_bytes, |b| {
        let item = codec::decode_item(b)?;
        Ok(item
            .get("_type")
            .and_then(Value::as_str)
            .map_or(0, str::len))
    })?;
    let type_view = per_item(&codec_bytes, |b| {
        Ok(ItemRef::decode(b)?.text("_type").map_or(0, str::len))
    })?;
    let type_rkyv = per_item(&stored_archives, |b| access(b, &mut aligned))?;
    let type_rkyv_aligned = per_item(&archives, |a| {
        let item = rkyv::access::<ArchivedWireItem, RkyvError>(a)?;
        Ok(archived_type(item).map_or(0, str::len))
    })?;

    let json_owned = per_item(&codec_bytes, |b| {
        Ok(item_to_json(&codec::decode_item(b)?).len())
    })?;
    let json_view = per_item(&codec_bytes, |b| Ok(ItemRef::decode(b)?.to_json().len()))?;
    let json_rkyv = per_item(&stored_archives, |b| {
        aligned.clear();
        aligned.extend_from_slice(&b[1..]);
        let item = rkyv::access::<ArchivedWireItem, RkyvError>(&aligned)?;
        Ok(archived_item_json(item).len())
    })?;
    let json_rkyv_aligned = per_item(&archives, |a| {
        let item = rkyv::access::<ArchivedWireItem, RkyvError>(a)?;
        Ok(archived_item_json(item).len())
    })?;

    let encode_codec = per_item(&items, |item| {
        let mut out = Vec::with_capacity(128);
        codec::encode_item(item, &mut out);
        Ok(out.len())
    })?;
    let encode_rkyv = per_item(&wire, |w| Ok(rkyv::to_bytes::<RkyvError>(w)?.len()))?;

    let mean = |sizes: &mut dyn Iterator<Item = usize>| sizes.sum::<usize>() as f64 / ITEMS as f64;
    println!(
        "| a stored item ({} attributes), median of {ROUNDS} rounds of {ITEMS} | codec, owned | codec, view | rkyv | rkyv, aligned already | view / owned | rkyv / view |",
        items[0].len()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |what: &str, owned: f64, view: f64, rkyv: f64, aligned: f64| {
        println!(
            "| {what} | {owned:.0} | {view:.0} | {rkyv:.0} | {aligned:.0} | {:.2}x | {:.2}x |",
            view / owned,
            rkyv / view
        );
    };
    let codec_size = mean(&mut codec_bytes.iter().map(|b| b.len() + 1));
    let rkyv_size = mean(&mut archives.iter().map(|a| a.len()));
    row("bytes stored", codec_size, codec_size, rkyv_size, rkyv_size);
    row(
        "read the type attribute, ns",
        type_owned,
        type_view,
        type_rkyv,
        type_rkyv_aligned,
    );
    row(
        "read every attribute to JSON, ns",
        json_owned,
        json_view,
        json_rkyv,
        json_rkyv_aligned,
    );
    row(
        "encode, ns",
        encode_codec,
        encode_codec,
        encode_rkyv,
        encode_rkyv,
    );
    Ok(())
}
