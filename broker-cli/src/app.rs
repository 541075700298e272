//! Runs one command: parse, call broker-core, print. No broker logic lives here.

use std::path::Path;
use std::process::ExitCode;

use broker_core::cli_support::SettingsFile;
use broker_core::query::{ProviderQuery, provider_summaries};
use broker_core::selection::{HostSelection, filter_records, numbered, numbered_among, pick_one};
use broker_core::settings::EXAMPLE_SETTINGS;
use broker_core::validation::{Finding, validate_settings};
use broker_core::{
    Broker, Cancellation, CheckoutRequest, Error, HostOutcome, HostRecord, Mapping, OutputStream,
    ProviderRegistry, RecoverScope, Result, Settings, Value, args, cli_support, handoff,
};
use clap::Parser;

use crate::cli::{
    CheckinArgs, CheckoutArgs, Cli, Command, ConfigCommand, DuplicateArgs, ExecuteArgs,
    ExecuteFormat, ExtendArgs, Format, HandoffCommand, InventoryArgs, LogLevel, ProviderArgs,
    ProvidersArgs, ReapArgs, RecoverArgs, Selection, SshArgs,
};
use crate::output::{
    Emitter, Progress, inventory_table, note, print_value, table, value_table, write_stderr,
    write_stdout,
};

/// The whole program.
pub fn main() -> ExitCode {
    let argv = crate::cli::split_passthrough(std::env::args().collect());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    if cli.version {
        return exit(print_version());
    }
    let Some(command) = cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
    if let Some(code) = generated_files(&command) {
        return exit(code);
    }
    // An output file that cannot be written fails the command before it does anything.
    let mut emitter = match Emitter::new(cli.output_file.clone()) {
        Ok(emitter) => emitter,
        Err(e) => {
            note!("error: {}", broker_core::error::chain(&e));
            return exit(e.exit_code());
        }
    };
    let (code, message) = match run(command, cli.log_level, cli.server, &mut emitter) {
        Ok(code) => (code, None),
        Err(e) => {
            let message = broker_core::error::chain(&e);
            tracing::debug!("command failed: {message}");
            note!("error: {message}");
            (e.exit_code(), Some(message))
        }
    };
    match emitter.finish(code, message.as_deref()) {
        Ok(()) => exit(code),
        Err(e) => {
            note!("error: {}", broker_core::error::chain(&e));
            exit(if code == 0 { e.exit_code() } else { code })
        }
    }
}

/// `completions` and `manpage`: printed from the command-line definition alone, before settings are
/// read, so they work on any machine.
fn generated_files(command: &Command) -> Option<i32> {
    let result = match command {
        Command::Completions { shell } => write_stdout_bytes(&crate::manual::completions(*shell)),
        Command::Manpage { dir: None } => {
            crate::manual::manpage().and_then(|page| write_stdout_bytes(&page))
        }
        Command::Manpage { dir: Some(dir) } => crate::manual::write_manpages(dir).map(|pages| {
            eprintln!("wrote {} man pages into {}", pages.len(), dir.display());
        }),
        _ => return None,
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", broker_core::error::chain(&e));
            e.exit_code()
        }
    })
}

fn write_stdout_bytes(bytes: &[u8]) -> Result<()> {
    write_stdout(&String::from_utf8_lossy(bytes))
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn print_version() -> i32 {
    let directory = match broker_core::settings::default_directory() {
        Ok(directory) => directory,
        Err(e) => {
            note!("error: {}", broker_core::error::chain(&e));
            return e.exit_code();
        }
    };
    let log = Settings::load_from(&directory, std::iter::empty())
        .map(|s| s.log_path().display().to_string())
        .unwrap_or_else(|e| format!("(settings unreadable: {})", broker_core::error::chain(&e)));
    let text = format!(
        "broker {}\nBroker Directory  {}\nSettings File     {}\nInventory File    {}\nLog File          {}\n",
        env!("CARGO_PKG_VERSION"),
        directory.display(),
        directory
            .join(broker_core::settings::SETTINGS_FILE)
            .display(),
        directory
            .join(broker_core::settings::INVENTORY_FILE)
            .display(),
        log,
    );
    match write_stdout(&text) {
        Ok(()) => 0,
        Err(e) => e.exit_code(),
    }
}

fn run(
    command: Command,
    log_level: Option<LogLevel>,
    server: Option<String>,
    emitter: &mut Emitter,
) -> Result<i32> {
    let settings = Settings::load()?;
    let console = match log_level {
        Some(LogLevel::Error) => "error",
        Some(LogLevel::Warning) => "warning",
        Some(LogLevel::Info) => "info",
        Some(LogLevel::Debug) => "debug",
        Some(LogLevel::Trace) => "trace",
        Some(LogLevel::Silent) => "silent",
        None => "",
    };
    let console = if console.is_empty() {
        settings.console_level()
    } else {
        console.to_owned()
    };
    crate::logging::init(
        crate::logging::level(&console),
        crate::logging::level(&settings.file_level()),
        &settings.log_path(),
    );
    if let Some(code) = background_if_asked(&command, &settings)? {
        return Ok(code);
    }
    // A checkout on a server runs there: no local child to supervise, nothing local to give back.
    let server = crate::remote::server_of(server, &settings)
        .filter(|_| crate::remote::goes_remote(&command));
    if server.is_none()
        && let Some(code) = crate::supervise::checkout(&command, &settings)
    {
        // The checkout ran (or runs on) in a child process, which writes the `--output-file`.
        emitter.hand_over();
        return Ok(code);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io_without_path("starting the async runtime", e))?;
    let result = runtime.block_on(async {
        match &server {
            Some(url) => crate::remote::dispatch(url, command, settings, emitter).await,
            None => dispatch(command, settings, emitter).await,
        }
    });
    // A read of the terminal may still be blocked in the background (after `broker ssh HOST`): don't
    // wait for it.
    runtime.shutdown_background();
    result
}

async fn dispatch(command: Command, settings: Settings, emitter: &mut Emitter) -> Result<i32> {
    match command {
        Command::Config(cmd) => config(cmd, &settings),
        Command::Db(cmd) => crate::store::db(cmd, &settings),
        #[cfg(feature = "serve")]
        Command::Serve(args) => crate::serve::serve(args, settings, emitter).await,
        command => {
            let broker = crate::store::broker(settings)?;
            broker.set_origin(format!(
                "broker_cli:{}",
                broker_core::record::current_user()
            ));
            broker.set_interaction(std::sync::Arc::new(crate::terminal::Terminal));
            match command {
                Command::Checkout(a) => checkout(&broker, a, emitter).await,
                Command::Checkin(a) => checkin(&broker, a, emitter).await,
                Command::Inventory(a) => inventory(&broker, a, emitter).await,
                Command::Duplicate(a) => duplicate(&broker, a, emitter).await,
                Command::Extend(a) => extend(&broker, a, emitter).await,
                Command::Execute(a) => execute(&broker, a, emitter).await,
                Command::Providers(a) => providers(&broker, a, emitter).await,
                Command::Recover(a) => recover(&broker, a, emitter).await,
                Command::Reap(a) => reap(&broker, a, emitter).await,
                Command::Ssh(a) => ssh(&broker, a, emitter).await,
                Command::Target(cmd) => crate::targets::target(&broker, cmd, emitter),
                Command::Handoff(c) => handoff(&broker, c, emitter).await,
                Command::Scenarios(c) => crate::scenarios::scenarios(&broker, c, emitter).await,
                Command::Config(_)
                | Command::Db(_)
                | Command::Completions { .. }
                | Command::Manpage { .. } => {
                    unreachable!("handled above")
                }
                #[cfg(feature = "serve")]
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    }
}

/// With `-b`, starts this same command again detached, logging to a file, and returns at once.
fn background_if_asked(command: &Command, settings: &Settings) -> Result<Option<i32>> {
    let asked = match command {
        Command::Checkout(a) => a.background,
        Command::Checkin(a) => a.background,
        Command::Duplicate(a) => a.background,
        Command::Extend(a) => a.background,
        Command::Execute(a) => a.background,
        Command::Scenarios(crate::cli::ScenariosCommand::Execute(a)) => a.background,
        _ => false,
    };
    if !asked {
        return Ok(None);
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding the broker executable", "/proc/self/exe", e))?;
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "-b" && a != "--background")
        .collect();
    let log_path = settings.log_path();
    let (out_path, out) = background_output(&log_path, &["out"])?.remove(0);
    let err = out
        .try_clone()
        .map_err(|e| Error::io("creating the background output file", &out_path, e))?;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(exe)
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("starting broker in the background", "broker", e))?;
    tracing::info!(pid = child.id(), "running in the background");
    note!(
        "broker runs in the background as pid {}; output: {}; log: {}",
        child.id(),
        out_path.display(),
        log_path.display()
    );
    Ok(Some(0))
}

/// New files for a background run's output next to the log, one per extension and named alike:
/// `background-<epoch>.<ext>`, or `background-<epoch>-<n>.<ext>` when a run started in the same second
/// has that name. Never existing files: two runs must not write into (or truncate) each other's output.
pub(crate) fn background_output(
    log_path: &Path,
    extensions: &[&str],
) -> Result<Vec<(std::path::PathBuf, std::fs::File)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = log_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the log directory", dir, e))?;
    let epoch = broker_core::time::now_epoch();
    for n in 0..10_000u32 {
        let stem = match n {
            0 => format!("background-{epoch}"),
            n => format!("background-{epoch}-{n}"),
        };
        let mut files = Vec::with_capacity(extensions.len());
        for extension in extensions {
            let path = dir.join(format!("{stem}.{extension}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => files.push((path, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => break,
                Err(e) => {
                    for (made, _) in &files {
                        let _ = std::fs::remove_file(made);
                    }
                    return Err(Error::io("creating the background output file", &path, e));
                }
            }
        }
        if files.len() == extensions.len() {
            return Ok(files);
        }
        for (made, _) in &files {
            let _ = std::fs::remove_file(made);
        }
    }
    Err(Error::usage("no free name for the background output file"))
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP: each stops a command the same way.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening; from then on these signals no longer end the process by themselves.
    pub(crate) fn listen() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen =
            |kind| signal(kind).map_err(|e| Error::io_without_path("listening for signals", e));
        Ok(StopSignals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    /// Waits for the next stop signal and names it.
    pub(crate) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// Runs `work` unless a stop signal (Ctrl-C, SIGTERM, SIGHUP) comes first.
pub(crate) async fn interruptible<T>(
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let mut signals = StopSignals::listen()?;
    tokio::select! {
        out = work => out,
        signal = signals.next() => Err(Error::Interrupted {
            message: format!("{signal}: stopped waiting; hosts being checked in stay in the inventory for `broker checkin`"),
        }),
    }
}

/// Runs a checkout that `stop` can stop. The first stop signal (Ctrl-C, SIGTERM, SIGHUP) asks it to
/// stop: it waits for provider calls under way (`cancel_timeout`) and checks in what it made
/// (`checkin_timeout`). A second signal, or that time passing, stops waiting and says what is left and
/// how to finish. (On a terminal the checkout runs under [`crate::supervise`], which asks what a Ctrl-C
/// means and signals this process only when the answer is to stop.)
async fn checkout_until_stopped<T>(
    broker: &Broker,
    mut signals: StopSignals,
    stop: &Cancellation,
    progress: Progress,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let mut work = Box::pin(work);
    let signal = tokio::select! {
        out = &mut work => return out,
        signal = signals.next() => signal,
    };
    drop(progress);
    let bound = broker.settings().cancel_timeout()? + broker.settings().checkin_timeout()?;
    eprintln!(
        "{signal}: stopping the checkout: waiting up to {}s for provider calls under way, then checking in what it made; \
         press Ctrl-C again to stop waiting",
        bound.as_secs()
    );
    stop.cancel();
    let deadline = tokio::time::Instant::now() + bound;
    let why = loop {
        tokio::select! {
            out = &mut work => return out,
            // Only a second Ctrl-C stops waiting, as the message says. A SIGTERM or SIGHUP now is
            // the same request again (a shell closing sends its stopped jobs SIGHUP, then SIGTERM; a
            // supervisor passes on what it gets): the clean-up asked for is already under way.
            again = signals.next() => match again {
                "Ctrl-C" => break format!("{again} again"),
                other => {
                    note!("{other}: the checkout is already stopping; press Ctrl-C to stop waiting");
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                break format!("clean-up unfinished after {}s", bound.as_secs())
            }
        }
    };
    // The user stopped waiting: the checkout is dropped as any caller's `timeout` drops one, except
    // that what it had not finished stays recorded (for `broker recover`) rather than being given
    // back in the background of a process about to exit.
    stop.stop_waiting();
    drop(work);
    Err(broker.stopped_waiting(&why))
}

fn request_args(
    broker: &Broker,
    nick: Option<String>,
    provider: &ProviderArgs,
) -> Result<CheckoutRequest> {
    let declared: Vec<&str> = broker.registry().declared_keys().collect();
    let given = cli_support::normalize_declared(
        cli_support::parse_passthrough(&provider.extra)?,
        &declared,
    );
    let mut request = CheckoutRequest::new().args(given);
    if let Some(nick) = nick {
        request = request.nick(nick);
    }
    if let Some(path) = &provider.args_file {
        request = request.args_file(cli_support::load_args_file(path)?);
    }
    if let Some(labels) = &provider.provider_labels {
        request = request.provider_labels(args::parse_labels(labels));
    }
    Ok(request)
}

async fn checkout(broker: &Broker, a: CheckoutArgs, emitter: &mut Emitter) -> Result<i32> {
    // Listening before anything is made: a stop signal from now on gives back what was made.
    let signals = StopSignals::listen()?;
    let stop = Cancellation::new();
    // The CLI hands hosts out: they are their user's, not this process's.
    let mut request = request_args(broker, a.nick, &a.provider)?
        .keep_partial(a.keep_partial)
        .held_by_user(true)
        .cancel_with(&stop);
    if let Some(count) = a.count {
        request = request.count(count);
    }
    if let Some(lease) = &a.lease {
        request = request.lease(broker_core::lease::Lease::parse(lease)?);
    }
    if let Some(target) = &a.handoff {
        request = request.handoff(target);
    }
    request = request.keep_failed_handoff(a.keep_failed_handoff);
    let progress = Progress::start(format!("checking out {} host(s)", request.host_count()));
    let guards =
        checkout_until_stopped(broker, signals, &stop, progress, broker.checkout(request)).await?;
    // The CLI hands hosts out: they stay checked out until `broker checkin`.
    let records: Vec<HostRecord> = guards
        .into_iter()
        .map(|g| g.keep().record().clone())
        .collect();
    for kept in records.iter().filter_map(|r| broker.kept_handoff_notice(r)) {
        note!("warning: {kept}");
    }
    hand_out(broker, records, a.output.format, emitter).await
}

/// Prints the hosts a checkout made, which stay checked out. When they cannot be printed
/// (`> /dev/full`), says on stderr which they are and how to give them back; when stderr cannot take
/// that either, gives them back: no host stays checked out that the user was not told about.
async fn hand_out(
    broker: &Broker,
    records: Vec<HostRecord>,
    format: Format,
    emitter: &mut Emitter,
) -> Result<i32> {
    let rows = placed(broker, &records);
    let Err(e) = print_hosts(broker.settings(), broker.registry(), &rows, format) else {
        emitter.emit("hosts", &records);
        return Ok(0);
    };
    let hosts: Vec<String> = rows
        .iter()
        .map(|(id, r)| format!("{id} ({})", r.display_name()))
        .collect();
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    if write_stderr(&format!(
        "the hosts could not be printed and stay checked out: {}; give them back with `broker checkin {}`",
        hosts.join(", "),
        ids.join(" ")
    )) {
        emitter.emit("hosts", &records);
        return Err(e);
    }
    for outcome in broker.checkin(records, false).await {
        if let Err(failed) = outcome.result {
            tracing::error!(
                host = %outcome.record.display_name(),
                "giving back a host that could not be reported failed: {}",
                broker_core::error::chain(&failed)
            );
        }
    }
    Err(e)
}

/// Prints hosts, each with the id `broker checkin` takes for it.
pub(crate) fn print_hosts(
    settings: &Settings,
    registry: &ProviderRegistry,
    rows: &[(String, HostRecord)],
    format: Format,
) -> Result<()> {
    match format {
        Format::Table => {
            let keys: Vec<&str> = registry.all_action_keys().collect();
            write_stdout(&inventory_table(rows, &settings.inventory_fields(), &keys))
        }
        other => print_value(&rows.iter().map(|(_, r)| r).collect::<Vec<_>>(), other),
    }
}

/// Hosts just checked out, with the ids `broker checkin` takes for them
/// ([`broker_core::selection::numbered_among`]).
fn placed(broker: &Broker, made: &[HostRecord]) -> Vec<(String, HostRecord)> {
    let listed = match broker.inventory().list() {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(
                "cannot read the inventory back to show inventory ids; showing record ids: {}",
                broker_core::error::chain(&e)
            );
            Vec::new()
        }
    };
    numbered_among(listed, made)
}

fn selected(broker: &Broker, s: &Selection) -> Result<Vec<HostRecord>> {
    selected_from(broker.inventory().list()?, s)
}

/// The hosts of `records` that `s` selects; those it names that are not there are warned of.
pub(crate) fn selected_from(records: Vec<HostRecord>, s: &Selection) -> Result<Vec<HostRecord>> {
    let selection = HostSelection::new(s.hosts.clone(), s.all, s.filter.clone())?;
    let picked = selection.pick(records)?;
    if !picked.missing.is_empty() {
        tracing::warn!(
            "these hosts were not found in the inventory: {}",
            picked.missing.join(", ")
        );
    }
    Ok(picked.records)
}

/// Prints per-host outcomes — the hosts done on stdout (`VERB NAME` lines, or a JSON/YAML list of
/// names), failures on stderr — and returns the exit code of the first failure (0 when none failed).
pub(crate) fn report(
    verb: &str,
    outcomes: &[HostOutcome],
    emitter: &mut Emitter,
    format: Format,
) -> Result<i32> {
    let mut code = 0;
    let mut done = Vec::new();
    for o in outcomes {
        match &o.result {
            Ok(()) => done.push(o.record.display_name()),
            Err(e) => {
                note!("error: {}", broker_core::error::chain(e));
                if code == 0 {
                    code = e.exit_code();
                }
            }
        }
    }
    emitter.emit(verb, &done);
    match format {
        Format::Table => {
            let text: String = done.iter().map(|name| format!("{verb} {name}\n")).collect();
            write_stdout(&text)?;
        }
        other => print_value(&done, other)?,
    }
    Ok(code)
}

async fn checkin(broker: &Broker, a: CheckinArgs, emitter: &mut Emitter) -> Result<i32> {
    let mut outcomes = Vec::new();
    if a.pending {
        outcomes.extend(interruptible(broker.recover(RecoverScope::Unfinished)).await?);
    }
    if !(a.pending && a.selection.hosts.is_empty() && !a.selection.all) {
        let records = selected(broker, &a.selection)?;
        if records.is_empty() {
            note!("no hosts to check in");
        }
        let _progress = Progress::start(format!("checking in {} host(s)", records.len()));
        outcomes.extend(
            interruptible(async { Ok(broker.checkin(records, a.sequential).await) }).await?,
        );
    }
    report("checked in", &outcomes, emitter, a.output.format)
}

async fn inventory(broker: &Broker, a: InventoryArgs, emitter: &mut Emitter) -> Result<i32> {
    if let Some(path) = &a.export {
        let n = broker_core::inventory::transfer::export(broker.inventory(), path)?;
        note!(
            "exported {n} records of {} to {}",
            broker.inventory().location(),
            path.display()
        );
        return Ok(0);
    }
    if let Some(path) = &a.import {
        let n = broker_core::inventory::transfer::import(broker.inventory(), path)?;
        note!(
            "imported {n} records from {} into {}",
            path.display(),
            broker.inventory().location()
        );
    }
    if let Some(spec) = &a.sync {
        let _progress = Progress::start(format!("syncing {spec}"));
        let r = if a.force {
            interruptible(broker.sync_inventory_forced(spec)).await?
        } else {
            interruptible(broker.sync_inventory(spec)).await?
        };
        note!(
            "synced {spec}: {} added, {} updated, {} removed",
            r.added,
            r.updated,
            r.removed
        );
        if !r.removed_hosts.is_empty() {
            note!(
                "removed (the provider no longer has them): {}",
                r.removed_hosts.join(", ")
            );
        }
        if !r.added_hosts.is_empty() {
            note!(
                "hosts the provider holds that no record knew (now in the inventory; `broker checkin` them if unwanted): {}",
                r.added_hosts.join(", ")
            );
        }
    }
    show_inventory(
        broker.settings(),
        broker.registry(),
        broker.inventory().list()?,
        &a,
        emitter,
    )
}

/// Prints the inventory's `records` as `broker inventory` shows them: filtered, as a table, a
/// list, details, JSON or YAML.
pub(crate) fn show_inventory(
    settings: &Settings,
    registry: &ProviderRegistry,
    records: Vec<HostRecord>,
    a: &InventoryArgs,
    emitter: &mut Emitter,
) -> Result<i32> {
    let records = filter_records(records, a.filter.as_deref())?;
    emitter.emit("inventory", &records);
    if a.details {
        let details: Mapping = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    Value::from(i as u64),
                    broker_core::cli_support::humanize_times(&r.to_value()),
                )
            })
            .collect();
        return print_value(
            &details,
            if a.output.format == Format::Json {
                Format::Json
            } else {
                Format::Yaml
            },
        )
        .map(|()| 0);
    }
    match a.output.format {
        Format::Table if records.is_empty() => {
            note!("No hosts found in inventory.");
        }
        Format::Table if a.list => {
            let spec = broker_core::cli_support::FieldSpec::parse(&settings.inventory_list_vars());
            let keys: Vec<&str> = registry.all_action_keys().collect();
            let mut text = String::new();
            for r in &records {
                text.push_str(&spec.render(&r.masked(), &keys));
                text.push('\n');
            }
            write_stdout(&text)?;
        }
        format => print_hosts(settings, registry, &numbered(records), format)?,
    }
    Ok(0)
}

async fn duplicate(broker: &Broker, a: DuplicateArgs, emitter: &mut Emitter) -> Result<i32> {
    let records = selected(broker, &a.selection)?;
    let signals = StopSignals::listen()?;
    let stop = Cancellation::new();
    let progress = Progress::start(format!("duplicating {} host(s)", records.len()));
    let work = broker.duplicate_cancellable(&records, a.count.max(1), &stop);
    let made = checkout_until_stopped(broker, signals, &stop, progress, work).await?;
    hand_out(broker, made, a.output.format, emitter).await
}

async fn extend(broker: &Broker, a: ExtendArgs, emitter: &mut Emitter) -> Result<i32> {
    let records = selected(broker, &a.selection)?;
    let mut extra = cli_support::extend_arguments(&a.extra, a.provider_labels.as_deref())?;
    if let Some(lease) = &a.lease {
        extra.insert(
            broker_core::lease::fields::LEASE.into(),
            Value::from(lease.as_str()),
        );
    }
    let _progress = Progress::start(format!("extending {} host(s)", records.len()));
    let outcomes = if a.sequential {
        let mut all = Vec::new();
        for r in records {
            all.extend(
                interruptible(async { Ok(broker.extend(vec![r], extra.clone()).await) }).await?,
            );
        }
        all
    } else {
        interruptible(async { Ok(broker.extend(records, extra).await) }).await?
    };
    report("extended", &outcomes, emitter, a.output.format)
}

async fn execute(broker: &Broker, a: ExecuteArgs, emitter: &mut Emitter) -> Result<i32> {
    let mut request = request_args(broker, a.nick, &a.provider)?;
    if let Some(artifacts) = a.artifacts {
        let value = match artifacts {
            crate::cli::Artifacts::Merge => "merge",
            crate::cli::Artifacts::Last => "last",
        };
        request = request.arg("artifacts", value);
    }
    let _progress = Progress::start("executing".into());
    let result = interruptible(broker.execute(request)).await?;
    drop(_progress);
    emitter.emit("output", &result);
    match a.output {
        ExecuteFormat::Log => {
            tracing::info!(
                "result:\n{}",
                serde_yaml::to_string(&broker_core::redact::mask(&result)).unwrap_or_default()
            );
            print_value(&result, Format::Yaml)?;
        }
        ExecuteFormat::Raw => match &result {
            Value::String(s) => write_stdout(&format!("{s}\n"))?,
            other => print_value(other, Format::Yaml)?,
        },
        ExecuteFormat::Yaml => print_value(&result, Format::Yaml)?,
        ExecuteFormat::Json => print_value(&result, Format::Json)?,
    }
    Ok(0)
}

async fn providers(broker: &Broker, a: ProvidersArgs, emitter: &mut Emitter) -> Result<i32> {
    let Some(name) = a.provider else {
        return list_providers(broker, a.output, emitter);
    };
    let kind = *broker.registry().require(&name)?;
    let query = ProviderQuery::parse(&kind, &a.extra)?
        .results_filter(a.results_filter)
        .results_limit(a.results_limit);
    let progress = Progress::start(format!("asking {}", kind.name()));
    let mut result =
        interruptible(broker.provider_help(query.provider(), query.instance(), &query.arguments()))
            .await?;
    drop(progress);
    query.trim(&mut result)?;
    emitter.emit("output", &result);
    match a.output {
        Some(Format::Table) => write_stdout(&value_table(&result))?,
        Some(Format::Json) => print_value(&result, Format::Json)?,
        Some(Format::Yaml) | None => print_value(&result, Format::Yaml)?,
    }
    Ok(0)
}

/// `broker providers` without a name: the providers compiled in and their configured instances.
fn list_providers(broker: &Broker, format: Option<Format>, emitter: &mut Emitter) -> Result<i32> {
    let listing = provider_summaries(broker.registry(), broker.settings());
    if let Some(format @ (Format::Json | Format::Yaml)) = format {
        emitter.emit("output", &listing);
        print_value(&listing, format)?;
        return Ok(0);
    }
    let rows = listing
        .iter()
        .map(|p| {
            vec![
                p.name.to_owned(),
                p.actions.join(", "),
                if p.instances.is_empty() {
                    "-".into()
                } else {
                    p.instances.join(", ")
                },
                p.about.to_owned(),
            ]
        })
        .collect();
    let headers = ["Provider", "Actions", "Instances", "About"]
        .map(str::to_owned)
        .to_vec();
    write_stdout(&table(headers, rows))?;
    Ok(0)
}

async fn recover(broker: &Broker, a: RecoverArgs, emitter: &mut Emitter) -> Result<i32> {
    let scope = if a.all {
        RecoverScope::Unfinished
    } else {
        RecoverScope::Orphaned
    };
    let outcomes = interruptible(broker.recover(scope)).await?;
    if outcomes.is_empty() {
        note!("nothing to recover");
    }
    let code = report("recovered", &outcomes, emitter, a.output.format)?;
    note_abandoned(broker).await;
    Ok(code)
}

/// Says which hosts `recover` leaves to `reap`: finished checkouts whose holder is gone (a test run
/// or scenario killed with its hosts out), which `broker reap --abandoned` checks in.
async fn note_abandoned(broker: &Broker) {
    let held = match broker
        .reap(broker_core::lease::ReapScope::owner_gone(), true)
        .await
    {
        Ok(held) => held,
        Err(e) => {
            tracing::debug!("looking for hosts of gone processes failed: {e}");
            return;
        }
    };
    if !held.is_empty() {
        note!(
            "{} checked-out host(s) held by processes that are gone (not in the middle of a checkout \
             or check-in, so not for recover); `broker reap --abandoned` checks them in",
            held.len()
        );
    }
}

async fn reap(broker: &Broker, a: ReapArgs, emitter: &mut Emitter) -> Result<i32> {
    use broker_core::lease::ReapScope;
    let reaped = match (a.watch, &a.orphans) {
        (Some(pid), _) => interruptible(broker.watch(pid)).await?,
        (None, Some(spec)) => {
            let grace = broker_core::time::parse_duration(&a.grace)?;
            interruptible(broker.reap_orphans(spec, grace, a.dry_run)).await?
        }
        (None, None) => {
            let scope = if a.expired {
                ReapScope::expired()
            } else if a.abandoned {
                ReapScope::owner_gone()
            } else {
                ReapScope::default()
            };
            interruptible(broker.reap(scope, a.dry_run)).await?
        }
    };
    if reaped.is_empty() {
        note!("nothing to reap");
    }
    let mut code = 0;
    let rows: Vec<ReapRow> = reaped
        .iter()
        .map(|r| {
            let result = match &r.result {
                None if r.reason.is_skip() => "skipped".to_owned(),
                None => "would check in".to_owned(),
                Some(Ok(())) => "checked in".to_owned(),
                Some(Err(e)) => {
                    note!("error: {}", broker_core::error::chain(e));
                    if code == 0 {
                        code = e.exit_code();
                    }
                    format!("error: {}", broker_core::error::chain(e))
                }
            };
            ReapRow {
                host: r.record.display_name(),
                id: r.record.id().to_string(),
                reason: r.reason.kind(),
                detail: r.reason.to_string(),
                result,
            }
        })
        .collect();
    emitter.emit("reaped", &rows);
    match a.output.format {
        Format::Table => {
            // Failures are on stderr already.
            let text: String = rows
                .iter()
                .filter(|r| !r.result.starts_with("error: "))
                .map(|r| format!("{} {}: {}\n", r.result, r.host, r.detail))
                .collect();
            write_stdout(&text)?;
        }
        other => print_value(&rows, other)?,
    }
    Ok(code)
}

/// One host of `broker reap`'s output.
#[derive(serde::Serialize)]
struct ReapRow {
    host: String,
    id: String,
    reason: &'static str,
    detail: String,
    result: String,
}

async fn ssh(broker: &Broker, a: SshArgs, emitter: &mut Emitter) -> Result<i32> {
    let record = pick_one(broker.inventory().list()?, &a.host)?;
    let host = broker.attach(record)?;
    let command = if !a.command.is_empty() {
        a.command.join(" ")
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return interactive_shell(&host).await;
    } else {
        // No terminal to give a shell to (`echo cmd | broker ssh HOST`): the piped text is the
        // script, run as one command.
        script_from_stdin().await?
    };
    let timeout = a
        .timeout
        .as_deref()
        .map(broker_core::time::parse_duration)
        .transpose()?;
    // Output goes out as the command produces it.
    let sink = |stream: OutputStream, bytes: &[u8]| {
        use std::io::Write;
        let _ignored = match stream {
            OutputStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            OutputStream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    };
    let out = interruptible(host.execute_streaming(&command, timeout, &sink)).await?;
    emitter.emit("output", &out);
    Ok(out.status.clamp(0, 255))
}

/// `broker handoff run|retry|status HOST [--target T]`: runs print the run's report, status the
/// record's handoff fields; a host not handed off exits 10, as a failed host operation does.
async fn handoff(broker: &Broker, command: HandoffCommand, emitter: &mut Emitter) -> Result<i32> {
    let (a, retry) = match command {
        HandoffCommand::Status(a) => {
            let record = pick_one(broker.inventory().list()?, &a.host)?;
            let status = handoff::run::status_of(&record);
            emitter.emit("handoff", &status);
            print_handoff(&status, a.output.format)?;
            return Ok(0);
        }
        HandoffCommand::Run(a) => (a, false),
        HandoffCommand::Retry(a) => (a, true),
    };
    let record = pick_one(broker.inventory().list()?, &a.host)?;
    let target = handoff::run::target_of(&record, a.target.as_deref(), retry)?;
    let host = broker.attach(record)?;
    let _progress = Progress::start(format!("handing {} off to {target}", host.display_name()));
    let report = handoff_until_stopped(broker, &host, &target).await?;
    let shown = report.to_mapping();
    emitter.emit("handoff", &shown);
    print_handoff(&shown, a.output.format)?;
    Ok(report.exit_code())
}

/// Runs a handoff that the first stop signal (Ctrl-C, SIGTERM, SIGHUP) stops: what the run started
/// on the host is stopped and its files removed, the record says `handoff_failed` (interrupted),
/// and the command ends interrupted. A second Ctrl-C stops waiting for that.
async fn handoff_until_stopped(
    broker: &Broker,
    host: &broker_core::Host,
    target: &str,
) -> Result<handoff::RunReport> {
    let mut signals = StopSignals::listen()?;
    let stop = Cancellation::new();
    let mut work = Box::pin(broker.handoff_cancellable(host, target, &stop));
    let signal = tokio::select! {
        out = &mut work => return out,
        signal = signals.next() => signal,
    };
    let name = host.display_name();
    note!(
        "{signal}: stopping the handoff of {name}: what it started on the host is stopped and its \
         files removed; press Ctrl-C again to stop waiting"
    );
    stop.cancel();
    loop {
        tokio::select! {
            out = &mut work => {
                out?;
                break;
            }
            again = signals.next() => if again == "Ctrl-C" {
                return Err(Error::Interrupted {
                    message: format!(
                        "{again} again: stopped waiting; what the handoff of {name} started may \
                         still run: `broker recover` stops it"
                    ),
                });
            },
        }
    }
    Err(Error::Interrupted {
        message: format!(
            "{signal}: the handoff of {name} was stopped and is recorded handoff_failed; \
             `broker handoff retry {name}` runs it again"
        ),
    })
}

pub(crate) fn print_handoff(fields: &serde_yaml::Mapping, format: Format) -> Result<()> {
    match format {
        Format::Table => write_stdout(&value_table(&serde_yaml::Value::Mapping(fields.clone()))),
        other => print_value(fields, other),
    }
}

/// The commands piped into `broker ssh HOST`.
async fn script_from_stdin() -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut script = String::new();
    tokio::io::stdin()
        .read_to_string(&mut script)
        .await
        .map_err(|e| {
            Error::io_without_path("reading the commands to run from standard input", e)
        })?;
    if script.trim().is_empty() {
        return Err(Error::usage(
            "no command to run: give one after `--` (`broker ssh HOST -- uname -a`), pipe commands \
             in (`echo uname -a | broker ssh HOST`), or run `broker ssh HOST` from a terminal for a shell",
        ));
    }
    Ok(script)
}

/// `broker ssh HOST` with no command: a shell with a PTY, the local terminal in raw mode meanwhile.
async fn interactive_shell(host: &broker_core::Host) -> Result<i32> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let size = terminal_size::terminal_size()
        .map(|(w, h)| (u32::from(w.0), u32::from(h.0)))
        .unwrap_or((80, 24));
    // Raw mode only when stdin is a terminal; restored however the shell ends.
    let saved = if stdin.is_terminal() {
        let saved = rustix::termios::tcgetattr(&stdin).map_err(|e| {
            Error::io_without_path("reading the terminal mode of standard input", e.into())
        })?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).map_err(
            |e| Error::io_without_path("setting the terminal mode of standard input", e.into()),
        )?;
        Some(saved)
    } else {
        None
    };
    let status = host
        .interactive(
            Box::new(tokio::io::stdin()),
            Box::new(tokio::io::stdout()),
            size,
        )
        .await;
    if let Some(saved) = saved {
        let _restored =
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
    }
    Ok(status?.clamp(0, 255))
}

fn config(cmd: ConfigCommand, settings: &Settings) -> Result<i32> {
    let file = SettingsFile::in_directory(settings.directory());
    match cmd {
        ConfigCommand::View { chunk, .. } => {
            if settings.file().is_none() {
                eprintln!(
                    "no settings file at {}; broker runs on built-in defaults (`broker config init` writes one)",
                    file.path().display()
                );
            }
            print_value(
                &settings.masked_at(chunk.as_deref().unwrap_or(""))?,
                Format::Yaml,
            )?;
        }
        ConfigCommand::Set { chunk, value } => {
            let (value, read_from) = cli_support::setting_value(&value)?;
            let backup = file.set(&chunk, value)?;
            eprintln!(
                "set `{chunk}`{} in {}{}",
                read_from
                    .map(|f| format!(" to the content of {}", f.display()))
                    .unwrap_or_default(),
                file.path().display(),
                backup
                    .map(|b| format!(" (previous file kept as {})", b.display()))
                    .unwrap_or_default()
            );
        }
        ConfigCommand::Init { from, force } => {
            if file.path().exists() && !force {
                return Err(Error::user(format!(
                    "{} exists; add --force to replace it (it is backed up first)",
                    file.path().display()
                )));
            }
            let text = match &from {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| Error::io("reading --from file", path, e))?,
                None => EXAMPLE_SETTINGS.to_owned(),
            };
            file.init(&text)?;
            eprintln!("wrote {}", file.path().display());
        }
        ConfigCommand::Validate { chunk } => return validate(settings, &chunk),
        ConfigCommand::Nicks => {
            let text: String = settings.nicks().into_iter().map(|n| n + "\n").collect();
            write_stdout(&text)?;
        }
        ConfigCommand::Nick { name, .. } => {
            print_value(&settings.nick(&name)?, Format::Yaml)?;
        }
        ConfigCommand::Edit { chunk } => edit(&file, chunk.as_deref())?,
        ConfigCommand::Restore => {
            file.restore()?;
            eprintln!("restored {} from its backup", file.path().display());
        }
    }
    Ok(0)
}

fn validate(settings: &Settings, chunk: &str) -> Result<i32> {
    let report = validate_settings(settings, &broker_providers::registry(), chunk)?;
    let file = report.source();
    for finding in report.findings() {
        match finding {
            Finding::Problem(problem) => eprintln!("{file}: {problem}"),
            Finding::Builds { label } => eprintln!("{label}: ok"),
            Finding::DoesNotBuild { label, error } => {
                eprintln!("{label}: {}", broker_core::error::chain(error));
            }
        }
    }
    let code = report.exit_code();
    if code == 0 {
        eprintln!("settings are valid ({file})");
    }
    Ok(code)
}

fn edit(file: &SettingsFile, chunk: Option<&str>) -> Result<()> {
    use std::io::IsTerminal;
    if std::env::var_os("BROKER_NON_INTERACTIVE").is_some() || !std::io::stdin().is_terminal() {
        return Err(Error::user(
            "`config edit` needs a terminal; did you mean `broker config set`?",
        ));
    }
    let current = file.read_at(chunk.unwrap_or(""))?;
    let tmp = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| Error::io("creating a temporary file", std::env::temp_dir(), e))?;
    std::fs::write(
        tmp.path(),
        serde_yaml::to_string(&current).unwrap_or_default(),
    )
    .map_err(|e| Error::io("writing a temporary file", tmp.path(), e))?;
    let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new(&editor)
        .arg(tmp.path())
        .status()
        .map_err(|e| Error::io("starting $EDITOR", &editor, e))?;
    if !status.success() {
        return Err(Error::user(format!(
            "{editor} exited with {status}; nothing changed"
        )));
    }
    let text = std::fs::read_to_string(tmp.path())
        .map_err(|e| Error::io("reading the edited file", tmp.path(), e))?;
    let value = cli_support::parse_data_text(tmp.path(), &text)?;
    file.set(chunk.unwrap_or(""), value)?;
    Ok(())
}
