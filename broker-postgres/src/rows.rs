//! Records as rows: the record as JSON plus the columns broker looks records up by.

use broker_core::{Error, HostRecord, Result};

/// A record ready to be written.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) id: String,
    /// The record as JSON, its keys in their order.
    pub(crate) doc: String,
    provider: Option<String>,
    instance: Option<String>,
    hostname: Option<String>,
    name: Option<String>,
    state: String,
    owner_user: Option<String>,
    owner_machine: Option<String>,
    owner_pid: Option<i64>,
    lease_expires: Option<i64>,
}

/// The columns a write sets, in the order of [`Row::params`] (`$1` … `$11`).
pub(crate) const COLUMNS: &str = "id, record, doc, provider, instance, hostname, name, state, \
                                  owner_user, owner_machine, owner_pid, lease_expires";

/// The values of [`COLUMNS`]: `$2` is the JSON text, stored both as JSONB and as text.
pub(crate) const VALUES: &str = "$1, $2::text::jsonb, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11";

/// What an upsert changes on a record already there.
pub(crate) const UPDATE_SET: &str = "record = EXCLUDED.record, doc = EXCLUDED.doc, \
    provider = EXCLUDED.provider, instance = EXCLUDED.instance, hostname = EXCLUDED.hostname, \
    name = EXCLUDED.name, state = EXCLUDED.state, owner_user = EXCLUDED.owner_user, \
    owner_machine = EXCLUDED.owner_machine, owner_pid = EXCLUDED.owner_pid, \
    lease_expires = EXCLUDED.lease_expires, updated_at = now()";

impl Row {
    /// The row of `record`.
    ///
    /// # Errors
    /// [`Error::User`] for a record JSON cannot hold as it is (a YAML tag, a key that is no text,
    /// a number JSON has not): it is named, and nothing is written.
    pub(crate) fn of(record: &HostRecord, location: &str) -> Result<Row> {
        let doc = to_json(record, location)?;
        let owner = record.owner();
        Ok(Row {
            id: record.id().as_str().to_owned(),
            doc,
            provider: record.provider().map(str::to_owned),
            instance: record.instance().map(str::to_owned),
            hostname: record.hostname().map(str::to_owned),
            name: record.name().map(str::to_owned),
            state: record.state().as_str().to_owned(),
            owner_user: owner.as_ref().map(|o| o.user.clone()),
            owner_machine: owner.as_ref().map(|o| o.machine.clone()),
            owner_pid: owner.as_ref().map(|o| i64::from(o.pid)),
            lease_expires: record.expire_time(),
        })
    }

    /// The parameters of [`VALUES`].
    pub(crate) fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 11] {
        [
            &self.id,
            &self.doc,
            &self.provider,
            &self.instance,
            &self.hostname,
            &self.name,
            &self.state,
            &self.owner_user,
            &self.owner_machine,
            &self.owner_pid,
            &self.lease_expires,
        ]
    }
}

/// `record` as JSON text, checked to read back as the same record.
pub(crate) fn to_json(record: &HostRecord, location: &str) -> Result<String> {
    let refused = || {
        Error::user(format!(
            "the record `{}` holds a YAML tag, a key that is no text or a number that `{location}` \
             cannot hold as it is; change the record so that it is plain data",
            record.display_name()
        ))
    };
    let doc = serde_json::to_string(record).map_err(|_| refused())?;
    match serde_json::from_str::<HostRecord>(&doc) {
        Ok(back) if back == *record => Ok(doc),
        _ => Err(refused()),
    }
}

/// A stored record.
///
/// # Errors
/// [`Error::Io`] naming the record's identity, when its JSON does not read as a record (edited by
/// hand in the database).
pub(crate) fn from_json(id: &str, doc: &str, location: &str) -> Result<HostRecord> {
    serde_json::from_str(doc).map_err(|e| {
        Error::io(
            "reading inventory",
            std::path::PathBuf::from(location),
            std::io::Error::other(format!("the record `{id}` is no host mapping: {e}")),
        )
    })
}
