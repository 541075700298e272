//! `puppet`: hand a host to a Puppet server. A bootstrap script rendered from the target's
//! configuration installs the agent when it is absent, points it at the server and runs
//! `puppet agent --test --waitforcert 0 --detailed-exitcodes` once.
//!
//! The script goes onto the host as a file (0600, in a private directory removed after the run),
//! never into a command line; every configured value in it is a single-quoted shell word. The
//! node's certificate name is chosen here, not by the agent ([`certname`]), so that undoing the
//! handoff at check-in knows it without asking the host.
//!
//! Judging: exit status 0 (nothing changed) and 2 (changes applied) hand the host off; a
//! certificate request that waits to be signed makes the handoff pending — the agent exits 1 as for
//! any failure then, so that is read from its output — and a later run (the runner's re-checks,
//! `broker handoff retry`) finds the certificate signed; anything else fails it.
//!
//! Undoing: cleaning the node's certificate from the CA needs the CA's admin rights, which neither
//! of Razor's keys gives; `ca_clean_command`, when set, is run on this machine for it. The node's
//! own copy of its certificate is left: the host goes back to its provider.

use std::time::Duration;

use crate::error::Error;
use crate::handoff::kinds::shell::{become_root, quote};
use crate::handoff::run::{
    Handoff, HandoffContext, Outcome, PrivateDir, StepError, execute_logged, setting,
};
use crate::handoff::schema::is_hostname;
use crate::process::local;
use crate::record::HostRecord;
use crate::session::{ExecOutput, Session};

/// The `puppet` kind's configuration keys.
pub mod keys {
    /// The Puppet server's host name, also the CA server's; empty for Puppet's default (`puppet`).
    pub const SERVER: &str = "server";
    /// The server's port (and the CA's); empty for Puppet's default (8140).
    pub const SERVER_PORT: &str = "server_port";
    /// The Puppet version `gem install` installs when the agent is absent; empty for the
    /// operating system's package.
    pub const BROKER_VERSION: &str = "broker_version";
    /// A command run on this machine at check-in to clean the node's certificate from the CA.
    pub const CA_CLEAN_COMMAND: &str = "ca_clean_command";
}

/// The variable that gives `ca_clean_command` the node's certificate name.
pub const CERTNAME_VARIABLE: &str = "BROKER_PUPPET_CERTNAME";

/// Text in the agent's output that means its certificate request waits to be signed (Puppet 7's
/// two lines, and Puppet 5 and 6's one).
const PENDING_MARKERS: &[&str] = &[
    "has not been signed yet",
    "you might still need to sign this agent's certificate",
    "no certificate found and waitforcert is disabled",
];

/// The `puppet` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Puppet;

#[async_trait::async_trait]
impl Handoff for Puppet {
    fn name(&self) -> &str {
        "puppet"
    }

    async fn run(&self, cx: &HandoffContext<'_>) -> Result<Outcome, StepError> {
        let certname = certname(cx.host);
        let script = Bootstrap::of(cx, &certname).render();
        let session = cx.session().await?;
        let dir = PrivateDir::create(&*session, cx).await?;
        let ran = upload_and_run(cx, &*session, &dir, &script).await;
        dir.remove_or_warn(cx.log).await;
        Ok(judge(&certname, &ran?))
    }

    async fn undo(&self, cx: &HandoffContext<'_>) -> Result<(), StepError> {
        let certname = certname(cx.host);
        let Some(command) = setting(cx.target, keys::CA_CLEAN_COMMAND) else {
            cx.log.line(format!(
                "the certificate {certname} stays on the Puppet CA: target `{}` has no `{}`",
                cx.target.name,
                keys::CA_CLEAN_COMMAND
            ));
            return Ok(());
        };
        cx.log.line(format!(
            "cleaning the certificate {certname} from the Puppet CA"
        ));
        let out = run_here(command, &certname, cx.run_timeout).await?;
        cx.log.line(&out.stdout);
        cx.log.line(&out.stderr);
        if out.success() {
            return Ok(());
        }
        Err(StepError::Fatal(Error::host(
            cx.host.display_name(),
            format!(
                "cleaning its certificate {certname} from the Puppet CA failed: `{}` of target `{}` \
                 exited with status {}{}",
                keys::CA_CLEAN_COMMAND,
                cx.target.name,
                out.status,
                last_line(&out.stderr)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ),
        )))
    }
}

/// The certificate name a host gets: its host name in lower case when that is a plain host name
/// (not `localhost`, no port), else `broker-` and its record id (always a valid name, and unique).
pub fn certname(host: &HostRecord) -> String {
    host.hostname()
        .map(str::to_ascii_lowercase)
        .filter(|name| name != "localhost" && is_hostname(name))
        .unwrap_or_else(|| format!("broker-{}", host.id()))
}

/// What the bootstrap script is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The target's name, for the script's header.
    pub target: String,
    /// `server`: empty for Puppet's default.
    pub server: String,
    /// `server_port`: empty for Puppet's default.
    pub server_port: String,
    /// `broker_version`: empty for the operating system's package.
    pub version: String,
    /// The node's certificate name.
    pub certname: String,
}

impl Bootstrap {
    fn of(cx: &HandoffContext<'_>, certname: &str) -> Bootstrap {
        let value = |key| setting(cx.target, key).unwrap_or_default().to_owned();
        Bootstrap {
            target: cx.target.name.clone(),
            server: value(keys::SERVER),
            server_port: value(keys::SERVER_PORT),
            version: value(keys::BROKER_VERSION),
            certname: certname.to_owned(),
        }
    }

    /// The script: the values as single-quoted shell words, then [`BOOTSTRAP_BODY`], which uses
    /// them only as quoted variables.
    pub fn render(&self) -> String {
        format!(
            "#!/bin/sh\n# Written by broker: hands this host to Puppet (handoff target {target}).\n\
             server={server}\nserver_port={port}\nversion={version}\ncertname={certname}\n\
             {BOOTSTRAP_BODY}",
            target = quote(&self.target).replace('\n', " "),
            server = quote(&self.server),
            port = quote(&self.server_port),
            version = quote(&self.version),
            certname = quote(&self.certname),
        )
    }
}

/// The bootstrap after its variables (`server`, `server_port`, `version`, `certname`).
pub const BOOTSTRAP_BODY: &str = concat!(
    r#"set -eu
say() { echo "broker-puppet: $*"; }

# Installing and configuring the agent needs root.
"#,
    become_root!(),
    r#"PATH="$PATH:/opt/puppetlabs/bin:/usr/local/bin"
export PATH

install_puppet() {
    if [ -n "$version" ]; then
        command -v gem >/dev/null 2>&1 || { say "cannot install Puppet $version: no gem command (install Ruby)"; return 1; }
        say "installing Puppet $version: gem install puppet --no-document --version $version"
        gem install puppet --no-document --version "$version"
    elif command -v apt-get >/dev/null 2>&1; then
        say "installing the Puppet agent with apt-get"
        apt-get update -q || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q puppet-agent ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q puppet
    elif command -v dnf >/dev/null 2>&1; then
        say "installing the Puppet agent with dnf"
        dnf install -y puppet-agent || dnf install -y puppet
    elif command -v yum >/dev/null 2>&1; then
        say "installing the Puppet agent with yum"
        yum install -y puppet-agent || yum install -y puppet
    elif command -v zypper >/dev/null 2>&1; then
        say "installing the Puppet agent with zypper"
        zypper --non-interactive install puppet-agent || zypper --non-interactive install puppet
    else
        say "cannot install the Puppet agent: no gem, apt-get, dnf, yum or zypper"
        return 1
    fi
}

if ! command -v puppet >/dev/null 2>&1; then
    install_puppet || { say "installing the Puppet agent failed"; exit 1; }
    command -v puppet >/dev/null 2>&1 || { say "no puppet command after installing the agent"; exit 1; }
fi
if [ -n "$server" ]; then
    puppet config set --section main server "$server"
    puppet config set --section main ca_server "$server"
fi
if [ -n "$server_port" ]; then
    puppet config set --section main serverport "$server_port"
    puppet config set --section main ca_port "$server_port"
fi
puppet config set --section main certname "$certname"
say "running the Puppet agent as $certname"
# No keep-alive: a request on a connection reused after the certificate request (a PUT) can stall
# for the server's idle timeout (30 s with Puppet Server 7 over TLS 1.3).
exec puppet agent --test --waitforcert 0 --detailed-exitcodes --http_keepalive_timeout 0 --color=false
"#
);

/// Puts the script in `dir` (its errors as [`PrivateDir::write`] says) and runs it; an error
/// running it is fatal (the agent may have done part of its work).
async fn upload_and_run(
    cx: &HandoffContext<'_>,
    session: &dyn Session,
    dir: &PrivateDir<'_>,
    script: &str,
) -> Result<ExecOutput, StepError> {
    let path = dir
        .write("puppet-bootstrap.sh", script.as_bytes(), 0o600)
        .await?;
    cx.log.line(format!("running the Puppet bootstrap {path}"));
    execute_logged(cx, session, &format!("sh '{path}'"), "the Puppet bootstrap").await
}

/// `--detailed-exitcodes` 0 and 2, then a certificate waiting to be signed, then the rest.
fn judge(certname: &str, out: &ExecOutput) -> Outcome {
    let lines = || out.stdout.lines().chain(out.stderr.lines());
    if matches!(out.status, 0 | 2) {
        return Outcome::Succeeded;
    }
    if lines().any(|line| PENDING_MARKERS.iter().any(|m| line.contains(m))) {
        return Outcome::Pending {
            reason: format!(
                "the certificate request of {certname} waits to be signed on the Puppet CA \
                 (`puppetserver ca sign --certname {certname}`); then `broker handoff retry`"
            ),
        };
    }
    let why = lines()
        .rfind(|l| l.starts_with("Error:") || l.starts_with("broker-puppet:"))
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    let reason = match out.status {
        4 | 6 => format!(
            "the Puppet agent run of {certname} had failures (exit status {}){why}",
            out.status
        ),
        status => format!("the Puppet bootstrap exited with status {status}{why}"),
    };
    Outcome::Failed { reason }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// Runs `command` with `sh -c` on this machine, the certificate name in [`CERTNAME_VARIABLE`],
/// stopping it and what it started after `timeout`.
async fn run_here(
    command: &str,
    certname: &str,
    timeout: Duration,
) -> Result<ExecOutput, StepError> {
    let mut sh = tokio::process::Command::new("sh");
    sh.arg("-c").arg(command).env(CERTNAME_VARIABLE, certname);
    local::run(&mut sh, timeout).await.map_err(|failure| {
        StepError::Fatal(match failure {
            local::Failure::Start(e) => {
                Error::io_without_path("starting `ca_clean_command` with sh -c", e)
            }
            local::Failure::Wait(e) => Error::io_without_path("running `ca_clean_command`", e),
            local::Failure::TimedOut(_) => Error::Timeout {
                operation: format!("`{}` (its processes were stopped)", keys::CA_CLEAN_COMMAND),
                after: timeout,
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::handoff::fake::{self, DIR, Script as Host};
    use crate::handoff::run::{self, HandoffState, RunReport};
    use crate::handoff::target::Target;

    fn bootstrap(server: &str, port: &str, version: &str, certname: &str) -> Bootstrap {
        Bootstrap {
            target: "prod".into(),
            server: server.into(),
            server_port: port.into(),
            version: version.into(),
            certname: certname.into(),
        }
    }

    /// Runs `script` with `sh` and `PATH` set to `bin` alone; its exit status.
    fn run_sh(script: &str, bin: &Path) -> std::process::Output {
        let path = bin.join("bootstrap.sh");
        std::fs::write(&path, script).unwrap();
        std::process::Command::new("/bin/sh")
            .arg(&path)
            .env_clear()
            .env("PATH", bin)
            .output()
            .unwrap()
    }

    /// An executable `name` in `bin` that logs its arguments to `bin/calls`, then runs `then`.
    fn stub(bin: &Path, name: &str, then: &str) {
        let path = bin.join(name);
        let calls = bin.join("calls");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{then}\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn calls(bin: &Path) -> Vec<String> {
        std::fs::read_to_string(bin.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A `bin` with `id` saying root.
    fn bin() -> tempfile::TempDir {
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(bin.path().join("id"), "#!/bin/sh\necho 0\n").unwrap();
        std::fs::set_permissions(
            bin.path().join("id"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        bin
    }

    #[test]
    fn hostile_values_reach_the_script_as_they_are_and_run_nothing() {
        let bin = bin();
        let proof = bin.path().join("pwned");
        let hostile = [
            format!("x'; touch '{}'; '", proof.display()),
            format!("$(touch {})", proof.display()),
            format!("`touch {}`\nnext line", proof.display()),
            "${HOME:?} \\' \" *".to_owned(),
        ];
        let rendered = bootstrap(&hostile[0], &hostile[1], &hostile[2], &hostile[3]).render();
        let header = rendered.strip_suffix(BOOTSTRAP_BODY).unwrap();
        let out = run_sh(
            &format!(
                "{header}printf '%s\\0' \"$server\" \"$server_port\" \"$version\" \"$certname\"\n"
            ),
            bin.path(),
        );
        assert!(out.status.success(), "{out:?}");
        let seen: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_owned)
            .collect();
        assert_eq!(seen, hostile);
        assert!(!proof.exists(), "a value ran as a command");
    }

    #[test]
    fn a_present_agent_is_pointed_at_the_server_then_run_once_as_the_certname() {
        let bin = bin();
        stub(bin.path(), "puppet", "exit 0");
        let script = bootstrap("puppet.example.com", "8141", "", "web1.example.com").render();
        let out = run_sh(&script, bin.path());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            calls(bin.path()),
            [
                "puppet config set --section main server puppet.example.com",
                "puppet config set --section main ca_server puppet.example.com",
                "puppet config set --section main serverport 8141",
                "puppet config set --section main ca_port 8141",
                "puppet config set --section main certname web1.example.com",
                "puppet agent --test --waitforcert 0 --detailed-exitcodes --http_keepalive_timeout 0 \
                 --color=false",
            ]
        );
    }

    #[test]
    fn an_empty_server_and_port_keep_puppets_defaults() {
        let bin = bin();
        stub(bin.path(), "puppet", "[ \"$1\" = agent ] && exit 2; exit 0");
        let out = run_sh(&bootstrap("", "", "", "node1").render(), bin.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "the agent's status is the script's"
        );
        assert_eq!(
            calls(bin.path()),
            [
                "puppet config set --section main certname node1",
                "puppet agent --test --waitforcert 0 --detailed-exitcodes --http_keepalive_timeout 0 \
                 --color=false",
            ]
        );
    }

    #[test]
    fn an_absent_agent_with_a_version_is_installed_with_gem_first() {
        let bin = bin();
        let dir = bin.path().display().to_string();
        // The stand-in gem "installs" puppet by putting a stub of it on PATH.
        stub(
            bin.path(),
            "gem",
            &format!(
                "printf '#!/bin/sh\\necho \"puppet $*\" >> {dir}/calls\\n' > {dir}/puppet; \
                 /bin/chmod 755 {dir}/puppet"
            ),
        );
        let out = run_sh(&bootstrap("", "", "3.0.1_rc1", "n").render(), bin.path());
        assert!(out.status.success(), "{out:?}");
        let calls = calls(bin.path());
        assert_eq!(
            calls[0],
            "gem install puppet --no-document --version 3.0.1_rc1"
        );
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(
                "broker-puppet: installing Puppet 3.0.1_rc1: gem install puppet --no-document \
                 --version 3.0.1_rc1"
            ),
            "{out:?}"
        );
    }

    #[test]
    fn an_absent_agent_with_no_way_to_install_it_fails_saying_so() {
        let bin = bin();
        let out = run_sh(&bootstrap("", "", "7.23.0", "n").render(), bin.path());
        assert_eq!(out.status.code(), Some(1));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("broker-puppet: cannot install Puppet 7.23.0: no gem command"),
            "{stdout}"
        );
        let out = run_sh(&bootstrap("", "", "", "n").render(), bin.path());
        assert_eq!(out.status.code(), Some(1));
        let outcome = judge("n", &exec(1, &String::from_utf8_lossy(&out.stdout)));
        assert_eq!(
            outcome,
            Outcome::Failed {
                reason: "the Puppet bootstrap exited with status 1: broker-puppet: installing \
                         the Puppet agent failed"
                    .into()
            }
        );
    }

    fn exec(status: i32, stdout: &str) -> ExecOutput {
        ExecOutput {
            stdout: stdout.into(),
            stderr: String::new(),
            status,
        }
    }

    const UNSIGNED: &str = "Info: Certificate for n1 has not been signed yet\n\
        Couldn't fetch certificate from CA server; you might still need to sign this agent's \
        certificate (n1).\nExiting now because the waitforcert setting is set to 0.\n";

    #[test]
    fn detailed_exit_codes_0_and_2_succeed_an_unsigned_certificate_is_pending() {
        assert_eq!(judge("n1", &exec(0, "")), Outcome::Succeeded);
        assert_eq!(judge("n1", &exec(2, "Notice: applied")), Outcome::Succeeded);
        assert_eq!(
            judge("n1", &exec(1, UNSIGNED)),
            Outcome::Pending {
                reason: "the certificate request of n1 waits to be signed on the Puppet CA \
                         (`puppetserver ca sign --certname n1`); then `broker handoff retry`"
                    .into()
            }
        );
        assert_eq!(
            judge(
                "n1",
                &exec(
                    1,
                    "Exiting; no certificate found and waitforcert is disabled\n"
                )
            ),
            judge("n1", &exec(1, UNSIGNED)),
            "Puppet 6's wording"
        );
        assert_eq!(
            judge("n1", &exec(6, "Notice: x\nError: Could not apply y\n")),
            Outcome::Failed {
                reason: "the Puppet agent run of n1 had failures (exit status 6): Error: Could \
                         not apply y"
                    .into()
            }
        );
        assert_eq!(
            judge("n1", &exec(4, "")),
            Outcome::Failed {
                reason: "the Puppet agent run of n1 had failures (exit status 4)".into()
            }
        );
        assert!(matches!(
            judge("n1", &exec(1, "Error: Could not request certificate: refused\n")),
            Outcome::Failed { reason } if reason == "the Puppet bootstrap exited with status 1: \
                Error: Could not request certificate: refused"
        ));
    }

    #[test]
    fn the_certname_is_the_host_name_when_it_is_one_else_from_the_record_id() {
        let mut record = HostRecord::default();
        record.set(crate::record::fields::ID, "h0123456789abcdef");
        assert_eq!(certname(&record), "broker-h0123456789abcdef");
        for (hostname, expected) in [
            ("Web1.Example.COM", "web1.example.com"),
            ("3f2a9c0d1b2e", "3f2a9c0d1b2e"),
            ("localhost", "broker-h0123456789abcdef"),
            ("localhost:32768", "broker-h0123456789abcdef"),
            ("10.0.0.5:22", "broker-h0123456789abcdef"),
            ("a b", "broker-h0123456789abcdef"),
        ] {
            record.set(crate::record::fields::HOSTNAME, hostname);
            assert_eq!(certname(&record), expected, "{hostname}");
        }
    }

    fn target(values: &[(&str, &str)]) -> Target {
        fake::target("prod", "puppet", values)
    }

    async fn run_with(
        target: &Target,
        replies: Vec<crate::error::Result<ExecOutput>>,
    ) -> (RunReport, Host) {
        fake::run_in_private_dir(&Puppet, target, replies).await
    }

    #[tokio::test]
    async fn the_bootstrap_goes_to_the_host_as_a_0600_file_run_by_path_and_removed() {
        let target = target(&[("server", "puppet.example.com"), ("broker_version", "")]);
        let replies = vec![fake::ok(""), fake::status(2, "Notice: applied\n")];
        let (report, seen) = run_with(&target, replies).await;
        assert_eq!(report.state, HandoffState::HandedOff, "{report:?}");
        let script = format!("{DIR}/puppet-bootstrap.sh");
        assert_eq!(
            seen.commands,
            [
                "umask 077 && mktemp -d \"${TMPDIR:-/tmp}/broker-handoff.r1.XXXXXXXX\"".to_owned(),
                format!("chmod 600 '{script}'"),
                format!("BROKER_HANDOFF_RUN=r1; export BROKER_HANDOFF_RUN; sh '{script}'"),
                format!("rm -rf -- '{DIR}'"),
            ]
        );
        assert_eq!(seen.written.len(), 1);
        let (path, written) = &seen.written[0];
        assert_eq!(path, &script);
        let expected = bootstrap("puppet.example.com", "", "", "fake.example.com").render();
        assert_eq!(String::from_utf8_lossy(written), expected);
        assert!(
            report.log.contains(&"Notice: applied".to_owned()),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn an_unsigned_certificate_leaves_the_handoff_pending_and_its_files_removed() {
        let replies = vec![fake::ok(""), fake::status(1, UNSIGNED)];
        let (report, seen) = run_with(&target(&[]), replies).await;
        assert_eq!(
            (report.state, report.attempts),
            (HandoffState::Pending, 1),
            "{report:?}"
        );
        assert!(
            report
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("the certificate request of fake.example.com waits to be signed"),
            "{report:?}"
        );
        assert_eq!(seen.commands.last().unwrap(), &format!("rm -rf -- '{DIR}'"));
    }

    #[tokio::test]
    async fn a_timed_out_bootstrap_fails_once_and_says_its_processes_were_stopped() {
        let timeout = Err(Error::Timeout {
            operation: "x".into(),
            after: Duration::from_secs(5),
        });
        let (report, seen) = run_with(&target(&[]), vec![fake::ok(""), timeout]).await;
        assert_eq!((report.state, report.attempts), (HandoffState::Failed, 1));
        assert_eq!(
            report.last_error.as_deref(),
            Some(
                "the Puppet bootstrap on fake.example.com (its processes were stopped) timed out \
                 after 5s"
            )
        );
        assert_eq!(seen.commands.last().unwrap(), &format!("rm -rf -- '{DIR}'"));
    }

    #[tokio::test]
    async fn undo_runs_the_ca_clean_command_here_with_the_certname() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("cleaned");
        let (host, session) = fake::host(Host::default());
        let command = format!(
            "echo \"clean $BROKER_PUPPET_CERTNAME\" > '{}'",
            seen.display()
        );
        let target = target(&[("ca_clean_command", &command)]);
        run::undo(&Puppet, &host, &target).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            "clean fake.example.com\n"
        );
        assert_eq!(
            session.lock().unwrap().connects,
            0,
            "the host is not needed"
        );

        let failing = target_with_command("echo 'no such certificate' >&2; exit 24");
        let err = run::undo(&Puppet, &host, &failing).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "host fake.example.com: cleaning its certificate fake.example.com from the Puppet CA \
             failed: `ca_clean_command` of target `prod` exited with status 24: no such certificate"
        );
    }

    fn target_with_command(command: &str) -> Target {
        target(&[("ca_clean_command", command), ("run_timeout", "1s")])
    }

    #[tokio::test]
    async fn undo_without_a_ca_clean_command_does_nothing() {
        let (host, session) = fake::host(Host::default());
        run::undo(&Puppet, &host, &target(&[])).await.unwrap();
        let session = session.lock().unwrap();
        assert_eq!((session.connects, session.commands.len()), (0, 0));
    }

    #[tokio::test]
    async fn a_ca_clean_command_that_outlives_the_run_timeout_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let (host, _) = fake::host(Host::default());
        let command = format!("sleep 300 & echo $! > '{}'; wait", pid_file.display());
        let err = run::undo(&Puppet, &host, &target_with_command(&command))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ca_clean_command` (its processes were stopped) timed out after 1s"
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .map_or(true, |stat| stat.contains(") Z "))
        };
        for _ in 0..500 {
            if gone() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the command's child {pid} still runs");
    }
}
