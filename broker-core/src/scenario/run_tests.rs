//! The scenario runner against a provider of the tests' own. The CLI's tests run scenarios end to
//! end (TestProvider hosts, real containers for `ssh`/`scp`/`sftp`); these run the runner's own
//! rules inside broker-core, where a mutation run builds them.

use std::path::Path;
use std::sync::Arc;

use super::Scenario;
use crate::provider::{CheckoutContext, Provider, ProviderKind, ProviderRegistry};
use crate::{Broker, HostRecord, Mapping, Result, Settings, Value};

/// Makes hosts `h0`, `h1`… (by their index in the checkout), answers `execute` and discovery with
/// what it was given.
#[derive(Debug)]
struct Made {
    /// Its `greeting` setting, which `execute` answers with.
    greeting: Option<String>,
}

#[async_trait::async_trait]
impl Provider for Made {
    fn name(&self) -> &str {
        "Made"
    }
    fn instance(&self) -> Option<&str> {
        None
    }
    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let mut fields = Mapping::new();
        fields.insert("hostname".into(), format!("h{}", ctx.index()).into());
        Ok(fields)
    }
    async fn checkin(&self, _host: &HostRecord) -> Result<()> {
        Ok(())
    }
    async fn execute(&self, args: &Mapping) -> Result<Value> {
        let mut answer = args.clone();
        if let Some(greeting) = &self.greeting {
            answer.insert("greeting".into(), greeting.as_str().into());
        }
        Ok(Value::Mapping(answer))
    }
    async fn help(&self, query: &Mapping) -> Result<Value> {
        Ok(Value::Mapping(query.clone()))
    }
}

fn build(config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Made {
        greeting: config.get_str("greeting"),
    }))
}

fn broker(dir: &Path) -> Broker {
    let settings = Settings::load_from(dir, Vec::new()).unwrap();
    let kind = ProviderKind::new("Made", "test", build)
        .checkout_actions(&["made_action"])
        .execute_actions(&["made_job"]);
    Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap()
}

/// Runs `yaml` with `{{ WORK }}` the broker's directory `dir`: its error with its causes when it
/// fails. A run that does not end within a minute fails the test (a step retried forever, a wait
/// that never ends).
async fn run_in(dir: &Path, yaml: &str) -> std::result::Result<(), String> {
    let broker = broker(dir);
    let mut scenario = Scenario::from_yaml("t", yaml).unwrap();
    scenario.set_variable("WORK", dir.to_str().unwrap());
    let run = tokio::time::timeout(std::time::Duration::from_secs(60), scenario.run(&broker));
    match run.await.expect("the scenario ends within a minute") {
        Ok(_) => Ok(()),
        Err(e) => Err(crate::error::chain(&e)),
    }
}

/// Runs `yaml`, which must pass, and returns what its steps wrote to `WORK/out.yaml` and the
/// broker's records left.
async fn run(yaml: &str) -> (Value, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), yaml).await.unwrap();
    let out = std::fs::read_to_string(dir.path().join("out.yaml")).unwrap_or_default();
    let left = broker(dir.path()).inventory().list().unwrap();
    let mut names: Vec<String> = left.iter().map(HostRecord::display_name).collect();
    names.sort();
    (serde_yaml::from_str(&out).unwrap(), names)
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// A step that names one of the scenario's hosts works on that host, not on another it holds.
#[tokio::test]
async fn a_named_host_of_several_held_is_the_one_checked_in() {
    let (out, left) = run(r#"
variables: {WORK: ""}
steps:
  - name: two hosts
    action: checkout
    arguments: {made_action: x, count: 2}
  - name: give back the second
    action: checkin
    with:
      hosts: "@scenario_inv[1]"
  - name: what is held
    action: output
    arguments:
      content: "{{ scenario_inventory | map(attribute='hostname') | list }}"
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    assert_eq!(out, yaml("[h0]"));
    assert_eq!(
        left,
        ["h0"],
        "the scenario's host is the user's once it ends"
    );
}

/// `when` runs a step whose condition holds and skips one whose condition does not.
#[tokio::test]
async fn a_step_runs_when_its_condition_holds_and_is_skipped_otherwise() {
    let (out, _) = run(r#"
variables: {WORK: "", N: 2}
steps:
  - name: holds
    action: output
    when: N == 2
    arguments: {content: "ran", destination: "{{ WORK }}/out.yaml"}
  - name: does not hold
    action: output
    when: N == 3
    arguments: {content: "wrongly ran", destination: "{{ WORK }}/out.yaml", mode: append}
"#)
    .await;
    assert_eq!(out, yaml("ran"));
}

/// A loop's outputs are kept by item (the first of several loop variables), and `execute` and
/// `provider_info` hand the provider what the step gives (a `query` name becomes a flag).
#[tokio::test]
async fn loops_key_their_outputs_by_item_and_provider_actions_get_their_arguments() {
    let (out, _) = run(r#"
variables: {WORK: "", PORTS: {http: 80, ssh: 22}}
steps:
  - name: each name
    action: execute
    loop: {iterable: "['a', 'b']", iter_var: name}
    arguments: {made_job: "{{ name }}"}
    capture: {as: by_name}
  - name: each port
    action: execute
    loop: {iterable: "{{ PORTS.items() }}", iter_var: "service, port"}
    arguments: {made_job: "{{ port }}"}
    capture: {as: by_service}
  - name: discovery by name
    action: provider_info
    arguments: {provider: Made, query: flavors}
    capture: {as: flag}
  - name: discovery by mapping
    action: provider_info
    arguments: {provider: Made, query: {image: rhel}}
    capture: {as: mapping}
  - name: all
    action: output
    arguments:
      content:
        by_name: "{{ by_name }}"
        by_service: "{{ by_service }}"
        flag: "{{ flag }}"
        mapping: "{{ mapping }}"
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    assert_eq!(
        out,
        yaml(
            "{by_name: {a: {made_job: a}, b: {made_job: b}}, \
              by_service: {http: {made_job: 80}, ssh: {made_job: 22}}, \
              flag: {flavors: true}, mapping: {image: rhel}}"
        )
    );
}

/// `run_scenarios` runs each scenario it names.
#[tokio::test]
async fn run_scenarios_runs_the_scenarios_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("nested.yaml");
    let written = dir.path().join("nested.txt");
    std::fs::write(
        &nested,
        format!(
            "steps:\n  - name: say so\n    action: output\n    arguments: {{content: nested ran, \
             destination: '{}'}}\n",
            written.display()
        ),
    )
    .unwrap();
    run(&format!(
        "variables: {{WORK: ''}}\nsteps:\n  - name: nested\n    action: run_scenarios\n    \
         arguments: {{paths: ['{}']}}\n",
        nested.display()
    ))
    .await;
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "nested ran\n");
}

/// Runs `yaml`, which must fail, and returns its error with its causes.
async fn run_failing(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), yaml)
        .await
        .expect_err("the scenario fails")
}

/// Runs `yaml` (which must pass) on `dir`'s broker and returns what its steps wrote to the
/// terminal, as (stderr?, text).
async fn shown_by(dir: &Path, yaml: &str) -> Vec<(bool, String)> {
    let broker = broker(dir);
    let scenario = Scenario::from_yaml("t", yaml).unwrap();
    let shown = std::sync::Mutex::new(Vec::new());
    let observer = |event: &super::StepEvent| {
        if let super::StepEvent::Output { stderr, text } = event {
            shown.lock().unwrap().push((*stderr, text.clone()));
        }
    };
    let ran = scenario.run_observed(&broker, &observer);
    tokio::time::timeout(std::time::Duration::from_secs(60), ran)
        .await
        .expect("the scenario ends within a minute")
        .unwrap();
    shown.into_inner().unwrap()
}

/// Checks that a step of `action` refuses each of `cases`' arguments with its message.
async fn refuses(action: &str, cases: &[(&str, &str)]) {
    for (args, message) in cases {
        let yaml = format!("steps:\n  - {{name: s, action: {action}, arguments: {args}}}\n");
        let err = run_failing(&yaml).await;
        assert!(err.contains(message), "{action} {args}: {err}");
    }
}

/// A failing step is tried as often as its `retry.count` says, then fails the scenario.
#[tokio::test]
async fn a_failing_step_is_tried_as_often_as_it_says_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let scenario = Scenario::from_yaml(
        "t",
        "steps:\n  - name: never\n    action: assert\n    retry: {count: 3, delay: 0s}\n    \
         arguments: {that: 'retry.attempt > 5', fail_msg: not yet}\n",
    )
    .unwrap();
    let retries = std::sync::atomic::AtomicUsize::new(0);
    let observer = |event: &super::StepEvent| {
        if matches!(event, super::StepEvent::Retrying { .. }) {
            retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let run = scenario.run_observed(&broker, &observer);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), run).await;
    let err = ended
        .expect("the scenario ends within a minute")
        .unwrap_err();
    assert!(crate::error::chain(&err).contains("not yet"), "{err}");
    assert_eq!(
        retries.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "three attempts"
    );
}

/// A host action (`ssh`, `scp`, `sftp`) needs hosts: with none held or named it is the scenario's
/// error; on the hosts it holds it goes to each (here to a provider that cannot connect, which
/// fails the step naming the host).
#[tokio::test]
async fn host_actions_go_to_the_scenarios_hosts_and_need_some() {
    let err =
        run_failing("steps:\n  - name: s\n    action: ssh\n    arguments: {command: 'true'}\n")
            .await;
    assert!(err.contains("`ssh` has no hosts"), "{err}");
    let err = run_failing(
        "steps:\n  - name: one\n    action: checkout\n    arguments: {made_action: x}\n  \
         - name: s\n    action: ssh\n    arguments: {command: 'true'}\n",
    )
    .await;
    assert!(
        err.ends_with("step `s`: `ssh` failed: host h0: Made does not support sessions"),
        "{err}"
    );
}

/// A `local_exec` without a `timeout` runs as long as it takes, and gives its output.
#[tokio::test]
async fn a_local_command_without_a_timeout_runs_to_its_end() {
    let (out, _) = run(r#"
variables: {WORK: ""}
steps:
  - name: echo
    action: local_exec
    arguments: {command: "sleep 0.2; echo done"}
    capture: {as: echoed, transform: "{{ step.output.stdout }}"}
  - name: out
    action: output
    arguments: {content: "{{ echoed }}", destination: "{{ WORK }}/out.yaml"}
"#)
    .await;
    assert_eq!(out.as_str(), Some("done\n"), "{out:?}");
}

/// A scenario's `config.settings` reach its providers; a loop's `when` skips the items for which
/// it does not hold; `output` goes to stdout or stderr as asked.
#[tokio::test]
async fn settings_reach_providers_loops_skip_items_and_output_goes_where_asked() {
    let (out, _) = run(r#"
variables: {WORK: ""}
config:
  settings:
    Made: {greeting: hello}
steps:
  - name: greet
    action: execute
    arguments: {made_job: x}
    capture: {as: greeted, transform: "{{ step.output.greeting }}"}
  - name: some
    action: execute
    loop: {iterable: "[1, 2, 3]", iter_var: n}
    when: n != 2
    arguments: {made_job: "{{ n }}"}
    capture: {as: some, transform: "{{ step.output.keys() | list }}"}
  - name: out
    action: output
    arguments:
      content: {greeted: "{{ greeted }}", some: "{{ some }}"}
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    assert_eq!(out, yaml("{greeted: hello, some: ['1', '3']}"));

    let dir = tempfile::tempdir().unwrap();
    let shown = shown_by(
        dir.path(),
        "steps:\n  - {name: a, action: output, arguments: {content: to-out}}\n  \
         - {name: b, action: output, arguments: {content: to-err, destination: stderr}}\n",
    )
    .await;
    assert_eq!(
        shown,
        [
            (false, "to-out\n".to_owned()),
            (true, "to-err\n".to_owned())
        ]
    );
}

/// `exit` with code 0 ends the scenario there, successfully; any other code fails it with the
/// message given (or a default one) and the code.
#[tokio::test]
async fn exit_ends_the_scenario_successfully_only_with_code_0() {
    let (out, _) = run(r#"
variables: {WORK: ""}
steps:
  - name: first
    action: output
    arguments: {content: before, destination: "{{ WORK }}/out.yaml"}
  - name: leave
    action: exit
    arguments: {return_code: 0}
  - name: never
    action: output
    arguments: {content: after, destination: "{{ WORK }}/out.yaml"}
"#)
    .await;
    assert_eq!(out, yaml("before"));
    let err = run_failing(
        "steps:\n  - {name: leave, action: exit, arguments: {return_code: '3', message: broken}}\n",
    )
    .await;
    assert!(err.contains("exit action: broken (code: 3)"), "{err}");
    let err =
        run_failing("steps:\n  - {name: leave, action: exit, arguments: {return_code: 1}}\n").await;
    assert!(
        err.contains("exit action: the scenario exited (code: 1)"),
        "{err}"
    );
}

/// `assert` holds when every condition does; the first that does not fails the step with the
/// message given, numbered when there are several; a condition is text or a boolean.
#[tokio::test]
async fn assert_fails_at_the_first_condition_that_does_not_hold() {
    let step = |that: &str| {
        format!(
            "steps:\n  - {{name: check, action: assert, arguments: {{that: {that}, fail_msg: nope}}}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), &step("[true, '1 == 1']")).await.unwrap();
    let err = run_failing(&step("[true, '1 == 1', '2 == 3', false]")).await;
    assert!(err.contains("nope (condition #3): 2 == 3"), "{err}");
    let err = run_failing(&step("false")).await;
    assert!(err.contains("nope: false"), "{err}");
    assert!(!err.contains("condition #"), "{err}");
    let err = run_failing(&step("[true, 1]")).await;
    assert!(
        err.contains("assert condition #2 must be text or a boolean, not `1`"),
        "{err}"
    );
    let err = run_failing(&step("'1 +'")).await;
    assert!(err.contains("nope: 1 + (error:"), "{err}");
    let err =
        run_failing("steps:\n  - {name: check, action: assert, arguments: {fail_msg: x}}\n").await;
    assert!(err.contains("`assert` needs `that`"), "{err}");
    let err =
        run_failing("steps:\n  - {name: check, action: assert, arguments: {that: false}}\n").await;
    assert!(err.contains("assertion failed: false"), "{err}");
}

/// `provider_info` asks a provider's discovery: a query by name is a flag, a mapping is its
/// arguments, other arguments go along; it needs a provider and a query.
#[tokio::test]
async fn provider_info_asks_the_provider_named() {
    let (out, _) = run(r#"
variables: {WORK: ""}
steps:
  - name: flag
    action: provider_info
    arguments: {provider: Made, query: flavors, size: 2}
    capture: {as: flag}
  - name: mapping
    action: provider_info
    arguments: {provider: Made, query: {images: rhel}}
    capture: {as: mapping}
  - name: out
    action: output
    arguments:
      content: {flag: "{{ flag }}", mapping: "{{ mapping }}"}
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    assert_eq!(
        out,
        yaml("{flag: {size: 2, flavors: true}, mapping: {images: rhel}}")
    );
    refuses(
        "provider_info",
        &[
            ("{query: x}", "`provider_info` needs `provider`"),
            ("{provider: Made}", "`provider_info` needs `query`"),
            (
                "{provider: Made, query: [1]}",
                "`query` must be a name or a mapping",
            ),
        ],
    )
    .await;
}

/// `local_exec` runs its command here with the environment and directory given, gives its
/// output and status (a failing command does not fail the step), streams the output when asked,
/// and keeps what a command that timed out printed.
#[tokio::test]
async fn local_exec_runs_with_its_environment_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
steps:
  - name: run
    action: local_exec
    arguments:
      command: 'echo "$GREETING $(pwd)"; echo oops >&2; exit 3'
      env: {{GREETING: hi, IGNORED: null}}
      cwd: {dir}
      stream: true
    capture: {{as: ran}}
  - name: slow
    action: local_exec
    arguments: {{command: "echo partial; sleep 30", timeout: 1s}}
    capture: {{as: slow, transform: "{{{{ step.output.stdout }}}}"}}
  - name: out
    action: output
    arguments: {{content: {{ran: "{{{{ ran }}}}", slow: "{{{{ slow }}}}"}}, destination: {dir}/out.yaml}}
"#,
        dir = dir.path().display()
    );
    let shown = shown_by(dir.path(), &text).await;
    let out: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("out.yaml")).unwrap())
            .unwrap();
    let expected = format!(
        "{{ran: {{stdout: \"hi {}\\n\", stderr: \"oops\\n\", status: 3}}, slow: \"partial\\n\"}}",
        dir.path().display()
    );
    assert_eq!(out, yaml(&expected));
    assert_eq!(
        shown,
        [
            (false, format!("hi {}\n", dir.path().display())),
            (true, "oops\n".to_owned())
        ]
    );
    refuses(
        "local_exec",
        &[
            ("{command: '  '}", "`local_exec` needs `command`"),
            (
                "{command: 'true', cwd: [1]}",
                "`local_exec` `cwd` must be text",
            ),
            (
                "{command: 'true', env: [1]}",
                "`local_exec` `env` must be a mapping",
            ),
        ],
    )
    .await;
}

/// `inventory` lists the inventory's records, all of them or those a filter selects; `output`
/// of a variable's name writes the variable's value; a checkout records the scenario as its
/// origin.
#[tokio::test]
async fn inventory_lists_records_and_output_names_variables() {
    let (out, left) = run(r#"
variables: {WORK: "", numbers: [1, 2]}
steps:
  - name: two
    action: checkout
    arguments: {made_action: x, count: 2}
  - name: all
    action: inventory
    capture: {as: all, transform: "{{ step.output | map(attribute='hostname') | list }}"}
  - name: second
    action: inventory
    arguments: {filter: "@inv[1]"}
    capture: {as: second, transform: "{{ step.output | map(attribute='hostname') | list }}"}
  - name: origin
    action: inventory
    arguments: {filter: "@inv[0]"}
    capture: {as: origin, transform: "{{ step.output[0]._broker_args._broker_origin }}"}
  - name: numbers
    action: output
    arguments: {content: numbers, destination: "{{ WORK }}/numbers.yaml"}
  - name: out
    action: output
    arguments:
      content: {all: "{{ all }}", second: "{{ second }}", origin: "{{ origin }}"}
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    assert_eq!(
        out,
        yaml("{all: [h0, h1], second: [h1], origin: 'scenario:t'}")
    );
    assert_eq!(left, ["h0", "h1"]);
}

/// What a failed step calls for: `on_error: continue` goes on, `on_error` steps run instead,
/// `exit_on_error: false` goes on; a loop with `on_error: continue` records an item's error and
/// goes on; a step over its `timeout` fails; every step's status is remembered.
#[tokio::test]
async fn failed_steps_go_on_as_they_say_and_a_timeout_fails_a_step() {
    let (out, _) = run(r#"
variables: {WORK: ""}
steps:
  - name: ignored
    action: assert
    arguments: {that: false, fail_msg: first}
    on_error: continue
  - name: handled
    action: assert
    arguments: {that: false}
    on_error:
      - name: recover
        action: local_exec
        arguments: {command: "echo recovered"}
  - name: tolerated
    action: assert
    arguments: {that: false}
    exit_on_error: false
  - name: each
    action: assert
    loop: {iterable: "[1, 2, 3]", iter_var: n, on_error: continue}
    arguments: {that: "n != 2", fail_msg: "not {{ n }}"}
  - name: slow
    action: local_exec
    arguments: {command: "sleep 30"}
    timeout: 1s
    on_error: continue
  - name: then
    action: output
    arguments:
      content:
        ignored: "{{ steps.ignored.status }}"
        ignored_output: "{{ steps.ignored.output }}"
        recovered: "{{ steps.recover.output.stdout }}"
        tolerated: "{{ steps.tolerated.status }}"
        each: "{{ steps.each.output }}"
        slow: "{{ steps.slow.output }}"
        previous: "{{ previous_step.name }}"
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    let field = |key: &str| out.get(key).cloned().unwrap_or_default();
    assert_eq!(field("ignored"), yaml("failed"));
    let ignored = field("ignored_output");
    assert!(
        ignored.as_str().is_some_and(|t| t.contains("first: false")),
        "{ignored:?}"
    );
    assert_eq!(field("recovered"), Value::from("recovered\n"));
    assert_eq!(field("tolerated"), yaml("failed"));
    let each = field("each");
    assert_eq!(each.get("1"), Some(&Value::Bool(true)), "{each:?}");
    assert_eq!(each.get("3"), Some(&Value::Bool(true)), "{each:?}");
    let error = each
        .get("2")
        .and_then(|e| e.get("error"))
        .and_then(Value::as_str);
    assert!(
        error.is_some_and(|e| e.contains("not 2: n != 2")),
        "{each:?}"
    );
    let slow = field("slow");
    assert!(
        slow.as_str().is_some_and(|t| t.contains("step `slow`")),
        "{slow:?}"
    );
    assert_eq!(field("previous"), yaml("slow"));
}

/// A loop's items: a list's items, a mapping's `[key, value]` pairs (unpacked into two
/// variables), a single value itself, none for null; `capture.key` keys the outputs.
#[tokio::test]
async fn loops_take_lists_mappings_and_single_values_keyed_as_asked() {
    let (out, _) = run(r#"
variables: {WORK: "", colours: {red: 1, blue: 2}, nothing: null}
steps:
  - name: pairs
    action: local_exec
    loop: {iterable: "colours", iter_var: "name, n"}
    arguments: {command: "echo {{ name }}={{ n }}"}
    capture: {as: pairs, key: "result.stdout | trim", transform: "{{ step.output.keys() | list }}"}
  - name: single
    action: local_exec
    loop: {iterable: "7", iter_var: x}
    arguments: {command: "echo {{ x }}"}
    capture: {as: single, transform: "{{ step.output.keys() | list }}"}
  - name: none
    action: local_exec
    loop: {iterable: "{{ nothing }}", iter_var: x}
    arguments: {command: "echo {{ x }}"}
    capture: {as: empty, transform: "{{ step.output | length }}"}
  - name: out
    action: output
    arguments:
      content: {pairs: "{{ pairs }}", single: "{{ single }}", empty: "{{ empty }}"}
      destination: "{{ WORK }}/out.yaml"
"#)
    .await;
    assert_eq!(
        out,
        yaml("{pairs: [red=1, blue=2], single: ['7'], empty: 0}")
    );
}

/// A failed scenario checks in the hosts it holds, unless asked to keep them; its scenario
/// inventory then lists what it still holds.
#[tokio::test]
async fn a_failed_scenario_gives_back_its_hosts_unless_asked_to_keep_them() {
    let text = "steps:\n  - {name: two, action: checkout, arguments: {made_action: x, count: 2}}\n  \
                - {name: fail, action: assert, arguments: {that: false}}\n";
    for keep in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let scenario = Scenario::from_yaml("t", text)
            .unwrap()
            .keep_hosts_on_failure(keep);
        let err = scenario.run(&broker).await.unwrap_err();
        assert!(
            crate::error::chain(&err).contains("assertion failed"),
            "{err}"
        );
        let left = broker.inventory().list().unwrap();
        let listed = std::fs::read_to_string(scenario.inventory_path(broker.settings())).unwrap();
        let listed: Vec<Value> = serde_yaml::from_str(&listed).unwrap();
        if keep {
            assert_eq!(left.len(), 2, "kept");
        } else {
            assert!(left.is_empty(), "given back: {left:?}");
            assert!(listed.is_empty(), "{listed:?}");
        }
    }
}
