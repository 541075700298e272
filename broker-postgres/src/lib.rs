//! A shared inventory on PostgreSQL, for teams and CI fleets: many workers (and `broker serve`
//! instances) on many machines, one database.
//!
//! [`PostgresStore`] implements broker-core's [`InventoryStore`] with the file store's guarantees,
//! by the database's means:
//!
//! - every method is one transaction: a checkout's intent (its `pending` record) is committed
//!   before the provider is asked, as with the file;
//! - [`InventoryStore::replace_unchanged`] is a compare-and-replace in SQL (the stored record must
//!   equal the one read), on rows taken with `FOR UPDATE SKIP LOCKED`: of two reapers claiming one
//!   record, one wins;
//! - [`InventoryStore::sync_provider`] reads, merges ([`broker_core::inventory::merge_sync`]) and
//!   writes in one transaction that keeps other writers out;
//! - a process using the store keeps a lease in `broker_owners`, renewed while it runs: a record's
//!   owner on another machine is gone once its lease ran out ([`InventoryStore::owner_leases`]),
//!   where a pid could not tell. Each renewal removes the leases of owners gone that no record
//!   names, so the table holds the processes running and those that left records behind.
//!
//! The handoff targets live in the same database ([`PostgresStore::targets`],
//! [`PostgresTargetStore`]).
//!
//! The schema comes as embedded, versioned migrations ([`schema::MIGRATIONS`]) applied when the
//! store is opened. Each record is kept whole as JSON (`doc`, keys in order; `record`, JSONB) with
//! indexed columns for identity, provider, hostname, name, state, owner and lease expiry.
//!
//! The URL is a secret; messages and [`InventoryStore::location`] show it without password.

use std::collections::HashMap;
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use broker_core::inventory::{OwnerLease, OwnerLeases, merge_sync};
use broker_core::{
    HostRecord, InventoryStore, Owner, ProviderListing, RecordId, Result, SyncReport,
};
use secrecy::SecretString;

mod pool;
mod rows;
pub mod schema;
mod targets;
#[cfg(test)]
mod tests;
mod tls;
mod url;

use pool::{Pool, Step, StepResult, Work};
use rows::{COLUMNS, Row, UPDATE_SET, VALUES};
pub use schema::{Migration, SchemaStatus};
pub use targets::PostgresTargetStore;
use url::DbUrl;
pub use url::is_postgres_url;

/// The inventory in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    url: Arc<DbUrl>,
    pool: Arc<Pool>,
    /// Dropping it stops the lease's renewal.
    renewal: Option<mpsc::Sender<()>>,
}

impl PostgresStore {
    /// Connects to the database at `url`, brings its schema up to date, and takes this process's
    /// lease (renewed while the store lives).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub fn open(url: &SecretString) -> Result<Self> {
        let mut store = Self::connect(url)?;
        store.migrate()?;
        store.renew_lease()?;
        let renewal = startrenewal(Arc::downgrade(&store.pool), store.url.owner_lease());
        store.renewal = Some(renewal);
        Ok(store)
    }

    /// Connects to the database at `url` without changing it (for `broker db status`). A server
    /// that cannot be reached (refused, reset, timed out, starting up) is tried again for a few
    /// seconds, a warning saying so, as while it restarts.
    ///
    /// # Errors
    /// [`Error::Configuration`](broker_core::Error::Configuration) for a URL that does not parse;
    /// [`Error::Authentication`](broker_core::Error::Authentication) when the server refuses the
    /// credentials; [`Error::Io`](broker_core::Error::Io) naming the URL (without password) when
    /// the server still cannot be reached, or refuses otherwise.
    pub fn connect(url: &SecretString) -> Result<Self> {
        let url = Arc::new(DbUrl::parse(url)?);
        let pool = Arc::new(Pool::new(Arc::clone(&url), pool::RETRY_FOR));
        pool.run_within(
            "connecting to the inventory database",
            pool::START_RETRY_FOR,
            Box::new(|_: &mut postgres::Client| Ok(())),
        )?;
        Ok(PostgresStore {
            pool,
            url,
            renewal: None,
        })
    }

    /// Applies the migrations the database lacks; returns them.
    ///
    /// # Errors
    /// The database cannot be reached or refuses; its schema is newer than this broker's.
    pub fn migrate(&self) -> Result<Vec<Migration>> {
        self.pool.run(
            "migrating the inventory database",
            Box::new(schema::migrate),
        )
    }

    /// Where the database's schema stands.
    ///
    /// # Errors
    /// The database cannot be reached or refuses; its schema is newer than this broker's.
    pub fn status(&self) -> Result<SchemaStatus> {
        self.pool.run(
            "reading the inventory database's schema",
            Box::new(schema::status),
        )
    }

    /// The handoff targets in this database, on this store's connections.
    pub fn targets(&self) -> PostgresTargetStore {
        PostgresTargetStore::new(Arc::clone(&self.url), Arc::clone(&self.pool))
    }

    /// Renews this process's lease.
    fn renew_lease(&self) -> Result<()> {
        let lease = self.url.owner_lease();
        self.pool
            .run("renewing this process's lease", renewal_work(lease))
    }

    fn rows(&self, records: &[HostRecord]) -> Result<Vec<Row>> {
        records
            .iter()
            .map(|r| Row::of(r, self.url.shown()))
            .collect()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if self.renewal.is_none() {
            return;
        }
        // This process stops using the store: its lease ends now, so its records left unfinished
        // are recoverable from anywhere at once. Best effort, without waiting for a server that
        // is gone.
        let work: Work<()> = Box::new(|client: &mut postgres::Client| {
            let me = Owner::current();
            client.execute(
                "UPDATE broker_owners SET lease_until = now() \
                 WHERE machine = $1 AND pid = $2 AND started = $3",
                &[&me.machine, &i64::from(me.pid), &started_key(me)],
            )?;
            Ok(())
        });
        let _ = self
            .pool
            .run_within("ending this process's lease", Duration::ZERO, work);
    }
}

/// The `started` column of an owner (-1 when unknown).
fn started_key(owner: &Owner) -> i64 {
    owner
        .started
        .and_then(|s| i64::try_from(s).ok())
        .unwrap_or(-1)
}

/// Renews this process's lease for `lease` from now, and removes the leases of owners that are
/// gone and hold no record (nothing asks about them any more).
fn renewal_work(lease: Duration) -> Work<()> {
    let seconds = lease.as_secs_f64();
    Box::new(move |client: &mut postgres::Client| {
        let me = Owner::current();
        client.execute(DROP_IDLE_LEASES, &[])?;
        client.execute(
            "INSERT INTO broker_owners (machine, pid, started, owner_user, lease_until) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) \
             ON CONFLICT (machine, pid, started) DO UPDATE \
             SET heartbeat_at = now(), lease_until = EXCLUDED.lease_until",
            &[
                &me.machine,
                &i64::from(me.pid),
                &started_key(me),
                &me.user,
                &seconds,
            ],
        )?;
        Ok(())
    })
}

/// Removes the leases that ran out of owners no record names. A record names its owner by machine
/// and pid; a lease kept for a record of another process of that pid is only kept longer.
const DROP_IDLE_LEASES: &str = "DELETE FROM broker_owners o WHERE o.lease_until < now() \
     AND NOT EXISTS (SELECT 1 FROM broker_inventory i \
                     WHERE i.owner_machine = o.machine AND i.owner_pid = o.pid)";

/// Renews the lease a third of the way through it until the store is dropped.
fn startrenewal(pool: Weak<Pool>, lease: Duration) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    let every = lease / 3;
    let spawned = std::thread::Builder::new()
        .name("broker-postgres-lease".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let Some(pool) = pool.upgrade() else { return };
                if let Err(e) =
                    pool.run_within("renewing this process's lease", every, renewal_work(lease))
                {
                    tracing::warn!("{}", broker_core::error::chain(&e));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start renewing this process's lease: {e}");
    }
    stop
}

impl InventoryStore for PostgresStore {
    fn list(&self) -> Result<Vec<HostRecord>> {
        let location = self.url.shown().to_owned();
        let docs = self.pool.run(
            "reading inventory",
            Box::new(|client: &mut postgres::Client| {
                let rows =
                    client.query("SELECT id, doc FROM broker_inventory ORDER BY seq", &[])?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
                    .collect::<StepResult<Vec<_>>>()
            }),
        )?;
        docs.iter()
            .map(|(id, doc)| rows::from_json(id, doc, &location))
            .collect()
    }

    fn put(&self, records: &[HostRecord]) -> Result<()> {
        let rows = self.rows(records)?;
        if rows.is_empty() {
            return Ok(());
        }
        self.pool.run(
            "writing inventory",
            Box::new(move |client: &mut postgres::Client| {
                let mut tx = client.transaction()?;
                upsert(&mut tx, &rows, false)?;
                tx.commit()?;
                Ok(())
            }),
        )
    }

    fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
        let wanted: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let gone: Vec<String> = self.pool.run(
            "writing inventory",
            Box::new(move |client: &mut postgres::Client| {
                let mut rows = client.query(
                    "DELETE FROM broker_inventory WHERE id = ANY($1) RETURNING id, seq",
                    &[&wanted],
                )?;
                // In the inventory's order, as the file store says them.
                rows.sort_by_key(|r| r.try_get::<_, i64>(1).unwrap_or_default());
                rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
            }),
        )?;
        Ok(gone.iter().map(|id| RecordId::from(id.as_str())).collect())
    }

    fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
        let location = self.url.shown().to_owned();
        self.pool.run(
            "syncing inventory",
            Box::new(move |client: &mut postgres::Client| {
                sync_in_transaction(client, listing.clone(), &location)
            }),
        )
    }

    fn replace_unchanged(&self, changes: &[(HostRecord, HostRecord)]) -> Result<Vec<RecordId>> {
        let pairs: Vec<(String, String, Row)> = changes
            .iter()
            .map(|(seen, new)| {
                Ok((
                    seen.id().as_str().to_owned(),
                    rows::to_json(seen, self.url.shown())?,
                    Row::of(new, self.url.shown())?,
                ))
            })
            .collect::<Result<_>>()?;
        let won: Vec<String> = self.pool.run(
            "writing inventory",
            Box::new(move |client: &mut postgres::Client| {
                let mut tx = client.transaction()?;
                let mut won = Vec::new();
                let sql = format!(
                    "UPDATE broker_inventory SET ({COLUMNS}, updated_at) = ({VALUES}, now()) \
                     WHERE id = (SELECT id FROM broker_inventory \
                                 WHERE id = $12 AND record = $13::text::jsonb \
                                 FOR UPDATE SKIP LOCKED)"
                );
                let statement = tx.prepare(&sql)?;
                for (seen_id, seen_doc, new) in &pairs {
                    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        new.params().to_vec();
                    params.push(seen_id);
                    params.push(seen_doc);
                    if tx.execute(&statement, &params)? == 1 {
                        won.push(seen_id.clone());
                    }
                }
                tx.commit()?;
                Ok(won)
            }),
        )?;
        Ok(won.iter().map(|id| RecordId::from(id.as_str())).collect())
    }

    fn location(&self) -> String {
        self.url.shown().to_owned()
    }

    fn owner_leases(&self) -> Result<OwnerLeases> {
        let leases = self.pool.run(
            "reading owners' leases",
            Box::new(|client: &mut postgres::Client| {
                let rows = client.query(
                    "SELECT machine, pid, started, owner_user, lease_until < now() \
                     FROM broker_owners",
                    &[],
                )?;
                Ok(rows
                    .iter()
                    .filter_map(|r| {
                        let owner = Owner {
                            machine: r.try_get(0).ok()?,
                            pid: u32::try_from(r.try_get::<_, i64>(1).ok()?).ok()?,
                            started: u64::try_from(r.try_get::<_, i64>(2).ok()?).ok(),
                            user: r.try_get(3).ok()?,
                            boot: None,
                        };
                        Some(OwnerLease::new(&owner, r.try_get(4).ok()?))
                    })
                    .collect::<Vec<_>>())
            }),
        )?;
        Ok(OwnerLeases::new(leases))
    }
}

/// Writes `rows`, replacing records of the same identity in place (or, with `to_end`, moving them
/// after every other record, as a sync's merge orders them).
fn upsert(tx: &mut postgres::Transaction<'_>, rows: &[Row], to_end: bool) -> StepResult<()> {
    let seq = if to_end {
        ", seq = nextval(pg_get_serial_sequence('broker_inventory', 'seq'))"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO broker_inventory ({COLUMNS}) VALUES ({VALUES}) \
         ON CONFLICT (id) DO UPDATE SET {UPDATE_SET}{seq}"
    );
    let statement = tx.prepare(&sql)?;
    for row in rows {
        tx.execute(&statement, &row.params())?;
    }
    Ok(())
}

/// A sync's read, merge and write, in one transaction that keeps other writers out.
fn sync_in_transaction(
    client: &mut postgres::Client,
    listing: ProviderListing,
    location: &str,
) -> StepResult<SyncReport> {
    let mut tx = client.transaction()?;
    tx.batch_execute("LOCK TABLE broker_inventory IN SHARE ROW EXCLUSIVE MODE")?;
    let stored = tx.query(
        "SELECT id, seq, doc FROM broker_inventory ORDER BY seq",
        &[],
    )?;
    let mut before: HashMap<String, (i64, HostRecord)> = HashMap::new();
    let mut records = Vec::with_capacity(stored.len());
    for row in &stored {
        let id: String = row.get(0);
        let record = rows::from_json(&id, row.get(2), location).map_err(Step::Refused)?;
        before.insert(id, (row.get(1), record.clone()));
        records.push(record);
    }
    let report = merge_sync(&mut records, listing).map_err(Step::Refused)?;
    let after: std::collections::HashSet<String> =
        records.iter().map(|r| r.id().as_str().to_owned()).collect();
    let dropped: Vec<String> = before
        .keys()
        .filter(|id| !after.contains(*id))
        .cloned()
        .collect();
    tx.execute(
        "DELETE FROM broker_inventory WHERE id = ANY($1)",
        &[&dropped],
    )?;
    // Records kept where they were stay; the rest are written after them, in the merge's order.
    let mut last = i64::MIN;
    let mut moved = Vec::new();
    for record in &records {
        match before.get(record.id().as_str()) {
            Some((seq, old)) if *seq > last && old == record && moved.is_empty() => last = *seq,
            _ => moved.push(Row::of(record, location).map_err(Step::Refused)?),
        }
    }
    upsert(&mut tx, &moved, true)?;
    tx.commit()?;
    Ok(report)
}
