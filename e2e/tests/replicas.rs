//! Highly available gateways: three replicas as processes against a real kube-apiserver,
//! sharing one real PostgreSQL database, behind an operator. Webhooks sent to any replica are
//! delivered; when a replica (the one writing status) is killed under load, nothing it
//! acknowledged is lost, its claimed deliveries are taken over, and status keeps being
//! written by the survivor that takes the status Lease.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookstream_e2e::cluster::{eventually, Gateway, Namespace, Operator};
use hookstream_e2e::postgres::Database;
use hookstream_e2e::receiver::{hmac_sha256_hex, Answer, Receiver};
use serde_json::Value;

const REPLICAS: usize = 3;
const SIGNING_SECRET: &str = "replicas-signing-secret";
/// The Lease whose holder writes status (one per namespace).
const STATUS_LEASE: &str = "hookstream-gateway-status";
/// Generous bound for things that wait on other processes starting.
const SLOW: Duration = Duration::from_secs(30);
/// One event every this often during the load phase: 40 events/s.
const SEND_EVERY: Duration = Duration::from_millis(25);
/// How long the receiver takes to answer: deliveries are in flight (claimed by the replica
/// that makes them) when a replica is killed.
const RECEIVER_DELAY: Duration = Duration::from_millis(300);
/// Load before and after the kill.
const BEFORE_KILL: Duration = Duration::from_secs(2);
const AFTER_KILL: Duration = Duration::from_secs(4);
/// From the kill until every acknowledged event is delivered and status is up to date: a
/// killed replica's claims are taken over once its heartbeat is 10 s old, and its status
/// Lease (15 s) expires.
const RECOVERY: Duration = Duration::from_secs(30);

/// Two Sources (one verifying an HMAC signature, one open), one Destination at `receiver`,
/// and a Connection from each Source to it.
fn manifests(receiver: &Receiver) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: signing}}
stringData: {{key: {SIGNING_SECRET}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: signed}}
spec:
  verification: {{type: hmac-sha256, header: X-Sig, secretRef: {{name: signing, key: key}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: plain}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out}}
spec:
  type: http
  http: {{url: "{}/hooks"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: signed-out}}
spec: {{source: signed, destination: out}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: plain-out}}
spec: {{source: plain, destination: out}}
"#,
        receiver.url
    )
}

fn ingest_url(gw: &Gateway, ns: &Namespace, source: &str) -> String {
    format!("{}/v1/ingest/{}/{source}", gw.base, ns.name)
}

/// The body of event `seq`, and the headers it is sent with to `source`.
fn event(source: &str, seq: u64) -> (String, Vec<(&'static str, String)>) {
    let body = format!(r#"{{"type":"load","source":"{source}","seq":{seq}}}"#);
    let headers = if source == "signed" {
        vec![(
            "x-sig",
            format!("sha256={}", hmac_sha256_hex(SIGNING_SECRET, &body)),
        )]
    } else {
        Vec::new()
    };
    (body, headers)
}

/// Posts; the status and the answer, or the transport error.
async fn post(
    http: &reqwest::Client,
    url: &str,
    body: String,
    headers: &[(&str, String)],
) -> Result<(u16, Value), String> {
    let mut req = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// What the test sent and what the gateways answered.
#[derive(Clone, Debug)]
struct Sent {
    seq: u64,
    source: &'static str,
    replica: usize,
    /// The HTTP status and answer, or the transport error.
    outcome: Result<(u16, Value), String>,
}

impl Sent {
    /// The event id, when the gateway acknowledged the event (200).
    fn acked(&self) -> Option<&str> {
        match &self.outcome {
            Ok((200, answer)) => answer["event_id"].as_str(),
            _ => None,
        }
    }
}

/// Deliveries the receiver got, by `X-Hookstream-Event-Id`: how often each, and the `seq`
/// of the body.
fn delivered(receiver: &Receiver) -> HashMap<String, (usize, u64)> {
    let mut by_id: HashMap<String, (usize, u64)> = HashMap::new();
    for r in receiver.received() {
        let id = r
            .header("x-hookstream-event-id")
            .expect("every delivery carries X-Hookstream-Event-Id");
        let seq = r.json()["seq"].as_u64().unwrap();
        by_id.entry(id).or_insert((0, seq)).0 += 1;
    }
    by_id
}

fn lease_holder(ns: &Namespace) -> Option<String> {
    ns.get("lease", STATUS_LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// The last lines of every replica's log, for failure messages.
fn logs(gateways: &[Gateway]) -> String {
    let mut text = String::new();
    for gw in gateways {
        let log = gw.process.log();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!(
            "--- {} ({}), last lines of its log ---\n",
            gw.identity, gw.base
        ));
        for line in &lines[lines.len().saturating_sub(25)..] {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_lose_nothing_when_the_status_writer_is_killed() {
    let started = Instant::now();
    let ns = Namespace::create("replicas");
    let db = Database::create().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Answer {
        delay: RECEIVER_DELAY,
        ..Answer::status(200)
    });
    let mut gateways = Gateway::start_replicas(&ns, "", &db.url, REPLICAS).await;
    let _operator = Operator::start(&ns, &gateways[0].base).await;
    let identities: Vec<String> = gateways.iter().map(|g| g.identity.clone()).collect();
    eprintln!(
        "{REPLICAS} replicas on database {} serving after {:?}",
        db.name(),
        started.elapsed()
    );

    ns.apply_ok(&manifests(&receiver));
    for (kind, name) in [
        ("source", "signed"),
        ("source", "plain"),
        ("destination", "out"),
        ("connection", "signed-out"),
        ("connection", "plain-out"),
    ] {
        eventually(&format!("{kind} {name} Ready=True"), SLOW, || {
            ns.condition(kind, name, "Ready")
                .filter(|(s, ..)| s == "True")
        })
        .await;
    }

    // Every replica takes webhooks: a signed one (once it has loaded the config and the
    // signing secret), a forged one refused, an unsigned one to the open Source.
    let http = reqwest::Client::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut seq = 0;
    for (i, gw) in gateways.iter().enumerate() {
        let url = ingest_url(gw, &ns, "signed");
        let deadline = Instant::now() + SLOW;
        loop {
            seq += 1;
            let (body, headers) = event("signed", seq);
            let outcome = post(&http, &url, body, &headers).await;
            let status = outcome.as_ref().map(|(s, _)| *s).unwrap_or(0);
            sent.push(Sent {
                seq,
                source: "signed",
                replica: i,
                outcome,
            });
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never accepted a signed webhook: {:?}\n{}",
                gw.identity,
                sent.last().unwrap().outcome,
                logs(&gateways)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (body, _) = event("signed", 0);
        let forged = [("x-sig", "sha256=00".to_owned())];
        let (status, _) = post(&http, &url, body, &forged).await.unwrap();
        assert_eq!(status, 401, "{} took a forged signature", gw.identity);
        seq += 1;
        let (body, headers) = event("plain", seq);
        let outcome = post(&http, &ingest_url(gw, &ns, "plain"), body, &headers).await;
        assert_eq!(
            outcome.as_ref().map(|(s, _)| *s),
            Ok(200),
            "{}: {outcome:?}",
            gw.identity
        );
        sent.push(Sent {
            seq,
            source: "plain",
            replica: i,
            outcome,
        });
    }
    let first: Vec<String> = sent
        .iter()
        .filter_map(|s| s.acked().map(str::to_owned))
        .collect();
    assert_eq!(first.len(), 2 * REPLICAS);
    eventually("the first webhooks are delivered", SLOW, || {
        let got = delivered(&receiver);
        first.iter().all(|id| got.contains_key(id)).then_some(())
    })
    .await;
    eprintln!(
        "a signed and an unsigned webhook through each replica delivered after {:?}",
        started.elapsed()
    );

    // The replica to kill: the one writing status.
    let holder = eventually("a replica holds the status Lease", SLOW, || {
        lease_holder(&ns).filter(|h| identities.contains(h))
    })
    .await;
    let victim = identities.iter().position(|i| *i == holder).unwrap();

    // Load: events round-robin over the replicas still alive, alternating the two Sources.
    let alive: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new((0..REPLICAS).collect()));
    let urls: Vec<[String; 2]> = gateways
        .iter()
        .map(|gw| [ingest_url(gw, &ns, "signed"), ingest_url(gw, &ns, "plain")])
        .collect();
    let load_started = Instant::now();
    let sender = {
        let alive = alive.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SEND_EVERY);
            let mut requests = tokio::task::JoinSet::new();
            let mut n = 0usize;
            while load_started.elapsed() < BEFORE_KILL + AFTER_KILL {
                tick.tick().await;
                seq += 1;
                let replicas = alive.lock().unwrap().clone();
                let replica = replicas[n % replicas.len()];
                let source = ["signed", "plain"][n % 2];
                let url = urls[replica][n % 2].clone();
                n += 1;
                let http = http.clone();
                let seq = seq;
                requests.spawn(async move {
                    let (body, headers) = event(source, seq);
                    Sent {
                        seq,
                        source,
                        replica,
                        outcome: post(&http, &url, body, &headers).await,
                    }
                });
            }
            requests.join_all().await
        })
    };
    tokio::time::sleep(BEFORE_KILL).await;
    gateways[victim].process.kill9();
    let killed_at = Instant::now();
    alive.lock().unwrap().retain(|r| *r != victim);
    eprintln!("killed {holder} (the status Lease holder) with SIGKILL under load");
    let load = sender.await.unwrap();
    sent.extend(load.iter().cloned());
    let sources_sent = |source: &str| sent.iter().filter(|s| s.source == source).count();
    assert!(
        sources_sent("signed") > 100 && sources_sent("plain") > 100,
        "the sender sent too little: {} signed, {} plain",
        sources_sent("signed"),
        sources_sent("plain")
    );

    // Every answer was a 200; only requests to the killed replica may have failed, and only
    // in transport (it was gone).
    for s in &load {
        match &s.outcome {
            Ok((200, answer)) => {
                assert!(s.acked().is_some(), "200 without an event id: {answer}");
                assert_ne!(answer["duplicate"], true, "{answer}");
            }
            Ok((status, answer)) => panic!(
                "{} answered event {} with {status}: {answer}\n{}",
                identities[s.replica],
                s.seq,
                logs(&gateways)
            ),
            Err(e) => assert_eq!(
                s.replica,
                victim,
                "a request to a surviving replica failed: {e}\n{}",
                logs(&gateways)
            ),
        }
    }
    let acked: HashMap<String, &Sent> = sent
        .iter()
        .filter_map(|s| s.acked().map(|id| (id.to_owned(), s)))
        .collect();
    let acked_by = |source: &str| acked.values().filter(|s| s.source == source).count() as u64;
    // Requests whose fate only the database knows: the victim died with them in flight.
    let unknown_by = |source: &str| {
        sent.iter()
            .filter(|s| s.source == source && s.outcome.is_err())
            .count() as u64
    };
    let per_replica: Vec<usize> = (0..REPLICAS)
        .map(|r| acked.values().filter(|s| s.replica == r).count())
        .collect();
    eprintln!(
        "under load: sent {} events in {:?}, {} acknowledged, {} failed in transport; \
         acknowledged in all by replica: {per_replica:?}",
        load.len(),
        BEFORE_KILL + AFTER_KILL,
        load.iter().filter(|s| s.acked().is_some()).count(),
        unknown_by("signed") + unknown_by("plain")
    );
    assert!(
        per_replica[victim] > 2,
        "{holder} took (almost) no part in the load before it was killed"
    );

    // Nothing acknowledged is lost: every event is delivered, with its own body, including
    // those the killed replica stored and had claimed.
    let mut all_delivered_after = None;
    let mut lease_moved_to = None;
    let mut status_after = None;
    let mut last_status = (Value::Null, Value::Null, Value::Null);
    let deadline = killed_at + RECOVERY;
    loop {
        let got = delivered(&receiver);
        let missing: Vec<&String> = acked.keys().filter(|id| !got.contains_key(*id)).collect();
        if all_delivered_after.is_none() && missing.is_empty() {
            all_delivered_after = Some(killed_at.elapsed());
            for (id, (_, seq)) in &got {
                if let Some(s) = acked.get(id) {
                    assert_eq!(*seq, s.seq, "event {id} was delivered with another body");
                }
            }
        }
        if lease_moved_to.is_none() {
            if let Some(h) = lease_holder(&ns).filter(|h| *h != holder) {
                assert!(identities.contains(&h), "unknown Lease holder {h}");
                lease_moved_to = Some((h, killed_at.elapsed()));
            }
        }
        if status_after.is_none() {
            let signed = ns.get("source", "signed").unwrap()["status"].clone();
            let plain = ns.get("source", "plain").unwrap()["status"].clone();
            let out = ns.get("destination", "out").unwrap()["status"].clone();
            let received = |s: &Value| s["eventsReceived"].as_u64().unwrap_or(0);
            let succeeded = out["deliveries"]["succeeded"].as_u64().unwrap_or(0);
            if received(&signed) >= acked_by("signed")
                && received(&plain) >= acked_by("plain")
                && succeeded >= acked.len() as u64
            {
                status_after = Some(killed_at.elapsed());
            }
            last_status = (signed, plain, out);
        }
        if all_delivered_after.is_some() && lease_moved_to.is_some() && status_after.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not within {RECOVERY:?} of the kill: all delivered: {all_delivered_after:?} \
             ({} of {} acknowledged events missing, e.g. {:?}); Lease moved: {lease_moved_to:?} \
             (holder now {:?}); status written: {status_after:?} (acknowledged: {} signed, {} \
             plain; status: signed {}, plain {}, out {})\n{}",
            missing.len(),
            acked.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            lease_holder(&ns),
            acked_by("signed"),
            acked_by("plain"),
            last_status.0,
            last_status.1,
            last_status.2,
            logs(&gateways)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (new_holder, moved_after) = lease_moved_to.unwrap();
    eprintln!(
        "after the kill: all {} acknowledged events delivered after {:?}, status Lease moved \
         to {new_holder} after {moved_after:?}, status up to date after {:?}",
        acked.len(),
        all_delivered_after.unwrap(),
        status_after.unwrap()
    );

    // Status counts what the database holds: every acknowledged event, at most those whose
    // requests failed in flight on top, and deliveries that never failed.
    let settled = eventually("status settles", SLOW, || {
        let signed = ns.get("source", "signed")?["status"]["eventsReceived"].as_u64()?;
        let plain = ns.get("source", "plain")?["status"]["eventsReceived"].as_u64()?;
        let out = ns.get("destination", "out")?["status"].clone();
        let succeeded = out["deliveries"]["succeeded"].as_u64()?;
        (succeeded >= signed + plain).then_some((signed, plain, out))
    })
    .await;
    let (signed, plain, out) = settled;
    for (source, received) in [("signed", signed), ("plain", plain)] {
        assert!(
            received >= acked_by(source) && received <= acked_by(source) + unknown_by(source),
            "Source {source}: eventsReceived {received}, acknowledged {}, failed in flight {}",
            acked_by(source),
            unknown_by(source)
        );
    }
    assert_eq!(out["deliveries"]["failed"], 0, "{out}");
    assert_eq!(out["deliveries"]["deadLettered"], 0, "{out}");
    assert_eq!(out["circuit"]["state"], "Closed", "{out}");
    let got = delivered(&receiver);
    let sent_seqs: HashSet<u64> = sent.iter().map(|s| s.seq).collect();
    for (id, (_, seq)) in &got {
        assert!(sent_seqs.contains(seq), "delivered {id} that nobody sent");
    }
    let repeated = got.values().filter(|(n, _)| *n > 1).count();
    // The victim's deliveries that arrived after its death: taken over by a survivor.
    let taken_over: Vec<Duration> = receiver
        .received()
        .iter()
        .filter(|r| r.at > killed_at)
        .filter(|r| {
            r.header("x-hookstream-event-id")
                .and_then(|id| acked.get(&id).map(|s| s.replica == victim))
                .unwrap_or(false)
        })
        .map(|r| r.at - killed_at)
        .collect();
    eprintln!(
        "{} deliveries of events {holder} acknowledged arrived after the kill, the last {:?} \
         after it",
        taken_over.len(),
        taken_over.iter().max()
    );
    eprintln!(
        "status: eventsReceived signed {signed}, plain {plain}; deliveries {}; {} events \
         delivered, {repeated} of them more than once; test took {:?}",
        out["deliveries"],
        got.len(),
        started.elapsed()
    );
}
