//! `broker serve` benchmarks, in one run: `GET /api/v1/hosts` over 5,000 inventory records at 50
//! clients at once (p50, p99), and a TestProvider checkout + checkin through the API (POST
//! `/api/v1/checkouts?wait=true`, then DELETE the host) against the same through the library
//! (`Broker::checkout`, then the guard's check-in): p50 of each and the API's overhead (issue 14
//! targets ≤ 2 ms at p50).
//!
//! Run with `cargo bench -p broker-cli --bench serve` (or `--profile dev` to skip the release build).
//! The server is the `broker` binary on a free loopback port; the client speaks HTTP/1.1 over a plain
//! TCP connection per request, as a script with curl would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker_core::{Broker, CheckoutRequest, Settings};

const BROKER: &str = env!("CARGO_BIN_EXE_broker");
const SETTINGS: &str = "TestProvider:\n  instances:\n    local:\n      default: true\n";

fn records(hosts: usize) -> String {
    (0..hosts)
        .map(|i| {
            format!(
                "- _broker_args: {{test_action: basic}}\n  _broker_provider: TestProvider\n  \
                 _broker_provider_instance: local\n  hostname: bench-{i}.test.example.com\n  \
                 name: bench-{i:08x}\n  type: host\n  os_distribution: FakeOS\n"
            )
        })
        .collect()
}

fn broker(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BROKER);
    command
        .args(args)
        .env("BROKER_DIRECTORY", dir)
        .env("HOME", dir)
        .env("BROKER_NON_INTERACTIVE", "1")
        .stdin(Stdio::null());
    command
}

/// `broker serve` on a free port; its address.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = broker(dir, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start broker serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("broker serve said where it listens")
            .expect("a line");
        if let Some(at) = line.strip_prefix("listening on http://") {
            break at.trim().to_owned();
        }
    };
    // Keep draining its log (one line a request) so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// One request on a new connection; the status and the body.
fn call(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer \
         {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn list_hosts(addr: &str, token: &str) {
    const CLIENTS: usize = 50;
    const EACH: usize = 4;
    let mut times: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    (0..EACH)
                        .map(|_| {
                            let start = Instant::now();
                            let (status, body) = call(addr, "GET", "/api/v1/hosts", token, "");
                            assert_eq!(status, 200);
                            assert!(body.len() > 5_000 * 100, "{} bytes", body.len());
                            start.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client"))
            .collect()
    });
    times.sort();
    println!(
        "GET /api/v1/hosts, 5,000 records, {CLIENTS} clients × {EACH}: p50 {}, p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
}

fn through_api(addr: &str, token: &str, runs: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let (status, body) = call(
            addr,
            "POST",
            "/api/v1/checkouts?wait=true",
            token,
            r#"{"arguments": {"test_action": "basic"}}"#,
        );
        assert_eq!(status, 200, "{body}");
        let op: serde_json::Value = serde_json::from_str(&body).expect("an operation");
        let id = op["hosts"][0]["_broker_id"]
            .as_str()
            .expect("a host")
            .to_owned();
        let (status, _) = call(addr, "DELETE", &format!("/api/v1/hosts/{id}"), token, "");
        assert_eq!(status, 204);
        times.push(start.elapsed());
    }
    times.sort();
    percentile(&times, 0.5)
}

fn through_library(dir: &Path, runs: usize) -> Duration {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let settings = Settings::from_yaml(dir, SETTINGS).expect("settings");
    let broker = Broker::new(settings, broker_providers::registry()).expect("a broker");
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        runtime.block_on(async {
            let request = CheckoutRequest::new().arg("test_action", "basic");
            let guards = broker.checkout(request).await.expect("checkout");
            for guard in guards {
                guard.checkin().await.expect("checkin");
            }
        });
        times.push(start.elapsed());
    }
    times.sort();
    percentile(&times, 0.5)
}

fn main() {
    const RUNS: usize = 50;
    let listed = tempfile::tempdir().expect("a directory");
    std::fs::write(listed.path().join("broker_settings.yaml"), SETTINGS).expect("settings");
    std::fs::write(listed.path().join("inventory.yaml"), records(5_000)).expect("inventory");
    let token = |dir: &Path| {
        let out = broker(dir, &["serve", "token", "add", "bench", "--role", "write"])
            .output()
            .expect("token add");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let read = token(listed.path());
    let (mut server, addr) = serve(listed.path());
    list_hosts(&addr, &read);
    let _ = server.kill();
    let _ = server.wait();

    let api_dir = tempfile::tempdir().expect("a directory");
    std::fs::write(api_dir.path().join("broker_settings.yaml"), SETTINGS).expect("settings");
    let write = token(api_dir.path());
    let (mut server, addr) = serve(api_dir.path());
    through_api(&addr, &write, 5);
    let api = through_api(&addr, &write, RUNS);
    let _ = server.kill();
    let _ = server.wait();
    let lib_dir = tempfile::tempdir().expect("a directory");
    through_library(lib_dir.path(), 5);
    let library = through_library(lib_dir.path(), RUNS);
    println!(
        "TestProvider checkout + checkin, {RUNS} runs, p50: API {}, library {}, API overhead {}",
        ms(api),
        ms(library),
        ms(api.saturating_sub(library))
    );
}
