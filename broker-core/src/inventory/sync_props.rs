//! `merge_sync` against a model written from its documentation, one linear scan per rule (no
//! indexes), on small inventories where identities, hostnames and names collide often.

use proptest::prelude::*;

use serde_yaml::Mapping;

use super::*;

fn record() -> impl Strategy<Value = HostRecord> {
    (
        prop::sample::select(vec!["P", "P", "Q"]),
        prop::sample::select(vec![None, Some("i1"), Some("i2")]),
        prop::sample::select(vec![
            None,
            Some("pending"),
            Some("releasing"),
            Some("ready"),
        ]),
        prop::option::of(prop::sample::select(vec!["a", "b", "c", "d", ""])),
        prop::option::of(prop::sample::select(vec!["h1", "h2", "h3", ""])),
        prop::option::of(prop::sample::select(vec!["n1", "n2", "n3"])),
        prop::option::of(prop::sample::select(vec!["x", "y"])),
        0u8..4,
    )
        .prop_map(
            |(provider, instance, state, id, hostname, name, arg, extra)| {
                let mut r = HostRecord::default();
                r.set(fields::PROVIDER, provider);
                if let Some(i) = instance {
                    r.set(fields::PROVIDER_INSTANCE, i);
                }
                if let Some(s) = state {
                    r.set(fields::STATE, s);
                }
                if let Some(id) = id {
                    r.set(fields::ID, id);
                }
                if let Some(h) = hostname {
                    r.set(fields::HOSTNAME, h);
                }
                if let Some(n) = name {
                    r.set(fields::NAME, n);
                }
                if let Some(a) = arg {
                    let mut args = Mapping::new();
                    args.insert(a.into(), Value::from(u64::from(extra)));
                    r.set(fields::ARGS, Value::Mapping(args));
                }
                r.set("extra", u64::from(extra));
                r
            },
        )
}

/// A reported host: what providers list (no state, sometimes no provider).
fn reported() -> impl Strategy<Value = HostRecord> {
    (record(), any::<bool>()).prop_map(|(mut r, keep_provider)| {
        r.remove(fields::STATE);
        if !keep_provider {
            r.remove(fields::PROVIDER);
            r.remove(fields::PROVIDER_INSTANCE);
        }
        r
    })
}

fn shares_a_key(a: &HostRecord, b: &HostRecord) -> bool {
    (a.has_broker_id() && b.has_broker_id() && a.id() == b.id())
        || (a.hostname().is_some() && a.hostname() == b.hostname())
        || (a.name().is_some() && a.name() == b.name())
}

/// The documented rules, applied one record at a time.
fn model(
    records: &[HostRecord],
    provider: &str,
    instance: Option<&str>,
    before: &[HostRecord],
    reported: &[HostRecord],
    force: bool,
) -> (
    std::result::Result<Vec<HostRecord>, Vec<String>>,
    SyncReport,
) {
    let belongs = |r: &HostRecord| {
        r.provider() == Some(provider)
            && match (instance, r.instance()) {
                (Some(w), Some(h)) => w == h,
                _ => true,
            }
    };
    let old: Vec<usize> = (0..records.len())
        .filter(|&i| belongs(&records[i]) && records[i].state() == HostState::Ready)
        .collect();
    let mut present: Vec<HostRecord> = records
        .iter()
        .filter(|r| belongs(r) && r.state() != HostState::Ready)
        .cloned()
        .collect();
    let now: Vec<RecordId> = records
        .iter()
        .filter(|r| belongs(r))
        .map(HostRecord::id)
        .collect();
    let mut report = SyncReport::default();
    let mut matched = vec![false; old.len()];
    let mut synced = Vec::new();
    for new in reported {
        if present.iter().any(|p| shares_a_key(p, new)) {
            continue;
        }
        let record = if let Some(k) = old.iter().position(|&i| shares_a_key(&records[i], new)) {
            matched[k] = true;
            let known = &records[old[k]];
            let mut merged = known.clone();
            for (key, value) in new.fields() {
                let value = match (key.as_str(), known.get(fields::ARGS), value) {
                    (Some(fields::ARGS), Some(Value::Mapping(given)), Value::Mapping(listed)) => {
                        let mut args = listed.clone();
                        for (k, v) in given {
                            args.insert(k.clone(), v.clone());
                        }
                        Value::Mapping(args)
                    }
                    _ => value.clone(),
                };
                merged.fields_mut().insert(key.clone(), value);
            }
            report.updated += 1;
            merged
        } else if before
            .iter()
            .any(|b| belongs(b) && !now.contains(&b.id()) && shares_a_key(b, new))
        {
            continue;
        } else {
            let mut added = new.clone();
            if added.provider().is_none() {
                added.set(fields::PROVIDER, provider);
            }
            if let (Some(i), None) = (instance, added.instance()) {
                added.set(fields::PROVIDER_INSTANCE, i);
            }
            report.added += 1;
            report.added_hosts.push(added.display_name());
            added
        };
        present.push(record.clone());
        synced.push(record);
    }
    let ready_before = |r: &HostRecord| {
        before
            .iter()
            .any(|b| belongs(b) && b.state() == HostState::Ready && b.id() == r.id())
    };
    let mut dropped = vec![false; records.len()];
    for (k, &i) in old.iter().enumerate() {
        if matched[k] {
            dropped[i] = true;
        } else if ready_before(&records[i]) {
            dropped[i] = true;
            report.removed_hosts.push(records[i].display_name());
        }
    }
    report.removed = report.removed_hosts.len();
    let refused = !force
        && ((report.removed > 0 && report.removed == old.len())
            || (report.removed > 3 && report.removed * 2 > old.len()));
    if refused {
        return (Err(report.removed_hosts.clone()), report);
    }
    let mut out: Vec<HostRecord> = records
        .iter()
        .zip(&dropped)
        .filter(|(_, d)| !**d)
        .map(|(r, _)| r.clone())
        .collect();
    out.extend(synced);
    (Ok(out), report)
}

proptest! {
    #![proptest_config(crate::proptest_config(512))]

    #[test]
    fn merge_sync_follows_the_documented_rules(
        records in prop::collection::vec(record(), 0..10),
        before_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        gone in prop::collection::vec(record(), 0..3),
        reported in prop::collection::vec(reported(), 0..8),
        instance in prop::sample::select(vec![None, Some("i1")]),
        force in prop::bool::weighted(0.3),
    ) {
        // Before the listing: some of today's records (in their state then: maybe still ready),
        // and some records checked in meanwhile.
        let mut before: Vec<HostRecord> = if records.is_empty() {
            Vec::new()
        } else {
            before_picks.iter().map(|i| records[i.index(records.len())].clone()).collect()
        };
        before.extend(gone);
        let (expected, expected_report) =
            model(&records, "P", instance, &before, &reported, force);
        let mut actual = records.clone();
        let listing = ProviderListing::new("P", instance, before, reported).force(force);
        match (merge_sync(&mut actual, listing), expected) {
            (Ok(report), Ok(expected)) => {
                prop_assert_eq!(report, expected_report);
                prop_assert_eq!(actual, expected);
            }
            (Err(Error::SyncRefused { removing, records: count, .. }), Err(expected)) => {
                prop_assert_eq!(removing, expected);
                prop_assert!(count >= expected_report.removed);
                prop_assert_eq!(actual, records, "a refused sync changed the records");
            }
            (got, want) => prop_assert!(false, "got {got:?}, the model says {want:?}"),
        }
    }
}
