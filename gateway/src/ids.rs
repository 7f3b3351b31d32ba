//! Identifiers: a prefix and 32 random hex digits (128 bits).

use rand::RngCore;

fn make(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
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

/// A new request id, `req_…`.
pub fn request() -> String {
    make("req_")
}
