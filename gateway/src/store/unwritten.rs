//! Completions a writer could not commit (a full disk, the database down), kept and written
//! again: both backends' writers take their next group through [`next_group`], which waits
//! at most [`RETRY`] while completions wait, and keep at most [`MAX`] of them ([`bound`]).

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::error;

use super::model::Completion;

/// Completions kept for a retry; beyond this the oldest are dropped and their deliveries are
/// attempted again when their claims run out.
const MAX: usize = 100_000;
/// How soon unwritten completions are tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The next group of up to `max` operations. While completions wait to be written again it
/// waits at most [`RETRY`] (an empty group then retries them). `None`: the channel is closed
/// and nothing is left to write.
pub(super) async fn next_group<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    unwritten: &[Completion],
) -> Option<Vec<T>> {
    let mut ops = Vec::with_capacity(max);
    let received = if unwritten.is_empty() {
        rx.recv_many(&mut ops, max).await
    } else {
        tokio::time::timeout(RETRY, rx.recv_many(&mut ops, max))
            .await
            .unwrap_or_default()
    };
    if received == 0 && rx.is_closed() {
        if unwritten.is_empty() {
            return None;
        }
        // Shutting down with completions still unwritten: keep trying, at a pace.
        tokio::time::sleep(RETRY).await;
    }
    Some(ops)
}

/// Keeps at most [`MAX`] unwritten completions, dropping the oldest.
pub(super) fn bound(unwritten: &mut Vec<Completion>) {
    if unwritten.len() > MAX {
        let dropped = unwritten.len() - MAX;
        unwritten.drain(..dropped);
        error!(dropped, "completions could not be written and were dropped; their deliveries are attempted again when their claims run out");
    }
}
