//! Nova servers as broker reads them — the address a host is reached at, the fields of its record,
//! the metadata that marks it broker's — as pure rules over Nova's JSON; nothing here talks to a
//! cloud.

use broker_core::record::fields;
use broker_core::{CheckoutContext, HostRecord, Mapping, Value};
use serde_json::{Map, Value as Json};

use super::NAME;

/// The metadata key carrying the id of the record a server was made for: a crash between create
/// and record leaves a server that `checkin` of the `pending` record finds, and a sync knows the
/// server as broker's.
pub(crate) const RECORD_KEY: &str = "broker_record_id";
/// The metadata key carrying a leased checkout's lease (seconds since the epoch).
pub(crate) const EXPIRE_KEY: &str = "broker_expire_time";
/// The metadata keys carrying what the checkout asked for by name, for a synced record's arguments.
const ASKED_KEYS: [(&str, &str); 4] = [
    ("broker_image", "ostack_image"),
    ("broker_flavor", "ostack_flavor"),
    ("broker_network", "ostack_network"),
    ("broker_template", "ostack_template"),
];
/// Nova's longest metadata value.
const MAX_META: usize = 255;

/// The metadata a server is made with: the record id, the lease, and what was asked for.
pub(crate) fn metadata(ctx: &CheckoutContext<'_>, asked: &[(&str, Option<&str>)]) -> Json {
    let mut meta = Map::new();
    meta.insert(RECORD_KEY.into(), ctx.record_id().as_str().into());
    if let Some(at) = ctx.expire_time() {
        meta.insert(EXPIRE_KEY.into(), at.to_string().into());
    }
    for (arg, value) in asked {
        let key = ASKED_KEYS.iter().find(|(_, a)| a == arg).map(|(k, _)| *k);
        if let (Some(key), Some(value)) = (key, value) {
            meta.insert(
                key.into(),
                value.chars().take(MAX_META).collect::<String>().into(),
            );
        }
    }
    Json::Object(meta)
}

/// The record id a server carries, when broker made it.
pub(crate) fn record_id(server: &Json) -> Option<&str> {
    server["metadata"][RECORD_KEY]
        .as_str()
        .filter(|id| !id.is_empty())
}

/// Where the host is reached: a floating address, else the first address, else the server's name.
pub(crate) fn address(server: &Json) -> String {
    let addresses: Vec<&Json> = entries(server).collect();
    addresses
        .iter()
        .find(|a| a["OS-EXT-IPS:type"] == "floating")
        .or_else(|| addresses.first())
        .and_then(|a| a["addr"].as_str())
        .or_else(|| server["name"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Every address of a server.
pub(crate) fn addresses(server: &Json) -> Vec<&str> {
    entries(server).filter_map(|a| a["addr"].as_str()).collect()
}

/// The address entries of every network of a server (`{addr, OS-EXT-IPS:type, …}`).
fn entries(server: &Json) -> impl Iterator<Item = &Json> {
    server["addresses"]
        .as_object()
        .into_iter()
        .flat_map(|networks| networks.values())
        .flat_map(|list| list.as_array().into_iter().flatten())
}

/// The fields a checkout records, as upstream returns them: `hostname` (the address), `instance_id`,
/// `name`; and `ip` when the address is one.
pub(crate) fn host_fields(server: &Json) -> Mapping {
    let mut m = Mapping::new();
    let address = address(server);
    if address.parse::<std::net::IpAddr>().is_ok() {
        m.insert(fields::IP.into(), Value::from(address.as_str()));
    }
    m.insert(fields::HOSTNAME.into(), Value::from(address));
    m.insert("instance_id".into(), Value::from(text(&server["id"])));
    m.insert(fields::NAME.into(), Value::from(text(&server["name"])));
    m
}

/// The record of a server broker made, found by a sync: its own fields, its record id, lease and
/// creation time, and the arguments it was asked with.
pub(crate) fn synced_record(server: &Json, instance: Option<&str>) -> HostRecord {
    let mut record = HostRecord::from_mapping(host_fields(server));
    if let Some(id) = record_id(server) {
        record.set(fields::ID, id);
    }
    if let Some(at) = server["metadata"][EXPIRE_KEY]
        .as_str()
        .and_then(|at| at.parse::<i64>().ok())
    {
        record.set(fields::EXPIRE_TIME, at);
    }
    if let Some(made) = server["created"].as_str().and_then(epoch) {
        record.set(fields::CHECKOUT_TIME, made);
    }
    record.set(fields::PROVIDER, NAME);
    if let Some(instance) = instance {
        record.set(fields::PROVIDER_INSTANCE, instance);
    }
    let mut args = Mapping::new();
    for (key, arg) in ASKED_KEYS {
        if let Some(value) = server["metadata"][key].as_str() {
            args.insert(arg.into(), value.into());
        }
    }
    if let Some(key) = server["key_name"].as_str() {
        args.insert("ostack_key_name".into(), key.into());
    }
    record.set(fields::ARGS, Value::Mapping(args));
    record.set(fields::TYPE, "host");
    record.set("status", text(&server["status"]));
    record
}

/// Whether Nova is deleting the server or has: it no longer counts as held.
pub(crate) fn going(server: &Json) -> bool {
    matches!(server["status"].as_str(), Some("DELETED" | "SOFT_DELETED"))
        || server["OS-EXT-STS:task_state"] == "deleting"
}

/// Nova's reason for a server in `ERROR`.
pub(crate) fn fault(server: &Json) -> String {
    server["fault"]["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or("Nova gave no fault message")
        .to_owned()
}

/// Glance's ids are UUIDs: only a value shaped like one is looked up by id.
pub(crate) fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A JSON scalar as text.
pub(crate) fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// `2026-01-01T00:00:00Z` (Nova's `created`) as seconds since the epoch.
fn epoch(stamp: &str) -> Option<i64> {
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time
        .split(['.', '+'])
        .next()?
        .split(':')
        .map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + min * 60 + s)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn server(addresses: Json) -> Json {
        json!({"id": "s1", "name": "broker-1", "status": "ACTIVE", "addresses": addresses,
               "created": "2026-01-01T00:00:00Z", "key_name": "k",
               "metadata": {"broker_record_id": "h1", "broker_image": "rhel", "broker_expire_time": "99"}})
    }

    #[test]
    fn the_address_is_floating_else_first_else_the_name() {
        let both = server(json!({"private": [
            {"addr": "10.0.0.10", "OS-EXT-IPS:type": "fixed"},
            {"addr": "172.24.4.100", "OS-EXT-IPS:type": "floating"}]}));
        assert_eq!(address(&both), "172.24.4.100");
        let fixed = server(json!({"private": [{"addr": "10.0.0.10", "OS-EXT-IPS:type": "fixed"}]}));
        assert_eq!(address(&fixed), "10.0.0.10");
        let none = server(json!({}));
        assert_eq!(address(&none), "broker-1");
        let fields = host_fields(&none);
        assert_eq!(fields.get("hostname"), Some(&Value::from("broker-1")));
        assert!(fields.get("ip").is_none());
        assert_eq!(
            host_fields(&both).get("ip"),
            Some(&Value::from("172.24.4.100"))
        );
    }

    #[test]
    fn a_synced_record_carries_identity_lease_and_arguments() {
        let r = synced_record(&server(json!({})), Some("lab"));
        assert_eq!(r.id().as_str(), "h1");
        assert_eq!(r.expire_time(), Some(99));
        assert_eq!(r.checkout_time(), Some(1_767_225_600));
        assert_eq!(r.instance(), Some("lab"));
        assert_eq!(r.provider(), Some("OpenStack"));
        assert_eq!(r.args().get("ostack_image"), Some(&Value::from("rhel")));
        assert_eq!(r.args().get("ostack_key_name"), Some(&Value::from("k")));
        assert_eq!(r.get("instance_id"), Some(&Value::from("s1")));
    }

    #[test]
    fn uuids_and_dates_are_read_strictly() {
        assert!(is_uuid("5e1d0001-0000-4000-8000-000000000001"));
        assert!(!is_uuid("rhel-9.4"));
        assert!(!is_uuid("5e1d0001-0000-4000-8000-00000000000g"));
        assert_eq!(epoch("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch("2000-03-01T01:02:03.5Z"), Some(951_872_523));
        assert_eq!(epoch("soon"), None);
    }
}
