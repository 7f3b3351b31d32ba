//! `GET /v1/ws` (behind the API key): a WebSocket on which a client subscribes to the
//! channels of `websocket` Destinations and receives their deliveries.
//!
//! Client to server: `{"type": "subscribe", "channel": "deliveries:<namespace>/<name>"}`,
//! answered `{"type": "subscribed", "channel": ...}` (or `{"type": "error", "message": ...}`).
//! Server to client: `{"type": "delivery", "channel", "data": {...}}` for each delivery.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::auth::{Allowed, ReadDeliveries};
use crate::access::Scope;
use crate::app::AppState;
use crate::delivery::provider::websocket::{Hub, Outgoing, CONNECTION_QUEUE};

/// Longest client message read.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Most channels one connection may subscribe to.
const MAX_CHANNELS: usize = 256;

#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    channel: Option<String>,
}

pub(super) async fn upgrade(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<ReadDeliveries>,
    ws: WebSocketUpgrade,
) -> Response {
    let hub = app.hub.clone();
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, hub, scope))
}

/// The namespace of a Destination's channel, `deliveries:<namespace>/<name>`.
fn channel_namespace(channel: &str) -> Option<&str> {
    channel
        .strip_prefix("deliveries:")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .map(|(ns, _)| ns)
}

/// Whether `channel` names a Destination's channel.
fn valid_channel(channel: &str) -> bool {
    channel_namespace(channel).is_some()
}

/// One connection: its id, its outgoing queue, what its key may see, and how many channels
/// it subscribed to.
struct Connection<'a> {
    hub: &'a Hub,
    id: u64,
    tx: mpsc::Sender<Outgoing>,
    scope: Scope,
    subscribed: usize,
}

/// The answer to one client message, if any.
fn answer(conn: &mut Connection<'_>, text: &str) -> String {
    let error = |message: String| json!({"type": "error", "message": message}).to_string();
    let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
        return error("messages are JSON objects with a \"type\"".to_owned());
    };
    match (message.kind.as_str(), message.channel) {
        ("subscribe", Some(channel)) if valid_channel(&channel) => {
            // A key scoped to some namespaces hears nothing of the others, and is told no
            // more than for a channel nobody delivers to.
            if !channel_namespace(&channel).is_some_and(|ns| conn.scope.allows(ns)) {
                return error(format!("channel {channel} not found"));
            }
            if conn.subscribed >= MAX_CHANNELS {
                return error(format!("at most {MAX_CHANNELS} channels per connection"));
            }
            conn.subscribed += 1;
            conn.hub.subscribe(&channel, conn.id, conn.tx.clone());
            json!({"type": "subscribed", "channel": channel}).to_string()
        }
        ("subscribe", _) => error(
            "subscribe needs a \"channel\" of the form deliveries:<namespace>/<name>".to_owned(),
        ),
        ("pong", _) => String::new(),
        (other, _) => error(format!("unknown message type {other:?}")),
    }
}

async fn serve(socket: WebSocket, hub: std::sync::Arc<Hub>, scope: Scope) {
    let id = hub.connection();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(CONNECTION_QUEUE);
    let (mut sink, mut stream) = socket.split();
    let mut conn = Connection {
        hub: &hub,
        id,
        tx,
        scope,
        subscribed: 0,
    };
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = answer(&mut conn, text.as_str());
                    if !reply.is_empty() && sink.send(Message::Text(reply.into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(out) = rx.recv() => {
                if sink.send(Message::Text(out.text.into())).await.is_err() {
                    break;
                }
                let _ = out.sent.send(());
            }
        }
    }
    hub.forget(id);
}

#[cfg(test)]
mod tests {
    use super::valid_channel;

    #[test]
    fn channels_name_a_namespace_and_a_destination() {
        assert!(valid_channel("deliveries:shop/live"));
        assert!(!valid_channel("deliveries:shop"));
        assert!(!valid_channel("events"));
        assert!(!valid_channel("deliveries:/x"));
        assert!(!valid_channel("deliveries:a/b/c"));
    }
}
