use super::*;
use ferry_journal::ChangeOp;
use ferry_types::{Item, ReplicaId, Value};
use proptest::prelude::*;

fn change(n: u64, op: ChangeOp) -> Change {
    let key = Key {
        hash: Value::S(format!("note#{n}")),
        sort: Some(Value::S("note#".into())),
    };
    let item = (op == ChangeOp::Put).then(|| {
        let mut item = Item::new();
        item.insert("pk".into(), key.hash.clone());
        item.insert("text".into(), Value::S("hello".into()));
        item.insert("n".into(), Value::int(n as i64));
        item
    });
    Change {
        model: "Note".into(),
        key,
        op,
        version: Version {
            hlc: Hlc::new(1_800_000_000_000 + n, 1),
            replica: ReplicaId::parse("dev-1").unwrap(),
        },
        scope: "dev-1".into(),
        item,
        base: None,
    }
}

fn every_frame() -> Vec<Frame> {
    let put = change(1, ChangeOp::Put);
    let delete = change(2, ChangeOp::Delete);
    vec![
        Frame::Hello {
            token: "t.o.k".into(),
            replica: "dev-1".into(),
        },
        Frame::Welcome(Session {
            server_time_ms: 1_800_000_000_123,
            scopes: Some(["*".to_string(), "dev-1".to_string()].into()),
            limits: Limits::default(),
            horizon_ms: 30 * 86_400_000,
        }),
        Frame::Welcome(Session {
            server_time_ms: 1,
            scopes: None,
            limits: Limits::default(),
            horizon_ms: 2,
        }),
        Frame::Refused {
            reason: "token expired".into(),
            credentials: true,
        },
        Frame::Refused {
            reason: "shutting down".into(),
            credentials: false,
        },
        Frame::Push {
            id: 7,
            changes: vec![put.clone(), delete.clone()],
        },
        Frame::Pushed {
            id: 7,
            results: vec![
                (put.key.clone(), put.version.clone(), PushOutcome::Applied),
                (
                    delete.key.clone(),
                    delete.version.clone(),
                    PushOutcome::Superseded {
                        cloud: Box::new(put.clone()),
                    },
                ),
                (
                    put.key.clone(),
                    put.version.clone(),
                    PushOutcome::Rejected {
                        reason: "scope not granted".into(),
                    },
                ),
                (
                    put.key.clone(),
                    put.version.clone(),
                    PushOutcome::Ahead {
                        server_time_ms: 1_700_000_000_000,
                    },
                ),
            ],
        },
        Frame::Pull {
            id: 8,
            scope: "dev-1".into(),
            from: PullFrom::Since(Hlc::new(5, 6)),
            limit: 100,
        },
        Frame::Pull {
            id: 9,
            scope: "*".into(),
            from: PullFrom::Snapshot(Hlc::ZERO),
            limit: 1,
        },
        Frame::Page {
            id: 8,
            page: PullPage {
                changes: vec![(Hlc::new(9, 0), put.clone()), (Hlc::new(10, 2), delete)],
                more: true,
                safe: Hlc::new(8, 0),
            },
        },
        Frame::Failed {
            id: 3,
            error: TransportError::Throttled {
                retry_after_ms: Some(0),
            },
        },
        Frame::Failed {
            id: 4,
            error: TransportError::Throttled {
                retry_after_ms: None,
            },
        },
        Frame::Failed {
            id: 5,
            error: TransportError::Expired,
        },
        Frame::Failed {
            id: 6,
            error: TransportError::Unauthorized("no".into()),
        },
        Frame::Get {
            id: 11,
            key: put.key.clone(),
        },
        Frame::Got {
            id: 11,
            change: Some(put.clone()),
        },
        Frame::Got {
            id: 12,
            change: None,
        },
        Frame::Live { changes: vec![put] },
    ]
}

#[test]
fn every_frame_survives_the_round_trip() {
    for frame in every_frame() {
        let bytes = encode(&frame);
        assert_eq!(bytes[0], PROTOCOL_VERSION);
        assert_eq!(decode(&bytes), Ok(frame));
    }
}

#[test]
fn every_truncation_and_corruption_is_an_error_never_a_panic() {
    for frame in every_frame() {
        let bytes = encode(&frame);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{frame:?} cut at {cut}");
        }
        for at in 1..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xFF;
            let _ = decode(&flipped);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(FrameError::Malformed(_))));
    }
}

#[test]
fn another_version_or_an_oversize_frame_is_named() {
    let mut bytes = encode(&Frame::Refused {
        reason: "x".into(),
        credentials: false,
    });
    bytes[0] = 9;
    assert_eq!(decode(&bytes), Err(FrameError::Version { found: 9 }));
    let huge = vec![PROTOCOL_VERSION; FRAME_BYTES_MAX + 1];
    assert!(matches!(decode(&huge), Err(FrameError::TooLarge { .. })));
    let error = decode(&[PROTOCOL_VERSION, 99]).unwrap_err().to_string();
    assert!(error.contains("unknown frame tag 99"), "{error}");
}

#[test]
fn a_count_larger_than_the_frame_allocates_nothing() {
    let mut bytes = vec![PROTOCOL_VERSION, LIVE];
    varint(u64::MAX / 2, &mut bytes);
    assert!(decode(&bytes).is_err());
}

#[test]
fn before_hello_only_a_small_hello_is_decoded() {
    let hello = Frame::Hello {
        token: "t".into(),
        replica: "r1".into(),
    };
    assert_eq!(decode_hello(&encode(&hello)), Ok(("t".into(), "r1".into())));
    for frame in every_frame().iter().filter(|f| f.name() != "Hello") {
        let error = decode_hello(&encode(frame)).unwrap_err().to_string();
        assert!(
            error.contains(&format!("a {} frame", frame.name())) && error.contains("before Hello"),
            "{error}"
        );
    }
    let large = Frame::Hello {
        token: "t".repeat(HELLO_BYTES_MAX),
        replica: "r1".into(),
    };
    let error = decode_hello(&encode(&large)).unwrap_err().to_string();
    assert!(error.contains("over the limit of 16384"), "{error}");
    assert!(matches!(decode_hello(&[]), Err(FrameError::Malformed(_))));
    assert_eq!(
        decode_hello(&[7, HELLO]),
        Err(FrameError::Version { found: 7 })
    );
}

proptest! {
    // Fuzzing on stable (`cargo xtask fuzz` runs these for longer): whatever arrives, a
    // frame decodes to a frame or to an error, never a panic, before and after `Hello`; a
    // frame that decodes encodes to bytes that decode to it again.
    #[test]
    fn fuzz_any_bytes_decode_to_a_frame_or_an_error(
        tag in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut bytes = vec![PROTOCOL_VERSION, tag];
        bytes.extend_from_slice(&body);
        if let Ok(frame) = decode(&bytes) {
            prop_assert_eq!(decode(&encode(&frame)), Ok(frame));
        }
        let _ = decode_hello(&bytes);
    }

    #[test]
    fn fuzz_a_damaged_frame_decodes_to_a_frame_or_an_error(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let frames = every_frame();
        let mut bytes = encode(&frames[which.index(frames.len())]);
        for (at, byte, how) in edits {
            let at = at.index(bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        if let Ok(frame) = decode(&bytes) {
            prop_assert_eq!(decode(&encode(&frame)), Ok(frame));
        }
        let _ = decode_hello(&bytes);
    }
}
