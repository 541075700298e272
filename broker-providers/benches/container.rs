//! Container checkout and check-in through broker against the same work through the raw engine API.
//!
//! Run with `cargo bench -p broker-providers --bench container` (needs the engine from
//! `scripts/setup-podman`). Each round times 10 concurrent checkouts and then 10 check-ins through
//! `Broker`, and 10 concurrent create+start and then 10 deletes through bollard directly, on the same
//! image and command; rounds alternate and the medians are compared. Targets (issue #3): broker ≤ 1.05×
//! raw for checkout, ≤ 1.1× for check-in.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use broker_core::{Broker, CheckoutRequest, ProviderRegistry, Settings};

const HOSTS: usize = 10;
const IMAGE: &str = "localhost/broker-busybox:latest";

async fn raw_round(docker: &Docker, round: usize) -> (Duration, Duration) {
    let names: Vec<String> = (0..HOSTS)
        .map(|i| format!("benchraw_{}_{round}_{i}", std::process::id()))
        .collect();
    let start = Instant::now();
    let creates = names.iter().map(|name| async move {
        let body = ContainerCreateBody {
            image: Some(IMAGE.to_owned()),
            cmd: Some(vec!["sleep".into(), "3600".into()]),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        docker
            .create_container(Some(options), body)
            .await
            .expect("create");
        docker.start_container(name, None).await.expect("start");
    });
    futures_util::future::join_all(creates).await;
    let checkout = start.elapsed();
    let start = Instant::now();
    let removes = names.iter().map(|name| async move {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        docker
            .remove_container(name, Some(options))
            .await
            .expect("remove");
    });
    futures_util::future::join_all(removes).await;
    (checkout, start.elapsed())
}

async fn broker_round(broker: &Broker) -> (Duration, Duration) {
    let start = Instant::now();
    let guards = broker
        .checkout(
            CheckoutRequest::new()
                .arg("container_host", IMAGE)
                .arg("command", "sleep 3600")
                .count(HOSTS),
        )
        .await
        .expect("broker checkout");
    let checkout = start.elapsed();
    let records = guards
        .into_iter()
        .map(|g| g.keep().record().clone())
        .collect();
    let start = Instant::now();
    let outcomes = broker.checkin(records, false).await;
    assert!(
        outcomes.iter().all(|o| o.result.is_ok()),
        "broker check-in failed"
    );
    (checkout, start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { 7 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Ok(docker) =
            Docker::connect_with_unix("/run/podman/podman.sock", 120, bollard::API_DEFAULT_VERSION)
        else {
            eprintln!("no engine at /run/podman/podman.sock; run scripts/setup-podman");
            return;
        };
        if docker.ping().await.is_err() {
            eprintln!("no engine answers at /run/podman/podman.sock; run scripts/setup-podman");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings::from_yaml(dir.path(), "Container:\n  name_prefix: benchbroker\n")
            .expect("settings");
        let broker = Broker::new(
            settings,
            ProviderRegistry::new().with(broker_providers::container::KIND),
        )
        .expect("broker");
        // Warm up both paths (engine caches, connections, the inventory file).
        raw_round(&docker, 999).await;
        broker_round(&broker).await;
        let (mut raw_out, mut raw_in, mut br_out, mut br_in) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let (o, i) = raw_round(&docker, round).await;
            raw_out.push(o);
            raw_in.push(i);
            let (o, i) = broker_round(&broker).await;
            br_out.push(o);
            br_in.push(i);
        }
        let (ro, ri, bo, bi) = (
            median(raw_out),
            median(raw_in),
            median(br_out),
            median(br_in),
        );
        println!("{HOSTS} concurrent hosts, median of {rounds} rounds");
        println!(
            "{:<28} {:>10} {:>10} {:>7}",
            "", "raw API", "broker", "ratio"
        );
        println!(
            "{:<28} {:>10.1?} {:>10.1?} {:>7.3}",
            "checkout (create+start)",
            ro,
            bo,
            bo.as_secs_f64() / ro.as_secs_f64()
        );
        println!(
            "{:<28} {:>10.1?} {:>10.1?} {:>7.3}",
            "checkin (delete)",
            ri,
            bi,
            bi.as_secs_f64() / ri.as_secs_f64()
        );
    });
}
