//! The `http` destination type: build the request (hookstream's headers, the destination's
//! static and secret headers, the signature), send it on the shared keep-alive client, and
//! describe what came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hookstream_crds::config::{DestinationConfig, HttpConfig, SigningConfig};
use hookstream_crds::v1alpha1::{SigningAlgorithm, SigningScheme};

use super::egress::{self, Egress};
use super::{Headers, Message, Provider, ProviderError, Sent};
use crate::pipeline::event::HOPS_HEADER;
use crate::store::AttemptDetail;

/// Most response body bytes kept with an attempt; the rest is not read.
pub const RESPONSE_BODY_LIMIT: usize = 4 * 1024;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Shown instead of a header value that came from a Secret.
pub const REDACTED: &str = "[redacted]";

/// Delivers to HTTP(S) endpoints on one keep-alive client. Redirects are not followed: a
/// redirect is the destination's answer, recorded as a failure. Connections go only where
/// the egress policy allows, and never through a proxy from the environment.
pub struct HttpProvider {
    client: reqwest::Client,
    egress: Arc<Egress>,
}

impl HttpProvider {
    /// Builds the shared client.
    pub fn new(egress: Arc<Egress>) -> Result<HttpProvider, ProviderError> {
        let client = reqwest::Client::builder()
            .dns_resolver(egress.resolver())
            .no_proxy()
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("hookstream/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError {
                kind: "http",
                message: e.to_string(),
            })?;
        Ok(HttpProvider { client, egress })
    }
}

#[async_trait]
impl Provider for HttpProvider {
    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let Some(http) = &destination.http else {
            return Sent {
                permanent: true,
                error: Some("destination has no http settings".to_owned()),
                ..Sent::default()
            };
        };
        let (headers, shown) = request_headers(
            http,
            destination.signing.as_ref(),
            &Stamp {
                event_id: &message.event.id,
                attempt: message.attempt,
                timestamp: message.timestamp,
                hops: message.hops,
            },
            message.payload.content_type.as_deref(),
            &message.payload.body,
        );
        if let Some(denied) = self.denied(&http.url).await {
            return Sent {
                permanent: true,
                error: Some(denied),
                request_headers: shown,
                ..Sent::default()
            };
        }
        let response = send(&self.client, http, &headers, message.payload.body).await;
        Sent {
            success: response.succeeded(),
            permanent: response.permanent,
            error: response.error,
            request_headers: shown,
            detail: AttemptDetail::Http {
                status_code: response.status,
                response_headers: response.headers.unwrap_or_default(),
                response_body: response.body,
                response_body_truncated: response.truncated,
            },
            retry_after: response.retry_after,
            latency: response.latency,
        }
    }
}

impl HttpProvider {
    /// Why the policy refuses the destination's literal address (or this gateway's own
    /// port), in words; host names are checked when they are resolved.
    async fn denied(&self, url: &str) -> Option<String> {
        let url = url::Url::parse(url).ok()?;
        self.egress
            .check_url(&url)
            .await
            .err()
            .map(|e| e.to_string())
    }
}

/// What an attempt produced.
#[derive(Debug, Default)]
struct Response {
    /// Status, when a response came.
    pub status: Option<u16>,
    /// Response headers.
    pub headers: Option<Vec<(String, String)>>,
    /// Start of the response body.
    pub body: Option<String>,
    /// The body was longer than what was kept.
    pub truncated: bool,
    /// The failure will not go away by retrying (the egress policy refused the address, or
    /// the destination answered 508 Loop Detected).
    pub permanent: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Delay asked for by `Retry-After` on a 429 or 503.
    pub retry_after: Option<Duration>,
    /// Time taken.
    pub latency: Duration,
}

impl Response {
    /// A 2xx response.
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What hookstream stamps on every delivery.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    /// The event's id.
    pub event_id: &'a str,
    /// Attempt number.
    pub attempt: u32,
    /// Send time, unix seconds.
    pub timestamp: i64,
    /// Hops the delivery makes (the event's, plus this one).
    pub hops: u32,
}

/// Headers of a delivery: hookstream's own, the destination's static and secret headers,
/// the content type and the signature. Returns the headers to send and the same list with
/// secret values redacted, for the attempt record.
pub fn request_headers(
    http: &HttpConfig,
    signing: Option<&SigningConfig>,
    stamp: &Stamp<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> (Headers, Headers) {
    let Stamp {
        event_id,
        attempt,
        timestamp,
        hops,
    } = *stamp;
    let mut send: Vec<(String, String)> = http.headers.clone();
    let mut shown = send.clone();
    for (name, value) in &http.secret_headers {
        send.push((
            name.clone(),
            String::from_utf8_lossy(value.expose()).into_owned(),
        ));
        shown.push((name.clone(), REDACTED.to_owned()));
    }
    let mut own = vec![
        ("X-Hookstream-Event-Id".to_owned(), event_id.to_owned()),
        (
            "X-Hookstream-Delivery-Attempt".to_owned(),
            attempt.to_string(),
        ),
        ("X-Hookstream-Timestamp".to_owned(), timestamp.to_string()),
        (HOPS_HEADER.to_owned(), hops.to_string()),
    ];
    if let Some(ct) = content_type {
        own.push(("Content-Type".to_owned(), ct.to_owned()));
    }
    if let Some(s) = signing {
        match s.scheme {
            SigningScheme::Hmac => own.push((s.header.clone(), sign(s, event_id, timestamp, body))),
            SigningScheme::StandardWebhooks => {
                own.push(("webhook-id".to_owned(), event_id.to_owned()));
                own.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
                own.push((
                    "webhook-signature".to_owned(),
                    sign_standard_webhooks(s, event_id, timestamp, body),
                ));
            }
        }
    }
    send.extend(own.iter().cloned());
    shown.extend(own);
    (send, shown)
}

/// `sha256=<hex>` (or `sha1=`): the HMAC of `{event id}.{timestamp}.{body}`, one entry per
/// key, comma-separated.
pub fn sign(signing: &SigningConfig, event_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let parts: [&[u8]; 5] = [event_id.as_bytes(), b".", ts.as_bytes(), b".", body];
    signing
        .secrets
        .iter()
        .map(|key| match signing.algorithm {
            SigningAlgorithm::Sha256 => format!(
                "sha256={}",
                hex::encode(hmac::<Hmac<sha2::Sha256>>(key.expose(), &parts))
            ),
            SigningAlgorithm::Sha1 => format!(
                "sha1={}",
                hex::encode(hmac::<Hmac<sha1::Sha1>>(key.expose(), &parts))
            ),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `v1,<base64>` entries, space-separated: the Standard Webhooks signature of
/// `{id}.{timestamp}.{body}` under each key.
pub fn sign_standard_webhooks(
    signing: &SigningConfig,
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let ts = timestamp.to_string();
    let parts: [&[u8]; 5] = [event_id.as_bytes(), b".", ts.as_bytes(), b".", body];
    signing
        .secrets
        .iter()
        .map(|key| {
            let mac = hmac::<Hmac<sha2::Sha256>>(key.expose(), &parts);
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn hmac<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC is defined for keys of every length, so this constructor cannot fail.
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Sends one request and waits at most the destination's timeout for the whole response.
async fn send(
    client: &reqwest::Client,
    http: &HttpConfig,
    headers: &[(String, String)],
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let method =
        reqwest::Method::from_bytes(http.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut request = client
        .request(method, &http.url)
        .timeout(Duration::from_millis(http.timeout_ms))
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut out = Response::default();
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            out.status = Some(status);
            out.headers = Some(
                response
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            );
            if status == 429 || status == 503 {
                out.retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
            }
            // A gateway on the way saw this event go round too often: retrying cannot help.
            out.permanent = status == 508;
            match read_limited(response).await {
                Ok((text, truncated)) => {
                    out.body = Some(text);
                    out.truncated = truncated;
                }
                Err(e) => {
                    out.error = Some(format!("reading the response failed: {}", describe(&e)))
                }
            }
            if !(200..300).contains(&status) && out.error.is_none() {
                out.error = Some(format!("destination answered {status}"));
            }
        }
        Err(e) => {
            out.permanent = egress::denial(&e).is_some();
            out.error = Some(describe(&e));
        }
    }
    out.latency = started.elapsed();
    out
}

/// The start of the response body, at most [`RESPONSE_BODY_LIMIT`] bytes, and whether there
/// was more (which is not read: the connection is dropped instead).
async fn read_limited(mut response: reqwest::Response) -> Result<(String, bool), reqwest::Error> {
    let mut kept = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = RESPONSE_BODY_LIMIT - kept.len();
        if chunk.len() > room {
            kept.extend_from_slice(&chunk[..room]);
            return Ok((String::from_utf8_lossy(&kept).into_owned(), true));
        }
        kept.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&kept).into_owned(), false))
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(text: &str) -> Option<Duration> {
    let delay = match text.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(text.trim()).ok()?;
            let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// A failure in words without the URL's query (which may hold tokens).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::config::SecretValue;

    #[test]
    fn retry_after_reads_seconds_and_caps_them() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn signature_is_hmac_of_id_timestamp_and_body() {
        let s = SigningConfig {
            scheme: SigningScheme::Hmac,
            secrets: vec![SecretValue(b"k".to_vec()), SecretValue(b"next".to_vec())],
            algorithm: SigningAlgorithm::Sha256,
            header: "X".into(),
        };
        let expected = |key: &[u8]| {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            m.update(b"evt_1.1700000000.{}");
            format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        };
        assert_eq!(
            sign(&s, "evt_1", 1_700_000_000, b"{}"),
            format!("{},{}", expected(b"k"), expected(b"next")),
            "one entry per key, the primary first"
        );
    }

    #[test]
    fn standard_webhooks_signature_matches_the_spec_example() {
        // The example of the Standard Webhooks specification (whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw).
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let s = SigningConfig {
            scheme: SigningScheme::StandardWebhooks,
            secrets: vec![SecretValue(key)],
            algorithm: SigningAlgorithm::Sha256,
            header: String::new(),
        };
        assert_eq!(
            sign_standard_webhooks(
                &s,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secret_headers_are_sent_but_not_recorded() {
        let http = HttpConfig {
            url: "http://x".into(),
            method: "POST".into(),
            headers: vec![("X-Team".into(), "a".into())],
            secret_headers: vec![(
                "Authorization".into(),
                SecretValue(b"Bearer t0ken".to_vec()),
            )],
            timeout_ms: 1000,
        };
        let stamp = Stamp {
            event_id: "evt_1",
            attempt: 1,
            timestamp: 1,
            hops: 1,
        };
        let (send, shown) = request_headers(&http, None, &stamp, Some("application/json"), b"{}");
        assert!(send.contains(&("Authorization".into(), "Bearer t0ken".into())));
        assert!(shown.contains(&("Authorization".into(), REDACTED.into())));
        assert!(!format!("{shown:?}").contains("t0ken"));
    }
}
