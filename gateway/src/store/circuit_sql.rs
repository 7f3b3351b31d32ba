//! The statements that change a circuit, shared by both backends (written with `$n`
//! parameters, which SQLite reads as `?n`). Each is one atomic statement, so replicas sharing
//! a database change one circuit: failures from any replica count toward the threshold, and
//! one caller wins the probe.

use std::sync::LazyLock;

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use super::model::{CircuitChange, CircuitState};

/// A statement and the parameters it takes after namespace and destination (`$1`, `$2`).
pub(super) enum Params {
    /// `$3` was_probe (bool), `$4` threshold, `$5` now.
    Failure {
        was_probe: bool,
        threshold: i64,
        now: i64,
    },
    /// Nothing more.
    Key,
    /// `$3` now, `$4` cooldown, `$5` probe timeout.
    TryProbe {
        now: i64,
        cooldown_ms: i64,
        probe_timeout_ms: i64,
    },
}

static FAILURE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO circuits (namespace, destination, state, consecutive_failures, opened_at, last_failure_at)
         VALUES ($1, $2, CASE WHEN $3 OR 1 >= $4 THEN '{open}' ELSE '{closed}' END, 1,
                 CASE WHEN $3 OR 1 >= $4 THEN $5 END, $5)
         ON CONFLICT (namespace, destination) DO UPDATE SET
             consecutive_failures = circuits.consecutive_failures + 1,
             last_failure_at = $5,
             probe_at = CASE WHEN $3 THEN NULL ELSE circuits.probe_at END,
             opened_at = CASE WHEN $3 OR (circuits.state <> '{open}' AND circuits.consecutive_failures + 1 >= $4)
                              THEN $5 ELSE circuits.opened_at END,
             state = CASE WHEN $3 OR circuits.consecutive_failures + 1 >= $4 THEN '{open}' ELSE circuits.state END
         RETURNING *",
        open = CircuitState::Open,
        closed = CircuitState::Closed,
    )
});

static CLOSE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO circuits (namespace, destination, state, consecutive_failures)
         VALUES ($1, $2, '{closed}', 0)
         ON CONFLICT (namespace, destination) DO UPDATE SET
             state = '{closed}', consecutive_failures = 0, opened_at = NULL, probe_at = NULL
         RETURNING *",
        closed = CircuitState::Closed,
    )
});

static TRY_PROBE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE circuits SET state = '{half_open}', probe_at = $3
         WHERE namespace = $1 AND destination = $2
           AND ((state = '{open}' AND COALESCE(opened_at, 0) + $4 <= $3)
             OR (state = '{half_open}' AND COALESCE(probe_at, 0) + $5 <= $3))
         RETURNING *",
        open = CircuitState::Open,
        half_open = CircuitState::HalfOpen,
    )
});

static RELEASE_PROBE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE circuits SET state = '{open}', probe_at = NULL
         WHERE namespace = $1 AND destination = $2 AND state = '{half_open}'
         RETURNING *",
        open = CircuitState::Open,
        half_open = CircuitState::HalfOpen,
    )
});

/// The statement of `change` (in PostgreSQL's `$n` form) and its parameters.
pub(super) fn statement(change: CircuitChange) -> (&'static str, Params) {
    match change {
        CircuitChange::Failure {
            threshold,
            was_probe,
            now,
        } => (
            FAILURE.as_str(),
            Params::Failure {
                was_probe,
                threshold: i64::from(threshold),
                now,
            },
        ),
        CircuitChange::Close => (CLOSE.as_str(), Params::Key),
        CircuitChange::TryProbe {
            cooldown_ms,
            probe_timeout_ms,
            now,
        } => (
            TRY_PROBE.as_str(),
            Params::TryProbe {
                now,
                cooldown_ms,
                probe_timeout_ms,
            },
        ),
        CircuitChange::ReleaseProbe => (RELEASE_PROBE.as_str(), Params::Key),
    }
}

/// The statement in SQLite's `?n` form.
pub(super) fn for_sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// A parameter of a circuit statement, after the key.
pub(super) enum Value {
    Bool(bool),
    Int(i64),
}

impl Params {
    /// The parameters after namespace and destination, in order (`$3`, `$4`, ...).
    pub(super) fn values(&self) -> Vec<Value> {
        match *self {
            Params::Failure {
                was_probe,
                threshold,
                now,
            } => vec![
                Value::Bool(was_probe),
                Value::Int(threshold),
                Value::Int(now),
            ],
            Params::Key => Vec::new(),
            Params::TryProbe {
                now,
                cooldown_ms,
                probe_timeout_ms,
            } => vec![
                Value::Int(now),
                Value::Int(cooldown_ms),
                Value::Int(probe_timeout_ms),
            ],
        }
    }
}

/// The query of `sql` (a statement of [`statement`], in the backend's form) with the key and
/// `params` bound.
pub(super) fn query<'q, DB>(
    sql: &'q str,
    namespace: &'q str,
    destination: &'q str,
    params: Params,
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    bool: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql).bind(namespace).bind(destination);
    for value in params.values() {
        query = match value {
            Value::Bool(b) => query.bind(b),
            Value::Int(i) => query.bind(i),
        };
    }
    query
}
