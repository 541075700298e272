//! Picking inventory records: by a filter, by the keys a user names (a position, a hostname, a name,
//! a record identity) or all of them, and the ids a listing shows for records, which those keys take
//! back. Every narrowing of the inventory by a filter goes through [`filter_records`]: the CLI's
//! listing, its host selection, and [`crate::Broker::from_inventory`]. Reads no inventory itself.

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::record::HostRecord;

/// The records `filter` (a filter over `@inv`) keeps, in inventory order; all of them without one.
///
/// # Errors
/// [`Error::Filter`] for a filter that does not parse.
pub fn filter_records(records: Vec<HostRecord>, filter: Option<&str>) -> Result<Vec<HostRecord>> {
    let Some(filter) = filter else {
        return Ok(records);
    };
    let keep = Filter::parse(filter, "inv")?.select(&records);
    let mut records: Vec<Option<HostRecord>> = records.into_iter().map(Some).collect();
    Ok(keep.into_iter().filter_map(|i| records[i].take()).collect())
}

/// The hosts a command names (`broker checkin|extend|duplicate HOST… | --all`, `--filter EXPR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSelection {
    keys: Vec<String>,
    all: bool,
    filter: Option<String>,
}

/// What a [`HostSelection`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked {
    /// The records picked, each once, in the order the keys named them (inventory order for all).
    pub records: Vec<HostRecord>,
    /// The keys no record answered to.
    pub missing: Vec<String>,
}

impl HostSelection {
    /// The hosts `keys` name, or every host with `all`, among those `filter` keeps.
    ///
    /// # Errors
    /// [`Error::Usage`] when it names no host and not all of them.
    pub fn new(keys: Vec<String>, all: bool, filter: Option<String>) -> Result<Self> {
        if keys.is_empty() && !all {
            return Err(Error::usage(
                "name the hosts (ids, hostnames or names) or give --all",
            ));
        }
        Ok(HostSelection { keys, all, filter })
    }

    /// Picks from `records` (the inventory, in order): the filter first; then each key as a position
    /// in the filtered list (the id a listing shows), else every record whose hostname, name or
    /// record identity it is; all filtered records with `all`.
    ///
    /// # Errors
    /// [`Error::Filter`] for a filter that does not parse.
    pub fn pick(&self, records: Vec<HostRecord>) -> Result<Picked> {
        let mut filtered: Vec<Option<HostRecord>> =
            filter_records(records, self.filter.as_deref())?
                .into_iter()
                .map(Some)
                .collect();
        if self.all {
            let records = filtered.into_iter().flatten().collect();
            return Ok(Picked {
                records,
                missing: Vec::new(),
            });
        }
        let mut chosen: Vec<usize> = Vec::new();
        let mut missing = Vec::new();
        for key in &self.keys {
            let hits = positions_named(&filtered, key);
            if hits.is_empty() {
                missing.push(key.clone());
            }
            chosen.extend(hits);
        }
        // A record named twice is taken the first time only.
        let records = chosen
            .into_iter()
            .filter_map(|i| filtered[i].take())
            .collect();
        Ok(Picked { records, missing })
    }
}

/// The one record `key` names (`broker ssh HOST`), as [`HostSelection::pick`] reads a key.
///
/// # Errors
/// [`Error::User`] when no record, or more than one, answers to `key`.
pub fn pick_one(records: Vec<HostRecord>, key: &str) -> Result<HostRecord> {
    let selection = HostSelection {
        keys: vec![key.to_owned()],
        all: false,
        filter: None,
    };
    let mut found = selection.pick(records)?.records;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::user(format!(
            "no host `{key}` in the inventory (see `broker inventory`)"
        ))),
        n => Err(Error::user(format!(
            "`{key}` matches {n} hosts; use the inventory id or the record id"
        ))),
    }
}

/// The positions of the records `key` names: itself when it is a position in the list, else those
/// whose hostname, name or record identity it is.
fn positions_named(records: &[Option<HostRecord>], key: &str) -> Vec<usize> {
    match key.parse::<usize>() {
        Ok(i) if i < records.len() => vec![i],
        _ => records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| r.answers_to(key)))
            .map(|(i, _)| i)
            .collect(),
    }
}

/// Records with the ids a listing shows for them, which [`HostSelection`] takes back: their
/// positions.
pub fn numbered(records: Vec<HostRecord>) -> Vec<(String, HostRecord)> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i.to_string(), r))
        .collect()
}

/// Hosts just made, each with the id `broker checkin` takes for it: its position in `listed` (the
/// inventory, read after their records were written), in inventory order; a host `listed` does not
/// show (another process checked it in meanwhile, or the inventory could not be read) comes last,
/// with its record identity, which [`HostSelection`] takes too.
pub fn numbered_among(listed: Vec<HostRecord>, made: &[HostRecord]) -> Vec<(String, HostRecord)> {
    let ids: std::collections::HashSet<_> = made.iter().map(HostRecord::id).collect();
    let mut rows: Vec<(String, HostRecord)> = numbered(listed)
        .into_iter()
        .filter(|(_, r)| ids.contains(&r.id()))
        .collect();
    let shown: std::collections::HashSet<_> = rows.iter().map(|(_, r)| r.id()).collect();
    for record in made.iter().filter(|r| !shown.contains(&r.id())) {
        rows.push((record.id().to_string(), record.clone()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_yaml::Mapping;

    use super::*;

    fn record(hostname: &str, name: &str) -> HostRecord {
        let mut record = HostRecord::pending("P", None, Mapping::new());
        record.set("hostname", hostname);
        record.set("name", name);
        record
    }

    /// `web1`/`a`, `web2`/`b`, `db1`/`a`.
    fn inventory() -> Vec<HostRecord> {
        vec![record("web1", "a"), record("web2", "b"), record("db1", "a")]
    }

    fn hostnames(records: &[HostRecord]) -> Vec<&str> {
        records.iter().filter_map(HostRecord::hostname).collect()
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn a_filter_keeps_records_in_inventory_order_and_none_keeps_all() {
        let kept = filter_records(inventory(), Some("@inv.name == 'a'")).unwrap();
        assert_eq!(hostnames(&kept), ["web1", "db1"]);
        let kept = filter_records(inventory(), Some("@inv[-1]")).unwrap();
        assert_eq!(hostnames(&kept), ["db1"]);
        let records = inventory();
        assert_eq!(filter_records(records.clone(), None).unwrap(), records);
        assert!(matches!(
            filter_records(inventory(), Some("@inv.name =")),
            Err(Error::Filter(_))
        ));
    }

    #[test]
    fn keys_are_positions_in_the_filtered_list_else_hostnames_names_or_ids() {
        let records = inventory();
        let id = records[1].id().to_string();
        let selection = HostSelection::new(keys(&["2", "a", &id, "nothing"]), false, None).unwrap();
        let picked = selection.pick(records).unwrap();
        assert_eq!(hostnames(&picked.records), ["db1", "web1", "web2"]);
        assert_eq!(picked.missing, ["nothing"]);
        let selection = HostSelection::new(
            keys(&["0", "web1"]),
            false,
            Some("'web' in @inv.hostname".into()),
        )
        .unwrap();
        let picked = selection.pick(inventory()).unwrap();
        assert_eq!(hostnames(&picked.records), ["web1"], "each record once");
        let picked = HostSelection::new(keys(&["3"]), false, None).unwrap();
        let picked = picked.pick(inventory()).unwrap();
        assert_eq!(
            picked.missing,
            ["3"],
            "a position past the end names nothing"
        );
    }

    #[test]
    fn one_host_is_named_by_exactly_one_record() {
        assert_eq!(
            pick_one(inventory(), "db1").unwrap().hostname(),
            Some("db1")
        );
        assert_eq!(pick_one(inventory(), "1").unwrap().hostname(), Some("web2"));
        let err = pick_one(inventory(), "a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`a` matches 2 hosts; use the inventory id or the record id"
        );
        let err = pick_one(inventory(), "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no host `x` in the inventory (see `broker inventory`)"
        );
        assert_eq!(err.exit_code(), 13);
    }

    #[test]
    fn all_takes_every_filtered_record_and_naming_nothing_is_a_usage_error() {
        let selection = HostSelection::new(Vec::new(), true, Some("@inv.name == 'a'".into()));
        let picked = selection.unwrap().pick(inventory()).unwrap();
        assert_eq!(hostnames(&picked.records), ["web1", "db1"]);
        assert!(picked.missing.is_empty());
        let err = HostSelection::new(Vec::new(), false, Some("@inv".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "name the hosts (ids, hostnames or names) or give --all"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn listed_hosts_are_numbered_by_position_and_hosts_not_listed_by_record_id() {
        let listed = inventory();
        let gone = record("gone", "c");
        let made = vec![gone.clone(), listed[2].clone(), listed[1].clone()];
        let rows = numbered_among(listed, &made);
        let ids: Vec<(&str, &str)> = rows
            .iter()
            .map(|(id, r)| (id.as_str(), r.hostname().unwrap_or_default()))
            .collect();
        let gone_id = gone.id().to_string();
        assert_eq!(
            ids,
            [("1", "web2"), ("2", "db1"), (gone_id.as_str(), "gone")]
        );
        let rows = numbered(inventory());
        assert_eq!(rows[2].0, "2");
        assert_eq!(rows[2].1.hostname(), Some("db1"));
    }
}
