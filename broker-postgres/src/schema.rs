//! The schema, as versioned migrations embedded in the binary and applied in order.
//!
//! `broker_migrations` records which have run. Migrating takes a transaction-scoped advisory lock,
//! so processes starting at once apply each migration once; a database whose schema is newer than
//! this broker knows is refused rather than written.

use broker_core::Error;

use crate::pool::{Step, StepResult};

/// One migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its version: 1, 2, …
    pub version: i32,
    /// What it makes.
    pub name: &'static str,
    sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "inventory and owners' leases",
        sql: include_str!("../migrations/0001_inventory.sql"),
    },
    Migration {
        version: 2,
        name: "handoff targets",
        sql: include_str!("../migrations/0002_targets.sql"),
    },
];

/// The advisory lock key migrations hold (any fixed number; "broker" in ASCII).
const MIGRATION_LOCK: i64 = 0x0000_6272_6f6b_6572;

const CREATE_LOG: &str = "CREATE TABLE IF NOT EXISTS broker_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Where a database's schema stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// The versions applied, with when (`2026-11-26 14:00:00+00`).
    pub applied: Vec<(i32, String)>,
    /// The migrations this broker has that the database lacks.
    pub pending: Vec<Migration>,
}

/// Applies the migrations the database lacks; returns them.
pub(crate) fn migrate(client: &mut postgres::Client) -> StepResult<Vec<Migration>> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(CREATE_LOG)?;
    let applied = applied_versions(&mut tx)?;
    check_known(&applied)?;
    let mut ran = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql)?;
        tx.execute(
            "INSERT INTO broker_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )?;
        ran.push(*m);
    }
    tx.commit()?;
    Ok(ran)
}

/// The schema's status, changing nothing.
pub(crate) fn status(client: &mut postgres::Client) -> StepResult<SchemaStatus> {
    let exists: bool = client
        .query_one("SELECT to_regclass('broker_migrations') IS NOT NULL", &[])?
        .get(0);
    let applied: Vec<(i32, String)> = if exists {
        client
            .query(
                "SELECT version, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
                 FROM broker_migrations ORDER BY version",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        Vec::new()
    };
    let versions: Vec<i32> = applied.iter().map(|(v, _)| *v).collect();
    check_known(&versions)?;
    let pending = MIGRATIONS
        .iter()
        .filter(|m| !versions.contains(&m.version))
        .copied()
        .collect();
    Ok(SchemaStatus { applied, pending })
}

fn applied_versions(tx: &mut postgres::Transaction<'_>) -> StepResult<Vec<i32>> {
    Ok(tx
        .query("SELECT version FROM broker_migrations", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Refuses a schema newer than this broker's.
fn check_known(applied: &[i32]) -> StepResult<()> {
    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    match applied.iter().max() {
        Some(&newest) if newest > known => Err(Step::Refused(Error::configuration(format!(
            "the inventory database's schema is at version {newest}, newer than this broker knows \
             ({known}); use a newer broker"
        )))),
        _ => Ok(()),
    }
}
