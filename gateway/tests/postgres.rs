//! What only the PostgreSQL backend does: start-up errors that keep the password to
//! themselves, riding out a database outage, and several replicas sharing one database
//! (work claimed once, dedup across replicas, a killed replica's work taken over).
//!
//! These tests need `HOOKSTREAM_TEST_POSTGRES` (the README's test command starts a server,
//! sets it and runs them with `--include-ignored`); a plain `cargo test` lists them as
//! ignored. The rest of the integration suite runs on PostgreSQL too when it is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Answer, Gateway, Receiver};
use serde_json::Value;

/// The test server. Run without one, a test fails: `--include-ignored` asked for it.
fn server() -> String {
    common::postgres_server()
        .expect("HOOKSTREAM_TEST_POSTGRES must name a PostgreSQL server (scripts/pg-up starts one)")
}

fn route(url: &str) -> String {
    common::single_route(&format!(
        r#"  type: http
  http: {{url: "{url}/hook", timeoutSeconds: 5}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [300ms]}}
  circuitBreaker: {{failureThreshold: 1000}}"#
    ))
}

/// Runs the gateway binary on `database` until it exits (at most 30 s); returns whether it
/// succeeded and what it wrote to stderr.
fn start_and_fail(database: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.yaml"), route("http://127.0.0.1:9")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"));
    cmd.arg("--manifests")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--database", database])
        .env_remove("HOOKSTREAM_DATABASE_URL")
        .env_remove("PGPASSWORD")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
            return (status.success(), text);
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn with_password(server: &str, password: &str) -> String {
    let mut url = url::Url::parse(server).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn a_wrong_or_unreachable_database_stops_the_start_without_showing_the_password() {
    let server = server();
    let wrong = with_password(&server, "not-the-password-7c1e");
    let (ok, stderr) = start_and_fail(&wrong, &[]);
    assert!(!ok, "a wrong password must stop the start:\n{stderr}");
    assert!(
        stderr.contains("cannot open the database")
            && stderr.contains("password authentication failed"),
        "the error says what failed: {stderr}"
    );
    assert!(!stderr.contains("not-the-password-7c1e"), "{stderr}");

    let unreachable = "postgres://hookstream:secret-9b2d@127.0.0.1:9/hookstream";
    let (ok, stderr) = start_and_fail(unreachable, &[]);
    assert!(
        !ok,
        "an unreachable database must stop the start:\n{stderr}"
    );
    assert!(stderr.contains("cannot open the database"), "{stderr}");
    assert!(!stderr.contains("secret-9b2d"), "{stderr}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn the_password_may_come_from_pgpassword() {
    let server = server();
    let mut url = url::Url::parse(&server).unwrap();
    let password = url.password().unwrap_or_default().to_owned();
    url.set_password(None).unwrap();
    let receiver = Receiver::start().await;
    let gw = {
        let _guard = EnvGuard::set("PGPASSWORD", &password);
        Gateway::start_on(&route(&receiver.url), url.as_str()).await
    };
    let r = gw.ingest("t", "in", r#"{"n":1}"#, &[]).await;
    assert_eq!(r.status(), 200);
    receiver.wait_for(1, Duration::from_secs(10)).await;
}

/// Sets an environment variable for the gateways started while it lives (they inherit the
/// test's environment; no other test of this binary reads PGPASSWORD, and their URLs carry
/// a password, which wins over it).
struct EnvGuard(&'static str);

impl EnvGuard {
    fn set(name: &'static str, value: &str) -> EnvGuard {
        std::env::set_var(name, value);
        EnvGuard(name)
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        std::env::remove_var(self.0);
    }
}

async fn event_id(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Event ids the receiver got with a 2xx, with how often each came.
fn delivered(receiver: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in receiver.received().iter().filter(|r| r.status == 200) {
        if let Some(id) = r.header("x-hookstream-event-id") {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    seen
}

async fn wait_all_delivered(receiver: &Receiver, ids: &HashSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = delivered(receiver);
        let missing = ids.iter().filter(|id| !got.contains_key(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged events never delivered",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn two_replicas_share_the_work_and_each_delivery_goes_out_once() {
    server();
    let receiver = Receiver::start().await;
    let a = Gateway::start(&route(&receiver.url)).await;
    let b = a.start_replica(&[]).await;
    let mut ids = HashSet::new();
    for i in 0..60 {
        let gw = if i % 2 == 0 { &a } else { &b };
        ids.insert(event_id(gw.ingest("t", "in", &format!(r#"{{"n":{i}}}"#), &[]).await).await);
    }
    wait_all_delivered(&receiver, &ids, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let twice: Vec<_> = delivered(&receiver)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // Both replicas read the same events.
    let (_, listed) = b.get("/v1/events?limit=100").await;
    assert_eq!(listed["events"].as_array().unwrap().len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn the_same_payload_at_two_replicas_at_once_is_stored_once() {
    server();
    let receiver = Receiver::start().await;
    let manifests = route(&receiver.url).replace(
        "spec: {}",
        "spec: {dedup: {strategy: payload-hash, windowSeconds: 300}}",
    );
    let a = Gateway::start(&manifests).await;
    let b = a.start_replica(&[]).await;
    for round in 0..10 {
        let body = format!(r#"{{"order":"ord_{round}"}}"#);
        let (ra, rb) = tokio::join!(
            a.ingest("t", "in", &body, &[]),
            b.ingest("t", "in", &body, &[])
        );
        let (ja, jb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
        assert_eq!(
            ja["event_id"], jb["event_id"],
            "one event for both: {ja} {jb}"
        );
        let duplicates = [&ja, &jb].iter().filter(|j| j["duplicate"] == true).count();
        assert_eq!(
            duplicates, 1,
            "exactly one sender hears duplicate: {ja} {jb}"
        );
    }
    let (_, listed) = a.get("/v1/events?limit=100").await;
    assert_eq!(listed["events"].as_array().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn a_killed_replicas_deliveries_are_taken_over_by_another() {
    server();
    let receiver = Receiver::start().await;
    // Slow answers, so the killed replica holds claims in flight when it dies.
    receiver.set_default(Answer {
        status: 200,
        headers: Vec::new(),
        delay: Duration::from_millis(1500),
    });
    let mut a = Gateway::start(&route(&receiver.url)).await;
    let b = a.start_replica(&[]).await;
    let mut ids = HashSet::new();
    for i in 0..30 {
        ids.insert(event_id(a.ingest("t", "in", &format!(r#"{{"n":{i}}}"#), &[]).await).await);
    }
    a.kill9();
    receiver.set_default(Answer::status(200));
    // Its claims run for minutes; the survivor takes them over once its heartbeat is stale.
    wait_all_delivered(&receiver, &ids, Duration::from_secs(40)).await;
    for id in &ids {
        b.wait_event_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
}

/// A PostgreSQL server of the test's own, on its own port, so it can be stopped.
struct OwnServer {
    state: tempfile::TempDir,
    port: u16,
    url: String,
}

impl OwnServer {
    fn script(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scripts/{name}"))
    }

    fn run(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(Self::script(script))
            .args(args)
            .env("HOOKSTREAM_PG_STATE", self.state.path())
            .env("HOOKSTREAM_PG_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()
    }

    fn start() -> OwnServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = OwnServer {
            state: tempfile::tempdir().unwrap(),
            port,
            url: String::new(),
        };
        server.url = server.run("pg-up", &[]);
        server
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new(Self::script("pg-down"))
            .env("HOOKSTREAM_PG_STATE", self.state.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn a_database_outage_answers_503_fails_readiness_and_loses_nothing() {
    server();
    let pg = OwnServer::start();
    let receiver = Receiver::start().await;
    let gw = Gateway::start_on(&route(&receiver.url), &pg.url).await;
    let mut ids = HashSet::new();
    for i in 0..20 {
        ids.insert(event_id(gw.ingest("t", "in", &format!(r#"{{"n":{i}}}"#), &[]).await).await);
    }
    pg.run("pg-down", &["--keep"]);
    let http = reqwest::Client::new();
    let r = gw.ingest("t", "in", r#"{"during":"outage"}"#, &[]).await;
    assert_eq!(r.status(), 503, "ingest while the database is down");
    let ready = http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readiness while the database is down");

    pg.run("pg-up", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("{}/readyz", gw.base))
            .send()
            .await
            .unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again 30 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 20..40 {
        ids.insert(event_id(gw.ingest("t", "in", &format!(r#"{{"n":{i}}}"#), &[]).await).await);
    }
    wait_all_delivered(&receiver, &ids, Duration::from_secs(30)).await;
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn replicas_share_one_circuit_per_destination() {
    server();
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(500));
    let manifests = common::single_route(&format!(
        r#"  type: http
  http: {{url: "{}/hook", timeoutSeconds: 5}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [30s]}}
  circuitBreaker: {{failureThreshold: 4, cooldown: 60s}}"#,
        receiver.url
    ));
    let a = Gateway::start(&manifests).await;
    let b = a.start_replica(&[]).await;
    // Two failures seen by each replica: four in a row for the destination, which opens.
    for gw in [&a, &a, &b, &b] {
        event_id(gw.ingest("t", "in", r#"{"fail":true}"#, &[]).await).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    receiver.wait_for(4, Duration::from_secs(5)).await;
    for gw in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, circuit) = gw.get("/v1/destinations/t/out/circuit").await;
            if circuit["state"] == "open" {
                assert_eq!(circuit["failure_count"], 4, "{circuit}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not open on {}: {circuit}",
                gw.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Open everywhere: an event sent to either replica waits.
    event_id(b.ingest("t", "in", r#"{"waits":true}"#, &[]).await).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "nothing goes out while the circuit is open"
    );

    // A reset through one replica closes it on the other, and the waiting delivery goes out.
    receiver.set_default(Answer::status(200));
    let (status, _) = a.post("/v1/destinations/t/out/circuit/reset").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, circuit) = b.get("/v1/destinations/t/out/circuit").await;
        if circuit["state"] == "closed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {circuit} on the other replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = receiver.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(got[4].status, 200);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: HOOKSTREAM_TEST_POSTGRES"]
async fn once_per_gateway_tasks_run_on_one_replica_at_a_time() {
    server();
    let dir = tempfile::tempdir().unwrap();
    let url = common::new_database(dir.path()).await;
    let options = hookstream_gateway::store::Options {
        sqlite_sync: hookstream_gateway::store::sqlite::SqliteSync::Full,
    };
    let a = hookstream_gateway::store::open(&url, options)
        .await
        .unwrap();
    let b = hookstream_gateway::store::open(&url, options)
        .await
        .unwrap();
    assert!(
        a.lead("retention", 60_000).await.unwrap(),
        "the first takes the term"
    );
    assert!(
        !b.lead("retention", 60_000).await.unwrap(),
        "the other waits"
    );
    assert!(
        a.lead("retention", 60_000).await.unwrap(),
        "the holder renews"
    );
    assert!(
        b.lead("other-task", 60_000).await.unwrap(),
        "terms are per task"
    );
    // A term that ran out passes to whoever asks.
    assert!(a.lead("short", 1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.lead("short", 60_000).await.unwrap());
    assert_eq!(b.live_replicas().await.unwrap(), 2, "both replicas beat");
}
