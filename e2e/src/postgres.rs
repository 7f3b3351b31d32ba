//! A real PostgreSQL server for tests, got the way [`crate::cluster::control_plane`] gets the
//! control plane, and a fresh database on it per test.
//!
//! [`server`] is `HOOKSTREAM_TEST_POSTGRES` when set, else the URL `scripts/pg-up` prints; it
//! runs pg-up once per test binary (it is idempotent: a running server is reused, a missing
//! one is installed and started). `scripts/test-all` stops it at the end with
//! `scripts/pg-down`. Each test then works in a [`Database`] of its own, so tests run in
//! parallel without seeing each other's events.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::cluster::root;

/// The URL of the test PostgreSQL server (a superuser that may create databases), started
/// on first use.
pub fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Some(url) = std::env::var("HOOKSTREAM_TEST_POSTGRES")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return url.trim().to_owned();
        }
        let out = Command::new(root().join("scripts/pg-up"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run scripts/pg-up");
        assert!(
            out.status.success(),
            "scripts/pg-up failed ({})",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let url = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "scripts/pg-up printed no connection URL: {stdout}"
        );
        url
    })
}

/// A database of one test on [`server`], dropped (connections and all) when dropped.
pub struct Database {
    /// `postgres://USER:PASSWORD@HOST:PORT/NAME`, for `--database`.
    pub url: String,
    name: String,
}

impl Database {
    /// Creates a fresh, empty database whose name starts with `hs_e2e_`.
    pub async fn create() -> Database {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server();
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let name = format!(
            "hs_e2e_{}_{}_{millis}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(server).expect("the PostgreSQL server URL is a URL");
        url.set_path(&name);
        Database {
            url: url.to_string(),
            name,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where blocking on another is not allowed.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(server()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = conn.execute(sql.as_str()).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
