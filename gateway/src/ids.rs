//! Identifiers: a prefix and 32 hex digits that begin with 48 bits of milliseconds since the
//! Unix epoch, so new ids sort in the order they were made.
//!
//! The time prefix keeps new ids in order, so inserting them touches the last pages of the
//! unique indexes instead of a random page per row: at thousands of events a second this is
//! the difference between appending a few pages per commit and rewriting hundreds.
//!
//! Most ids are the milliseconds and 80 random bits. An event id is the milliseconds, a 16-bit
//! count within the millisecond and 64 random bits: its first 64 bits are a number that rises
//! with every event this process makes ([`event_seq`]), which the SQLite store keeps as the
//! event's row number, so that it needs no index of ids to find an event.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;

fn make(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    rand::rng().fill_bytes(&mut bytes[6..]);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The last event sequence number made (see [`event`]).
static LAST_EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A new event id, `evt_…`: 16 hex digits of its sequence number (milliseconds since the
/// epoch times 65,536, or one more than the last one made if that is not less), then 16 of
/// random bits. Two ids made by one process never share a sequence number.
pub fn event() -> String {
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let floor = ms << EVENT_SEQ_COUNT_BITS;
    let mut last = LAST_EVENT_SEQ.load(Ordering::Relaxed);
    let seq = loop {
        let next = floor.max(last + 1);
        match LAST_EVENT_SEQ.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    rand::rng().fill_bytes(&mut bytes[8..]);
    format!("evt_{}", hex::encode(bytes))
}

/// Bits of an event's sequence number below its milliseconds.
const EVENT_SEQ_COUNT_BITS: u32 = 16;

/// The sequence number an event id carries (its first 16 hex digits), or `None` for a string
/// that is not an event id of this form.
pub fn event_seq(id: &str) -> Option<i64> {
    let hex = id.strip_prefix("evt_")?;
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let seq = u64::from_str_radix(&hex[..16], 16).ok()?;
    i64::try_from(seq).ok()
}

/// Makes every event id made from now on carry a sequence number above `seq`: a store that
/// keeps events by their sequence number calls it with the highest one it holds, so that a
/// clock set back between two runs cannot repeat one.
pub fn raise_event_floor(seq: i64) {
    if let Ok(seq) = u64::try_from(seq) {
        LAST_EVENT_SEQ.fetch_max(seq, Ordering::Relaxed);
    }
}

/// A new delivery id, `dlv_…`.
pub fn delivery() -> String {
    make("dlv_")
}

/// A new attempt id, `da_…`.
pub fn attempt() -> String {
    make("da_")
}

/// A new replica id, `rep_…`: one per gateway process, in the claims it holds.
pub fn replica() -> String {
    make("rep_")
}

/// A new request id, `req_…`.
pub fn request() -> String {
    make("req_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_hex_and_ordered_by_time() {
        let a = super::event();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::event();
        assert!(
            a.starts_with("evt_") && a.len() == 36 && a[4..].bytes().all(|c| c.is_ascii_hexdigit())
        );
        assert!(a < b, "{a} then {b}");
        assert_ne!(super::attempt(), super::attempt());
    }

    #[test]
    fn event_ids_carry_a_rising_sequence_number() {
        let ms = chrono::Utc::now().timestamp_millis();
        let ids: Vec<String> = (0..1000).map(|_| super::event()).collect();
        let seqs: Vec<i64> = ids.iter().map(|id| super::event_seq(id).unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "every number rises");
        assert!(
            seqs[0] >> 16 >= ms && seqs[0] >> 16 <= ms + 1_000,
            "the number begins with the milliseconds: {} against {ms}",
            seqs[0] >> 16
        );
        let floor = seqs[999] + 1_000;
        super::raise_event_floor(floor);
        assert!(super::event_seq(&super::event()).unwrap() > floor);
        assert_eq!(super::event_seq("evt_123"), None);
        assert_eq!(super::event_seq(&super::delivery()), None);
        assert_eq!(
            super::event_seq("evt_ffffffffffffffff0000000000000000"),
            None
        );
    }
}
