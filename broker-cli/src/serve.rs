//! `broker serve`: parse, call broker-server, print. The signals are the CLI's: Ctrl-C, SIGTERM
//! (and SIGHUP) stop the server gracefully.

use broker_core::cli_support::SettingsFile;
use broker_core::secrecy::ExposeSecret;
use broker_core::{Result, Settings};
use broker_server::tokens::{add_token, list_tokens, remove_token};
use broker_server::{Role, ServeOptions, Server, TlsFiles};

use crate::app::StopSignals;
use crate::cli::{Format, RoleArg, ServeArgs, ServeCommand, TokenCommand};
use crate::output::{Emitter, note, print_value, table, write_stdout};

/// Runs `broker serve` or one of its `token` commands.
pub async fn serve(args: ServeArgs, settings: Settings, emitter: &mut Emitter) -> Result<i32> {
    match args.command {
        Some(ServeCommand::Token(command)) => token(command, &settings, emitter),
        None => run(args, settings).await,
    }
}

async fn run(args: ServeArgs, settings: Settings) -> Result<i32> {
    let broker = crate::store::broker(settings)?;
    broker.set_origin(format!(
        "broker_serve:{}",
        broker_core::record::current_user()
    ));
    let mut options = ServeOptions::from_settings(args.listen, broker.settings())?;
    options.insecure = args.insecure;
    if let (Some(certificate), Some(key)) = (args.tls_certificate, args.tls_key) {
        options.tls = Some(TlsFiles::new(certificate, key));
    }
    let mut signals = StopSignals::listen()?;
    let server = Server::bind(broker, options).await?;
    note!(
        "listening on {}://{}",
        server.scheme(),
        server.local_addr()?
    );
    server
        .run(async move {
            let signal = signals.next().await;
            note!("{signal}: stopping");
        })
        .await?;
    note!("stopped");
    Ok(0)
}

fn token(command: TokenCommand, settings: &Settings, emitter: &mut Emitter) -> Result<i32> {
    let file = SettingsFile::in_directory(settings.directory());
    match command {
        TokenCommand::Add { name, role } => {
            let role = match role {
                RoleArg::Read => Role::Read,
                RoleArg::Write => Role::Write,
                RoleArg::Admin => Role::Admin,
            };
            let token = add_token(&file, &name, role)?;
            write_stdout(&format!("{}\n", token.expose_secret()))?;
            note!(
                "added token `{name}` (role {role}) to {}; it is shown only now: keep it (a \
                 running server takes it at once)",
                file.path().display()
            );
            Ok(0)
        }
        TokenCommand::List { output } => {
            let tokens = list_tokens(&file)?;
            emitter.emit("output", &tokens);
            if output.format != Format::Table {
                print_value(&tokens, output.format)?;
                return Ok(0);
            }
            let rows = tokens
                .iter()
                .map(|t| vec![t.name.clone(), t.role.to_string()])
                .collect();
            write_stdout(&table(vec!["Name".into(), "Role".into()], rows))?;
            Ok(0)
        }
        TokenCommand::Remove { name } => {
            remove_token(&file, &name)?;
            note!("removed token `{name}`; a running server refuses it at once");
            Ok(0)
        }
    }
}
