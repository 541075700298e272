//! Handoff targets in the inventory's database: [`PostgresTargetStore`], broker-core's
//! [`TargetStore`] on the table `broker_targets`.
//!
//! It decides as `targets.yaml` does ([`plan_add`], [`plan_replace`]) on what it reads inside the
//! transaction that writes, with the table locked against other writers (readers go on): two
//! writers that read one revision of a target cannot both replace it, and one name is added once,
//! whatever its case. A replacement is moreover conditional on the revision read.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker_core::handoff::store::{plan_add, plan_replace};
use broker_core::handoff::{Added, Target, TargetConfig, TargetId, TargetStore};
use broker_core::{Error, Result};

use crate::pool::{Pool, Step, StepResult};
use crate::url::DbUrl;

/// The handoff targets in a PostgreSQL database (the inventory's: [`crate::PostgresStore::targets`]).
#[derive(Debug, Clone)]
pub struct PostgresTargetStore {
    url: Arc<DbUrl>,
    pool: Arc<Pool>,
}

/// The columns a target is read from, in the order [`target_of`] reads them.
const COLUMNS: &str =
    "id, name, description, kind, config::text, secrets::text, created, updated, revision";

/// Keeps other writers of targets out until the transaction ends; readers go on.
const LOCK: &str = "LOCK TABLE broker_targets IN SHARE ROW EXCLUSIVE MODE";

impl PostgresTargetStore {
    pub(crate) fn new(url: Arc<DbUrl>, pool: Arc<Pool>) -> Self {
        PostgresTargetStore { url, pool }
    }

    /// Runs `change` on the targets read with writers kept out, in one transaction.
    fn modify<T: Send + 'static>(
        &self,
        change: impl Fn(&mut postgres::Transaction<'_>, Vec<Target>) -> StepResult<T> + Send + 'static,
    ) -> Result<T> {
        let location = self.url.shown().to_owned();
        self.pool.run(
            "writing handoff targets",
            Box::new(move |client: &mut postgres::Client| {
                let mut tx = client.transaction()?;
                tx.batch_execute(LOCK)?;
                let targets = read(&mut tx, &location)?;
                let out = change(&mut tx, targets)?;
                tx.commit()?;
                Ok(out)
            }),
        )
    }
}

impl TargetStore for PostgresTargetStore {
    fn list(&self) -> Result<Vec<Target>> {
        let location = self.url.shown().to_owned();
        self.pool.run(
            "reading handoff targets",
            Box::new(move |client: &mut postgres::Client| read(client, &location)),
        )
    }

    fn add(&self, target: Target) -> Result<Added> {
        self.modify(move |tx, targets| {
            let added = plan_add(&targets, target.clone()).map_err(Step::Refused)?;
            if let Added::Created(new) = &added {
                let (config, secrets) = config_json(new)?;
                tx.execute(
                    "INSERT INTO broker_targets (id, name, name_key, description, kind, config, \
                     secrets, created, updated, revision) \
                     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7::text::jsonb, $8, $9, $10)",
                    &[
                        &new.id.as_str(),
                        &new.name,
                        &name_key(&new.name),
                        &new.description,
                        &new.kind,
                        &config,
                        &secrets,
                        &new.created,
                        &new.updated,
                        &revision(new)?,
                    ],
                )?;
            }
            Ok(added)
        })
    }

    fn replace(&self, target: Target) -> Result<Target> {
        self.modify(move |tx, targets| {
            let read_at = revision(&target)?;
            let (_, new) = plan_replace(&targets, target.clone()).map_err(Step::Refused)?;
            let (config, secrets) = config_json(&new)?;
            let changed = tx.execute(
                "UPDATE broker_targets SET name = $2, name_key = $3, description = $4, \
                 config = $5::text::jsonb, secrets = $6::text::jsonb, updated = $7, revision = $8 \
                 WHERE id = $1 AND revision = $9",
                &[
                    &new.id.as_str(),
                    &new.name,
                    &name_key(&new.name),
                    &new.description,
                    &config,
                    &secrets,
                    &new.updated,
                    &revision(&new)?,
                    &read_at,
                ],
            )?;
            if changed != 1 {
                return Err(Step::Refused(Error::user(format!(
                    "handoff target `{}` changed while this change was made; run the command again",
                    new.name
                ))));
            }
            Ok(new)
        })
    }

    fn remove(&self, id: &TargetId) -> Result<Option<Target>> {
        let location = self.url.shown().to_owned();
        let id = id.as_str().to_owned();
        self.pool.run(
            "writing handoff targets",
            Box::new(move |client: &mut postgres::Client| {
                let sql = format!("DELETE FROM broker_targets WHERE id = $1 RETURNING {COLUMNS}");
                client
                    .query_opt(&sql, &[&id])?
                    .map(|row| target_of(&row, &location))
                    .transpose()
            }),
        )
    }

    fn location(&self) -> String {
        self.url.shown().to_owned()
    }
}

/// Every target, in the order they were added.
fn read(client: &mut impl postgres::GenericClient, location: &str) -> StepResult<Vec<Target>> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM broker_targets ORDER BY seq"),
            &[],
        )?
        .iter()
        .map(|row| target_of(row, location))
        .collect()
}

/// The target of a row of [`COLUMNS`].
fn target_of(row: &postgres::Row, location: &str) -> StepResult<Target> {
    let id: String = row.try_get(0)?;
    let unreadable = |why: String| {
        Step::Refused(Error::io(
            "reading handoff targets",
            std::path::PathBuf::from(location),
            std::io::Error::other(format!("the handoff target `{id}` {why}")),
        ))
    };
    let values = |column: usize| -> StepResult<BTreeMap<String, String>> {
        serde_json::from_str(&row.try_get::<_, String>(column)?)
            .map_err(|e| unreadable(format!("has a configuration that is no map of text: {e}")))
    };
    let config = TargetConfig::from_split(values(4)?, values(5)?);
    let revision: i64 = row.try_get(8)?;
    Ok(Target {
        id: TargetId::from(id.as_str()),
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        kind: row.try_get(3)?,
        config,
        created: row.try_get(6)?,
        updated: row.try_get(7)?,
        revision: u64::try_from(revision)
            .map_err(|_| unreadable(format!("has a negative revision ({revision})")))?,
    })
}

/// A target's plain and secret values, each as a JSON object.
fn config_json(target: &Target) -> StepResult<(String, String)> {
    let (plain, secret) = target.config.split();
    let json = |values: &BTreeMap<String, String>| {
        serde_json::to_string(values).map_err(|e| {
            Step::Refused(Error::internal(
                "cannot write a handoff target's configuration as JSON",
                e,
            ))
        })
    };
    Ok((json(&plain)?, json(&secret)?))
}

/// The name as the unique index compares it: a name is taken in any case.
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// A target's revision as the database keeps it.
fn revision(target: &Target) -> StepResult<i64> {
    i64::try_from(target.revision).map_err(|_| {
        Step::Refused(Error::user(format!(
            "handoff target `{}` has a revision ({}) the database cannot hold",
            target.name, target.revision
        )))
    })
}
