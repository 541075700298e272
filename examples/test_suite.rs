//! How a Rust test suite uses broker: check hosts out, use them, let the guards give them back.
//!
//! Run it with `cargo run -p broker-examples --example test_suite`. It uses TestProvider in a
//! temporary broker directory, so it needs no infrastructure; with real settings, swap the
//! `test_action` argument for e.g. `workflow: deploy-rhel` or a nick.
//!
//! In a real suite each function below would be a `#[test]` or `#[tokio::test]`.

use broker_core::{Broker, CheckoutRequest, FromHost, Host, ProviderRegistry, Result, Settings};

/// A suite's own host type, as the Python broker's `host_class`: a web server with methods of its own.
struct WebServer(Host);

impl FromHost for WebServer {
    fn from_host(host: Host) -> Result<Self> {
        Ok(WebServer(host))
    }
    fn host(&self) -> &Host {
        &self.0
    }
}

impl WebServer {
    /// Where the page lives. A path relative to the login directory names the same file for file
    /// calls and for commands on every host reached over SSH — and on TestProvider's hosts, whose
    /// commands run on this machine inside the host's directory (an absolute path in a command would
    /// reach this machine's own file there; see TestProvider's documentation).
    const PAGE: &str = "www/index.html";

    async fn deploy_page(&self, body: &str) -> Result<()> {
        self.0.write_file(Self::PAGE, body.as_bytes()).await
    }

    async fn served_page(&self) -> Result<String> {
        Ok(self.0.execute(&format!("cat {}", Self::PAGE)).await?.stdout)
    }
}

/// `#[tokio::test]`: one host, dropped at the end of the test (checked in even if an assert fails).
async fn a_host_runs_commands(broker: &Broker) -> Result<()> {
    let host = broker
        .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
        .await?;
    let out = host.execute("echo hello from $(pwd)").await?;
    assert!(out.success());
    println!("{}: {}", host.display_name(), out.stdout.trim());
    Ok(())
}

/// `#[tokio::test]`: several hosts of a suite's own type, checked in explicitly to see errors.
async fn web_servers_serve_what_was_deployed(broker: &Broker) -> Result<()> {
    let servers = broker
        .checkout_as::<WebServer>(CheckoutRequest::new().arg("test_action", "basic").count(2))
        .await?;
    for server in &servers {
        server.deploy_page("<h1>hi</h1>").await?;
        assert_eq!(server.served_page().await?, "<h1>hi</h1>");
    }
    for server in servers {
        server.checkin().await?;
    }
    Ok(())
}

/// `#[tokio::test]`: the scoped form needs no guard at all.
async fn scoped_hosts(broker: &Broker) -> Result<()> {
    let hostnames = broker
        .with_hosts(
            CheckoutRequest::new().arg("test_action", "basic").count(3),
            async |hosts: &[Host]| hosts.iter().map(|h| h.display_name()).collect::<Vec<_>>(),
        )
        .await?;
    assert_eq!(hostnames.len(), 3);
    Ok(())
}

/// `#[test]` (no async runtime): the blocking facade.
fn blocking_test(settings: Settings, registry: ProviderRegistry) -> Result<()> {
    let broker = broker_core::blocking::Broker::new(settings, registry)?;
    let host = broker.checkout_one(CheckoutRequest::new().arg("test_action", "basic"))?;
    assert_eq!(host.execute("echo ok")?.stdout, "ok\n");
    Ok(())
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| {
        broker_core::Error::io("creating a temporary directory in", std::env::temp_dir(), e)
    })?;
    let settings = Settings::load_from(dir.path(), std::iter::empty())?;
    let registry = broker_providers::registry();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| broker_core::Error::io_without_path("starting a runtime", e))?;
    runtime.block_on(async {
        let broker = Broker::new(settings.clone(), registry.clone())?;
        a_host_runs_commands(&broker).await?;
        web_servers_serve_what_was_deployed(&broker).await?;
        scoped_hosts(&broker).await?;
        assert!(
            broker.inventory().list()?.is_empty(),
            "every host was checked in"
        );
        Ok::<_, broker_core::Error>(())
    })?;
    drop(runtime);
    blocking_test(settings.clone(), registry.clone())?;
    let left = Broker::new(settings, registry)?.inventory().list()?;
    assert!(left.is_empty(), "every host was checked in");
    println!("all example tests passed; nothing left checked out");
    Ok(())
}
