//! What a caller asks for, resolved against the settings and the registry — before any provider is
//! built or any record written.
//!
//! A checkout's arguments are layered nick < args file < command line; the provider is the one whose
//! action key is among them, and an argument named like it (`AnsibleTower: prod`) selects its
//! instance; the origin (`_broker_origin`, `_jenkins_url`) is added. Everything here is a pure
//! function of the request, the settings, the registry and the [`Origin`] handed in: it reads no
//! inventory, builds no provider and calls none, so it is tested without one.

use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use crate::args::layer;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::provider::{Operation, ProviderKind, ProviderRegistry};
use crate::record::HostRecord;
use crate::settings::Settings;

/// What to check out: a nick, arguments and a count.
///
/// Arguments are layered: the nick's, then the args file's, then those given here (later wins).
///
/// ```
/// use broker_core::CheckoutRequest;
///
/// let request = CheckoutRequest::new()
///     .nick("rhel9")
///     .arg("deploy_rhel_version", "9.4")
///     .count(2);
/// assert_eq!(request.host_count(), 2);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CheckoutRequest {
    nick: Option<String>,
    file_args: Mapping,
    args: Mapping,
    count: Option<usize>,
    keep_partial: bool,
    labels: Mapping,
    cancellation: Option<Cancellation>,
    lease: Option<Lease>,
    held_by_user: bool,
    handoff: Option<String>,
    keep_failed_handoff: bool,
}

impl CheckoutRequest {
    /// An empty request (one host).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the arguments of a nick from the settings.
    pub fn nick(mut self, name: impl Into<String>) -> Self {
        self.nick = Some(name.into());
        self
    }

    /// Adds arguments from an args file (they override the nick, and are overridden by
    /// [`CheckoutRequest::arg`]).
    pub fn args_file(mut self, args: Mapping) -> Self {
        self.file_args = layer(self.file_args, args);
        self
    }

    /// Sets one argument, e.g. `test_action`, `workflow`, or `AnsibleTower` (the instance to use).
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.args.insert(Value::String(key.into()), value.into());
        self
    }

    /// Sets several arguments.
    pub fn args(mut self, args: Mapping) -> Self {
        self.args = layer(self.args, args);
        self
    }

    /// The most hosts one checkout makes: more is refused with [`Error::Usage`] before anything is
    /// recorded or asked of a provider (a mistyped count must not book a thousand VMs, nor a
    /// billion intent records); ask for more in several checkouts.
    pub const MAX_COUNT: usize = 1000;

    /// How many hosts to check out (default 1; 0 or more than [`CheckoutRequest::MAX_COUNT`] makes
    /// the checkout fail with [`Error::Usage`]).
    pub fn count(mut self, count: usize) -> Self {
        self.count = Some(count);
        self
    }

    /// Keeps the hosts that were made when others fail, instead of checking them in again.
    pub fn keep_partial(mut self, keep: bool) -> Self {
        self.keep_partial = keep;
        self
    }

    /// Gives the hosts a lease: they are due back `lease` after the checkout starts, and
    /// `broker reap` (or the next broker's start) checks them in then, whoever holds them. It wins
    /// over a `lease` argument (nick, args file) and the provider section's `lease` setting.
    pub fn lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Hands the hosts to their user rather than to this process, as the CLI does: they are
    /// recorded as [`HostGuard::keep`](crate::HostGuard::keep) records a host, from the start, so they
    /// outlive this process and go back only by hand or when their lease ends. Without it (the
    /// default) a host is this process's while its guard lives: a reaper gives it back when the
    /// process is gone without having dropped the guard.
    pub fn held_by_user(mut self, held: bool) -> Self {
        self.held_by_user = held;
        self
    }

    /// Hands each host to the handoff target `target` once it is ready, before the guards are handed
    /// out (it wins over a `handoff` argument, e.g. a nick's). A failed handoff fails the checkout
    /// and checks the hosts in again, unless [`CheckoutRequest::keep_failed_handoff`].
    pub fn handoff(mut self, target: impl Into<String>) -> Self {
        self.handoff = Some(target.into());
        self
    }

    /// Keeps hosts whose handoff failed (recorded `handoff_failed`, handed out) instead of failing
    /// the checkout and checking them in.
    pub fn keep_failed_handoff(mut self, keep: bool) -> Self {
        self.keep_failed_handoff = keep;
        self
    }

    /// Labels for providers that support them (`-l k=v,…`).
    pub fn provider_labels(mut self, labels: Mapping) -> Self {
        self.labels = layer(self.labels, labels);
        self
    }

    /// The number of hosts asked for.
    pub fn host_count(&self) -> usize {
        self.count.unwrap_or(1)
    }

    /// Lets `cancellation` stop the checkout: no further host is started, provider calls under way
    /// are given `cancel_timeout` to answer, and every host made is checked in again; the checkout
    /// then fails with [`Error::Interrupted`] saying what was given back and what is left.
    pub fn cancel_with(mut self, cancellation: &Cancellation) -> Self {
        self.cancellation = Some(cancellation.clone());
        self
    }
}

/// Asks running checkouts to stop, e.g. on Ctrl-C (see [`CheckoutRequest::cancel_with`]).
///
/// Stopping is cooperative rather than abrupt: a provider call already under way may complete at
/// the provider even when its caller goes away (an engine finishes a create whose request was
/// dropped), so broker waits for its answer and gives back what it made.
///
/// ```
/// let stop = broker_core::Cancellation::new();
/// assert!(!stop.is_cancelled());
/// stop.cancel();
/// assert!(stop.is_cancelled());
/// ```
#[derive(Debug, Clone)]
pub struct Cancellation {
    state: Arc<tokio::sync::watch::Sender<bool>>,
    /// Set by [`Cancellation::stop_waiting`].
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Cancellation {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancellation {
    /// A cancellation not yet asked for.
    pub fn new() -> Self {
        Cancellation {
            state: Arc::new(tokio::sync::watch::channel(false).0),
            abandoned: Arc::default(),
        }
    }

    /// Asks everything watching this cancellation to stop.
    pub fn cancel(&self) {
        self.state.send_replace(true);
    }

    /// Asks to stop, as [`Cancellation::cancel`], and says the caller will not wait for the clean-up
    /// (a second Ctrl-C): a checkout watching this cancellation whose future is dropped from now on
    /// leaves what it had not finished in the inventory — `pending` or `releasing`, for
    /// [`Broker::recover`](crate::Broker::recover) — instead of giving it back in the background.
    pub fn stop_waiting(&self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel();
    }

    /// Whether [`Cancellation::stop_waiting`] was called.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether [`Cancellation::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.state.borrow()
    }

    /// Completes once [`Cancellation::cancel`] has been called.
    pub async fn cancelled(&self) {
        let mut seen = self.state.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = seen.wait_for(|stopped| *stopped).await;
    }
}

/// Where a checkout comes from, recorded with its hosts: `_broker_origin`, and `_jenkins_url` when
/// a Jenkins build runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// `_broker_origin`: who checked the host out.
    pub(crate) origin: String,
    /// `_jenkins_url`: the build's `BUILD_URL`, when set and not empty.
    pub(crate) build_url: Option<String>,
}

impl Origin {
    /// This process's origin: `explicit` ([`Broker::set_origin`](crate::Broker::set_origin)), else the
    /// calling thread's name (a test's) and the user, else the program name and the user.
    pub(crate) fn of_this_process(explicit: Option<String>) -> Origin {
        Origin {
            origin: explicit.unwrap_or_else(|| {
                let thread = std::thread::current();
                default_origin(thread.name(), &crate::record::current_user())
            }),
            build_url: std::env::var("BUILD_URL").ok().filter(|u| !u.is_empty()),
        }
    }
}

/// `THREAD (USER)` for a named thread other than `main` or a runtime worker (a test's thread is
/// named after the test), else `PROGRAM:USER`.
fn default_origin(thread: Option<&str>, user: &str) -> String {
    match thread {
        Some(name) if name != "main" && !name.starts_with("tokio-") => format!("{name} ({user})"),
        _ => {
            let program = std::env::args()
                .next()
                .and_then(|p| {
                    std::path::Path::new(&p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "broker".into());
            format!("{program}:{user}")
        }
    }
}

/// A checkout request resolved against the settings and the registry.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedCheckout {
    /// The provider whose action key the arguments name.
    pub(crate) kind: ProviderKind,
    /// The instance the arguments select, if any (else the provider's default).
    pub(crate) instance: Option<String>,
    /// The arguments the provider gets, with the origin added and instance selectors removed.
    pub(crate) args: Mapping,
    /// How many hosts.
    pub(crate) count: usize,
    /// Whether hosts made stay when others fail.
    pub(crate) keep_partial: bool,
    /// The lease asked for: the request's, else a `lease` argument, else the provider section's.
    pub(crate) lease: Option<Lease>,
    /// Whether the hosts are their user's from the start ([`CheckoutRequest::held_by_user`]).
    pub(crate) held_by_user: bool,
    /// The caller's cancellation.
    pub(crate) cancellation: Option<Cancellation>,
    /// The handoff target: the request's, else a `handoff` argument's.
    pub(crate) handoff: Option<String>,
    /// Whether hosts whose handoff failed are kept.
    #[cfg_attr(not(feature = "handoff"), allow(dead_code))]
    pub(crate) keep_failed_handoff: bool,
}

/// Resolves a checkout: layered arguments, the count, the provider and its instance, the origin.
///
/// # Errors
/// An unknown nick; a count that is not a whole number of 1 or more; no provider matching the
/// arguments; an argument the provider does not take.
pub(crate) fn resolve_checkout(
    request: &CheckoutRequest,
    settings: &Settings,
    registry: &ProviderRegistry,
    origin: Origin,
) -> Result<ResolvedCheckout> {
    let mut args = layered_args(request, settings)?;
    let count_arg = take_count(&mut args)?;
    // Zero hosts is a mistake to report, not a request for one host.
    let count = request.count.or(count_arg).unwrap_or(1);
    if count == 0 {
        return Err(Error::usage(
            "a count of 0 asks for no host; give 1 or more",
        ));
    }
    if count > CheckoutRequest::MAX_COUNT {
        return Err(Error::usage(format!(
            "at most {} hosts in one checkout; ask for more in several",
            CheckoutRequest::MAX_COUNT
        )));
    }
    let handoff = take_handoff(request, &mut args)?;
    let (kind, instance, mut args) = split_instance(registry, args, |r, a| r.for_checkout(a))?;
    let lease = take_lease(request, settings, &kind, instance.as_deref(), &mut args)?;
    kind.check_arguments(Operation::Checkout, &args)?;
    if !args.contains_key("_broker_origin") {
        args.insert("_broker_origin".into(), Value::from(origin.origin));
    }
    if let Some(url) = origin.build_url
        && !args.contains_key("_jenkins_url")
    {
        args.insert("_jenkins_url".into(), Value::from(url));
    }
    Ok(ResolvedCheckout {
        kind,
        instance,
        args,
        count,
        keep_partial: request.keep_partial,
        lease,
        held_by_user: request.held_by_user,
        cancellation: request.cancellation.clone(),
        handoff,
        keep_failed_handoff: request.keep_failed_handoff,
    })
}

/// The checkout argument (a nick's key) naming the handoff target hosts are handed to.
pub(crate) const HANDOFF_ARGUMENT: &str = "handoff";

/// The handoff target of a checkout: the request's, else the `handoff` argument's (a nick's
/// `handoff: TARGET`), which is taken out either way: it is broker's, not the provider's.
fn take_handoff(request: &CheckoutRequest, args: &mut Mapping) -> Result<Option<String>> {
    let given = match args.shift_remove(HANDOFF_ARGUMENT) {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if !name.trim().is_empty() => Some(name),
        Some(other) => {
            return Err(Error::usage(format!(
                "`{}` names a handoff target, not `{}`; give a target's name (`broker target list`)",
                HANDOFF_ARGUMENT,
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            )));
        }
    };
    Ok(request.handoff.clone().or(given))
}

/// The arguments of a request: the nick's < the args file's < the request's own, with provider
/// labels merged the same way.
fn layered_args(request: &CheckoutRequest, settings: &Settings) -> Result<Mapping> {
    let nick = match &request.nick {
        Some(name) => settings.nick(name)?,
        None => Mapping::new(),
    };
    let mut args = layer(layer(nick, request.file_args.clone()), request.args.clone());
    let mut labels = match args.shift_remove("provider_labels") {
        Some(Value::Mapping(m)) => m,
        Some(Value::String(s)) => crate::args::parse_labels(&s),
        _ => Mapping::new(),
    };
    labels = layer(labels, request.labels.clone());
    if !labels.is_empty() {
        args.insert("provider_labels".into(), Value::Mapping(labels));
    }
    Ok(args)
}

/// The lease of a checkout: the request's, else the `lease` argument's, else the provider section's
/// (its instance's over its own). The `lease` argument is taken out either way: it is broker's, not
/// the provider's. A lease of the settings (a nick's, the section's) that is not a duration is a
/// configuration error located in the settings file — when it is the one used: a lease given with
/// the checkout (`--lease`) wins over the settings, and a bad one it overrides is only warned of
/// (`broker config validate` reports it).
fn take_lease(
    request: &CheckoutRequest,
    settings: &Settings,
    kind: &ProviderKind,
    instance: Option<&str>,
    args: &mut Mapping,
) -> Result<Option<Lease>> {
    use crate::lease::fields::LEASE;
    let argument = args.shift_remove(LEASE).filter(|v| !v.is_null());
    // The argument is the nick's when neither the request nor its args file gave one.
    let nick = request
        .nick
        .as_deref()
        .filter(|_| !request.args.contains_key(LEASE) && !request.file_args.contains_key(LEASE));
    let read_argument = |value: &Value| {
        Lease::from_value(value).map_err(|e| match nick {
            Some(name) => settings.setting_error(&format!("nicks.{name}.{LEASE}"), e),
            None => e,
        })
    };
    // An instance that does not exist is reported when the provider is built, not here.
    let config = settings.provider_config(kind.name(), instance).ok();
    let section = config
        .as_ref()
        .and_then(|c| Some((c, c.get(LEASE).filter(|v| !v.is_null())?)));
    let read_section = |(config, value): (&crate::ProviderConfig, &Value)| {
        Lease::from_value(value).map_err(|e| config.setting_error(LEASE, e))
    };
    let mut given = [
        request.lease.map(Ok),
        argument.as_ref().map(read_argument),
        section.map(read_section),
    ]
    .into_iter()
    .flatten();
    let Some(used) = given.next() else {
        return Ok(None);
    };
    for overridden in given.filter_map(Result::err) {
        tracing::warn!("{overridden}; not used: this checkout's lease overrides it");
    }
    used.map(Some)
}

/// Takes the count out of the arguments (`_count`, else `count`), if one is given.
fn take_count(args: &mut Mapping) -> Result<Option<usize>> {
    let Some(given) = args
        .shift_remove("_count")
        .or_else(|| args.shift_remove("count"))
    else {
        return Ok(None);
    };
    crate::value::scalar_u64(&given)
        .and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            Error::usage(format!(
                "the count of hosts must be a whole number (1 or more), not `{}`",
                serde_yaml::to_string(&given).unwrap_or_default().trim()
            ))
        })
}

/// The provider `pick` finds for the arguments, the instance they select (an argument named like the
/// provider), and the arguments without any provider's instance selector.
fn split_instance(
    registry: &ProviderRegistry,
    mut args: Mapping,
    pick: impl for<'r> Fn(&'r ProviderRegistry, &Mapping) -> Option<(&'r ProviderKind, &'static str)>,
) -> Result<(ProviderKind, Option<String>, Mapping)> {
    let Some((kind, _)) = pick(registry, &args) else {
        return Err(no_provider_for(registry, &args));
    };
    let kind = *kind;
    let instance = match args.shift_remove(kind.name()) {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => Some(
            serde_yaml::to_string(&other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
    };
    // Instance selectors of other providers are not arguments either.
    for other in registry.names() {
        args.shift_remove(other);
    }
    Ok((kind, instance, args))
}

/// The error for arguments no provider's action key is among: what was given, and what would do.
fn no_provider_for(registry: &ProviderRegistry, args: &Mapping) -> Error {
    let mut keys: Vec<&str> = registry.all_action_keys().collect();
    keys.sort_unstable();
    keys.dedup();
    let given: Vec<String> = args
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    Error::user(format!(
        "could not determine a provider from the arguments ({}); give one of: {}",
        if given.is_empty() {
            "none given".to_owned()
        } else {
            given.join(", ")
        },
        keys.join(", ")
    ))
}

/// Resolves a provider action that is not a checkout (`broker execute`): the provider, its instance
/// and the arguments.
///
/// # Errors
/// An unknown nick; no provider matching the arguments; an argument the provider does not take.
pub(crate) fn resolve_execute(
    request: &CheckoutRequest,
    settings: &Settings,
    registry: &ProviderRegistry,
) -> Result<(ProviderKind, Option<String>, Mapping)> {
    let args = layered_args(request, settings)?;
    let (kind, instance, args) = split_instance(registry, args, |r, a| r.for_execute(a))?;
    kind.check_arguments(Operation::Execute, &args)?;
    Ok((kind, instance, args))
}

/// The first of `keys` given in `args`: the action a request runs.
pub(crate) fn first_action<'a>(keys: &[&'a str], args: &Mapping) -> &'a str {
    keys.iter()
        .copied()
        .find(|k| args.contains_key(*k))
        .unwrap_or_default()
}

/// Where `broker inventory --sync` looks: `Provider`, `Provider:arg`, `Provider::instance` or
/// `Provider:arg::instance`, as (provider, argument, instance).
pub(crate) fn parse_sync_spec(spec: &str) -> (&str, Option<&str>, Option<&str>) {
    let (head, instance) = match spec.split_once("::") {
        Some((h, i)) => (h, Some(i).filter(|i| !i.is_empty())),
        None => (spec, None),
    };
    let (name, arg) = match head.split_once(':') {
        Some((n, a)) => (n, Some(a).filter(|a| !a.is_empty())),
        None => (head, None),
    };
    (name, arg, instance)
}

/// The request that checks `record` out again (`broker duplicate`): its recorded arguments, without
/// its origin, with its provider instance selected.
///
/// # Errors
/// [`Error::User`] when the record's secret arguments were stored masked (the inventory at
/// `inventory` is readable by others), so the host cannot be made again from the record alone.
pub(crate) fn duplicate_request(
    record: &HostRecord,
    count: usize,
    cancellation: &Cancellation,
    inventory: &str,
) -> Result<CheckoutRequest> {
    let not_stored = crate::redact::masked_keys(&record.args());
    if !not_stored.is_empty() {
        return Err(Error::user(format!(
            "host {} was checked out with secret arguments the inventory does not hold \
             (`{}`: `{inventory}` can be read by others, so they were stored masked); check it out \
             again with `broker checkout`, giving them, or keep the inventory private \
             (`chmod 600`) before checking out",
            record.display_name(),
            not_stored.join("`, `"),
        )));
    }
    let mut args = record.args();
    args.shift_remove("_broker_origin");
    args.shift_remove("_jenkins_url");
    if let (Some(provider), Some(instance)) = (record.provider(), record.instance()) {
        args.insert(Value::from(provider), Value::from(instance));
    }
    Ok(CheckoutRequest::new()
        .args(args)
        .count(count)
        .held_by_user(true)
        .cancel_with(cancellation))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolution builds no provider: a kind whose constructor fails shows it never is.
    fn unbuilt(_config: crate::ProviderConfig) -> Result<Arc<dyn crate::Provider>> {
        Err(Error::user("resolving a request built a provider"))
    }

    fn registry() -> ProviderRegistry {
        ProviderRegistry::new()
            .with(
                ProviderKind::new("Cloud", "test", unbuilt)
                    .checkout_actions(&["workflow"])
                    .execute_actions(&["job_template"]),
            )
            .with(ProviderKind::new("Local", "test", unbuilt).checkout_actions(&["container_host"]))
    }

    fn settings(yaml: &str) -> Settings {
        Settings::from_yaml("/nonexistent", yaml).unwrap()
    }

    fn origin() -> Origin {
        Origin {
            origin: "a_test (alice)".into(),
            build_url: None,
        }
    }

    fn resolve(request: &CheckoutRequest, yaml: &str) -> Result<ResolvedCheckout> {
        resolve_checkout(request, &settings(yaml), &registry(), origin())
    }

    /// A `handoff` argument (a nick's `handoff: TARGET`) names the target and is broker's, not the
    /// provider's; the request's own target wins; anything but a name is refused.
    #[test]
    fn a_handoff_argument_names_the_target_and_goes_no_further() {
        let asked = CheckoutRequest::new()
            .arg("workflow", "w")
            .arg("handoff", "puppet");
        let resolved = resolve(&asked, "{}").unwrap();
        assert_eq!(resolved.handoff.as_deref(), Some("puppet"));
        assert!(
            !resolved.args.contains_key("handoff"),
            "{:?}",
            resolved.args
        );
        let own = asked.clone().handoff("chef");
        assert_eq!(
            resolve(&own, "{}").unwrap().handoff.as_deref(),
            Some("chef")
        );
        let none = CheckoutRequest::new().arg("workflow", "w");
        assert_eq!(resolve(&none, "{}").unwrap().handoff, None);
        for bad in [Value::from("  "), Value::from(3), Value::Sequence(vec![])] {
            let request = CheckoutRequest::new()
                .arg("workflow", "w")
                .arg("handoff", bad.clone());
            let err = resolve(&request, "{}").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
            assert!(err.to_string().contains("names a handoff target"), "{err}");
        }
    }

    fn text(args: &Mapping, key: &str) -> Option<String> {
        args.get(key).and_then(crate::value::scalar_text)
    }

    /// The action a request runs is the first of the provider's action keys it gives.
    #[test]
    fn the_first_action_key_given_is_the_action() {
        let args: Mapping = serde_yaml::from_str("{job_template: t, workflow: w, x: 1}").unwrap();
        assert_eq!(
            first_action(&["workflow", "job_template"], &args),
            "workflow"
        );
        assert_eq!(
            first_action(&["nick", "job_template"], &args),
            "job_template"
        );
        assert_eq!(first_action(&["nick"], &args), "");
    }

    #[test]
    fn keeping_partial_results_is_what_the_request_says() {
        let request = CheckoutRequest::new().arg("workflow", "w");
        assert!(!resolve(&request, "").unwrap().keep_partial);
        let request = request.keep_partial(true);
        assert!(resolve(&request, "").unwrap().keep_partial);
    }

    #[test]
    fn arguments_layer_nick_then_args_file_then_command_line() {
        let nicks = "nicks:\n  rhel9: {workflow: deploy, a: nick, b: nick, c: nick}\n";
        let mut file = Mapping::new();
        file.insert("b".into(), "file".into());
        file.insert("c".into(), "file".into());
        let request = CheckoutRequest::new()
            .nick("rhel9")
            .args_file(file)
            .arg("c", "command line");
        let resolved = resolve(&request, nicks).unwrap();
        assert_eq!(resolved.kind.name(), "Cloud");
        assert_eq!(text(&resolved.args, "a").as_deref(), Some("nick"));
        assert_eq!(text(&resolved.args, "b").as_deref(), Some("file"));
        assert_eq!(text(&resolved.args, "c").as_deref(), Some("command line"));
        let err = resolve(&CheckoutRequest::new().nick("rhel8"), nicks).unwrap_err();
        assert!(err.to_string().contains("rhel8"), "{err}");
    }

    #[test]
    fn provider_labels_merge_with_the_requests_winning() {
        let nicks = "nicks:\n  web: {container_host: img, provider_labels: 'team=qe,tier=1'}\n";
        let mut labels = Mapping::new();
        labels.insert("tier".into(), "2".into());
        let request = CheckoutRequest::new().nick("web").provider_labels(labels);
        let resolved = resolve(&request, nicks).unwrap();
        let merged = resolved.args["provider_labels"].as_mapping().unwrap();
        assert_eq!(text(merged, "team").as_deref(), Some("qe"));
        assert_eq!(text(merged, "tier").as_deref(), Some("2"));
    }

    #[test]
    fn the_count_comes_from_the_request_else_the_arguments_and_zero_is_refused() {
        let args = CheckoutRequest::new().arg("workflow", "w");
        assert_eq!(resolve(&args, "").unwrap().count, 1);
        let from_args = args.clone().arg("_count", "3");
        let resolved = resolve(&from_args, "").unwrap();
        assert_eq!(resolved.count, 3);
        assert_eq!(resolved.args.get("_count"), None);
        assert_eq!(resolve(&from_args.count(2), "").unwrap().count, 2);
        for count in [CheckoutRequest::MAX_COUNT + 1, usize::MAX] {
            let e = resolve(&args.clone().count(count), "").unwrap_err();
            assert_eq!(
                e.to_string(),
                "at most 1000 hosts in one checkout; ask for more in several"
            );
            let e = resolve(&args.clone().arg("_count", count.to_string()), "").unwrap_err();
            assert!(matches!(e, Error::Usage { .. }), "{e:?}");
        }
        assert_eq!(
            resolve(&args.clone().count(CheckoutRequest::MAX_COUNT), "")
                .unwrap()
                .count,
            1000
        );
        let zero = resolve(&args.clone().count(0), "").unwrap_err();
        assert!(matches!(zero, Error::Usage { .. }), "{zero:?}");
        let words = resolve(&args.arg("count", "many"), "").unwrap_err();
        assert_eq!(
            words.to_string(),
            "the count of hosts must be a whole number (1 or more), not `many`"
        );
    }

    #[test]
    fn an_argument_named_like_a_provider_selects_its_instance_and_is_no_argument() {
        let request = CheckoutRequest::new()
            .arg("workflow", "w")
            .arg("Cloud", "prod")
            .arg("Local", "podman");
        let resolved = resolve(&request, "").unwrap();
        assert_eq!(resolved.instance.as_deref(), Some("prod"));
        assert_eq!(resolved.args.get("Cloud"), None);
        assert_eq!(resolved.args.get("Local"), None);
        let numbered = CheckoutRequest::new().arg("workflow", "w").arg("Cloud", 2);
        assert_eq!(
            resolve(&numbered, "").unwrap().instance.as_deref(),
            Some("2")
        );
        let unset = CheckoutRequest::new()
            .arg("workflow", "w")
            .arg("Cloud", Value::Null);
        assert_eq!(resolve(&unset, "").unwrap().instance, None);
    }

    #[test]
    fn arguments_no_provider_acts_on_are_refused_naming_what_would_do() {
        let err = resolve(&CheckoutRequest::new().arg("flavor", "big"), "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not determine a provider from the arguments (flavor); give one of: \
             container_host, job_template, workflow"
        );
        let none = resolve(&CheckoutRequest::new(), "").unwrap_err();
        assert!(none.to_string().contains("(none given)"), "{none}");
    }

    #[test]
    fn the_origin_is_added_unless_given_and_the_build_url_when_there_is_one() {
        let request = CheckoutRequest::new().arg("workflow", "w");
        let jenkins = Origin {
            origin: "job (ci)".into(),
            build_url: Some("https://ci/job/1".into()),
        };
        let resolved = resolve_checkout(&request, &settings(""), &registry(), jenkins).unwrap();
        assert_eq!(
            text(&resolved.args, "_broker_origin").as_deref(),
            Some("job (ci)")
        );
        assert_eq!(
            text(&resolved.args, "_jenkins_url").as_deref(),
            Some("https://ci/job/1")
        );
        let given = request
            .arg("_broker_origin", "mine")
            .arg("_jenkins_url", "https://ci/job/0");
        let resolved = resolve(&given, "").unwrap();
        assert_eq!(
            text(&resolved.args, "_broker_origin").as_deref(),
            Some("mine")
        );
        assert_eq!(
            text(&resolved.args, "_jenkins_url").as_deref(),
            Some("https://ci/job/0")
        );
        let plain = resolve(&CheckoutRequest::new().arg("workflow", "w"), "").unwrap();
        assert_eq!(text(&plain.args, "_jenkins_url"), None);
    }

    #[test]
    fn the_default_origin_is_the_tests_thread_else_the_program() {
        assert_eq!(
            default_origin(Some("checks::a_test"), "alice"),
            "checks::a_test (alice)"
        );
        let program = default_origin(None, "alice");
        assert!(
            program.ends_with(":alice") && !program.contains(' '),
            "{program}"
        );
        assert_eq!(default_origin(Some("main"), "alice"), program);
        assert_eq!(
            default_origin(Some("tokio-runtime-worker"), "alice"),
            program
        );
    }

    #[test]
    fn execute_requests_resolve_to_the_provider_of_their_action() {
        let request = CheckoutRequest::new()
            .arg("job_template", "t")
            .arg("Cloud", "prod");
        let (kind, instance, args) = resolve_execute(&request, &settings(""), &registry()).unwrap();
        assert_eq!(kind.name(), "Cloud");
        assert_eq!(instance.as_deref(), Some("prod"));
        assert_eq!(text(&args, "job_template").as_deref(), Some("t"));
        assert_eq!(args.get("_broker_origin"), None);
    }

    #[test]
    fn sync_specs_name_provider_argument_and_instance() {
        assert_eq!(parse_sync_spec("Cloud"), ("Cloud", None, None));
        assert_eq!(parse_sync_spec("Cloud:x"), ("Cloud", Some("x"), None));
        assert_eq!(
            parse_sync_spec("Cloud::prod"),
            ("Cloud", None, Some("prod"))
        );
        assert_eq!(
            parse_sync_spec("Cloud:x::prod"),
            ("Cloud", Some("x"), Some("prod"))
        );
    }

    #[test]
    fn a_duplicate_asks_for_the_recorded_arguments_and_instance_without_the_origin() {
        let mut args = Mapping::new();
        args.insert("workflow".into(), "w".into());
        args.insert("_broker_origin".into(), "someone".into());
        args.insert("_jenkins_url".into(), "https://ci/job/1".into());
        let record = HostRecord::pending("Cloud", Some("prod"), args);
        let request = duplicate_request(&record, 2, &Cancellation::new(), "inv").unwrap();
        assert_eq!(request.host_count(), 2);
        let resolved = resolve(&request, "").unwrap();
        assert_eq!(resolved.instance.as_deref(), Some("prod"));
        assert_eq!(
            text(&resolved.args, "_broker_origin").as_deref(),
            Some("a_test (alice)")
        );
        assert_eq!(text(&resolved.args, "_jenkins_url"), None);

        let mut secret = Mapping::new();
        secret.insert("workflow".into(), "w".into());
        secret.insert("host_password".into(), crate::redact::MASK.into());
        let masked = HostRecord::pending("Cloud", None, secret);
        let err =
            duplicate_request(&masked, 1, &Cancellation::new(), "/shared/inv.yaml").unwrap_err();
        assert!(
            err.to_string()
                .contains("(`host_password`: `/shared/inv.yaml` can be read"),
            "{err}"
        );
    }
}

/// Leases in request resolution.
#[cfg(test)]
mod lease_tests {
    use super::*;

    fn registry() -> ProviderRegistry {
        fn build(_: crate::ProviderConfig) -> Result<Arc<dyn crate::Provider>> {
            Err(Error::user("not built in these tests"))
        }
        ProviderRegistry::new().with(
            ProviderKind::new("Leasing", "test", build)
                .checkout_actions(&["lease_action"])
                .takes(
                    Operation::Checkout,
                    crate::provider::Arguments::Only(&["size"]),
                ),
        )
    }

    fn resolve(settings: &str, request: CheckoutRequest) -> Result<ResolvedCheckout> {
        let settings = Settings::from_yaml("/nonexistent", settings).unwrap();
        let origin = Origin {
            origin: "test".into(),
            build_url: None,
        };
        resolve_checkout(&request, &settings, &registry(), origin)
    }

    fn lease_of(settings: &str, request: CheckoutRequest) -> Option<u64> {
        let resolved = resolve(settings, request).unwrap();
        assert!(!resolved.args.contains_key("lease"), "{:?}", resolved.args);
        resolved.lease.map(|l| l.duration().as_secs())
    }

    #[test]
    fn the_lease_comes_from_the_request_then_the_arguments_then_the_provider_section() {
        let asked = || CheckoutRequest::new().arg("lease_action", "x");
        let section = "Leasing: {lease: 1d, instances: {big: {lease: 2d}, small: {default: true}}}\n\
                       nicks: {short: {lease_action: x, lease: 10m}}\n";
        assert_eq!(lease_of("{}", asked()), None);
        assert_eq!(lease_of(section, asked()), Some(86_400), "the section's");
        assert_eq!(
            lease_of(section, asked().arg("Leasing", "big")),
            Some(172_800)
        );
        assert_eq!(
            lease_of(section, asked().arg("Leasing", "small")),
            Some(86_400)
        );
        assert_eq!(
            lease_of(section, CheckoutRequest::new().nick("short")),
            Some(600)
        );
        assert_eq!(
            lease_of(
                section,
                CheckoutRequest::new().nick("short").arg("lease", "1h")
            ),
            Some(3600)
        );
        let given = Lease::parse("5m").unwrap();
        assert_eq!(
            lease_of(section, CheckoutRequest::new().nick("short").lease(given)),
            Some(300)
        );
    }

    /// A bad lease of the settings is a configuration error with its key and line — when it is the
    /// lease used; a lease the request gives wins over a bad one of the settings.
    #[test]
    fn a_bad_lease_of_the_settings_is_located_unless_the_request_overrides_it() {
        let settings =
            "Leasing:\n  lease: soon\nnicks:\n  short:\n    lease_action: x\n    lease: 0\n";
        let asked = || CheckoutRequest::new().arg("lease_action", "x");
        let e = resolve(settings, asked()).unwrap_err();
        assert_eq!(e.exit_code(), 8);
        assert_eq!(
            e.to_string(),
            "configuration error: `Leasing.lease` (broker_settings.yaml line 2): `soon` is not a \
             duration; write seconds (`90`) or units like `45s`, `30m`, `2h`, `1d`"
        );
        let e = resolve(settings, CheckoutRequest::new().nick("short")).unwrap_err();
        assert_eq!(e.exit_code(), 8);
        assert!(
            e.to_string().starts_with(
                "configuration error: `nicks.short.lease` (broker_settings.yaml line 6): a lease of 0"
            ),
            "{e}"
        );
        let given = Lease::parse("5m").unwrap();
        assert_eq!(lease_of(settings, asked().lease(given)), Some(300));
        assert_eq!(
            lease_of(settings, CheckoutRequest::new().nick("short").lease(given)),
            Some(300)
        );
        // An argument given with the request is the caller's, not a setting: a usage error.
        let e = resolve(settings, asked().arg("lease", "400d")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("longest broker gives (365d)"), "{e}");
        assert_eq!(
            lease_of(
                settings,
                CheckoutRequest::new().nick("short").arg("lease", "1h")
            ),
            Some(3600)
        );
    }

    #[test]
    fn a_bad_lease_is_a_usage_error_before_anything_is_made() {
        let e = resolve(
            "{}",
            CheckoutRequest::new()
                .arg("lease_action", "x")
                .arg("lease", "soon"),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("`soon` is not a duration"), "{e}");
    }
}
