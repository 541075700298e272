//! The shared inventory's benchmark, in one run: 32 workers at once, each a broker of its own (as
//! 32 processes would be), doing TestProvider checkout + checkin cycles through the library against
//! the `inventory.yaml` store and against PostgreSQL (operations per second: one operation is one
//! checkout and its checkin); then listing 5,000 records from each store (median of 5).
//!
//! Run with `cargo bench -p broker-cli --bench fleet`, with `BROKER_POSTGRES` naming the directory of
//! `scripts/postgres start` (a database of the bench's own is made on that server).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use broker_core::secrecy::SecretString;
use broker_core::{
    Broker, CheckoutRequest, HostRecord, HostState, InventoryStore, Mapping, Settings,
    YamlFileStore,
};
use broker_postgres::PostgresStore;

const SETTINGS: &str = "TestProvider:\n  instances:\n    local:\n      default: true\n";
const WORKERS: usize = 32;
const CYCLES: usize = 20;
const LISTED: usize = 5_000;

/// Which store a broker uses.
#[derive(Clone)]
enum Kind {
    File,
    Postgres(String),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Postgres(_) => "PostgreSQL",
        }
    }

    fn store(&self, dir: &std::path::Path) -> Arc<dyn InventoryStore> {
        match self {
            Kind::File => Arc::new(YamlFileStore::new(
                dir.join("inventory.yaml"),
                Duration::from_secs(300),
            )),
            Kind::Postgres(url) => Arc::new(
                PostgresStore::open(&SecretString::from(url.clone())).expect("the database"),
            ),
        }
    }
}

/// `WORKERS` brokers at once, each doing `CYCLES` checkouts and checkins; operations per second.
fn cycles(kind: &Kind) -> f64 {
    let dir = tempfile::tempdir().expect("a directory");
    let start = Arc::new(Barrier::new(WORKERS + 1));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (kind, dir, start) = (kind.clone(), dir.path().to_owned(), Arc::clone(&start));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let settings = Settings::from_yaml(&dir, SETTINGS).expect("settings");
                let store = kind.store(&dir);
                let broker = Broker::with_store(settings, broker_providers::registry(), store)
                    .expect("a broker");
                start.wait();
                runtime.block_on(async {
                    for _ in 0..CYCLES {
                        let request = CheckoutRequest::new().arg("test_action", "basic");
                        let host = broker.checkout_one(request).await.expect("checkout");
                        host.checkin().await.expect("checkin");
                    }
                });
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for w in workers {
        w.join().expect("a worker");
    }
    (WORKERS * CYCLES) as f64 / began.elapsed().as_secs_f64()
}

/// Lists `LISTED` records from the store; the median of 5 runs.
fn listing(kind: &Kind) -> Duration {
    let dir = tempfile::tempdir().expect("a directory");
    let store = kind.store(dir.path());
    let records: Vec<HostRecord> = (0..LISTED)
        .map(|i| {
            let mut args = Mapping::new();
            args.insert("test_action".into(), "basic".into());
            let mut r = HostRecord::pending("TestProvider", Some("local"), args);
            r.set("name", format!("bench-{i:08x}"));
            r.set("hostname", format!("bench-{i}.test.example.com"));
            r.set("os_distribution", "FakeOS");
            r.set_state(HostState::Ready);
            r
        })
        .collect();
    store.put(&records).expect("records");
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let began = Instant::now();
            let listed = store.list().expect("list");
            assert_eq!(listed.len(), LISTED);
            began.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn main() {
    let Some((url, _)) = broker_test_support::postgres_database() else {
        eprintln!("no PostgreSQL (BROKER_POSTGRES): skipped");
        return;
    };
    let kinds = [Kind::File, Kind::Postgres(url)];
    let rates: Vec<f64> = kinds.iter().map(cycles).collect();
    for (kind, rate) in kinds.iter().zip(&rates) {
        println!(
            "{WORKERS} workers × {CYCLES} checkout+checkin, {}: {rate:.0} operations/s",
            kind.name()
        );
    }
    println!("PostgreSQL / file: {:.1}×", rates[1] / rates[0]);
    for kind in &kinds {
        println!(
            "listing {LISTED} records, {}: {:.1} ms",
            kind.name(),
            listing(kind).as_secs_f64() * 1000.0
        );
    }
}
