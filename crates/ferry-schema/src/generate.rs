//! Generated ids: ULID, UUID v4 and short random uids.

use std::sync::Mutex;

use crate::Generate;

/// Crockford's base-32 alphabet (no I, L, O, U), as ULID uses.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Generate {
    /// A fresh id; `now_ms` is the time part of a ULID.
    pub fn id(&self, now_ms: i64) -> String {
        match self {
            Generate::Ulid => ulid(now_ms),
            Generate::Uuid => uuid(),
            Generate::Uid(len) => (0..*len).map(|_| crockford(fastrand::u8(..32))).collect(),
        }
    }
}

/// The last ULID made in this process, for ULID's monotonic mode.
static LAST_ULID: Mutex<u128> = Mutex::new(0);

/// 48 bits of milliseconds then 80 random bits, as 26 Crockford characters: sorts by time.
/// Within one millisecond each ULID is the previous one plus one (ULID's monotonic mode),
/// so that items created in a burst still sort in creation order.
fn ulid(now_ms: i64) -> String {
    let time = u128::try_from(now_ms).unwrap_or(0) & ((1 << 48) - 1);
    let random = fastrand::u128(..) & ((1 << 80) - 1);
    let bits = {
        let mut last = LAST_ULID.lock().unwrap_or_else(|p| p.into_inner());
        *last = if *last >> 80 == time {
            *last + 1
        } else {
            (time << 80) | random
        };
        *last
    };
    (0..26)
        .map(|i| crockford(((bits >> (125 - 5 * i)) & 31) as u8))
        .collect()
}

/// A random (version 4, RFC 4122 variant) UUID in its lowercase hyphenated form.
fn uuid() -> String {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn crockford(digit: u8) -> char {
    char::from(CROCKFORD[usize::from(digit & 31)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_crockford(text: &str) -> bool {
        text.bytes().all(|b| CROCKFORD.contains(&b))
    }

    #[test]
    fn ulid_is_26_crockford_characters_ordered_by_time() {
        let early = Generate::Ulid.id(1_000);
        let late = Generate::Ulid.id(2_000);
        assert_eq!(early.len(), 26);
        assert!(is_crockford(&early));
        assert!(early < late);
        // The first 10 characters are the time: 1_700_000_000_000 ms.
        assert_eq!(&Generate::Ulid.id(1_700_000_000_000)[..10], "01HF7YAT00");
    }

    #[test]
    fn ulids_of_one_millisecond_sort_in_creation_order() {
        let ids: Vec<String> = (0..100).map(|_| Generate::Ulid.id(5_000)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| id.starts_with(&ids[0][..10])));
    }

    #[test]
    fn uuid_is_version_4() {
        let id = Generate::Uuid.id(0);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]));
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn uid_has_the_asked_length() {
        let id = Generate::Uid(12).id(0);
        assert_eq!(id.len(), 12);
        assert!(is_crockford(&id));
    }
}
