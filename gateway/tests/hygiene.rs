//! Fair limits and connection hygiene, through a real gateway process and real sockets:
//! forged requests cannot spend a genuine sender's rate limit, failed API authentication is
//! throttled per client address, and stalled, idle, slow-body and surplus connections are
//! closed, refused or held back as the connection flags say.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{metric, Gateway, API_KEY};
use hmac::{Hmac, Mac};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "hygiene-test-secret-41c2";

fn signed_source(spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: hook, namespace: t}}
stringData:
  secret: "{SECRET}"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec:
  verification: {{type: hmac-sha256, secretRef: {{name: hook, key: secret}}, header: X-Signature}}
{spec_extra}
"#
    )
}

const OPEN_SOURCE: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#;

fn sign(body: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(body.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn addr(gw: &Gateway) -> SocketAddr {
    gw.base.trim_start_matches("http://").parse().unwrap()
}

/// An HTTP client whose connections come from `local` (any of 127.0.0.0/8 reaches loopback).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip(local))
        .build()
        .unwrap()
}

/// A raw TCP connection to the gateway from `local`.
async fn connect_from(gw: &Gateway, local: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(local), 0)).unwrap();
    socket.connect(addr(gw)).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset); how long that took, or `None`
/// if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one HTTP/1.1 response (head and a Content-Length body); `None` if none arrives
/// within `within`.
async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + within;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
                return Some((status, body));
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// Sends a keep-alive GET of `path` on `stream` and reads the answer.
async fn get_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer to GET {path}"))
}

fn gateway_metric(text: &str, name: &str) -> f64 {
    metric(text, name, &[]).unwrap_or_else(|| panic!("no {name} in {text}"))
}

// --- fair limits ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flood_does_not_spend_a_genuine_senders_rate_limit() {
    let gw = Gateway::start(&signed_source(
        "  rateLimit: {requestsPerSecond: 5, burst: 5}",
    ))
    .await;
    let url = format!("{}/v1/ingest/t/in", gw.base);
    // Unsigned requests from 127.0.0.1, ten at a time, from before the genuine sender starts
    // until after it is done: at least 300, many times the Source's rate of 5 a second.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (url, stop, sent) = (url.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let client = client_from("127.0.0.1");
            let mut statuses = Vec::new();
            while statuses.len() < 300 || !stop.load(Ordering::Relaxed) {
                let sends = (0..10).map(|i| {
                    client
                        .post(&url)
                        .body(format!(r#"{{"forged":{i}}}"#))
                        .send()
                });
                for r in futures::future::join_all(sends).await {
                    let r = r.unwrap();
                    let retry_after = r.headers().get("retry-after").cloned();
                    statuses.push((r.status().as_u16(), retry_after));
                }
                sent.store(statuses.len(), Ordering::Relaxed);
            }
            statuses
        })
    };
    while sent.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile a genuine sender from 127.0.0.2 stays under the rate and is always accepted.
    let genuine = client_from("127.0.0.2");
    for n in 0..10 {
        let body = format!(r#"{{"genuine":{n}}}"#);
        let r = genuine
            .post(&url)
            .header("x-signature", sign(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(
            status,
            200,
            "genuine request {n}: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = flood.await.unwrap();
    let unauthorized = statuses.iter().filter(|(s, _)| *s == 401).count();
    let throttled: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(
        unauthorized + throttled.len(),
        statuses.len(),
        "{statuses:?}"
    );
    // 120 failures a minute per client, plus the one that goes over and those in flight then.
    assert!(
        (121..=250).contains(&unauthorized),
        "{unauthorized} forged requests were verified"
    );
    assert!(throttled.len() >= 100, "only {} throttled", throttled.len());
    assert!(throttled.iter().all(|(_, retry)| retry.is_some()));
    let text = gw.metrics().await;
    let outcome = |o: &str| {
        metric(
            &text,
            "hookstream_gateway_ingest_requests_total",
            &[("source", "t/in"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("accepted"), Some(10.0), "{text}");
    assert_eq!(outcome("throttled"), Some(throttled.len() as f64), "{text}");
    assert_eq!(outcome("rate_limited"), None, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_keys_are_throttled_per_client_address() {
    let gw = Gateway::start(OPEN_SOURCE).await;
    let wrong = format!("hs_test_{}", "f".repeat(64));
    let attacker = client_from("127.0.0.3");
    let events = format!("{}/v1/events", gw.base);
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let r = attacker
            .get(&events)
            .header("x-api-key", &wrong)
            .send()
            .await
            .unwrap();
        let retry_after = r.headers().get("retry-after").cloned();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(!body.contains(&wrong), "the key is never echoed: {body}");
        statuses.push((status, retry_after));
    }
    // Twenty failures a minute; the 21st goes over and is the last key looked at.
    assert!(
        statuses[..21].iter().all(|(s, _)| *s == 401),
        "{statuses:?}"
    );
    for (status, retry_after) in &statuses[21..] {
        assert_eq!(*status, 429, "{statuses:?}");
        let secs: u64 = retry_after
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3).contains(&secs), "Retry-After {secs}");
    }
    // The throttled address is refused even with the right key: the key is not checked.
    let r = attacker
        .get(&events)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another address with the right key is served.
    let (status, _) = gw.get("/v1/events").await;
    assert_eq!(status, 200);
    let text = gw.metrics().await;
    assert_eq!(
        gateway_metric(&text, "hookstream_gateway_api_auth_failures_total"),
        21.0
    );
    assert_eq!(
        gateway_metric(&text, "hookstream_gateway_api_auth_throttled_total"),
        5.0
    );
    assert!(!gw.log().contains(&wrong), "the key is never logged");
}

// --- connection hygiene --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_read_timeout() {
    let gw = Gateway::start_with(
        OPEN_SOURCE,
        &["--header-read-timeout", "1s", "--idle-timeout", "5s"],
    )
    .await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let stream = connect_from(&gw, "127.0.0.4").await;
        tasks.push(tokio::spawn(hold_slowly(stream, i % 2 == 0)));
    }
    // A normal request is served meanwhile.
    let r = gw.ingest("t", "in", r#"{"normal":true}"#, &[]).await;
    assert_eq!(r.status(), 200);
    for t in tasks {
        let closed_after = t.await.unwrap();
        let closed_after =
            closed_after.unwrap_or_else(|| panic!("a slow connection was still open at 4 s"));
        assert!(
            closed_after >= Duration::from_millis(700),
            "closed too early: {closed_after:?}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    let text = gw.metrics().await;
    // Only the connection that fetched the metrics (and perhaps the ingest one) is open.
    assert!(
        gateway_metric(&text, "hookstream_gateway_open_connections") <= 2.0,
        "{text}"
    );
}

/// Sends a request head one byte every 200 ms (or nothing when `silent`) until the server
/// closes the connection; how long that took, `None` if it was open after 4 s.
async fn hold_slowly(mut stream: TcpStream, silent: bool) -> Option<Duration> {
    let head =
        b"POST /v1/ingest/t/in HTTP/1.1\r\nHost: gw\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = Instant::now();
    for byte in head.iter().cycle() {
        if start.elapsed() > Duration::from_secs(4) {
            return None;
        }
        if !silent {
            let _ = stream.write_all(&[*byte]).await;
        }
        if closed_within(&mut stream, Duration::from_millis(200))
            .await
            .is_some()
        {
            return Some(start.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_quiet_keep_alive_connection_on_its_own_clock() {
    // Header timeout long, idle short: the idle connection closes after about 1 s.
    let gw = Gateway::start_with(
        OPEN_SOURCE,
        &["--header-read-timeout", "5s", "--idle-timeout", "1s"],
    )
    .await;
    let mut conn = connect_from(&gw, "127.0.0.1").await;
    assert_eq!(get_on(&mut conn, "/healthz").await.0, 200);
    let closed = closed_within(&mut conn, Duration::from_secs(4)).await;
    let closed = closed.expect("idle connection still open after 4 s");
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&closed),
        "idle connection closed after {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_does_not_cut_the_idle_timeout_short() {
    // Header timeout short, idle long: an idle connection outlives the header timeout, while
    // a connection stuck in the middle of a head is closed after it.
    let gw = Gateway::start_with(
        OPEN_SOURCE,
        &["--header-read-timeout", "1s", "--idle-timeout", "3s"],
    )
    .await;
    let mut idle = connect_from(&gw, "127.0.0.1").await;
    assert_eq!(get_on(&mut idle, "/healthz").await.0, 200);
    let idle_start = Instant::now();
    let mut half = connect_from(&gw, "127.0.0.1").await;
    assert_eq!(get_on(&mut half, "/healthz").await.0, 200);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let half_closed = closed_within(&mut half, Duration::from_secs(3)).await;
    let half_closed = half_closed.expect("half a head still open after 3 s");
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2000)).contains(&half_closed),
        "half a head closed after {half_closed:?}"
    );
    // The idle connection is still open at 2 s, and serves another request...
    assert_eq!(
        closed_within(
            &mut idle,
            Duration::from_secs(2).saturating_sub(idle_start.elapsed())
        )
        .await,
        None,
        "the idle connection was closed before its idle timeout"
    );
    assert_eq!(get_on(&mut idle, "/healthz").await.0, 200);
    // ...and closes about 3 s after that one.
    let closed = closed_within(&mut idle, Duration::from_secs(5)).await;
    let closed = closed.expect("idle connection still open 5 s after its last request");
    assert!(
        (Duration::from_millis(2700)..Duration::from_millis(4000)).contains(&closed),
        "idle connection closed after {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_and_nothing_is_stored() {
    let gw = Gateway::start_with(OPEN_SOURCE, &["--body-read-timeout", "1s"]).await;
    let mut conn = connect_from(&gw, "127.0.0.1").await;
    let start = Instant::now();
    conn.write_all(
        b"POST /v1/ingest/t/in HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a\":\"bcd",
    )
    .await
    .unwrap();
    let (status, body) = read_response(&mut conn, Duration::from_secs(4))
        .await
        .expect("no answer to a stalled body within 4 s");
    let waited = start.elapsed();
    assert_eq!(status, 408, "{body}");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&waited),
        "answered after {waited:?}"
    );
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], 408);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("not received within 1 s"),
        "{json}"
    );
    let (code, events) = gw.get("/v1/events?source=in&limit=10").await;
    assert_eq!(code, 200);
    assert_eq!(events["events"].as_array().unwrap().len(), 0, "{events}");
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "hookstream_gateway_ingest_requests_total",
            &[("source", "t/in"), ("outcome", "body_timeout")]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_closes() {
    let gw = Gateway::start_with(
        OPEN_SOURCE,
        &[
            "--max-connections",
            "20",
            "--header-read-timeout",
            "30s",
            "--idle-timeout",
            "30s",
        ],
    )
    .await;
    // A connection that reads the metrics, and silent ones to fill the cap (counting what
    // else is open, such as the harness's pooled connection).
    let mut watcher = connect_from(&gw, "127.0.0.1").await;
    let (status, text) = get_on(&mut watcher, "/metrics").await;
    assert_eq!(status, 200);
    let open_before = gateway_metric(&text, "hookstream_gateway_open_connections") as usize;
    assert!((1..=3).contains(&open_before), "{text}");
    let mut idle = Vec::new();
    for _ in open_before..20 {
        idle.push(connect_from(&gw, "127.0.0.1").await);
    }
    // The accept loop takes them in a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (_, text) = get_on(&mut watcher, "/metrics").await;
        let open = gateway_metric(&text, "hookstream_gateway_open_connections");
        if open == 20.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections open, not 20");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One more connects (the kernel's backlog) but is not served...
    let mut extra = connect_from(&gw, "127.0.0.1").await;
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut extra, Duration::from_secs(1)).await,
        None,
        "a connection over the cap was served"
    );
    // ...until one of the twenty closes.
    drop(idle.pop());
    let (status, body) = read_response(&mut extra, Duration::from_secs(2))
        .await
        .expect("the waiting connection was not served after a slot freed");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (_, text) = get_on(&mut watcher, "/metrics").await;
    assert_eq!(
        gateway_metric(&text, "hookstream_gateway_open_connections"),
        20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_waiting_connections_and_finishes_the_request_in_flight() {
    let gw = Gateway::start(OPEN_SOURCE).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(connect_from(&gw, "127.0.0.1").await);
    }
    let mut idle = connect_from(&gw, "127.0.0.1").await;
    assert_eq!(get_on(&mut idle, "/healthz").await.0, 200);
    // A request whose body is half sent when SIGTERM arrives.
    let mut busy = connect_from(&gw, "127.0.0.1").await;
    busy.write_all(
        b"POST /v1/ingest/t/in HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"late\":",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gw = gw;
    let stopped = tokio::task::spawn_blocking(move || {
        let status = gw.terminate();
        (gw, status)
    });
    // Connections with no request in progress are closed at once...
    assert!(closed_within(&mut idle, Duration::from_secs(2))
        .await
        .is_some());
    for conn in &mut silent {
        assert!(closed_within(conn, Duration::from_secs(2)).await.is_some());
    }
    // ...while the request in flight is still answered, and then the gateway exits.
    busy.write_all(b"true}").await.unwrap();
    let (status, body) = read_response(&mut busy, Duration::from_secs(5))
        .await
        .expect("the request in flight was not answered");
    assert_eq!(status, 200, "{body}");
    let (gw, exit) = stopped.await.unwrap();
    assert!(exit.success(), "{exit}:\n{}", gw.log());
}
