//! `broker target`: parse, call `broker_core::handoff`, print. What a target may be, how its
//! configuration is checked and when it may go are broker-core's.

use std::collections::BTreeMap;

use broker_client::{RemoteBroker, TargetSpec};
use broker_core::handoff::input::{ask_config, parse_assignments, read_config_file};
use broker_core::handoff::schema::{self, KeySpec, KindSchema};
use broker_core::handoff::{
    Added, ConfigValue, Target, TargetChange, TargetConfig, TargetStore, add_target,
    remove_all_targets, remove_target, update_target,
};
use broker_core::interaction::{Interaction, Question};
use broker_core::{Broker, Error, Result};

use crate::cli::{Format, TargetAddArgs, TargetCommand, TargetUpdateArgs};
use crate::output::{Emitter, note, print_value, table, write_stdout};
use crate::terminal::{Terminal, answerable};

/// Runs one `broker target` command.
pub fn target(broker: &Broker, command: TargetCommand, emitter: &mut Emitter) -> Result<i32> {
    let store: &dyn TargetStore = broker.target_store().as_ref();
    match command {
        TargetCommand::Get { what, output } => match what.as_str() {
            "all" => list(store, output.format, emitter),
            "plugins" | "plugin" | "t" => kinds(output.format, emitter),
            id_or_name => show(&store.get(id_or_name)?, output.format, emitter),
        },
        TargetCommand::List { output } => list(store, output.format, emitter),
        TargetCommand::Show { target, output } => {
            show(&store.get(&target)?, output.format, emitter)
        }
        TargetCommand::Kinds { output } => kinds(output.format, emitter),
        TargetCommand::Add(a) => add(store, a, emitter),
        TargetCommand::Update(a) => update(store, a, emitter),
        TargetCommand::Remove {
            target,
            yes,
            output,
        } => {
            let records = broker.inventory().list()?;
            let removed = if target == "all" {
                if !yes && !confirmed_remove_all(store)? {
                    note!("nothing was removed");
                    return Ok(0);
                }
                remove_all_targets(store, broker.settings(), &records)?
            } else {
                vec![remove_target(store, &target, broker.settings(), &records)?]
            };
            for t in &removed {
                note!("removed handoff target `{}` ({})", t.name, t.id);
            }
            print_targets(&removed, output.format, emitter)
        }
    }
}

fn list(store: &dyn TargetStore, format: Format, emitter: &mut Emitter) -> Result<i32> {
    print_targets(&store.list()?, format, emitter)
}

fn print_targets(targets: &[Target], format: Format, emitter: &mut Emitter) -> Result<i32> {
    emitter.emit("output", targets);
    if format != Format::Table {
        print_value(&targets, format)?;
        return Ok(0);
    }
    let rows = targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.kind.clone(),
                t.description.clone(),
                t.id.to_string(),
            ]
        })
        .collect();
    let headers = ["Name", "Kind", "Description", "Id"]
        .map(str::to_owned)
        .to_vec();
    write_stdout(&table(headers, rows))?;
    Ok(0)
}

fn show(target: &Target, format: Format, emitter: &mut Emitter) -> Result<i32> {
    emitter.emit("output", target);
    if format != Format::Table {
        print_value(target, format)?;
        return Ok(0);
    }
    let one_line = |text: &str| text.replace('\n', "\\n");
    let mut rows = vec![
        vec!["id".into(), target.id.to_string()],
        vec!["name".into(), target.name.clone()],
        vec!["kind".into(), target.kind.clone()],
        vec!["description".into(), one_line(&target.description)],
    ];
    for (key, value) in target.config.iter() {
        rows.push(vec![format!("config.{key}"), one_line(&value.shown())]);
    }
    rows.extend([
        vec![
            "created".into(),
            broker_core::time::format_epoch(target.created),
        ],
        vec![
            "updated".into(),
            broker_core::time::format_epoch(target.updated),
        ],
        vec!["revision".into(), target.revision.to_string()],
    ]);
    let headers = vec!["Key".to_owned(), "Value".to_owned()];
    write_stdout(&table(headers, rows))?;
    Ok(0)
}

fn kinds(format: Format, emitter: &mut Emitter) -> Result<i32> {
    let kinds = schema::builtin();
    emitter.emit("output", kinds);
    if format != Format::Table {
        print_value(&kinds, format)?;
        return Ok(0);
    }
    let mut out = String::new();
    for kind in kinds {
        out.push_str(&format!("{}: {}\n", kind.name, kind.description));
        if kind.keys.is_empty() {
            out.push_str("  (no keys of its own)\n\n");
            continue;
        }
        out.push_str(&keys_table(kind.keys));
        out.push('\n');
    }
    out.push_str("every kind also takes, to time its runs:\n");
    out.push_str(&keys_table(schema::RUN_KEYS));
    write_stdout(&out)?;
    Ok(0)
}

fn keys_table(keys: &[KeySpec]) -> String {
    let headers = [
        "Key",
        "Required",
        "Default",
        "Secret",
        "Accepts",
        "Description",
    ];
    let rows = keys
        .iter()
        .map(|k| {
            vec![
                k.key.to_owned(),
                yes_no(k.required),
                k.default.map(|d| format!("{d:?}")).unwrap_or("-".into()),
                yes_no(k.secret),
                k.validation.accepts.to_owned(),
                k.description.to_owned(),
            ]
        })
        .collect();
    table(headers.map(str::to_owned).to_vec(), rows)
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

/// Configuration values from `--config-file`, then `-c` over them.
fn given_values(
    file: Option<&std::path::Path>,
    assignments: &[String],
) -> Result<BTreeMap<String, ConfigValue>> {
    let mut values = match file {
        Some(path) => read_config_file(path)?,
        None => BTreeMap::new(),
    };
    values.extend(parse_assignments(assignments)?);
    Ok(values)
}

fn add(store: &dyn TargetStore, a: TargetAddArgs, emitter: &mut Emitter) -> Result<i32> {
    let kind = schema::builtin_kind(&a.kind)?;
    let values = add_values(kind, &a)?;
    let added = add_target(
        store,
        schema::builtin(),
        &a.name,
        &a.description,
        kind.name,
        values,
    )?;
    show(&told(added), a.output.format, emitter)
}

/// The target added; one that was there already as given is said so.
fn told(added: Added) -> Target {
    if let Added::Existing(t) = &added {
        note!(
            "handoff target `{}` is there already as given; nothing changed",
            t.name
        );
    }
    added.target().clone()
}

/// The configuration values `broker target add` was given, or asks for on a terminal.
fn add_values(kind: &KindSchema, a: &TargetAddArgs) -> Result<BTreeMap<String, ConfigValue>> {
    if a.config.is_empty() && a.config_file.is_none() && answerable() {
        walk(kind, &TargetConfig::default())
    } else {
        given_values(a.config_file.as_deref(), &a.config)
    }
}

fn update(store: &dyn TargetStore, a: TargetUpdateArgs, emitter: &mut Emitter) -> Result<i32> {
    let (mut change, walk_again) = asked_change(&a)?;
    if walk_again {
        if !answerable() {
            return Err(Error::usage(
                "`-c` without KEY=VALUE asks on a terminal, and there is none; give `-c KEY=VALUE`",
            ));
        }
        let current = store.get(&a.target)?;
        let kind = schema::builtin_kind(&current.kind)?;
        change.config = Some(walk(kind, &current.config)?);
    }
    let target = update_target(store, schema::builtin(), &a.target, change)?;
    show(&target, a.output.format, emitter)
}

/// The change `broker target update` asks for, and whether it asks for every key again (`-c`
/// alone).
fn asked_change(a: &TargetUpdateArgs) -> Result<(TargetChange, bool)> {
    let assignments = a.change.clone().unwrap_or_default();
    let walk_again = a.change.is_some() && assignments.is_empty();
    if a.name.is_none()
        && a.description.is_none()
        && a.change.is_none()
        && a.config_file.is_none()
        && a.clear.is_empty()
    {
        return Err(Error::usage(
            "nothing to change: give -n/--name, -d/--description, -c/--change-metadata, \
             --config-file or --clear",
        ));
    }
    let change = TargetChange {
        name: a.name.clone(),
        description: a.description.clone(),
        set: given_values(a.config_file.as_deref(), &assignments)?,
        clear: a.clear.clone(),
        config: None,
    };
    Ok((change, walk_again))
}

/// Asks for each key of `kind` on the terminal.
fn walk(kind: &KindSchema, current: &TargetConfig) -> Result<BTreeMap<String, ConfigValue>> {
    note!(
        "configuring a `{}` target: {}; empty takes the default",
        kind.name,
        kind.description
    );
    ask_config(kind, &Terminal, current)
}

/// Whether the person at the terminal confirms removing every target.
fn confirmed_remove_all(store: &dyn TargetStore) -> Result<bool> {
    if !answerable() {
        return Err(Error::usage(
            "`broker target remove all` asks first, and nobody can answer here; add `--yes`",
        ));
    }
    let count = store.list()?.len();
    let context = format!("This removes all {count} handoff targets.");
    let question = Question {
        context: &context,
        prompt: "Remove them all? [y/n]: ",
        answers: &["y", "n"],
    };
    Ok(Terminal.choose(&question).as_deref() == Some("y"))
}

/// Runs one `broker target` command against a broker server (`--server`): the same verbs and
/// output, the targets the server's. There is no `remove all` over the network (as in Razor), and
/// `update -c` alone (asking for every key again) is refused: the server shows no secret to ask
/// over.
pub async fn remote_target(
    server: &RemoteBroker,
    command: TargetCommand,
    emitter: &mut Emitter,
) -> Result<i32> {
    match command {
        TargetCommand::Get { what, output } => match what.as_str() {
            "all" => print_targets(&server.targets().await?, output.format, emitter),
            "plugins" | "plugin" | "t" => remote_kinds(server, output.format, emitter).await,
            id_or_name => show(&server.target(id_or_name).await?, output.format, emitter),
        },
        TargetCommand::List { output } => {
            print_targets(&server.targets().await?, output.format, emitter)
        }
        TargetCommand::Show { target, output } => {
            show(&server.target(&target).await?, output.format, emitter)
        }
        TargetCommand::Kinds { output } => remote_kinds(server, output.format, emitter).await,
        TargetCommand::Add(a) => {
            let kind = schema::builtin_kind(&a.kind)?;
            let spec = TargetSpec {
                name: a.name.clone(),
                kind: kind.name.to_owned(),
                description: a.description.clone(),
                config: add_values(kind, &a)?,
            };
            show(
                &told(server.add_target(&spec).await?),
                a.output.format,
                emitter,
            )
        }
        TargetCommand::Update(a) => {
            let (change, walk_again) = asked_change(&a)?;
            if walk_again {
                return Err(Error::usage(
                    "`-c` without KEY=VALUE asks for every key again, which a broker server's \
                     targets do not take (it shows no secret to ask over); give `-c KEY=VALUE`",
                ));
            }
            let target = server.update_target(&a.target, &change).await?;
            show(&target, a.output.format, emitter)
        }
        TargetCommand::Remove { target, output, .. } => {
            if target == "all" {
                return Err(Error::usage(format!(
                    "a broker server's targets cannot all be removed at once ({}), as in Razor; \
                     remove them one by one",
                    server.server()
                )));
            }
            let removed = server.remove_target(&target).await?;
            note!("removed handoff target `{}` ({})", removed.name, removed.id);
            print_targets(&[removed], output.format, emitter)
        }
    }
}

/// The server's handoff kinds: printed as `broker target kinds` prints this build's when they are
/// the same kinds, else the server's answer as it is.
async fn remote_kinds(server: &RemoteBroker, format: Format, emitter: &mut Emitter) -> Result<i32> {
    let theirs = server.kinds().await?;
    if theirs == broker_core::value::to_json(&schema::builtin()) {
        return kinds(format, emitter);
    }
    note!(
        "warning: the broker server at {} knows other handoff kinds than this broker",
        server.server()
    );
    emitter.emit("output", &theirs);
    print_value(
        &theirs,
        if format == Format::Json {
            Format::Json
        } else {
            Format::Yaml
        },
    )?;
    Ok(0)
}
