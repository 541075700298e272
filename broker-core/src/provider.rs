//! The contract every provisioning system implements, and the registry that finds one by name.
//!
//! A provider is chosen at run time: by the *action key* among the checkout arguments
//! (`workflow` → AnsibleTower, `container_host` → Container, `test_action` → TestProvider), or by the
//! `_broker_provider` field of an inventory record. [`ProviderKind`] describes one provider statically;
//! [`ProviderRegistry`] maps names and action keys to kinds; a kind builds a [`Provider`] for one
//! configured instance. Implementations live in `broker-providers`, one feature each.

use std::fmt;
use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::record::{HostRecord, RecordId};
use crate::session::Session;
use crate::settings::{Problem, ProviderConfig, ProviderSettings};
pub use crate::spelling::closest;

/// One provisioning system, configured for one instance.
///
/// Every method but [`Provider::checkout`] and [`Provider::checkin`] has a default that reports
/// [`Error::NotImplemented`]. Implementations must make `checkin` idempotent: a host that is already
/// gone is checked in.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's name as the inventory records it (`AnsibleTower`, `Container`…).
    fn name(&self) -> &str;

    /// The configured instance this provider talks to, if the settings name instances.
    fn instance(&self) -> Option<&str>;

    /// Makes one host.
    ///
    /// The returned fields are merged over the intent record broker wrote before calling: at least
    /// `hostname` or `name`. The provider should tag what it creates with [`CheckoutContext::record_id`]
    /// (a label, a name suffix) so that [`Provider::checkin`] of a record still `pending` after a crash
    /// can find and remove it.
    ///
    /// # Errors
    /// Any failure; the provider should leave nothing behind, or leave it findable by the record id.
    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping>;

    /// Fields the provider can tell before it makes the host — typically the `name` it will give it.
    /// They are written into the intent record, before [`Provider::checkout`] is called.
    fn planned_fields(&self, ctx: &CheckoutContext<'_>) -> Mapping {
        let _ = ctx;
        Mapping::new()
    }

    /// Gives a host back. Must succeed when the host no longer exists, and must handle records still
    /// `pending` (found by [`HostRecord::id`]).
    ///
    /// # Errors
    /// Any failure other than "already gone".
    async fn checkin(&self, host: &HostRecord) -> Result<()>;

    /// Extends the host's lease at the provider.
    ///
    /// # Errors
    /// [`Error::NotImplemented`] unless the provider supports it.
    async fn extend(&self, host: &HostRecord, args: &Mapping) -> Result<()> {
        let _ = (host, args);
        Err(self.not_implemented("extend"))
    }

    /// Runs a non-checkout action (e.g. a job template, a one-shot container) and returns its result.
    ///
    /// # Errors
    /// [`Error::NotImplemented`] unless the provider supports it.
    async fn execute(&self, args: &Mapping) -> Result<Value> {
        let _ = args;
        Err(self.not_implemented("execute"))
    }

    /// Answers a discovery query (`broker providers NAME --workflows`); `query` holds the flags given.
    ///
    /// # Errors
    /// [`Error::NotImplemented`] unless the provider supports it.
    async fn help(&self, query: &Mapping) -> Result<Value> {
        let _ = query;
        Err(self.not_implemented("discovery"))
    }

    /// Lists the hosts the provider holds for this user (`broker inventory --sync`). `filter` is the
    /// text after `Provider:` (a user name, a name prefix…).
    ///
    /// # Errors
    /// [`Error::NotImplemented`] unless the provider supports it.
    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let _ = filter;
        Err(self.not_implemented("inventory sync"))
    }

    /// Opens a session to a host this provider made.
    ///
    /// # Errors
    /// [`Error::NotImplemented`] unless the provider supports sessions.
    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn Session>> {
        let _ = host;
        Err(self.not_implemented("sessions"))
    }

    /// A [`Error::NotImplemented`] naming this provider.
    fn not_implemented(&self, operation: &str) -> Error {
        Error::NotImplemented {
            provider: self.name().to_owned(),
            operation: operation.to_owned(),
        }
    }
}

/// What broker tells a provider about one host it asks for.
#[derive(Debug)]
pub struct CheckoutContext<'a> {
    record_id: &'a RecordId,
    args: &'a Mapping,
    index: usize,
    expire_time: Option<i64>,
    kept: std::sync::Mutex<Vec<Mapping>>,
}

impl<'a> CheckoutContext<'a> {
    /// A context for the `index`-th host (0-based) of a request.
    pub fn new(record_id: &'a RecordId, args: &'a Mapping, index: usize) -> Self {
        CheckoutContext {
            record_id,
            args,
            index,
            expire_time: None,
            kept: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sets when the host's lease ends (seconds since the epoch; see [`crate::lease`]).
    pub fn with_expire_time(mut self, expire_time: Option<i64>) -> Self {
        self.expire_time = expire_time;
        self
    }

    /// When the host's lease ends (seconds since the epoch), if it has one: carry it as a label or
    /// tag where the provider has them, so that a host can be reaped when its record is gone.
    pub fn expire_time(&self) -> Option<i64> {
        self.expire_time
    }

    /// The identity of the intent record: tag what you create with it.
    pub fn record_id(&self) -> &RecordId {
        self.record_id
    }

    /// The checkout arguments (nick, args file and command line merged; the instance selector removed).
    pub fn args(&self) -> &Mapping {
        self.args
    }

    /// A string argument.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.get(key).and_then(Value::as_str)
    }

    /// Which host of the request this is (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Asks broker to keep a host that a *failed* checkout left behind, instead of cleaning up.
    ///
    /// Call it before returning the error from [`Provider::checkout`]. Broker then records each kept
    /// host in the inventory (the first in the intent record, marked `deploy_failed: true`, with the
    /// error), so the user can look at it and check it in later, and does not call
    /// [`Provider::checkin`] on the intent record. Used for AnsibleTower's
    /// `dangling_behavior: store`.
    pub fn keep_failed(&self, fields: Mapping) {
        crate::sync::lock(&self.kept).push(fields);
    }

    /// The hosts [`CheckoutContext::keep_failed`] was given, taking them.
    pub fn take_kept(&self) -> Vec<Mapping> {
        std::mem::take(&mut *crate::sync::lock(&self.kept))
    }
}

/// A flag of `broker providers NAME`.
#[derive(Debug, Clone, Copy)]
pub struct HelpOption {
    /// The flag's name with underscores (`container_hosts`); the CLI shows it with dashes.
    pub name: &'static str,
    /// Whether it takes a value (`--workflow NAME`) or is a switch (`--workflows`).
    pub takes_value: bool,
    /// One line of help.
    pub help: &'static str,
}

/// The operations whose arguments a provider declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `broker checkout`, [`crate::Broker::checkout`].
    Checkout,
    /// `broker execute`, [`crate::Broker::execute`].
    Execute,
    /// `broker extend`, [`crate::Broker::extend`].
    Extend,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Checkout => "checkout",
            Operation::Execute => "execute",
            Operation::Extend => "extend",
        }
    }
}

/// The arguments a provider takes for one [`Operation`], besides its action keys, `provider_labels`
/// and broker's own (`_broker_origin`, other keys starting with `_`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Arguments {
    /// Any argument: the provider passes those it does not know on (AnsibleTower hands them to the
    /// workflow as extra vars).
    Any,
    /// Only these; anything else is a usage error naming the closest of them, so a mistyped
    /// argument is never silently ignored.
    Only(&'static [&'static str]),
    /// Any argument, but the provider acts only on these and the others are just recorded with the
    /// host (TestProvider, which stands in for providers that pass arguments on). A misspelling of
    /// one of these ([`crate::spelling::misspelling_of`]: `fail_chekout`, `Fail-Checkout`) would be
    /// recorded and silently not acted on, so it is a usage error naming the argument meant.
    Recorded(&'static [&'static str]),
}

impl Arguments {
    /// The arguments named (none for [`Arguments::Any`]).
    pub fn declared(self) -> &'static [&'static str] {
        match self {
            Arguments::Only(keys) | Arguments::Recorded(keys) => keys,
            Arguments::Any => &[],
        }
    }
}

/// Builds a provider for one configured instance.
pub type BuildProvider = fn(ProviderConfig) -> Result<Arc<dyn Provider>>;

/// How a kind makes its provider: a provider's own constructor, or (for the conformance kit's
/// fault wrapper) a closure around another kind's, which keeps its state for the life of the
/// process (kinds are `Copy` and `'static`).
#[derive(Clone, Copy)]
enum Builder {
    Function(BuildProvider),
    #[cfg_attr(not(feature = "conformance"), allow(dead_code))]
    Closure(&'static (dyn Fn(ProviderConfig) -> Result<Arc<dyn Provider>> + Send + Sync)),
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Builder::Function(build) => fmt::Debug::fmt(build, f),
            Builder::Closure(_) => f.write_str("<closure>"),
        }
    }
}

/// The static description of a provider: its name, action keys, discovery flags and constructor.
#[derive(Debug, Clone, Copy)]
pub struct ProviderKind {
    name: &'static str,
    about: &'static str,
    checkout_actions: &'static [&'static str],
    execute_actions: &'static [&'static str],
    arguments: &'static [&'static str],
    help_options: &'static [HelpOption],
    checkout_arguments: Arguments,
    execute_arguments: Arguments,
    extend_arguments: Arguments,
    settings_problems: fn(&ProviderConfig) -> Vec<Problem>,
    build: Builder,
}

/// The settings problems of a provider that declares no settings struct: none known.
fn no_settings_problems(_: &ProviderConfig) -> Vec<Problem> {
    Vec::new()
}

impl ProviderKind {
    /// A provider kind with no actions yet. It takes any argument for checkout and execute, and
    /// none for extend, until told otherwise ([`ProviderKind::takes`]).
    pub const fn new(name: &'static str, about: &'static str, build: BuildProvider) -> Self {
        ProviderKind {
            name,
            about,
            checkout_actions: &[],
            execute_actions: &[],
            arguments: &[],
            help_options: &[],
            checkout_arguments: Arguments::Any,
            execute_arguments: Arguments::Any,
            extend_arguments: Arguments::Only(&[]),
            settings_problems: no_settings_problems,
            build: Builder::Function(build),
        }
    }

    /// The same kind, built by `build` instead: the conformance kit wraps another kind's provider
    /// this way.
    #[cfg(feature = "conformance")]
    pub(crate) fn built_by(
        mut self,
        build: &'static (dyn Fn(ProviderConfig) -> Result<Arc<dyn Provider>> + Send + Sync),
    ) -> Self {
        self.build = Builder::Closure(build);
        self
    }

    /// The struct the provider reads its settings section into ([`ProviderSettings`]), so that
    /// `broker config validate` reports the keys of the section no one reads.
    pub const fn settings<S: ProviderSettings>(mut self) -> Self {
        self.settings_problems = S::problems;
        self
    }

    /// The keys of a provider instance's settings that the provider does not read, each with the
    /// closest one it does (none when it declares no [`ProviderKind::settings`]).
    pub fn settings_problems(&self, config: &ProviderConfig) -> Vec<Problem> {
        (self.settings_problems)(config)
    }

    /// The arguments the provider takes for `operation`.
    pub const fn takes(mut self, operation: Operation, arguments: Arguments) -> Self {
        match operation {
            Operation::Checkout => self.checkout_arguments = arguments,
            Operation::Execute => self.execute_arguments = arguments,
            Operation::Extend => self.extend_arguments = arguments,
        }
        self
    }

    /// The arguments the provider takes for `operation` (besides action keys, `provider_labels` and
    /// keys starting with `_`).
    pub fn arguments_of(&self, operation: Operation) -> Arguments {
        match operation {
            Operation::Checkout => self.checkout_arguments,
            Operation::Execute => self.execute_arguments,
            Operation::Extend => self.extend_arguments,
        }
    }

    /// Checks `args` against the arguments the provider takes for `operation`.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the first argument the provider does not take and the closest one it
    /// does; for [`Arguments::Recorded`], the first misspelling of an argument it acts on.
    pub fn check_arguments(&self, operation: Operation, args: &Mapping) -> Result<()> {
        let (declared, records_others) = match self.arguments_of(operation) {
            Arguments::Any => return Ok(()),
            Arguments::Only(keys) => (keys, false),
            Arguments::Recorded(keys) => (keys, true),
        };
        let actions: &[&str] = match operation {
            Operation::Checkout => self.checkout_actions,
            Operation::Execute => self.execute_actions,
            Operation::Extend => &[],
        };
        let mut known: Vec<&str> = declared.to_vec();
        known.extend(actions);
        if operation == Operation::Execute {
            known.extend(self.checkout_actions);
        }
        for key in args.keys() {
            let key = match key {
                Value::String(k) => k.as_str(),
                _ => continue,
            };
            if key.starts_with('_') || key == "provider_labels" || known.contains(&key) {
                continue;
            }
            if !records_others {
                return Err(self.not_taken(operation, key, &known));
            }
            if let Some(meant) = crate::spelling::misspelling_of(key, declared) {
                return Err(Error::usage(format!(
                    "{} {} would only record `{key}`; did you mean `{meant}`? (it acts on: {})",
                    self.name,
                    operation.name(),
                    declared.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The usage error for an argument `key` that `operation` does not take.
    fn not_taken(&self, operation: Operation, key: &str, known: &[&str]) -> Error {
        let takes = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        Error::usage(match closest(key, known) {
            Some(near) => format!(
                "{} {} takes no argument `{key}`; did you mean `{near}`? (it takes: {takes})",
                self.name,
                operation.name()
            ),
            None => format!(
                "{} {} takes no argument `{key}` (it takes: {takes})",
                self.name,
                operation.name()
            ),
        })
    }

    /// The argument keys that select this provider for a checkout.
    pub const fn checkout_actions(mut self, keys: &'static [&'static str]) -> Self {
        self.checkout_actions = keys;
        self
    }

    /// The argument keys that select this provider for `execute`.
    pub const fn execute_actions(mut self, keys: &'static [&'static str]) -> Self {
        self.execute_actions = keys;
        self
    }

    /// Other arguments the provider declares (`tower_inventory`, `new_expire_time`): the command
    /// line accepts them spelled with dashes too (`--tower-inventory`), as the Python broker did.
    pub const fn arguments(mut self, keys: &'static [&'static str]) -> Self {
        self.arguments = keys;
        self
    }

    /// The flags of `broker providers NAME`.
    pub const fn help_options(mut self, options: &'static [HelpOption]) -> Self {
        self.help_options = options;
        self
    }

    /// The provider's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One line saying what the provider is.
    pub fn about(&self) -> &'static str {
        self.about
    }

    /// Checkout action keys.
    pub fn checkout_action_keys(&self) -> &'static [&'static str] {
        self.checkout_actions
    }

    /// Execute action keys.
    pub fn execute_action_keys(&self) -> &'static [&'static str] {
        self.execute_actions
    }

    /// Declared arguments other than action keys.
    pub fn argument_keys(&self) -> &'static [&'static str] {
        self.arguments
    }

    /// Discovery flags.
    pub fn help_option_list(&self) -> &'static [HelpOption] {
        self.help_options
    }

    /// Builds the provider for a resolved configuration.
    ///
    /// # Errors
    /// [`Error::Configuration`] when the configuration lacks what the provider needs.
    pub fn build(&self, config: ProviderConfig) -> Result<Arc<dyn Provider>> {
        match self.build {
            Builder::Function(build) => build(config),
            Builder::Closure(build) => build(config),
        }
    }
}

/// The providers compiled in, by name.
#[derive(Debug, Clone, Default)]
pub struct ProviderRegistry {
    kinds: Vec<ProviderKind>,
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider kind (replacing one of the same name).
    #[must_use]
    pub fn with(mut self, kind: ProviderKind) -> Self {
        self.register(kind);
        self
    }

    /// Adds a provider kind (replacing one of the same name).
    pub fn register(&mut self, kind: ProviderKind) {
        self.kinds.retain(|k| k.name != kind.name);
        self.kinds.push(kind);
    }

    /// All kinds, in registration order.
    pub fn kinds(&self) -> &[ProviderKind] {
        &self.kinds
    }

    /// The kind named `name` (exact, else case-insensitive).
    pub fn get(&self, name: &str) -> Option<&ProviderKind> {
        self.kinds.iter().find(|k| k.name == name).or_else(|| {
            self.kinds
                .iter()
                .find(|k| k.name.eq_ignore_ascii_case(name))
        })
    }

    /// The kind named `name`, or an error listing the known ones.
    ///
    /// # Errors
    /// [`Error::User`] when no provider has that name.
    pub fn require(&self, name: &str) -> Result<&ProviderKind> {
        self.get(name).ok_or_else(|| {
            Error::user(format!(
                "unknown provider `{name}`; this broker knows: {}",
                self.names().join(", ")
            ))
        })
    }

    /// The names of all kinds.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
    }

    /// The kind and action key selected by checkout arguments.
    pub fn for_checkout(&self, args: &Mapping) -> Option<(&ProviderKind, &'static str)> {
        self.find_action(args, |k| k.checkout_actions)
    }

    /// The kind and action key selected by `execute` arguments.
    pub fn for_execute(&self, args: &Mapping) -> Option<(&ProviderKind, &'static str)> {
        self.find_action(args, |k| k.execute_actions)
            .or_else(|| self.for_checkout(args))
    }

    fn find_action(
        &self,
        args: &Mapping,
        keys: impl Fn(&ProviderKind) -> &'static [&'static str],
    ) -> Option<(&ProviderKind, &'static str)> {
        self.kinds.iter().find_map(|kind| {
            keys(kind)
                .iter()
                .find(|key| args.contains_key(**key))
                .map(|key| (kind, *key))
        })
    }

    /// Every key some provider declares: action keys and declared arguments. The command line
    /// accepts these spelled with dashes.
    pub fn declared_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.all_action_keys()
            .chain(self.kinds.iter().flat_map(|k| k.arguments.iter().copied()))
            .chain(self.kinds.iter().flat_map(move |k| {
                [
                    k.checkout_arguments,
                    k.execute_arguments,
                    k.extend_arguments,
                ]
                .into_iter()
                .flat_map(|a| a.declared().iter().copied())
            }))
    }

    /// Every action key of every provider, e.g. for the `$action` inventory column.
    pub fn all_action_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds
            .iter()
            .flat_map(|k| k.checkout_actions.iter().chain(k.execute_actions))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
        Err(Error::user("not built in this test"))
    }

    /// A provider that implements only what it must.
    #[derive(Debug)]
    struct Minimal;

    #[async_trait::async_trait]
    impl Provider for Minimal {
        fn name(&self) -> &str {
            "Minimal"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _: &CheckoutContext<'_>) -> Result<Mapping> {
            Ok(Mapping::new())
        }
        async fn checkin(&self, _: &HostRecord) -> Result<()> {
            Ok(())
        }
    }

    /// A kind says what it was declared with.
    #[test]
    fn a_kind_says_what_it_was_declared_with() {
        const FLAGS: &[HelpOption] = &[HelpOption {
            name: "flavors",
            takes_value: false,
            help: "list flavors",
        }];
        let kind = ProviderKind::new("Minimal", "a test provider", never)
            .checkout_actions(&["minimal_action"])
            .execute_actions(&["minimal_job"])
            .arguments(&["size", "disk"])
            .help_options(FLAGS);
        assert_eq!(kind.name(), "Minimal");
        assert_eq!(kind.about(), "a test provider");
        assert_eq!(kind.checkout_action_keys(), ["minimal_action"]);
        assert_eq!(kind.execute_action_keys(), ["minimal_job"]);
        assert_eq!(kind.argument_keys(), ["size", "disk"]);
        let flags: Vec<&str> = kind.help_option_list().iter().map(|o| o.name).collect();
        assert_eq!(flags, ["flavors"]);
        let bare = ProviderKind::new("Bare", "", never);
        assert!(bare.argument_keys().is_empty() && bare.help_option_list().is_empty());
    }

    /// `{:?}` of a kind shows its name, and its constructor as a function (an address) or, for
    /// the conformance kit's wrapped kinds, as a closure.
    #[test]
    fn a_kind_debugs_with_its_name_and_constructor() {
        let kind = ProviderKind::new("Minimal", "test", never);
        let shown = format!("{kind:?}");
        assert!(shown.contains("name: \"Minimal\""), "{shown}");
        assert!(shown.contains("build: 0x"), "{shown}");
        #[cfg(feature = "conformance")]
        {
            static WRAPPED: fn(ProviderConfig) -> Result<Arc<dyn Provider>> = never;
            let wrapped = kind.built_by(&WRAPPED);
            let shown = format!("{wrapped:?}");
            assert!(shown.contains("build: <closure>"), "{shown}");
        }
    }

    #[tokio::test]
    async fn what_a_provider_does_not_implement_says_so_by_name() {
        let id = RecordId::from("r1");
        let args = Mapping::new();
        assert_eq!(
            Minimal.planned_fields(&CheckoutContext::new(&id, &args, 0)),
            Mapping::new()
        );
        let host = HostRecord::default();
        let said = |e: Error| (e.exit_code(), e.to_string());
        let expected = |operation: &str| {
            let e = Error::NotImplemented {
                provider: "Minimal".into(),
                operation: operation.into(),
            };
            (9, e.to_string())
        };
        assert_eq!(
            said(Minimal.extend(&host, &args).await.unwrap_err()),
            expected("extend")
        );
        assert_eq!(
            said(Minimal.execute(&args).await.unwrap_err()),
            expected("execute")
        );
        assert_eq!(
            said(Minimal.help(&args).await.unwrap_err()),
            expected("discovery")
        );
        assert_eq!(
            said(Minimal.inventory(None).await.unwrap_err()),
            expected("inventory sync")
        );
        assert_eq!(
            said(Minimal.connect(&host).await.unwrap_err()),
            expected("sessions")
        );
    }

    /// A kind tells its checkout and execute action keys and its other arguments apart.
    #[test]
    fn a_kind_keeps_its_action_keys_and_arguments_apart() {
        fn build(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
            Err(Error::user("not built in this test"))
        }
        let kind = ProviderKind::new("Kinds", "test", build)
            .checkout_actions(&["workflow", "template"])
            .execute_actions(&["job"]);
        assert_eq!(kind.checkout_action_keys(), ["workflow", "template"]);
        assert_eq!(kind.execute_action_keys(), ["job"]);
    }

    #[test]
    fn a_registry_finds_a_kind_by_its_exact_name_first_then_in_any_case() {
        let registry = ProviderRegistry::new()
            .with(ProviderKind::new("Beaker", "lower", never))
            .with(ProviderKind::new("BEAKER", "upper", never));
        let about = |name: &str| registry.get(name).map(ProviderKind::about);
        assert_eq!(about("BEAKER"), Some("upper"));
        assert_eq!(about("Beaker"), Some("lower"));
        assert_eq!(about("beaker"), Some("lower"));
        assert_eq!(about("Foreman"), None);
    }
    #[test]
    fn undeclared_arguments_are_refused_with_the_closest_name() {
        let kind = ProviderKind::new("A", "a", never)
            .checkout_actions(&["workflow"])
            .takes(Operation::Extend, Arguments::Only(&["new_expire_time"]));
        let args = |keys: &[&str]| -> Mapping {
            keys.iter()
                .map(|k| (Value::from(*k), Value::from("x")))
                .collect()
        };
        let err = kind
            .check_arguments(Operation::Extend, &args(&["expire_time"]))
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "A extend takes no argument `expire_time`; did you mean `new_expire_time`? (it takes: new_expire_time)"
        );
        let err = ProviderKind::new("B", "b", never)
            .check_arguments(Operation::Extend, &args(&["zzz"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "B extend takes no argument `zzz` (it takes: none)"
        );
        kind.check_arguments(
            Operation::Extend,
            &args(&["new_expire_time", "provider_labels", "_broker_origin"]),
        )
        .unwrap();
        // Checkout passes anything on unless told otherwise.
        kind.check_arguments(Operation::Checkout, &args(&["workflow", "anything"]))
            .unwrap();
        assert_eq!(
            closest("comand", &["entrypoint", "command", "name"]),
            Some("command")
        );
    }

    #[test]
    fn recorded_arguments_refuse_only_misspellings_of_those_acted_on() {
        let kind = ProviderKind::new("T", "t", never)
            .checkout_actions(&["test_action"])
            .takes(
                Operation::Checkout,
                Arguments::Recorded(&["fail_checkout", "hang"]),
            );
        let args = |pairs: &[&str]| -> Mapping {
            pairs
                .iter()
                .map(|k| (Value::from(*k), Value::from("x")))
                .collect()
        };
        let err = kind
            .check_arguments(
                Operation::Checkout,
                &args(&["test_action", "notes", "fail_chekout"]),
            )
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "T checkout would only record `fail_chekout`; did you mean `fail_checkout`? (it acts on: fail_checkout, hang)"
        );
        let err = kind
            .check_arguments(Operation::Checkout, &args(&["Hang"]))
            .unwrap_err();
        assert!(err.to_string().contains("did you mean `hang`?"), "{err}");
        // Its own, and anything far from them, are taken (the others to be recorded).
        kind.check_arguments(
            Operation::Checkout,
            &args(&["test_action", "fail_checkout", "hang", "tag", "arg1", "_x"]),
        )
        .unwrap();
        let registry = ProviderRegistry::new().with(kind);
        assert!(registry.declared_keys().any(|k| k == "fail_checkout"));
    }

    #[test]
    fn declared_keys_are_action_keys_and_declared_arguments() {
        let registry = ProviderRegistry::new()
            .with(
                ProviderKind::new("A", "a", never)
                    .checkout_actions(&["workflow"])
                    .execute_actions(&["job_template"])
                    .arguments(&["tower_inventory"]),
            )
            .with(ProviderKind::new("B", "b", never).checkout_actions(&["container_host"]));
        let keys: Vec<&str> = registry.declared_keys().collect();
        assert_eq!(
            keys,
            [
                "workflow",
                "job_template",
                "container_host",
                "tower_inventory"
            ]
        );
        let actions: Vec<&str> = registry.all_action_keys().collect();
        assert!(!actions.contains(&"tower_inventory"));
        let mut args = Mapping::new();
        args.insert("job_template".into(), "x".into());
        assert_eq!(
            registry.for_execute(&args).map(|(k, key)| (k.name(), key)),
            Some(("A", "job_template"))
        );
    }
}
