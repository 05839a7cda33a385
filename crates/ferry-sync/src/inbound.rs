//! The inbound rule (docs/design.md section 5 and 6): what a device does with a change from the cloud.
//!
//! Pure: the driver looks up the local version (the item's, or its tombstone's) and the
//! pending outbox version of the key, asks [`decide_inbound`], and acts on the answer.

use ferry_types::SyncDirection;
use ferry_types::Version;

/// What to do with one cloud change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Apply it (newer than anything local, nothing pending).
    Apply,
    /// Do nothing: a duplicate or replay (not newer), or a change that must not come down.
    Ignore,
    /// Apply it over the pending local change and drop that change from the outbox
    /// (`both`: the remote is newer, the local one goes to the conflict log; `down`: the
    /// cloud owns the model).
    ApplyOverPending,
    /// Keep the pending local change (`both`: it is newer, the remote goes to the conflict
    /// log; `up`: the device is authoritative and its upload will be re-stamped past the cloud).
    KeepLocal,
}

/// Decides what to do with `remote`, a cloud change of a key whose local version (item or
/// tombstone) is `local` and whose pending outbox version is `pending`.
///
/// - `none`: nothing replicates: [`Inbound::Ignore`].
/// - `down`: the cloud is authoritative: anything newer than `local` applies, over a pending
///   change if there is one (there should not be: device writes to `down` models are refused).
/// - `up`: cloud writes are never sent down: [`Inbound::KeepLocal`] when a local change is
///   pending (the device wins), otherwise [`Inbound::Ignore`].
/// - `both`: last writer wins by version. With a pending change, a newer remote applies over
///   it and an older one loses to it ([`Inbound::KeepLocal`]; a replayed loser gives
///   `KeepLocal` again, so the conflict log should key losers by version). Without one, a
///   remote newer than `local` applies.
///
/// The echo of our own pending write (`remote == pending`) is always ignored.
pub fn decide_inbound(
    direction: SyncDirection,
    local: Option<&Version>,
    pending: Option<&Version>,
    remote: &Version,
) -> Inbound {
    let newer_than_local = local.is_none_or(|local| remote > local);
    if direction == SyncDirection::None || pending == Some(remote) {
        return Inbound::Ignore;
    }
    match (direction, pending) {
        (_, None) if !newer_than_local => Inbound::Ignore,
        (SyncDirection::Down | SyncDirection::Both, None) => Inbound::Apply,
        (SyncDirection::Down, Some(_)) if newer_than_local => Inbound::ApplyOverPending,
        (SyncDirection::Up, Some(_)) => Inbound::KeepLocal,
        (SyncDirection::Both, Some(pending)) if remote > pending => Inbound::ApplyOverPending,
        (SyncDirection::Both, Some(_)) => Inbound::KeepLocal,
        (SyncDirection::Down, Some(_)) | (SyncDirection::Up, None) | (SyncDirection::None, _) => {
            Inbound::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_types::{Hlc, ReplicaId};

    use Inbound::*;
    use SyncDirection::{Both, Down, None as Off, Up};

    /// A version at `ms` written by replica `who`.
    fn v(ms: u64, who: &str) -> Version {
        let replica = ReplicaId::parse(who).unwrap_or_else(|e| panic!("replica {who}: {e}"));
        Version {
            hlc: Hlc::new(ms, 0),
            replica,
        }
    }

    #[test]
    fn decide_inbound_table() {
        // (direction, local, pending, remote, expected, why)
        type Row = (
            SyncDirection,
            Option<u64>,
            Option<u64>,
            u64,
            Inbound,
            &'static str,
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (Off, None, None, 5, Ignore, "none: nothing replicates"),
            (Off, Some(1), Some(1), 5, Ignore, "none: even when newer"),
            (Down, None, None, 5, Apply, "down: absent locally"),
            (Down, Some(4), None, 5, Apply, "down: newer than local"),
            (Down, Some(5), None, 5, Ignore, "down: replay of what we hold"),
            (Down, Some(6), None, 5, Ignore, "down: older than local"),
            (Down, Some(4), Some(7), 5, ApplyOverPending, "down: cloud owns the model"),
            (Down, Some(7), Some(7), 5, Ignore, "down: older than local, even with pending"),
            (Up, None, None, 5, Ignore, "up: cloud writes never come down"),
            (Up, Some(4), None, 5, Ignore, "up: even when newer"),
            (Up, Some(4), Some(4), 5, KeepLocal, "up: pending local wins"),
            (Up, Some(7), Some(7), 5, KeepLocal, "up: pending local wins over older"),
            (Up, Some(7), Some(7), 7, Ignore, "up: echo of our own write"),
            (Both, None, None, 5, Apply, "both: absent locally"),
            (Both, Some(4), None, 5, Apply, "both: newer than local"),
            (Both, Some(5), None, 5, Ignore, "both: duplicate"),
            (Both, Some(6), None, 5, Ignore, "both: older than local (or its tombstone)"),
            (Both, Some(4), Some(4), 5, ApplyOverPending, "both: remote newer than pending"),
            (Both, Some(6), Some(6), 5, KeepLocal, "both: concurrent older remote loses"),
            (Both, Some(3), Some(6), 5, KeepLocal, "both: pending newer than remote"),
            (Both, Some(6), Some(6), 6, Ignore, "both: echo of our pending write"),
            (Both, None, Some(6), 5, KeepLocal, "both: pending create beats older remote"),
        ];
        for &(direction, local, pending, remote, expected, why) in rows {
            // One replica for every version here, so equal numbers are equal versions.
            let local = local.map(|ms| v(ms, "r"));
            let pending = pending.map(|ms| v(ms, "r"));
            let got = decide_inbound(direction, local.as_ref(), pending.as_ref(), &v(remote, "r"));
            assert_eq!(got, expected, "{why}");
        }
    }

    #[test]
    fn replica_id_breaks_ties_at_the_same_hlc() {
        let (dev, cloud) = (v(5, "a-device"), v(5, "b-cloud"));
        assert_eq!(decide_inbound(Both, Some(&dev), None, &cloud), Apply);
        assert_eq!(decide_inbound(Both, Some(&cloud), None, &dev), Ignore);
        assert_eq!(
            decide_inbound(Both, Some(&dev), Some(&dev), &cloud),
            ApplyOverPending
        );
        assert_eq!(
            decide_inbound(Both, Some(&cloud), Some(&cloud), &dev),
            KeepLocal
        );
    }
}
