//! Identifiers: a prefix and 32 hex digits: 48 bits of milliseconds since the Unix epoch,
//! then 80 random bits.
//!
//! The time prefix keeps new ids in order, so inserting them touches the last pages of the
//! unique indexes instead of a random page per row: at thousands of events a second this is
//! the difference between appending a few pages per commit and rewriting hundreds.

use rand::RngCore;

fn make(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    rand::rng().fill_bytes(&mut bytes[6..]);
    format!("{prefix}{}", hex::encode(bytes))
}

/// A new event id, `evt_…`.
pub fn event() -> String {
    make("evt_")
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
}
