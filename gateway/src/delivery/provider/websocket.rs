//! The `websocket` destination type: deliveries go to the clients connected to the gateway's
//! `GET /v1/ws` that subscribed to the Destination's channel
//! (`deliveries:<namespace>/<channel name>`), as
//! `{"type": "delivery", "channel", "data": {"event_id", "status", "body", "delivered_at"}}`.
//!
//! A delivery succeeds once at least one subscribed client has been sent it (the message was
//! written to its connection); with no subscriber connected it is a failed attempt, retried
//! as any failure. The [`Hub`] holds the subscriptions; the HTTP layer's WebSocket handler
//! registers each connection's channels with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hookstream_crds::config::DestinationConfig;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{Message, Provider, Sent};
use crate::clock::{now_ms, rfc3339};
use crate::store::AttemptDetail;

/// How long a delivery waits for a subscriber's connection to take the message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued per connection before it counts as too slow for more.
pub const CONNECTION_QUEUE: usize = 256;

/// A message for one connection, and who to tell once it is written.
pub struct Outgoing {
    /// The JSON text.
    pub text: String,
    /// Told when the connection has written the message.
    pub sent: oneshot::Sender<()>,
}

/// Each channel's subscribers: connection id and its queue.
type Channels = HashMap<String, Vec<(u64, mpsc::Sender<Outgoing>)>>;

/// The subscriptions of every connected client.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    channels: Mutex<Channels>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// A new connection's id.
    pub fn connection(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Channels> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes connection `id` (which writes what `tx` receives) to `channel`.
    pub fn subscribe(&self, channel: &str, id: u64, tx: mpsc::Sender<Outgoing>) {
        let mut channels = self.lock();
        let list = channels.entry(channel.to_owned()).or_default();
        if !list.iter().any(|(other, _)| *other == id) {
            list.push((id, tx));
        }
    }

    /// Removes every subscription of connection `id` (it closed).
    pub fn forget(&self, id: u64) {
        let mut channels = self.lock();
        for list in channels.values_mut() {
            list.retain(|(other, _)| *other != id);
        }
        channels.retain(|_, list| !list.is_empty());
    }

    /// Sends `text` to every subscriber of `channel`; returns how many wrote it before
    /// `timeout`, or why none did.
    async fn publish(&self, channel: &str, text: &str, timeout: Duration) -> Result<u32, String> {
        let subscribers: Vec<mpsc::Sender<Outgoing>> = self
            .lock()
            .get(channel)
            .map(|list| list.iter().map(|(_, tx)| tx.clone()).collect())
            .unwrap_or_default();
        if subscribers.is_empty() {
            return Err(format!("no client is subscribed to channel {channel}"));
        }
        let mut pending = Vec::new();
        for tx in subscribers {
            let (sent, done) = oneshot::channel();
            let message = Outgoing {
                text: text.to_owned(),
                sent,
            };
            // A client whose queue is full is too slow for this message; the others get it.
            if tx.try_send(message).is_ok() {
                pending.push(done);
            }
        }
        if pending.is_empty() {
            return Err(format!(
                "every client subscribed to channel {channel} is too slow to take more"
            ));
        }
        let written = tokio::time::timeout(timeout, futures::future::join_all(pending))
            .await
            .map(|all| all.into_iter().filter(Result::is_ok).count())
            .unwrap_or(0);
        match u32::try_from(written) {
            Ok(0) | Err(_) => Err(format!(
                "no client subscribed to channel {channel} took the message within {} s",
                timeout.as_secs()
            )),
            Ok(n) => Ok(n),
        }
    }
}

/// Delivers to WebSocket subscribers through the [`Hub`].
pub struct WebsocketProvider {
    hub: Arc<Hub>,
}

impl WebsocketProvider {
    /// A provider sending through `hub`.
    pub fn new(hub: Arc<Hub>) -> WebsocketProvider {
        WebsocketProvider { hub }
    }
}

#[async_trait]
impl Provider for WebsocketProvider {
    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let Some(ws) = &destination.websocket else {
            return Sent {
                permanent: true,
                error: Some("destination has no websocket settings".to_owned()),
                ..Sent::default()
            };
        };
        let started = Instant::now();
        let body: Value = serde_json::from_slice(&message.payload.body).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&message.payload.body).into_owned())
        });
        let text = json!({
            "type": "delivery",
            "channel": ws.channel,
            "data": {
                "event_id": message.event.id,
                "status": "delivered",
                "body": body,
                "delivered_at": rfc3339(now_ms()),
            },
        })
        .to_string();
        let outcome = self.hub.publish(&ws.channel, &text, SEND_TIMEOUT).await;
        Sent {
            success: outcome.is_ok(),
            permanent: false,
            detail: AttemptDetail::Websocket {
                channel: ws.channel.clone(),
                clients: *outcome.as_ref().unwrap_or(&0),
            },
            error: outcome.err(),
            latency: started.elapsed(),
            ..Sent::default()
        }
    }
}
