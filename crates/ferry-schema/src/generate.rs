//! Generated ids: ULID (the `ulid` crate, monotonic within a millisecond), UUID v4 (the
//! `uuid` crate) and short random uids, all from the operating system's randomness: ids
//! made on many devices of a fleet must never collide.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use crate::Generate;

/// Crockford's base-32 alphabet (no I, L, O, U), as ULID uses.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Generate {
    /// A fresh id; `now_ms` is the time part of a ULID.
    pub fn id(&self, now_ms: i64) -> String {
        match self {
            Generate::Ulid => ulid(now_ms),
            Generate::Uuid => uuid::Uuid::new_v4().to_string(),
            Generate::Uid(len) => uid(*len),
        }
    }
}

thread_local! {
    /// One generator per thread, so that the ULIDs a writer makes in a burst still sort in
    /// creation order (within a millisecond each is the previous one plus one: ULID's
    /// monotonic mode).
    static ULIDS: RefCell<ulid::Generator> = const { RefCell::new(ulid::Generator::new()) };
}

fn ulid(now_ms: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
    // The random part overflows only after 2^80 ids in one millisecond; that id is drawn
    // afresh, still unique, no longer ordered.
    let next = ULIDS.with(|ulids| ulids.borrow_mut().generate_from_datetime(at));
    next.unwrap_or_else(|_| ulid::Ulid::from_datetime(at))
        .to_string()
}

/// `len` random Crockford characters from the OS's randomness (a ULID's random part, which
/// comes from a generator the OS seeded, where the OS cannot answer).
fn uid(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    if getrandom::fill(&mut bytes).is_err() {
        for chunk in bytes.chunks_mut(10) {
            chunk.copy_from_slice(&ulid::Ulid::new().random().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| crockford(*b)).collect()
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
