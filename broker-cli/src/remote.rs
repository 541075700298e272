//! `--server URL` (or `BROKER_SERVER`): `checkout`, `checkin`, `inventory`, `extend`, `target …` and
//! `handoff …` on a broker server's inventory, through [`broker_client::RemoteBroker`], printed as
//! the same verbs print the local inventory. Verbs that act on this machine's hosts or inventory
//! (`ssh`, `execute`, `recover`, `reap`, `duplicate`, `providers`, `inventory --sync`,
//! `checkin --pending`) are usage errors here rather than acting locally unasked; `config` and
//! `serve` are always this machine's.

use std::sync::Arc;

use broker_client::{RemoteBroker, RemoteCheckout};
use broker_core::handoff::run::HandoffState;
use broker_core::selection::{numbered_among, pick_one};
use broker_core::{
    Error, HostOutcome, HostRecord, ProviderRegistry, Result, Settings, Value, cli_support,
};

use crate::app::{StopSignals, print_handoff, print_hosts, report, selected_from, show_inventory};
use crate::cli::{CheckinArgs, CheckoutArgs, Command, ExtendArgs, HandoffCommand, InventoryArgs};
use crate::output::{Emitter, Progress, note};

/// The settings key (and, as `BROKER_SERVER`, the variable) naming the server.
const SERVER_KEY: &str = "server";
/// The settings key (and, as `BROKER_SERVER_TOKEN`, the variable) holding its token.
const TOKEN_KEY: &str = "server_token";
/// The settings key (and, as `BROKER_SERVER_CA`, the variable) naming a PEM file of certificates
/// to trust for its HTTPS, relative to the broker directory.
const CA_KEY: &str = "server_ca";

/// The server the command goes to: `--server`, else `server` of the settings (`BROKER_SERVER`).
pub(crate) fn server_of(given: Option<String>, settings: &Settings) -> Option<String> {
    given
        .or_else(|| {
            settings
                .get(SERVER_KEY)
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|s| !s.trim().is_empty())
}

/// Whether `command` goes to the server when one is named: every verb but those about this
/// machine's own settings, server and documentation.
pub(crate) fn goes_remote(command: &Command) -> bool {
    match command {
        Command::Config(_)
        | Command::Scenarios(_)
        | Command::Completions { .. }
        | Command::Manpage { .. } => false,
        #[cfg(feature = "serve")]
        Command::Serve(_) => false,
        _ => true,
    }
}

/// What a remote command works with.
struct Remote {
    server: Arc<RemoteBroker>,
    settings: Settings,
    registry: ProviderRegistry,
}

/// Runs `command` against the server `url`.
pub(crate) async fn dispatch(
    url: &str,
    command: Command,
    settings: Settings,
    emitter: &mut Emitter,
) -> Result<i32> {
    let token = settings.secret(TOKEN_KEY).ok_or_else(|| Error::Authentication {
        message: format!(
            "no token for the broker server at {}; set BROKER_SERVER_TOKEN (or `server_token` in \
             the settings) to one that `broker serve token add` printed",
            broker_core::redact::url_credentials(url)
        ),
        source: None,
    })?;
    let server = match settings.get(CA_KEY).and_then(Value::as_str) {
        Some(file) => {
            let path = settings.directory().join(file);
            let pem = std::fs::read(&path).map_err(|e| {
                Error::configuration(format!(
                    "cannot read the broker server's CA `{}` (`server_ca`, BROKER_SERVER_CA)",
                    path.display()
                ))
                .caused_by(e)
            })?;
            RemoteBroker::trusting(url, token, &pem)?
        }
        None => RemoteBroker::new(url, token)?,
    };
    let remote = Remote {
        server: Arc::new(server),
        settings,
        registry: broker_providers::registry(),
    };
    tracing::debug!(server = %remote.server.server(), "working on the server's inventory");
    match command {
        Command::Checkout(a) => checkout(&remote, a, emitter).await,
        Command::Checkin(a) => checkin(&remote, a, emitter).await,
        Command::Inventory(a) => inventory(&remote, a, emitter).await,
        Command::Extend(a) => extend(&remote, a, emitter).await,
        Command::Handoff(c) => handoff(&remote, c, emitter).await,
        Command::Target(c) => crate::targets::remote_target(&remote.server, c, emitter).await,
        other => Err(not_remote(verb_of(&other), &remote.server)),
    }
}

/// The usage error of a verb or flag that works on this machine only.
fn not_remote(what: &str, server: &RemoteBroker) -> Error {
    Error::usage(format!(
        "`{what}` does not work with a broker server ({}): it acts on this machine's hosts; \
         run it on the server, or without --server / BROKER_SERVER",
        server.server()
    ))
}

fn verb_of(command: &Command) -> &'static str {
    match command {
        Command::Duplicate(_) => "broker duplicate",
        Command::Execute(_) => "broker execute",
        Command::Providers(_) => "broker providers",
        Command::Recover(_) => "broker recover",
        Command::Reap(_) => "broker reap",
        Command::Ssh(_) => "broker ssh",
        _ => "this command",
    }
}

/// The checkout as the server takes it: the provider arguments parsed as locally, an args file
/// under them, labels and lease as arguments (the server's nick, if any, under all).
fn remote_checkout(registry: &ProviderRegistry, a: &CheckoutArgs) -> Result<RemoteCheckout> {
    let declared: Vec<&str> = registry.declared_keys().collect();
    let given = cli_support::normalize_declared(
        cli_support::parse_passthrough(&a.provider.extra)?,
        &declared,
    );
    let mut args = match &a.provider.args_file {
        Some(path) => cli_support::load_args_file(path)?,
        None => Default::default(),
    };
    args = broker_core::args::layer(args, given);
    if let Some(labels) = &a.provider.provider_labels {
        let mut all = match args.get("provider_labels") {
            Some(Value::Mapping(m)) => m.clone(),
            Some(Value::String(s)) => broker_core::args::parse_labels(s),
            _ => Default::default(),
        };
        all = broker_core::args::layer(all, broker_core::args::parse_labels(labels));
        args.insert("provider_labels".into(), Value::Mapping(all));
    }
    if let Some(lease) = &a.lease {
        broker_core::lease::Lease::parse(lease)?;
        args.insert(
            broker_core::lease::fields::LEASE.into(),
            Value::from(lease.as_str()),
        );
    }
    let mut checkout = RemoteCheckout::new()
        .args(args)
        .keep_failed_handoff(a.keep_failed_handoff);
    if let Some(nick) = &a.nick {
        checkout = checkout.nick(nick);
    }
    if let Some(count) = a.count {
        checkout = checkout.count(count);
    }
    if let Some(target) = &a.handoff {
        checkout = checkout.handoff(target);
    }
    Ok(checkout)
}

async fn checkout(remote: &Remote, a: CheckoutArgs, emitter: &mut Emitter) -> Result<i32> {
    if a.keep_partial {
        return Err(not_remote("--keep-partial", &remote.server));
    }
    let request = remote_checkout(&remote.registry, &a)?;
    let mut signals = StopSignals::listen()?;
    let started = remote.server.start_checkout(&request).await?;
    let progress = Progress::start(format!(
        "checking out {} host(s) on {} (operation {})",
        a.count.unwrap_or(1),
        remote.server.server(),
        started.id
    ));
    let ended = tokio::select! {
        ended = remote.server.wait(&started.id) => ended?,
        signal = signals.next() => {
            drop(progress);
            return Err(Error::Interrupted {
                message: format!(
                    "{signal}: stopped waiting; the checkout goes on at {} as operation {}: its \
                     hosts show in `broker inventory` (with the same --server) once made, and \
                     `broker checkin` gives them back",
                    remote.server.server(),
                    started.id
                ),
            });
        }
    };
    drop(progress);
    let records = remote.server.hosts_of(ended)?;
    // `--keep-failed-handoff` goes with `--handoff`: the target is the one given.
    let target = a.handoff.as_deref().unwrap_or_default();
    for kept in records
        .iter()
        .filter_map(|r| broker_core::handoff::run::kept_notice(r, target))
    {
        note!("warning: {kept}");
    }
    let listed = remote.server.hosts().await.unwrap_or_else(|e| {
        tracing::warn!(
            "cannot read the server's inventory back to show inventory ids; showing record ids: {}",
            broker_core::error::chain(&e)
        );
        Vec::new()
    });
    let rows = numbered_among(listed, &records);
    emitter.emit("hosts", &records);
    print_hosts(&remote.settings, &remote.registry, &rows, a.output.format)?;
    Ok(0)
}

async fn checkin(remote: &Remote, a: CheckinArgs, emitter: &mut Emitter) -> Result<i32> {
    if a.pending {
        return Err(not_remote("broker checkin --pending", &remote.server));
    }
    let records = selected_from(remote.server.hosts().await?, &a.selection)?;
    if records.is_empty() {
        note!("no hosts to check in");
    }
    let _progress = Progress::start(format!("checking in {} host(s)", records.len()));
    let outcomes = each_host(remote, records, a.sequential, |server, id| async move {
        server.checkin(&id).await
    })
    .await;
    report("checked in", &outcomes, emitter, a.output.format)
}

async fn extend(remote: &Remote, a: ExtendArgs, emitter: &mut Emitter) -> Result<i32> {
    let records = selected_from(remote.server.hosts().await?, &a.selection)?;
    let mut extra = cli_support::extend_arguments(&a.extra, a.provider_labels.as_deref())?;
    if let Some(lease) = &a.lease {
        extra.insert(
            broker_core::lease::fields::LEASE.into(),
            Value::from(lease.as_str()),
        );
    }
    let extra = Arc::new(extra);
    let _progress = Progress::start(format!("extending {} host(s)", records.len()));
    let outcomes = each_host(remote, records, a.sequential, move |server, id| {
        let extra = Arc::clone(&extra);
        async move { server.extend(&id, &extra).await.map(drop) }
    })
    .await;
    report("extended", &outcomes, emitter, a.output.format)
}

/// Does `work` for each record (by its `_broker_id`), one at a time or all at once; the outcomes
/// in the records' order.
async fn each_host<F, Fut>(
    remote: &Remote,
    records: Vec<HostRecord>,
    sequential: bool,
    work: F,
) -> Vec<HostOutcome>
where
    F: Fn(Arc<RemoteBroker>, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut results: Vec<Option<Result<()>>> = Vec::new();
    if sequential {
        for record in &records {
            let id = record.id().as_str().to_owned();
            results.push(Some(work(Arc::clone(&remote.server), id).await));
        }
    } else {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, record) in records.iter().enumerate() {
            let future = work(Arc::clone(&remote.server), record.id().as_str().to_owned());
            tasks.spawn(async move { (i, future.await) });
            results.push(None);
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, result)) = done {
                results[i] = Some(result);
            }
        }
    }
    records
        .into_iter()
        .zip(results)
        .map(|(record, result)| HostOutcome {
            result: result.unwrap_or_else(|| {
                Err(Error::Internal {
                    message: format!("the request for host {} failed", record.display_name()),
                    source: None,
                })
            }),
            record,
            warning: None,
        })
        .collect()
}

async fn inventory(remote: &Remote, a: InventoryArgs, emitter: &mut Emitter) -> Result<i32> {
    if a.sync.is_some() {
        return Err(not_remote("broker inventory --sync", &remote.server));
    }
    let records = remote.server.hosts().await?;
    show_inventory(&remote.settings, &remote.registry, records, &a, emitter)
}

/// `handoff run|retry|status HOST` on the server: the host picked from its inventory as locally,
/// the target checked as locally, the run on the server.
async fn handoff(remote: &Remote, command: HandoffCommand, emitter: &mut Emitter) -> Result<i32> {
    let (a, retry) = match command {
        HandoffCommand::Status(a) => {
            let record = pick_one(remote.server.hosts().await?, &a.host)?;
            let status = remote.server.handoff_status(record.id().as_str()).await?;
            emitter.emit("handoff", &status);
            print_handoff(&status, a.output.format)?;
            return Ok(0);
        }
        HandoffCommand::Run(a) => (a, false),
        HandoffCommand::Retry(a) => (a, true),
    };
    let record = pick_one(remote.server.hosts().await?, &a.host)?;
    let target = broker_core::handoff::run::target_of(&record, a.target.as_deref(), retry)?;
    let _progress = Progress::start(format!(
        "handing {} off to {target} on {}",
        record.display_name(),
        remote.server.server()
    ));
    let shown = remote
        .server
        .handoff(record.id().as_str(), Some(&target), retry)
        .await?;
    emitter.emit("handoff", &shown);
    print_handoff(&shown, a.output.format)?;
    let handed_off =
        HandoffState::of(&HostRecord::from_mapping(shown)) == Some(HandoffState::HandedOff);
    Ok(if handed_off {
        0
    } else {
        Error::host(record.display_name(), String::new()).exit_code()
    })
}
