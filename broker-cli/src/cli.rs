//! The command line: verbs and flags of the Python broker, parsed with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// broker: check hosts out of provisioning systems, use them, give them back.
#[derive(Debug, Parser)]
#[command(
    name = "broker",
    disable_version_flag = true,
    about = "The infrastructure middleman: check hosts out of AWX, containers, OpenStack… and back in",
    after_help = "Provider arguments pass through: `broker checkout --workflow deploy-rhel --deploy_rhel_version 9.4`.\n\
                  Settings: $BROKER_DIRECTORY/broker_settings.yaml (default ~/.broker); env overrides BROKER_<KEY>__<SUB>=value."
)]
pub struct Cli {
    /// Console log level.
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<LogLevel>,

    /// Also write the command's results as JSON to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub output_file: Option<PathBuf>,

    /// Print the version and the paths broker uses.
    #[arg(long)]
    pub version: bool,

    /// Work on the inventory and targets of this broker server (`broker serve`) instead of the
    /// local ones: checkout, checkin, inventory, extend, target, handoff (also `BROKER_SERVER`; the
    /// token from `BROKER_SERVER_TOKEN` or `server_token` in the settings).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Console log levels, as the Python broker names them.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Progress (the default).
    Info,
    /// Details.
    Debug,
    /// Everything.
    Trace,
    /// Nothing.
    Silent,
}

/// Output formats of listing commands.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Format {
    /// A table for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
    /// YAML for people and programs.
    Yaml,
}

/// Output formats of `execute`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum ExecuteFormat {
    /// Logged and printed.
    #[default]
    Log,
    /// Printed as it is.
    Raw,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// How to combine AWX artifacts.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Artifacts {
    /// Deep-merge the artifacts of every child job.
    Merge,
    /// Only the newest child job's artifacts.
    Last,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check out hosts.
    #[command(
        after_help = "Examples:\n  broker checkout --nick rhel9\n  broker checkout --workflow deploy-rhel --deploy_rhel_version 9.4 -c 2\n  broker checkout --test_action basic -c 2   (TestProvider: no settings needed)"
    )]
    Checkout(CheckoutArgs),
    /// Check hosts in.
    Checkin(CheckinArgs),
    /// Show the local inventory.
    Inventory(InventoryArgs),
    /// Check out again with hosts' recorded arguments.
    Duplicate(DuplicateArgs),
    /// Extend hosts' leases.
    Extend(ExtendArgs),
    /// Run a provider action that is not a checkout.
    Execute(ExecuteArgs),
    /// List providers, or query one (`broker providers AnsibleTower --workflows`).
    #[command(alias = "nick-help")]
    Providers(ProvidersArgs),
    /// View and change settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Clean up records left `pending` or `releasing` by a crash or a kill.
    Recover(RecoverArgs),
    /// Check in hosts whose lease ended and hosts a gone process held (`--watch PID`: when PID ends;
    /// `--orphans PROVIDER`: hosts of this inventory no record knows).
    #[command(
        after_help = "Examples:\n  broker reap --dry-run -o json\n  broker reap --orphans Container --grace 1h   (containers of this inventory no record knows)\n  broker reap --watch $$ &   (gives back what this shell's tests leave when it ends)"
    )]
    Reap(ReapArgs),
    /// Run a command on a host (`broker ssh HOST -- uname -a`, exits with its status), or open a shell.
    Ssh(SshArgs),
    /// Handoff targets: what a checked-out host is handed to (Puppet, Chef, Ansible, a script).
    #[command(
        subcommand,
        after_help = "Examples:\n  broker target kinds\n  broker target add -p puppet -n puppet-prod -d \"prod Puppet\" -c server=puppet.example.com\n  broker target get puppet-prod -o json"
    )]
    Target(TargetCommand),
    /// Hand a checked-out host to a handoff target, again, or show how its handoff went.
    #[command(
        subcommand,
        after_help = "Examples:\n  broker handoff run 0 --target bootstrap\n  broker handoff retry 0\n  broker handoff status 0 -o json"
    )]
    Handoff(HandoffCommand),
    /// YAML scenarios: workflows of checkouts, commands and checks.
    #[command(
        subcommand,
        after_help = "Examples:\n  broker scenarios list --tag smoke\n  broker scenarios execute deploy --RHEL_VERSION 9.4 --config.settings.ssh.backend ssh\n  broker scenarios validate deploy"
    )]
    Scenarios(ScenariosCommand),
    /// The shared inventory database (`inventory: postgres://…`): bring its schema up to date, or
    /// show where it stands.
    #[command(subcommand)]
    Db(DbCommand),
    /// Serve the REST API (Razor's `/broker` routes and `/api/v1`) on 127.0.0.1, or manage its tokens.
    #[cfg(feature = "serve")]
    #[command(
        after_help = "Examples:\n  broker serve token add ci --role write   (prints the token once)\n  broker serve --listen 127.0.0.1:8420\n  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8420/api/v1/hosts"
    )]
    Serve(ServeArgs),
    /// Print a shell completion script: `broker completions bash > /etc/bash_completion.d/broker`.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page `broker(1)` (roff), or with `--dir` write one page per verb there.
    #[command(hide = true)]
    Manpage {
        /// Write `broker.1` and `broker-VERB.1` into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `db`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the schema migrations the database lacks (broker also does on first use).
    Migrate,
    /// Show the schema versions applied and those pending.
    Status,
}

/// `serve`.
#[cfg(feature = "serve")]
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// The address to listen on; one other than loopback needs TLS (a certificate and key) or
    /// `--insecure`.
    #[arg(long, value_name = "ADDR:PORT", default_value = broker_server::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Listen on an address other machines reach, without TLS (logs a warning).
    #[arg(long)]
    pub insecure: bool,
    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`; default: the setting
    /// `serve.tls.certificate`).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_certificate: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-certificate` (default: the setting `serve.tls.key`).
    #[arg(long, value_name = "PEM", requires = "tls_certificate")]
    pub tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
}

/// `serve token`.
#[cfg(feature = "serve")]
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// The server's bearer tokens, kept hashed in the settings file.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `serve token add|list|remove`.
#[cfg(feature = "serve")]
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (the only time it is shown; only its hash is stored).
    Add {
        /// The token's name (letters, digits, `-`, `_`).
        name: String,
        /// What it may do: read (GETs), write (also change targets, check out and in), admin (also tokens).
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List the tokens' names and roles (never the tokens).
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove a token (a running server refuses it at once).
    Remove {
        /// The token's name.
        name: String,
    },
}

/// A token's role.
#[cfg(feature = "serve")]
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RoleArg {
    /// Every GET.
    Read,
    /// Also create, change and remove targets; check hosts out and in; extend.
    Write,
    /// Also list tokens.
    Admin,
}

/// `handoff`.
#[derive(Debug, Subcommand)]
pub enum HandoffCommand {
    /// Hand a host to a target (default: the one it was last handed to).
    Run(HandoffArgs),
    /// Hand a host whose handoff failed or is pending to its target again.
    Retry(HandoffArgs),
    /// Show a host's handoff: target, state, attempts, last error, log.
    Status(HandoffArgs),
}

/// The arguments of `handoff run|retry|status`.
#[derive(Debug, Args)]
pub struct HandoffArgs {
    /// The host: inventory id, hostname, name or record id.
    pub host: String,
    /// The handoff target (id or name).
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// The host: inventory id, hostname, name or record id.
    pub host: String,
    /// Give up (and stop the command) after this long, e.g. `30s`.
    #[arg(long)]
    pub timeout: Option<String>,
    /// The command and its arguments (joined with spaces and run by the host's shell); none: an
    /// interactive shell with a terminal (hosts reached over SSH).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `checkout`.
#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Run in the background.
    #[arg(short = 'b', long)]
    pub background: bool,
    /// Use a nick from the settings.
    #[arg(short = 'n', long)]
    pub nick: Option<String>,
    /// How many hosts (1 or more).
    #[arg(short = 'c', long, value_parser = at_least_one())]
    pub count: Option<usize>,
    /// Keep the hosts that were made when others fail (default: check them in again).
    #[arg(long)]
    pub keep_partial: bool,
    /// Give the hosts back after this long (`30m`, `2h`, `1d`): `broker reap` checks them in then.
    #[arg(long, value_name = "DURATION")]
    pub lease: Option<String>,
    /// Hand each host to this handoff target once it is ready (a failed handoff fails the checkout).
    #[arg(long, value_name = "TARGET")]
    pub handoff: Option<String>,
    /// Keep hosts whose handoff failed instead of checking them in and failing.
    #[arg(long, requires = "handoff")]
    pub keep_failed_handoff: bool,
    #[command(flatten)]
    pub output: OutputArg,
    /// Arguments for the provider.
    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// What `checkout` and `execute` hand to the provider.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// Labels for the provider: `k1=v1,k2=v2`.
    #[arg(short = 'l', long)]
    pub provider_labels: Option<String>,
    /// A JSON or YAML file of arguments.
    #[arg(long)]
    pub args_file: Option<PathBuf>,
    /// Provider arguments: `--key value`, `--key=value`, `key=value`, `--<Provider> <instance>`.
    #[arg(last = true, value_name = "PROVIDER ARGS")]
    pub extra: Vec<String>,
}

/// Host selection shared by checkin, extend and duplicate.
#[derive(Debug, Args)]
pub struct Selection {
    /// Hosts: inventory ids (positions), hostnames, names or record ids.
    pub hosts: Vec<String>,
    /// Every (filtered) host.
    #[arg(long)]
    pub all: bool,
    /// A filter over the inventory, e.g. `@inv._broker_provider == "Container"`.
    #[arg(long)]
    pub filter: Option<String>,
}

/// `checkin`.
#[derive(Debug, Args)]
pub struct CheckinArgs {
    /// Which hosts.
    #[command(flatten)]
    pub selection: Selection,
    /// Run in the background.
    #[arg(short = 'b', long)]
    pub background: bool,
    /// One host at a time.
    #[arg(long)]
    pub sequential: bool,
    /// Also resolve records left pending or releasing by a crash (as `broker recover --all`).
    #[arg(long)]
    pub pending: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Every field of every host, `*_time` fields humanised.
    #[arg(long)]
    pub details: bool,
    /// One line per host (`inventory_list_vars`).
    #[arg(long)]
    pub list: bool,
    /// Only hosts matching this filter (ids are then positions in the filtered list).
    #[arg(long)]
    pub filter: Option<String>,
    /// First pull a provider's hosts: `Provider[:arg][::instance]`.
    #[arg(long, value_name = "PROVIDER")]
    pub sync: Option<String>,
    /// With `--sync`: remove the records the provider no longer lists even when that is many of them.
    #[arg(long, requires = "sync")]
    pub force: bool,
    /// Write every record to this file, in the `inventory.yaml` format (from any store).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["import", "sync"])]
    pub export: Option<PathBuf>,
    /// Add the records of this `inventory.yaml` file to the inventory (a record of the same
    /// identity is replaced).
    #[arg(long, value_name = "FILE", conflicts_with = "sync")]
    pub import: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `duplicate`.
#[derive(Debug, Args)]
pub struct DuplicateArgs {
    /// Which hosts.
    #[command(flatten)]
    pub selection: Selection,
    /// How many copies of each (1 or more).
    #[arg(short = 'c', long, default_value_t = 1, value_parser = at_least_one())]
    pub count: usize,
    /// Run in the background.
    #[arg(short = 'b', long)]
    pub background: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `extend`.
#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// Which hosts.
    #[command(flatten)]
    pub selection: Selection,
    /// Run in the background.
    #[arg(short = 'b', long)]
    pub background: bool,
    /// One host at a time.
    #[arg(long)]
    pub sequential: bool,
    /// Labels for the provider: `k1=v1,k2=v2`.
    #[arg(short = 'l', long)]
    pub provider_labels: Option<String>,
    /// Move broker's lease to end this long from now (`2h`), for any provider.
    #[arg(long, value_name = "DURATION")]
    pub lease: Option<String>,
    #[command(flatten)]
    pub output: OutputArg,
    /// Provider arguments, e.g. `--new-expire-time +3600`.
    #[arg(last = true, value_name = "PROVIDER ARGS")]
    pub extra: Vec<String>,
}

/// `scenarios`.
#[derive(Debug, Subcommand)]
pub enum ScenariosCommand {
    /// List the scenarios of the scenarios directory (`<broker directory>/scenarios`).
    List {
        /// A filter over each scenario's top-level metadata, e.g. `"Jake" in @res.author`.
        #[arg(long)]
        filter: Option<String>,
        /// Only scenarios with this tag (short for `--filter '"TAG" in @res.tags'`).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Run a scenario: `--NAME value` sets a variable, `--config.a.b value` a config value.
    Execute(ScenarioExecuteArgs),
    /// Show a scenario's name, path, config, variables and steps.
    Info {
        /// A scenario name or file.
        scenario: String,
        /// Plain YAML (the output is never coloured; kept for the Python broker's scripts).
        #[arg(long)]
        no_syntax: bool,
    },
    /// Check a scenario file against the format; exits 16 when it is invalid.
    Validate {
        /// A scenario name or file.
        scenario: String,
    },
    /// Bring a scenario file to the newest spec version (the old file is kept as `.bak`).
    Migrate {
        /// A scenario name or file.
        scenario: String,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
        /// The version to migrate to (default: the newest).
        #[arg(long, value_name = "VERSION")]
        force_version: Option<u64>,
    },
    /// Copy a scenario file (a path, or an http(s) URL) into the scenarios directory.
    Import {
        /// A file, or a URL of a raw file (GitHub and GitLab page URLs are turned into raw ones).
        source: String,
        /// The name to give it (default: the source's file name).
        #[arg(long)]
        name: Option<String>,
        /// Replace a different file of the same name.
        #[arg(long)]
        force: bool,
    },
}

/// `scenarios execute`.
#[derive(Debug, Args)]
pub struct ScenarioExecuteArgs {
    /// Run in the background.
    #[arg(short = 'b', long)]
    pub background: bool,
    /// Keep the hosts the scenario checked out when it fails (default: check them in).
    #[arg(long)]
    pub keep_hosts_on_failure: bool,
    /// A scenario name (in the scenarios directory) or file.
    pub scenario: String,
    /// Overrides: `--NAME value` for variables, `--config.a.b value` for `config`.
    #[arg(last = true, value_name = "OVERRIDES")]
    pub overrides: Vec<String>,
}

/// `execute`.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// Run in the background.
    #[arg(short = 'b', long)]
    pub background: bool,
    /// Use a nick from the settings.
    #[arg(long)]
    pub nick: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        alias = "output-format",
        value_enum,
        default_value_t
    )]
    pub output: ExecuteFormat,
    /// Return merged (or the last job's) artifacts instead of the job.
    #[arg(long, value_enum)]
    pub artifacts: Option<Artifacts>,
    /// Arguments for the provider.
    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// `providers`.
#[derive(Debug, Args)]
pub struct ProvidersArgs {
    /// The provider to query; without it, list the providers.
    pub provider: Option<String>,
    /// Show at most this many results.
    #[arg(long)]
    pub results_limit: Option<usize>,
    /// A filter over the results, e.g. `"rhel" in @res`.
    #[arg(long)]
    pub results_filter: Option<String>,
    /// Output format (default: a table for the list of providers, YAML for a query's answer).
    #[arg(short = 'o', long = "output", alias = "output-format", value_enum)]
    pub output: Option<Format>,
    /// The provider's flags, e.g. `--workflows`, `--workflow NAME`, `--AnsibleTower INSTANCE`.
    #[arg(last = true, value_name = "QUERY")]
    pub extra: Vec<String>,
}

/// `config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the settings (or one chunk, e.g. `AnsibleTower.instances.prod`), secrets masked.
    View {
        /// A dotted path into the settings.
        chunk: Option<String>,
        /// Plain text (kept for compatibility; output is never colored).
        #[arg(long)]
        no_syntax: bool,
    },
    /// Set a value (YAML; `@FILE` or an existing .json/.yaml file: its content); the old file is backed up.
    Set {
        /// A dotted path into the settings.
        chunk: String,
        /// The new value.
        value: String,
    },
    /// Write a settings file from the shipped example (or `--from FILE`).
    Init {
        /// Where to take the settings from.
        #[arg(long = "from", value_name = "FILE")]
        from: Option<PathBuf>,
        /// Replace an existing settings file (it is backed up first).
        #[arg(long)]
        force: bool,
    },
    /// Check the settings: `base`, `all`, a provider, or `Provider:instance`.
    Validate {
        /// What to check.
        #[arg(default_value = "all")]
        chunk: String,
    },
    /// List the nicks.
    Nicks,
    /// Show one nick.
    Nick {
        /// The nick's name.
        name: String,
        /// Plain text (kept for compatibility).
        #[arg(long)]
        no_syntax: bool,
    },
    /// Edit the settings (or a chunk) in $EDITOR.
    Edit {
        /// A dotted path into the settings.
        chunk: Option<String>,
    },
    /// Put the last backup back.
    Restore,
}

/// `recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Every pending or releasing record, also those whose owner may still be running.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `reap`.
#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Say what would be checked in, and why, without checking anything in.
    #[arg(long)]
    pub dry_run: bool,
    /// Only hosts whose lease ended.
    #[arg(long, conflicts_with = "abandoned")]
    pub expired: bool,
    /// Only hosts a gone process held (its guards, and what it left pending or releasing).
    #[arg(long)]
    pub abandoned: bool,
    /// Wait until process PID of this machine ends, then check in what it left; exits when done.
    #[arg(
        long,
        value_name = "PID",
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with_all = ["expired", "abandoned", "dry_run", "orphans"]
    )]
    pub watch: Option<u32>,
    /// Instead, check in what the provider holds for this inventory that no record knows
    /// (`Provider`, `Provider:filter`, `Provider::instance`, as for `inventory --sync`).
    #[arg(long, value_name = "PROVIDER", conflicts_with_all = ["expired", "abandoned"])]
    pub orphans: Option<String>,
    /// With `--orphans`: how old an orphan must be (`30m`, `2h`); younger ones may be checkouts
    /// whose record is being written.
    #[arg(
        long,
        value_name = "DURATION",
        requires = "orphans",
        default_value = "10m"
    )]
    pub grace: String,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `target`: Razor's verbs (`get`, `add`, `update`, `remove`) and friendlier names beside them.
#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Show targets: `get` or `get all` lists them, `get ID|NAME` shows one, `get plugins` the kinds.
    Get {
        /// `all` (the default), `plugins` (also `plugin`, `t`), or a target's id or name.
        #[arg(default_value = "all", value_name = "all|plugins|ID|NAME")]
        what: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List the targets (as `get all`).
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one target, secrets as fingerprints (as `get ID|NAME`).
    Show {
        /// The target's id or name.
        target: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List the handoff kinds and the keys each is configured with (as `get plugins`).
    #[command(alias = "plugins")]
    Kinds {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Add a target; on a terminal without `-c`/`--config-file`, asks for each key of its kind.
    Add(TargetAddArgs),
    /// Change a target's name, description or configuration (never its kind).
    Update(TargetUpdateArgs),
    /// Remove a target (refused while a nick or a host names it); `remove all` asks first.
    Remove {
        /// The target's id or name, or `all`.
        #[arg(value_name = "ID|NAME|all")]
        target: String,
        /// With `all`: remove without asking (needed where nobody can answer).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// `target add`.
#[derive(Debug, Args)]
pub struct TargetAddArgs {
    /// The handoff kind: noop, script, puppet, chef, ansible (`broker target kinds`).
    #[arg(short = 'p', long = "plugin", alias = "kind", value_name = "KIND")]
    pub kind: String,
    /// The target's name, unique in any case.
    #[arg(short = 'n', long)]
    pub name: String,
    /// What the target is for.
    #[arg(short = 'd', long, default_value = "")]
    pub description: String,
    /// A configuration value: `KEY=VALUE`, or `KEY=@FILE` for a file's content (repeatable).
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// A YAML or JSON file of configuration values (`-c` goes over it).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `target update`.
#[derive(Debug, Args)]
pub struct TargetUpdateArgs {
    /// The target's id or name.
    pub target: String,
    /// A new name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// A new description.
    #[arg(short = 'd', long)]
    pub description: Option<String>,
    /// `KEY=VALUE` or `KEY=@FILE` to change a key (repeatable); `-c` alone, on a terminal, asks
    /// for each key again, the current value kept on an empty answer.
    #[arg(
        short = 'c',
        long = "change-metadata",
        value_name = "KEY=VALUE",
        num_args = 0..=1,
        action = clap::ArgAction::Append
    )]
    pub change: Option<Vec<String>>,
    /// A YAML or JSON file of configuration values to change.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Unset a key (one with a default goes back to it; repeatable).
    #[arg(long, value_name = "KEY")]
    pub clear: Vec<String>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `-o/--output`, spelled alike on every verb that prints hosts, with the Python broker's
/// `--output-format` as a hidden alias.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        alias = "output-format",
        value_enum,
        default_value_t
    )]
    pub format: Format,
}

/// A count of hosts: `-c 0` is a usage error, not one host.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Subcommands whose unknown `--key value` tokens are provider arguments.
const PASSTHROUGH: &[&str] = &[
    "checkout",
    "execute",
    "extend",
    "providers",
    "nick-help",
    "scenarios",
];

/// Moves provider arguments behind a `--` so clap sees only its own flags.
///
/// Unknown `--key value`, `--key=value` and bare `key=value` tokens of the pass-through verbs become
/// provider arguments; everything clap knows stays in place.
pub fn split_passthrough(args: Vec<String>) -> Vec<String> {
    use clap::CommandFactory;
    let mut root = Cli::command();
    // Building adds clap's own `--help`/`-h`, so they are known flags here, not provider arguments.
    root.build();
    let i = verb_position(&root, &args);
    let Some(verb) = args.get(i) else {
        return args;
    };
    if !PASSTHROUGH.contains(&verb.as_str()) {
        return args;
    }
    let name = if verb == "nick-help" {
        "providers"
    } else {
        verb.as_str()
    };
    let Some(mut sub) = root.find_subcommand(name) else {
        return args;
    };
    let mut i = i;
    // `scenarios execute`: its overrides are pass-through arguments too.
    if verb == "scenarios" {
        match (args.get(i + 1), sub.find_subcommand("execute")) {
            (Some(next), Some(execute)) if next == "execute" => {
                sub = execute;
                i += 1;
            }
            _ => return args,
        }
    }
    let (clap_tokens, extra) = KnownFlags { root: &root, sub }.sort(&args[i + 1..]);
    let mut out: Vec<String> = args[..=i].to_vec();
    out.extend(clap_tokens);
    if !extra.is_empty() {
        out.push("--".into());
        out.extend(extra);
    }
    out
}

/// Where the subcommand is in `args`: after the program and the global flags (with the values of
/// those that take one).
fn verb_position(root: &clap::Command, args: &[String]) -> usize {
    let globals_with_value: Vec<String> = root
        .get_arguments()
        .filter(|a| a.get_action().takes_values() && a.get_long().is_some())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut i = 1;
    while i < args.len() {
        let token = &args[i];
        if globals_with_value.iter().any(|g| g == token) {
            i += 2;
            continue;
        }
        if token.starts_with('-') {
            i += 1;
            continue;
        }
        break;
    }
    i
}

/// The flags clap knows for one subcommand: its own and the global ones.
struct KnownFlags<'c> {
    root: &'c clap::Command,
    sub: &'c clap::Command,
}

impl KnownFlags<'_> {
    /// Whether clap knows `--long` (or an alias of it), and if so whether it takes a value.
    fn long(&self, long: &str) -> Option<bool> {
        self.sub
            .get_arguments()
            .chain(self.root.get_arguments().filter(|a| a.is_global_set()))
            .find(|a| {
                !a.is_last_set()
                    && (a.get_long() == Some(long)
                        || a.get_all_aliases().is_some_and(|all| all.contains(&long)))
            })
            .map(|a| a.get_action().takes_values())
    }

    /// Whether the subcommand knows `-short`, and if so whether it takes a value.
    fn short(&self, short: char) -> Option<bool> {
        self.sub
            .get_arguments()
            .find(|a| a.get_short() == Some(short))
            .map(|a| a.get_action().takes_values())
    }

    /// Sorts the tokens after the subcommand into clap's (in place) and the provider's.
    fn sort(&self, rest: &[String]) -> (Vec<String>, Vec<String>) {
        let mut out: Vec<String> = Vec::new();
        let mut extra: Vec<String> = Vec::new();
        let mut j = 0;
        while j < rest.len() {
            let token = &rest[j];
            if token == "--" {
                extra.extend(rest[j + 1..].iter().cloned());
                break;
            }
            if let Some(flag) = token.strip_prefix("--") {
                let (name, inline_value) = match flag.split_once('=') {
                    Some((n, _)) => (n, true),
                    None => (flag, false),
                };
                match self.long(name) {
                    Some(takes_value) => {
                        out.push(token.clone());
                        if takes_value && !inline_value && j + 1 < rest.len() {
                            out.push(rest[j + 1].clone());
                            j += 1;
                        }
                    }
                    None => {
                        extra.push(token.clone());
                        if !inline_value && j + 1 < rest.len() && !looks_like_flag(&rest[j + 1]) {
                            extra.push(rest[j + 1].clone());
                            j += 1;
                        }
                    }
                }
            } else if let Some(short) = token.strip_prefix('-').filter(|s| !s.is_empty()) {
                out.push(token.clone());
                let takes_value = short
                    .chars()
                    .next()
                    .and_then(|c| self.short(c))
                    .unwrap_or(false);
                if takes_value && short.len() == 1 && j + 1 < rest.len() {
                    out.push(rest[j + 1].clone());
                    j += 1;
                }
            } else if token.contains('=') {
                extra.push(token.clone());
            } else {
                out.push(token.clone());
            }
            j += 1;
        }
        (out, extra)
    }
}

/// `--x` or `-x` (a letter): a flag, not the value of the flag before it. `-1` is a value.
fn looks_like_flag(token: &str) -> bool {
    token.starts_with("--")
        || (token.starts_with('-') && token[1..].starts_with(|c: char| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<String> {
        split_passthrough(line.split_whitespace().map(str::to_owned).collect())
    }

    #[test]
    fn provider_arguments_move_behind_the_separator() {
        assert_eq!(
            split("broker --log-level debug checkout --workflow deploy-rhel -c 2 --deploy_rhel_version=9.4 x=y -n nick"),
            "broker --log-level debug checkout -c 2 -n nick -- --workflow deploy-rhel --deploy_rhel_version=9.4 x=y"
                .split(' ')
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn other_verbs_are_untouched() {
        assert_eq!(
            split("broker checkin --all"),
            vec!["broker", "checkin", "--all"]
        );
        assert_eq!(
            split("broker inventory --filter x"),
            vec!["broker", "inventory", "--filter", "x"]
        );
    }

    #[test]
    fn providers_switches_keep_their_place() {
        assert_eq!(
            split("broker providers TestProvider --hosts -o json --results-limit 5 --TestProvider local"),
            "broker providers TestProvider -o json --results-limit 5 -- --hosts --TestProvider local"
                .split(' ')
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn extend_keeps_positional_hosts() {
        assert_eq!(
            split("broker extend 0 host1 --new-expire-time +3600 --sequential"),
            "broker extend 0 host1 --sequential -- --new-expire-time +3600"
                .split(' ')
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn reap_takes_its_flags_and_refuses_contradictions() {
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
        let Some(Command::Reap(a)) = parse("broker reap --dry-run -o json").unwrap().command else {
            panic!("not reap");
        };
        assert!(a.dry_run && !a.expired && !a.abandoned && a.watch.is_none());
        assert_eq!(a.output.format, Format::Json);
        assert_eq!((a.orphans, a.grace.as_str()), (None, "10m"));
        let Some(Command::Reap(a)) = parse("broker reap --orphans Container::local --grace 1h")
            .unwrap()
            .command
        else {
            panic!("not reap");
        };
        assert_eq!(a.orphans.as_deref(), Some("Container::local"));
        assert_eq!(a.grace, "1h");
        let Some(Command::Reap(a)) = parse("broker reap --watch 4242").unwrap().command else {
            panic!("not reap");
        };
        assert_eq!(a.watch, Some(4242));
        for wrong in [
            "broker reap --watch 1 --dry-run",
            "broker reap --watch 1 --abandoned",
            "broker reap --expired --abandoned",
            "broker reap --watch me",
            "broker reap --watch 0",
            "broker reap --grace 1h",
            "broker reap --orphans Container --expired",
            "broker reap --orphans Container --watch 1",
        ] {
            let e = parse(wrong).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{wrong}");
        }
        let Some(Command::Checkout(a)) = parse("broker checkout --lease 2h").unwrap().command
        else {
            panic!("not checkout");
        };
        assert_eq!(a.lease.as_deref(), Some("2h"));
    }

    #[test]
    fn the_command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
