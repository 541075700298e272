//! The remote CLI: `broker --server URL …` (and `BROKER_SERVER`) against a real `broker serve` on
//! loopback with TestProvider hosts — each verb's output and exit code as the same verb's on the
//! server's own inventory, the server's refusals as local exit codes, a missing or wrong token, a
//! server that is down or redirects, and the token never in output, logs or another origin.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Output;

use serde_json::Value;

use crate::serve::Setup;
use crate::serve::client::Served;
use crate::util::{BrokerDir, ChildGuard, DEADLINE, SETTINGS, output, wait_for};

/// A server in its own broker directory with a token of each role ([`Setup`]), and a client
/// directory apart (its own settings, no inventory).
struct Remote {
    setup: Setup,
    client_dir: BrokerDir,
}

impl std::ops::Deref for Remote {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl Remote {
    fn new() -> Remote {
        Remote {
            setup: Setup::new(SETTINGS),
            client_dir: BrokerDir::new(SETTINGS),
        }
    }

    /// `broker ARGS` in the client directory, the server in `BROKER_SERVER`, with `token`
    /// (none when empty) in `BROKER_SERVER_TOKEN`.
    fn with(&self, token: &str, args: &[&str]) -> Output {
        let mut command = self.client_dir.command(args);
        command.env("BROKER_SERVER", &self.server.addr);
        if !token.is_empty() {
            command.env("BROKER_SERVER_TOKEN", token);
        }
        output(&mut command)
    }

    /// `broker ARGS` on the server with the admin token, which must exit `code`; its stdout.
    fn remote(&self, args: &[&str], code: i32) -> String {
        checked(self.with(&self.admin, args), args, code).0
    }

    /// `broker ARGS` locally in the server's own directory, which must exit `code`; its stdout.
    fn local(&self, args: &[&str], code: i32) -> String {
        self.dir.expect(args, code)
    }
}

/// stdout and stderr of `out`, which must have exited `code`.
fn checked(out: Output, args: &[&str], code: i32) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "broker {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// `text` with each host's age (`0s`, `1m 2s`), which moves on between two runs, as `_`, and the
/// columns' padding as one space.
fn ageless(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .map(|word| {
                    let is_age = word
                        .strip_suffix(['s', 'm', 'h', 'd'])
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                    if is_age {
                        "_"
                    } else if word.chars().all(|c| c == '─') {
                        "─"
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `error: …` line of a failed command (else the last line of stderr).
fn error_line(stderr: &str) -> &str {
    // The error line, wherever it falls among log lines (a trace line may come after it).
    stderr
        .lines()
        .rfind(|line| line.starts_with("error: "))
        .or_else(|| stderr.lines().last())
        .unwrap_or_default()
}

#[test]
fn remote_verbs_print_what_the_same_verbs_print_on_the_servers_inventory() {
    let r = Remote::new();
    let made: Vec<Value> = serde_json::from_str(&r.remote(
        &[
            "checkout",
            "--test_action",
            "basic",
            "-c",
            "2",
            "-o",
            "json",
        ],
        0,
    ))
    .unwrap();
    assert_eq!(made.len(), 2);
    let on_server = r.dir.inventory();
    let ids = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .map(|h| h["_broker_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&made),
        ids(&on_server),
        "the server's inventory has them"
    );
    assert_eq!(made, on_server, "printed as the inventory holds them");
    assert!(
        !r.client_dir.inventory_path().exists(),
        "nothing was checked out locally"
    );

    for args in [
        &["inventory"][..],
        &["inventory", "-o", "json"],
        &["inventory", "-o", "yaml"],
        &["inventory", "--list"],
        &["inventory", "--filter", "@inv[-1]"],
    ] {
        assert_eq!(
            ageless(&r.remote(args, 0)),
            ageless(&r.local(args, 0)),
            "broker {args:?}"
        );
    }

    let name = |i: usize| made[i]["hostname"].as_str().unwrap().to_owned();
    assert_eq!(
        r.remote(&["extend", "0"], 0),
        format!("extended {}\n", name(0))
    );
    assert_eq!(
        r.remote(&["handoff", "status", "0", "-o", "json"], 0),
        "{}\n"
    );
    r.remote(&["target", "add", "-p", "noop", "-n", "hook"], 0);
    let run: Value = serde_json::from_str(&r.remote(
        &["handoff", "run", "1", "--target", "hook", "-o", "json"],
        0,
    ))
    .unwrap();
    assert_eq!(run["_broker_handoff_state"], "handed_off");
    for args in [
        &["handoff", "status", "1"][..],
        &["handoff", "status", "1", "-o", "yaml"],
        &["target", "list"],
        &["target", "show", "hook", "-o", "json"],
        &["target", "kinds"],
    ] {
        assert_eq!(r.remote(args, 0), r.local(args, 0), "broker {args:?}");
    }

    assert_eq!(
        r.remote(&["checkin", "0", "-o", "json"], 0),
        format!("[\n  \"{}\"\n]\n", name(0))
    );
    assert_eq!(
        r.remote(&["checkin", "--all"], 0),
        format!("checked in {}\n", name(1))
    );
    assert_eq!(r.dir.inventory(), Vec::<Value>::new());
    assert_eq!(
        r.remote(&["target", "remove", "hook"], 0)
            .lines()
            .nth(2)
            .map(|l| l.split_whitespace().next()),
        Some(Some("hook"))
    );
    assert_eq!(r.local(&["target", "list", "-o", "json"], 0), "[]\n");
}

#[test]
fn remote_failures_exit_with_the_codes_and_messages_of_the_same_failures_locally() {
    let r = Remote::new();
    r.remote(&["checkout", "-n", "N"], 0);
    for (args, code) in [
        (&["checkout", "-n", "nonick"][..], 13),
        (
            &[
                "checkout",
                "--test_action",
                "basic",
                "--fail_chekout",
                "all",
            ],
            2,
        ),
        (&["handoff", "status", "7"], 13),
        (&["handoff", "retry", "0"], 2),
        (&["target", "show", "nothing"], 13),
        (&["target", "add", "-p", "noop", "-n", "all"], 13),
    ] {
        let (_, remote) = checked(r.with(&r.admin, args), args, code);
        let local = r.dir.run(args);
        let (_, local) = checked(local, args, code);
        assert_eq!(error_line(&remote), error_line(&local), "broker {args:?}");
    }
    // A read token may look but not check out: 403 is a permission error.
    let (_, err) = checked(r.with(&r.read, &["checkout", "-n", "N"]), &["checkout"], 6);
    assert!(
        error_line(&err).starts_with(&format!(
            "error: permission denied: the broker server at http://{}: ",
            r.server.addr
        )),
        "{err}"
    );
    assert_eq!(r.dir.inventory().len(), 1, "nothing more was checked out");
    r.remote(&["target", "add", "-p", "noop", "-n", "hook"], 0);
    r.remote(&["handoff", "run", "0", "--target", "hook"], 0);
    let (_, err) = checked(
        r.with(&r.admin, &["target", "remove", "hook"]),
        &["target", "remove"],
        13,
    );
    assert!(err.contains("is still used by host"), "{err}");
    let (_, err) = checked(
        r.with(&r.write, &["target", "add", "-p", "noop", "-n", "other"]),
        &["target", "add"],
        6,
    );
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn remote_verbs_that_act_on_this_machine_are_usage_errors_and_nothing_runs_locally() {
    let r = Remote::new();
    for (args, said) in [
        (
            &["ssh", "0", "--", "true"][..],
            "`broker ssh` does not work with a broker server",
        ),
        (
            &["execute", "--test_action", "basic"],
            "`broker execute` does not work",
        ),
        (&["recover"], "`broker recover` does not work"),
        (&["reap"], "`broker reap` does not work"),
        (&["duplicate", "--all"], "`broker duplicate` does not work"),
        (&["providers"], "`broker providers` does not work"),
        (
            &["inventory", "--sync", "TestProvider"],
            "`broker inventory --sync` does not work",
        ),
        (
            &["checkin", "--pending"],
            "`broker checkin --pending` does not work",
        ),
        (
            &["checkout", "-n", "N", "--keep-partial"],
            "`--keep-partial` does not work",
        ),
        (
            &["target", "remove", "all", "--yes"],
            "cannot all be removed at once",
        ),
    ] {
        let (_, err) = checked(r.with(&r.admin, args), args, 2);
        assert!(error_line(&err).contains(said), "broker {args:?}: {err}");
    }
    assert!(!r.client_dir.inventory_path().exists());
    assert_eq!(r.dir.inventory(), Vec::<Value>::new());
    // `config` stays this machine's.
    let (out, _) = checked(
        r.with(&r.admin, &["config", "nicks"]),
        &["config", "nicks"],
        0,
    );
    assert_eq!(out, "N\n");
}

#[test]
fn remote_tokens_missing_wrong_or_with_a_server_down_are_clear_errors_and_never_shown() {
    let r = Remote::new();
    let (_, err) = checked(r.with("", &["inventory"]), &["inventory"], 5);
    assert_eq!(
        error_line(&err),
        format!(
            "error: authentication failed: no token for the broker server at {}; set \
             BROKER_SERVER_TOKEN (or `server_token` in the settings) to one that `broker serve \
             token add` printed",
            r.server.addr
        )
    );
    let wrong = "broker_not-a-token-of-this-server";
    let out = r.with(wrong, &["--log-level", "trace", "checkin", "--all"]);
    let (stdout, err) = checked(out, &["checkin"], 5);
    assert!(
        error_line(&err).starts_with(&format!(
            "error: authentication failed: the broker server at http://{} refused the token: the \
             bearer token is not valid",
            r.server.addr
        )),
        "{err}"
    );
    // A token in the settings works as BROKER_SERVER_TOKEN does.
    std::fs::write(
        r.client_dir.path().join("broker_settings.yaml"),
        format!("{SETTINGS}server_token: {}\n", r.write),
    )
    .unwrap();
    let out = r.with(
        "",
        &["--log-level", "trace", "checkout", "-n", "N", "-o", "json"],
    );
    let (made, trace) = checked(out, &["checkout"], 0);
    assert_eq!(r.dir.inventory().len(), 1);
    let log =
        std::fs::read_to_string(r.client_dir.path().join("logs/broker.log")).unwrap_or_default();
    for text in [&stdout, &err, &made, &trace, &log] {
        for token in [wrong, r.write.as_str()] {
            assert!(!text.contains(token), "the token was shown: {text}");
        }
    }
    let config = r.with("", &["config", "view"]);
    let (config, _) = checked(config, &["config", "view"], 0);
    assert!(
        config.contains("server_token: '********'") && !config.contains(&r.write),
        "{config}"
    );

    let (addr, admin) = (r.server.addr.clone(), r.admin.clone());
    let (code, _) = r.setup.server.stop();
    assert_eq!(code, Some(0));
    let mut down = r.client_dir.command(&["inventory"]);
    down.env("BROKER_SERVER", format!("http://{addr}/"))
        .env("BROKER_SERVER_TOKEN", &admin);
    let (_, err) = checked(output(&mut down), &["inventory"], 1);
    assert!(
        error_line(&err).starts_with(&format!(
            "error: cannot reach the broker server at http://{addr} (is `broker serve` running \
             there?): "
        )),
        "{err}"
    );
    let mut with_password =
        r.client_dir
            .command(&["--server", "http://me:hunter2@127.0.0.1:1", "inventory"]);
    with_password.env("BROKER_SERVER_TOKEN", &admin);
    let (_, err) = checked(output(&mut with_password), &["inventory"], 2);
    assert!(
        !err.contains("hunter2") && err.contains("carries a user or password"),
        "{err}"
    );
}

#[test]
fn remote_token_never_follows_a_redirect_to_another_origin() {
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let redirector = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", redirector.local_addr().unwrap());
    let target = format!("http://{}/api/v1/hosts", elsewhere.local_addr().unwrap());
    let answering = std::thread::spawn(move || {
        let (stream, _) = redirector.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line.to_lowercase());
        }
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        head
    });
    let dir = BrokerDir::new(SETTINGS);
    let token = "broker_secret-token-for-the-redirector";
    let mut command = dir.command(&["--server", &server, "inventory"]);
    command.env("BROKER_SERVER_TOKEN", token);
    let (_, err) = checked(output(&mut command), &["inventory"], 13);
    let head = answering.join().unwrap();
    assert!(
        head.contains(&format!("authorization: bearer {token}")),
        "the configured server got the token: {head}"
    );
    assert!(
        error_line(&err)
            .contains("with a redirect (307 Temporary Redirect), which broker does not follow"),
        "{err}"
    );
    assert!(!err.contains(token));
    // The client has exited: a connection it made would be waiting.
    assert_eq!(
        elsewhere.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the other origin was never asked"
    );
}

#[test]
fn remote_over_https_trusts_the_ca_it_is_given_and_no_other() {
    let server_dir = BrokerDir::new(&format!(
        "{SETTINGS}serve:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n"
    ));
    crate::serve::tls::make_certificate(server_dir.path());
    let token = server_dir.ok(&["serve", "token", "add", "w", "--role", "write"]);
    let served = Served::start(&server_dir);
    let url = format!("https://{}", served.addr);
    let client_dir = BrokerDir::new(SETTINGS);
    std::fs::copy(
        server_dir.path().join("cert.pem"),
        client_dir.path().join("server-ca.pem"),
    )
    .unwrap();
    let run = |ca: Option<&str>, args: &[&str]| {
        let mut command = client_dir.command(args);
        command
            .env("BROKER_SERVER", &url)
            .env("BROKER_SERVER_TOKEN", token.trim());
        if let Some(ca) = ca {
            command.env("BROKER_SERVER_CA", ca);
        }
        output(&mut command)
    };
    let (made, _) = checked(
        run(
            Some("server-ca.pem"),
            &["checkout", "-n", "N", "-o", "json"],
        ),
        &["checkout"],
        0,
    );
    let made: Vec<Value> = serde_json::from_str(&made).unwrap();
    assert_eq!(made, server_dir.inventory());
    // Without the CA the server's certificate is not trusted: nothing is sent past the handshake.
    let (_, err) = checked(run(None, &["checkin", "--all"]), &["checkin"], 1);
    assert!(
        error_line(&err).starts_with(&format!(
            "error: cannot reach the broker server at {url} (is `broker serve` running there?): "
        )) && error_line(&err).contains("certificate"),
        "{err}"
    );
    assert_eq!(server_dir.inventory().len(), 1);
    let (_, err) = checked(run(Some("missing.pem"), &["inventory"]), &["inventory"], 8);
    assert!(err.contains("cannot read the broker server's CA"), "{err}");
    checked(
        run(Some("server-ca.pem"), &["checkin", "--all"]),
        &["checkin"],
        0,
    );
    assert_eq!(server_dir.inventory(), Vec::<Value>::new());
}

#[test]
fn remote_checkout_keeping_a_failed_handoff_warns_naming_the_target() {
    let r = Remote::new();
    // `bootstrap` on the server: a script that fails.
    crate::handoff_run::script_target(&r.dir, "#!/bin/sh\necho giving up\nexit 1\n", "");
    let args = [
        "checkout",
        "-n",
        "N",
        "--handoff",
        "bootstrap",
        "--keep-failed-handoff",
        "-o",
        "json",
    ];
    let (out, err) = checked(r.with(&r.write, &args), &args, 0);
    let made: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(made, r.dir.inventory());
    assert_eq!(made[0]["_broker_handoff_state"], "handoff_failed");
    let host = made[0]["hostname"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "warning: kept host {host} although its handoff to `bootstrap` ended handoff_failed"
        )),
        "{err}"
    );
}

#[test]
fn remote_checkout_that_the_servers_stop_interrupts_exits_130_and_leaves_nothing() {
    let r = Remote::new();
    let mut command =
        r.client_dir
            .command(&["checkout", "--test_action", "basic", "--hang", "created"]);
    command
        .env("BROKER_SERVER", &r.server.addr)
        .env("BROKER_SERVER_TOKEN", &r.write)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let client = ChildGuard::spawn(&mut command);
    // The host exists at the provider, the checkout hangs after making it.
    assert!(wait_for(DEADLINE, || r.dir.provider_hosts().len() == 1));
    let Remote { setup, .. } = r;
    let addr = setup.server.addr.clone();
    let (code, log) = setup.server.stop();
    assert_eq!(code, Some(0), "{log}");
    let out = client.wait_output(DEADLINE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        error_line(&err).starts_with(&format!(
            "error: interrupted: the broker server at http://{addr} stopped checkout operation o"
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(setup.dir.inventory(), Vec::<Value>::new());
    assert_eq!(setup.dir.provider_hosts(), Vec::<String>::new());
}
