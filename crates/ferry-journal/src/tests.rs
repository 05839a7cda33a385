use ferry_types::{Hlc, Item, Key, Number, ReplicaId, Value, Version};
use proptest::prelude::*;

use crate::*;

fn version(hlc: u64, replica: &str) -> Version {
    Version {
        hlc: Hlc::from_u64(hlc),
        replica: ReplicaId::parse(replica).unwrap(),
    }
}

fn change(hlc: u64) -> Change {
    let mut item = Item::new();
    item.insert("pk".into(), Value::S("user#1".into()));
    item.insert("name".into(), Value::S("Ada".into()));
    Change {
        model: "User".into(),
        key: Key {
            hash: Value::S("user#1".into()),
            sort: None,
        },
        op: ChangeOp::Put,
        version: version(hlc, "dev1"),
        scope: "*".into(),
        item: Some(item),
        base: None,
    }
}

fn entry(hlc: u64) -> OutboxEntry {
    OutboxEntry {
        change: change(hlc),
        queued_ms: 7,
    }
}

#[test]
fn newer_write_replaces_the_pending_one() {
    let pending = entry(10);
    assert!(pending.replaced_by(&change(11)));
    assert!(!pending.replaced_by(&change(10)), "a replay is not newer");
    assert!(!pending.replaced_by(&change(9)));
}

#[test]
fn encoded_len_is_the_encoding_length() {
    let entry = entry(10);
    let mut out = Vec::new();
    encode_outbox_entry(&entry, &mut out);
    assert_eq!(entry.encoded_len(), out.len());
}

#[test]
fn errors_name_the_record_and_the_problem() {
    let mut bytes = Vec::new();
    encode_tombstone(
        &Tombstone {
            model: "User".into(),
            version: version(1, "dev1"),
            deleted_ms: 5,
        },
        &mut bytes,
    );
    bytes[0] = 9;
    assert_eq!(
        decode_tombstone(&bytes).unwrap_err().to_string(),
        "corrupt tombstone: unknown format 9, expected 1"
    );
    let err = decode_change(&[]).unwrap_err().to_string();
    assert_eq!(err, "corrupt change: truncated byte");
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,8}".prop_map(Value::S),
        any::<i64>().prop_map(|n| Value::N(Number::from(n))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::B),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn any_version() -> impl Strategy<Value = Version> {
    (any::<u64>(), "[0-9A-Za-z_-]{1,32}").prop_map(|(hlc, replica)| version(hlc, &replica))
}

fn any_change() -> impl Strategy<Value = Change> {
    let item = prop::collection::btree_map("[a-z]{1,4}", value(), 0..4);
    (
        ".{0,8}",
        value(),
        prop::option::of(value()),
        any::<bool>(),
        any_version(),
        ".{0,8}",
        prop::option::of(item),
        prop::option::of(any_version()),
    )
        .prop_map(
            |(model, hash, sort, put, version, scope, item, base)| Change {
                model,
                key: Key { hash, sort },
                op: if put { ChangeOp::Put } else { ChangeOp::Delete },
                version,
                scope,
                item,
                base,
            },
        )
}

/// Checks that `bytes` decode back to `record`, and that every truncation and a trailing
/// byte fail cleanly.
fn check<T: PartialEq + std::fmt::Debug>(
    record: &T,
    encode: fn(&T, &mut Vec<u8>),
    decode: fn(&[u8]) -> Result<T>,
) -> std::result::Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    encode(record, &mut bytes);
    prop_assert_eq!(&decode(&bytes)?, record);
    for cut in 0..bytes.len() {
        prop_assert!(
            decode(&bytes[..cut]).is_err(),
            "truncated at {} must fail",
            cut
        );
    }
    bytes.push(0);
    prop_assert!(decode(&bytes).is_err(), "a trailing byte must fail");
    Ok(())
}

proptest! {
    #[test]
    fn changes_round_trip(change in any_change()) {
        check(&change, encode_change, decode_change)?;
    }

    #[test]
    fn outbox_entries_round_trip(change in any_change(), queued_ms in any::<u64>()) {
        check(&OutboxEntry { change, queued_ms }, encode_outbox_entry, decode_outbox_entry)?;
    }

    #[test]
    fn the_version_of_an_outbox_entry_reads_alone(change in any_change()) {
        let entry = OutboxEntry { change, queued_ms: 1 };
        let mut bytes = Vec::new();
        encode_outbox_entry(&entry, &mut bytes);
        prop_assert_eq!(decode_outbox_version(&bytes)?, entry.change.version);
    }

    #[test]
    fn records_of_earlier_formats_still_read(
        change in any_change(),
        queued_ms in any::<u64>(),
        base in prop::option::of(any_version()),
    ) {
        // The change body as format 1 wrote it: everything up to the base.
        let change = Change { base: None, ..change };
        let mut body = Vec::new();
        encode_change(&change, &mut body);
        body.pop(); // the absent base's flag
        body.remove(0); // the format byte
        // Format 1 outbox entry: the change body, queued_ms.
        let mut v1 = vec![1];
        v1.extend_from_slice(&body);
        ferry_types::codec::varint(queued_ms, &mut v1);
        let entry = OutboxEntry { change: change.clone(), queued_ms };
        prop_assert_eq!(decode_outbox_entry(&v1)?, entry.clone());
        // Format 2 outbox entry: the change body, queued_ms, then the base.
        let mut v2 = vec![2];
        v2.extend_from_slice(&body);
        ferry_types::codec::varint(queued_ms, &mut v2);
        let mut with_base = Vec::new();
        encode_change(&Change { base: base.clone(), ..change.clone() }, &mut with_base);
        let base_bytes = &with_base[1 + body.len()..];
        v2.extend_from_slice(base_bytes);
        let based = OutboxEntry { change: Change { base, ..change.clone() }, queued_ms };
        prop_assert_eq!(decode_outbox_entry(&v2)?, based);
        // Format 1 change: the body alone.
        let mut v1_change = vec![1];
        v1_change.extend_from_slice(&body);
        prop_assert_eq!(decode_change(&v1_change)?, change);
    }

    #[test]
    fn quarantine_records_round_trip(change in any_change(), reason in ".{0,16}", at_ms in any::<u64>()) {
        let record = QuarantineRecord { change, reason, at_ms };
        check(&record, encode_quarantine, decode_quarantine)?;
    }

    #[test]
    fn tombstones_round_trip(model in ".{0,8}", version in any_version(), deleted_ms in any::<u64>()) {
        check(&Tombstone { model, version, deleted_ms }, encode_tombstone, decode_tombstone)?;
    }

    #[test]
    fn conflicts_round_trip(winner in any_version(), loser in any_change(), at_ms in any::<u64>()) {
        check(&ConflictRecord { winner, loser, at_ms }, encode_conflict, decode_conflict)?;
    }

    #[test]
    fn garbage_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        // A valid format byte, so that decoding reaches the record itself.
        if let Some(first) = bytes.first_mut() {
            *first = 1;
        }
        let _ = decode_change(&bytes);
        let _ = decode_outbox_entry(&bytes);
        let _ = decode_tombstone(&bytes);
        let _ = decode_conflict(&bytes);
        let _ = decode_quarantine(&bytes);
    }
}
