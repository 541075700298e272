//! `broker scenarios`: parses, calls `broker_core::scenario`, prints (progress from the run's step
//! events on stderr, `output` steps where they ask).

use std::io::Write;

use broker_core::scenario::{Scenario, StepEvent, catalog};
use broker_core::{Broker, Error, Result, Value};

use crate::cli::{Format, ScenarioExecuteArgs, ScenariosCommand};
use crate::output::{Emitter, note, print_value, table, write_stdout};

/// Runs one `broker scenarios` subcommand.
pub(crate) async fn scenarios(
    broker: &Broker,
    command: ScenariosCommand,
    emitter: &mut Emitter,
) -> Result<i32> {
    let settings = broker.settings();
    match command {
        ScenariosCommand::List { filter, tag } => {
            let names = catalog::list_filtered(settings, filter.as_deref(), tag.as_deref())?;
            emitter.emit("scenarios", &names);
            if names.is_empty() {
                note!(
                    "no scenarios found in {}",
                    catalog::directory(settings).display()
                );
                return Ok(0);
            }
            let rows = names
                .iter()
                .map(|n| match n.rsplit_once('/') {
                    Some((dir, name)) => vec![name.to_owned(), format!("scenarios/{dir}")],
                    None => vec![n.clone(), "scenarios".into()],
                })
                .collect();
            write_stdout(&table(vec!["Name".into(), "Path".into()], rows))?;
            Ok(0)
        }
        ScenariosCommand::Execute(args) => execute(broker, args, emitter).await,
        ScenariosCommand::Info { scenario, .. } => {
            let info = Scenario::load(catalog::find(settings, &scenario)?)?.info();
            emitter.emit("info", &info);
            print_value(&info, Format::Yaml)?;
            Ok(0)
        }
        ScenariosCommand::Validate { scenario } => {
            let path = catalog::find(settings, &scenario)?;
            match catalog::validate(&path)? {
                None => {
                    write_stdout(&format!("scenario `{scenario}` is valid\n"))?;
                    Ok(0)
                }
                Some(problem) => Err(Error::Scenario {
                    scenario,
                    step: None,
                    message: format!("invalid: {problem}"),
                    source: None,
                }),
            }
        }
        ScenariosCommand::Migrate {
            scenario,
            dry_run,
            force_version,
        } => {
            let path = catalog::find(settings, &scenario)?;
            let m = catalog::migrate(&path, force_version, dry_run)?;
            let text = match (&m.backup, m.from == m.to) {
                (_, true) => format!("scenario `{scenario}` is already at version {}\n", m.to),
                (Some(backup), _) => format!(
                    "migrated `{scenario}` from version {} to {}; the old file is {}\n",
                    m.from,
                    m.to,
                    backup.display()
                ),
                (None, _) => format!(
                    "dry run: would migrate `{scenario}` from version {} to {}\n",
                    m.from, m.to
                ),
            };
            write_stdout(&text)?;
            Ok(0)
        }
        ScenariosCommand::Import {
            source,
            name,
            force,
        } => import(broker, &source, name, force).await,
    }
}

async fn execute(broker: &Broker, args: ScenarioExecuteArgs, emitter: &mut Emitter) -> Result<i32> {
    let settings = broker.settings();
    let path = catalog::find(settings, &args.scenario)?;
    let mut scenario = Scenario::load(&path)?.keep_hosts_on_failure(args.keep_hosts_on_failure);
    for (key, value) in broker_core::cli_support::parse_passthrough(&args.overrides)? {
        let Some(key) = key.as_str() else { continue };
        match (key.strip_prefix("config."), value) {
            (Some(dotted), value) => scenario.set_config(dotted, value),
            (None, Value::String(text)) => scenario.set_variable(key, &text),
            (None, other) => {
                scenario.set_variable(key, &serde_json::to_string(&other).unwrap_or_default())
            }
        }
    }
    let log = scenario.log_path(settings).and_then(|path| {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let log = std::sync::Mutex::new(log);
    let name = scenario.name().to_owned();
    let observer = move |event: &StepEvent| show(&name, event, &log);
    let outcome = crate::app::interruptible(scenario.run_observed(broker, &observer)).await?;
    emitter.emit("hosts", &outcome.hosts);
    if !outcome.hosts.is_empty() {
        let rows =
            broker_core::selection::numbered_among(broker.inventory().list()?, &outcome.hosts);
        note!("hosts still checked out:");
        crate::app::print_hosts(settings, broker.registry(), &rows, Format::Table)?;
        note!("scenario inventory: {}", outcome.inventory_path.display());
    }
    Ok(0)
}

/// Shows a step event: `output` text where it asks, progress on stderr, and every event in the
/// scenario's own log file when it has one.
fn show(scenario: &str, event: &StepEvent, log: &std::sync::Mutex<Option<std::fs::File>>) {
    match event {
        StepEvent::Output {
            stderr: false,
            text,
        } => {
            let _ = write_stdout(text);
        }
        StepEvent::Output { stderr: true, text } => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        other => {
            note!("{scenario}: {other}");
        }
    }
    if let Some(file) = broker_core::sync::lock(log).as_mut() {
        let _ = writeln!(
            file,
            "{} {scenario}: {event}",
            broker_core::time::now_epoch()
        );
    }
}

/// `import`: a local file, or an http(s) URL (GitHub and GitLab page URLs become raw-file URLs).
async fn import(broker: &Broker, source: &str, name: Option<String>, force: bool) -> Result<i32> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let url = catalog::raw_url(source);
        let fetch = async {
            let response = reqwest::get(&url).await?.error_for_status()?;
            response.text().await
        };
        fetch.await.map_err(|e| {
            Error::user(format!(
                "cannot fetch `{url}` ({e}); check the URL and the network"
            ))
        })?
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| Error::io("reading the scenario to import", source, e))?
    };
    let default_name = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(source)
        .to_owned();
    let name = name.unwrap_or(default_name);
    let (path, problems) = catalog::import(broker.settings(), &name, &text, force)?;
    write_stdout(&format!("imported {}\n", path.display()))?;
    if let Some(problems) = problems {
        note!("warning: the imported file is not a valid scenario: {problems}");
    }
    Ok(0)
}
