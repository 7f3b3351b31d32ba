//! Test harness: a real gateway process on a port of its own with its own manifests folder and
//! database, and real HTTP receivers that record what they get and answer as scripted.
//!
//! The database is a SQLite file in the gateway's folder, or, when `HOOKSTREAM_TEST_POSTGRES`
//! holds the URL of a PostgreSQL server (`scripts/pg-up` starts one), a new database of its
//! own on that server: the same tests run against both backends.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;

pub use hookstream_e2e::receiver::*;

/// An API key accepted by every test gateway.
pub const API_KEY: &str =
    "hs_test_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Folder holding manifests, the database and the log.
    pub dir: tempfile::TempDir,
    port: u16,
    extra_args: Vec<String>,
    http: reqwest::Client,
    /// The `--database` URL.
    pub database: String,
}

/// The PostgreSQL server the tests run against, when they do.
pub fn postgres_server() -> Option<String> {
    std::env::var("HOOKSTREAM_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A database for a new gateway: a SQLite file in `dir`, or a new PostgreSQL database.
pub async fn new_database(dir: &std::path::Path) -> String {
    let Some(server) = postgres_server() else {
        return format!("sqlite://{}", dir.join("hookstream.db").display());
    };
    use sqlx::{Connection, Executor};
    let name = format!("hs_test_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&server)
        .await
        .expect("connect to the test PostgreSQL server");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a test database");
    let mut url = url::Url::parse(&server).expect("HOOKSTREAM_TEST_POSTGRES is a URL");
    url.set_path(&name);
    url.to_string()
}

impl Gateway {
    /// Starts a gateway on `manifests` (YAML text) and waits until it is ready.
    pub async fn start(manifests: &str) -> Gateway {
        Self::start_with(manifests, &[]).await
    }

    /// Like `start`, with extra command-line flags.
    pub async fn start_with(manifests: &str, extra_args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(dir.path().join("manifests/main.yaml"), manifests).unwrap();
        let mut gw = Gateway {
            child: None,
            base: String::new(),
            database: new_database(dir.path()).await,
            dir,
            port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::new(),
        };
        gw.spawn().await;
        gw
    }

    /// Starts another replica of `self`: its own folder and port, the same manifests and the
    /// same database (PostgreSQL only: a SQLite file serves one process).
    pub async fn start_replica(&self, extra_args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::copy(
            self.manifests_dir().join("main.yaml"),
            dir.path().join("manifests/main.yaml"),
        )
        .unwrap();
        let mut gw = Gateway {
            child: None,
            base: String::new(),
            database: self.database.clone(),
            dir,
            port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::new(),
        };
        gw.spawn().await;
        gw
    }

    /// Starts a gateway on `manifests` and the database at `database`.
    pub async fn start_on(manifests: &str, database: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(dir.path().join("manifests/main.yaml"), manifests).unwrap();
        let mut gw = Gateway {
            child: None,
            base: String::new(),
            database: database.to_owned(),
            dir,
            port: 0,
            extra_args: Vec::new(),
            http: reqwest::Client::new(),
        };
        gw.spawn().await;
        gw
    }

    /// The manifests folder.
    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// Everything the gateway has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    fn command(&self) -> Command {
        // HOOKSTREAM_TEST_GATEWAY_BIN: a copy of the binary to run instead (with
        // hookstream-transform-worker beside it), for a target dir that other builds share.
        let binary = std::env::var_os("HOOKSTREAM_TEST_GATEWAY_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_hookstream-gateway").into());
        let mut cmd = Command::new(binary);
        cmd.arg("--manifests")
            .arg(self.manifests_dir())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(&self.database)
            .args(&self.extra_args)
            .env("HOOKSTREAM_API_KEYS", API_KEY)
            .env("RUST_LOG", "info,hookstream_gateway=debug")
            .env_remove("HOOKSTREAM_MANIFESTS")
            .env_remove("HOOKSTREAM_DATABASE_URL")
            .env_remove("HOOKSTREAM_LISTEN");
        cmd
    }

    /// The address the gateway logged after `from` bytes of its log, once it is listening.
    fn logged_listen_port(&self, from: usize) -> Option<u16> {
        let log = self.log();
        let line = log
            .get(from..)?
            .lines()
            .find(|l| l.contains("hookstream gateway started"))?;
        let addr = line.split("listen=").nth(1)?.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse().ok()
    }

    async fn spawn(&mut self) {
        // The gateway binds port 0 and logs the port it got, so concurrent tests never race
        // for a port.
        let log_start = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gateway.log"))
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited at start with {status}:\n{}", self.log());
            }
            if let Some(port) = self.logged_listen_port(log_start) {
                self.port = port;
                self.base = format!("http://127.0.0.1:{port}");
            }
            if self.port == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the gateway runs").id()
    }

    /// Kills the process with SIGKILL (no shutdown work at all).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("gateway is running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not stop within 40 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same folder and database. It listens on a new port:
    /// while it was down, another test's gateway may have taken the old one.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the gateway first");
        self.port = 0;
        self.spawn().await;
    }

    /// Sends a webhook to a source.
    pub async fn ingest(
        &self,
        ns: &str,
        source: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/ingest/{ns}/{source}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// GET an API path with the key; returns status and JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST an API path with the key; returns status and JSON.
    pub async fn post(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST a JSON body to an API path with the key; returns status and JSON.
    pub async fn post_json(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", API_KEY)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the event until its status is `status`.
    pub async fn wait_event_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.get(&format!("/v1/events/{id}")).await;
            if code == StatusCode::OK && body["status"] == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "event {id} not {status} within {within:?}: {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Gateway {
    /// Starts a gateway whose manifests folder holds `files`, each a path relative to the
    /// folder (sub-folders are created) and its text, and waits until it is ready.
    pub async fn start_with_files(files: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        for (path, text) in files {
            let file = manifests.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let mut gw = Gateway {
            child: None,
            base: String::new(),
            database: new_database(dir.path()).await,
            dir,
            port: 0,
            extra_args: Vec::new(),
            http: reqwest::Client::new(),
        };
        gw.spawn().await;
        gw
    }
}

/// Manifests of one route: Source `t/in`, Destination `t/out` with `destination_spec` (YAML
/// lines indented by two spaces, under `spec:`), and Connection `t/c` between them.
pub fn single_route(destination_spec: &str) -> String {
    format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
{destination_spec}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: t}}
spec: {{source: in, destination: out}}
"#
    )
}
