//! Byte encodings of the records: a format byte, then `ferry_types::codec` primitives.
//!
//! ```text
//! change        = 2 change-body (0 | 1 version(base))
//!               | 1 change-body                              (written before `base`)
//! change-body   = text(model) key op version text(scope) (0 | 1 item)
//! key           = value(hash) (0 | 1 value(sort))
//! op            = 0 (put) | 1 (delete)
//! version       = varint(hlc) text(replica)
//! outbox entry  = 3 change-body (0 | 1 version(base)) varint(queued_ms)
//!               | 2 change-body varint(queued_ms) (0 | 1 version(base))
//!               | 1 change-body varint(queued_ms)
//! tombstone     = 1 text(model) version varint(deleted_ms)
//! conflict      = 2 version(winner) change-body (0 | 1 version(base)) varint(at_ms)
//!               | 1 version(winner) change-body varint(at_ms)
//! quarantine    = 2 change-body (0 | 1 version(base)) text(reason) varint(at_ms)
//!               | 1 change-body text(reason) varint(at_ms)
//! text(s)       = varint(byte length) UTF-8 bytes
//! ```

use ferry_types::codec::{Reader, encode_item, encode_value, varint};
use ferry_types::{Hlc, Item, Key, ReplicaId, Version};

use crate::{
    Change, ChangeOp, ConflictRecord, Error, OutboxEntry, QuarantineRecord, Result, Tombstone,
};

/// The leading byte of every record: a later layout gets a new number, and old bytes stay
/// readable by matching on it.
const FORMAT_V1: u8 = 1;
/// Changes with their `base`; outbox entries with their `base` after `queued_ms`.
const FORMAT_V2: u8 = 2;
/// Outbox entries whose change carries its `base`.
const FORMAT_V3: u8 = 3;
/// Formats of the records that hold one change: 1 without its `base`, 2 with it.
const CHANGE_FORMATS: &[u8] = &[FORMAT_V1, FORMAT_V2];

const ABSENT: u8 = 0;
const PRESENT: u8 = 1;
const PUT: u8 = 0;
const DELETE: u8 = 1;

/// Appends the encoding of a change to `out`.
pub fn encode_change(change: &Change, out: &mut Vec<u8>) {
    out.push(FORMAT_V2);
    change_body(change, out);
}

/// Decodes [`encode_change`]'s bytes.
pub fn decode_change(bytes: &[u8]) -> Result<Change> {
    let (mut d, format) = Decoder::start_any(bytes, "change", CHANGE_FORMATS)?;
    let change = d.change(format >= FORMAT_V2)?;
    d.finish(change)
}

/// Appends the encoding of an outbox entry to `out`.
pub fn encode_outbox_entry(entry: &OutboxEntry, out: &mut Vec<u8>) {
    out.push(FORMAT_V3);
    change_body(&entry.change, out);
    varint(entry.queued_ms, out);
}

/// Decodes [`encode_outbox_entry`]'s bytes (both formats).
pub fn decode_outbox_entry(bytes: &[u8]) -> Result<OutboxEntry> {
    let formats = [FORMAT_V1, FORMAT_V2, FORMAT_V3];
    let (mut d, format) = Decoder::start_any(bytes, "outbox entry", &formats)?;
    let mut change = d.change(format == FORMAT_V3)?;
    let queued_ms = d.varint()?;
    if format == FORMAT_V2 {
        change.base = d.optional(Decoder::version)?;
    }
    d.finish(OutboxEntry { change, queued_ms })
}

/// The version of an outbox entry, decoding no further than it (the item is not read): what
/// settling an acknowledgement needs.
pub fn decode_outbox_version(bytes: &[u8]) -> Result<Version> {
    let formats = [FORMAT_V1, FORMAT_V2, FORMAT_V3];
    let (mut d, _) = Decoder::start_any(bytes, "outbox entry", &formats)?;
    d.text()?;
    d.key()?;
    d.op()?;
    d.version()
}

/// Appends the encoding of a quarantine record to `out`.
pub fn encode_quarantine(record: &QuarantineRecord, out: &mut Vec<u8>) {
    out.push(FORMAT_V2);
    change_body(&record.change, out);
    text(&record.reason, out);
    varint(record.at_ms, out);
}

/// Decodes [`encode_quarantine`]'s bytes.
pub fn decode_quarantine(bytes: &[u8]) -> Result<QuarantineRecord> {
    let (mut d, format) = Decoder::start_any(bytes, "quarantine record", CHANGE_FORMATS)?;
    let record = QuarantineRecord {
        change: d.change(format >= FORMAT_V2)?,
        reason: d.text()?,
        at_ms: d.varint()?,
    };
    d.finish(record)
}

/// Appends the encoding of a tombstone to `out`.
pub fn encode_tombstone(tombstone: &Tombstone, out: &mut Vec<u8>) {
    out.push(FORMAT_V1);
    text(&tombstone.model, out);
    version(&tombstone.version, out);
    varint(tombstone.deleted_ms, out);
}

/// Decodes [`encode_tombstone`]'s bytes.
pub fn decode_tombstone(bytes: &[u8]) -> Result<Tombstone> {
    let mut d = Decoder::start(bytes, "tombstone")?;
    let tombstone = Tombstone {
        model: d.text()?,
        version: d.version()?,
        deleted_ms: d.varint()?,
    };
    d.finish(tombstone)
}

/// Appends the encoding of a conflict record to `out`.
pub fn encode_conflict(conflict: &ConflictRecord, out: &mut Vec<u8>) {
    out.push(FORMAT_V2);
    version(&conflict.winner, out);
    change_body(&conflict.loser, out);
    varint(conflict.at_ms, out);
}

/// Decodes [`encode_conflict`]'s bytes.
pub fn decode_conflict(bytes: &[u8]) -> Result<ConflictRecord> {
    let (mut d, format) = Decoder::start_any(bytes, "conflict record", CHANGE_FORMATS)?;
    let conflict = ConflictRecord {
        winner: d.version()?,
        loser: d.change(format >= FORMAT_V2)?,
        at_ms: d.varint()?,
    };
    d.finish(conflict)
}

fn change_body(change: &Change, out: &mut Vec<u8>) {
    text(&change.model, out);
    encode_value(&change.key.hash, out);
    optional(change.key.sort.as_ref(), out, encode_value);
    out.push(match change.op {
        ChangeOp::Put => PUT,
        ChangeOp::Delete => DELETE,
    });
    version(&change.version, out);
    text(&change.scope, out);
    optional(change.item.as_ref(), out, encode_item);
    optional(change.base.as_ref(), out, version);
}

fn optional<T>(value: Option<&T>, out: &mut Vec<u8>, encode: fn(&T, &mut Vec<u8>)) {
    match value {
        Some(value) => {
            out.push(PRESENT);
            encode(value, out);
        }
        None => out.push(ABSENT),
    }
}

fn version(version: &Version, out: &mut Vec<u8>) {
    varint(version.hlc.as_u64(), out);
    text(version.replica.as_str(), out);
}

fn text(text: &str, out: &mut Vec<u8>) {
    varint(text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

/// A [`Reader`] that names the record in every error.
struct Decoder<'a> {
    reader: Reader<'a>,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `what`, checking the format byte.
    fn start(bytes: &'a [u8], what: &'static str) -> Result<Decoder<'a>> {
        Decoder::start_any(bytes, what, &[FORMAT_V1]).map(|(d, _)| d)
    }

    /// Starts decoding `what` in one of `formats`; returns the one found.
    fn start_any(bytes: &'a [u8], what: &'static str, formats: &[u8]) -> Result<(Decoder<'a>, u8)> {
        let mut d = Decoder {
            reader: Reader::new(bytes),
            what,
        };
        match d.byte()? {
            format if formats.contains(&format) => Ok((d, format)),
            other => {
                let known: Vec<String> = formats.iter().map(u8::to_string).collect();
                let expected = known.join(" or ");
                Err(d.corrupt(format!("unknown format {other}, expected {expected}")))
            }
        }
    }

    fn optional<T>(&mut self, read: fn(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.flag()? {
            true => read(self).map(Some),
            false => Ok(None),
        }
    }

    /// Returns the decoded record if no bytes follow it.
    fn finish<T>(self, record: T) -> Result<T> {
        match self.reader.rest().len() {
            0 => Ok(record),
            n => Err(self.corrupt(format!("{n} trailing bytes"))),
        }
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            what: self.what,
            detail,
        }
    }

    /// Converts a codec error, keeping only its detail: the record name says the rest.
    fn codec(&self, error: ferry_types::Error) -> Error {
        match error {
            ferry_types::Error::Corrupt(detail) => self.corrupt(detail),
            other => self.corrupt(other.to_string()),
        }
    }

    fn byte(&mut self) -> Result<u8> {
        self.reader.byte().map_err(|e| self.codec(e))
    }

    fn varint(&mut self) -> Result<u64> {
        self.reader.varint().map_err(|e| self.codec(e))
    }

    fn text(&mut self) -> Result<String> {
        let bytes = self.reader.bytes().map_err(|e| self.codec(e))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("text is not UTF-8".into()))
    }

    fn flag(&mut self) -> Result<bool> {
        match self.byte()? {
            ABSENT => Ok(false),
            PRESENT => Ok(true),
            other => Err(self.corrupt(format!("presence flag {other} is neither 0 nor 1"))),
        }
    }

    fn version(&mut self) -> Result<Version> {
        let hlc = Hlc::from_u64(self.varint()?);
        let replica = ReplicaId::parse(&self.text()?).map_err(|e| self.codec(e))?;
        Ok(Version { hlc, replica })
    }

    fn key(&mut self) -> Result<Key> {
        let hash = self.reader.value().map_err(|e| self.codec(e))?;
        let sort = match self.flag()? {
            true => Some(self.reader.value().map_err(|e| self.codec(e))?),
            false => None,
        };
        Ok(Key { hash, sort })
    }

    fn op(&mut self) -> Result<ChangeOp> {
        match self.byte()? {
            PUT => Ok(ChangeOp::Put),
            DELETE => Ok(ChangeOp::Delete),
            other => Err(self.corrupt(format!("unknown change op {other}"))),
        }
    }

    fn item(&mut self) -> Result<Option<Item>> {
        match self.flag()? {
            true => Ok(Some(self.reader.item().map_err(|e| self.codec(e))?)),
            false => Ok(None),
        }
    }

    /// A change body; `with_base`: the format that carries the base after it.
    fn change(&mut self, with_base: bool) -> Result<Change> {
        Ok(Change {
            model: self.text()?,
            key: self.key()?,
            op: self.op()?,
            version: self.version()?,
            scope: self.text()?,
            item: self.item()?,
            base: match with_base {
                true => self.optional(Decoder::version)?,
                false => None,
            },
        })
    }
}
