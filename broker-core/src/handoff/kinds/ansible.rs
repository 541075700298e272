//! `ansible`: run `ansible-playbook` on this machine against the host, reaching it the way its
//! session does — over SSH (address, port, user, password or key file, host keys checked as
//! `ssh.host_key_checking` says), or for a container host through Podman's connection plugin
//! (`containers.podman.podman`, the engine's API given with `--url`).
//!
//! The inventory (the host in the target's groups, with its connection variables — a password
//! among them) and the extra variables go into files in a private directory on this machine (0700,
//! files 0600), removed when the run ends however it ends; nothing secret is put on a command line.
//! `ansible-playbook` runs in a process group of its own: on timeout the whole group is killed.
//! Judged by its exit status; its output goes into the run log, the password masked.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::error::Error;
use crate::handoff::run::{Handoff, HandoffContext, Outcome, StepError, setting};
use crate::handoff::target::Target;
use crate::process::local;
use crate::session::{Access, ContainerAccess, ExecOutput, HostKeyPolicy, SshAccess};

/// The `ansible` kind's configuration keys.
pub mod keys {
    /// The playbook, a path on the machine broker runs on (required).
    pub const PLAYBOOK: &str = "playbook";
    /// Extra variables, a YAML or JSON mapping.
    pub const EXTRA_VARS: &str = "extra_vars";
    /// Inventory groups the host is put in, separated by commas.
    pub const GROUPS: &str = "groups";
    /// The `ansible-playbook` command.
    pub const ANSIBLE_PLAYBOOK_PATH: &str = "ansible_playbook_path";
}

/// The `ansible` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ansible;

#[async_trait::async_trait]
impl Handoff for Ansible {
    fn name(&self) -> &str {
        "ansible"
    }

    async fn run(&self, cx: &HandoffContext<'_>) -> Result<Outcome, StepError> {
        let plan = match Plan::read(cx.target) {
            Ok(plan) => plan,
            Err(reason) => return Ok(Outcome::Failed { reason }),
        };
        // Connecting first tells an unreachable host (tried again) from a failed playbook.
        let session = cx.session().await?;
        let Some(access) = session.access() else {
            return Ok(Outcome::Failed {
                reason: format!(
                    "ansible-playbook cannot reach {}: its session ({session:?}) says neither an SSH \
                     address nor a container; hand it off with a `script` target instead",
                    cx.host.display_name()
                ),
            });
        };
        if let Access::Ssh(SshAccess {
            password: Some(password),
            ..
        }) = &access
        {
            cx.log.conceal(password.expose_secret());
        }
        let work = Workdir::create(cx, &plan, &access).map_err(StepError::Fatal)?;
        let out = run_playbook(cx, &plan, &work, &access).await?;
        cx.log.line(&out.stdout);
        cx.log.line(&out.stderr);
        cx.log.line(format!(
            "ansible-playbook exited with status {}",
            out.status
        ));
        Ok(judge(&out))
    }
}

/// What the target asks for, read and checked before connecting.
#[derive(Debug)]
struct Plan {
    playbook: PathBuf,
    extra_vars: Option<Value>,
    groups: Vec<String>,
    command: String,
}

impl Plan {
    fn read(target: &Target) -> Result<Plan, String> {
        let named = setting(target, keys::PLAYBOOK).ok_or_else(|| {
            format!(
                "handoff target `{}` names no playbook (`{}`)",
                target.name,
                keys::PLAYBOOK
            )
        })?;
        let playbook = std::fs::canonicalize(named).map_err(|e| {
            format!(
                "cannot read the playbook {named} of handoff target `{}`: {e}",
                target.name
            )
        })?;
        let extra_vars = setting(target, keys::EXTRA_VARS)
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                serde_yaml::from_str::<Value>(text).map_err(|e| {
                    format!(
                        "handoff target `{}`: `{}` is not a mapping ({e})",
                        target.name,
                        keys::EXTRA_VARS
                    )
                })
            })
            .transpose()?;
        let groups = setting(target, keys::GROUPS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Plan {
            playbook,
            extra_vars,
            groups,
            command: setting(target, keys::ANSIBLE_PLAYBOOK_PATH)
                .unwrap_or("ansible-playbook")
                .to_owned(),
        })
    }
}

/// The private directory on this machine holding the run's inventory, extra variables and
/// Ansible's own temporary files; removed when dropped.
struct Workdir {
    dir: tempfile::TempDir,
    inventory: PathBuf,
    extra_vars: Option<PathBuf>,
}

impl Workdir {
    fn create(cx: &HandoffContext<'_>, plan: &Plan, access: &Access) -> crate::Result<Workdir> {
        let dir = tempfile::Builder::new()
            .prefix("broker-ansible.")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io_without_path("making a private directory for ansible", e))?;
        let alias = inventory_name(&cx.host.display_name());
        let inventory = write_private(
            dir.path(),
            "inventory.json",
            &inventory(&alias, access, &plan.groups),
        )?;
        let extra_vars = plan
            .extra_vars
            .as_ref()
            .map(|vars| write_private(dir.path(), "extra-vars.json", vars))
            .transpose()?;
        Ok(Workdir {
            dir,
            inventory,
            extra_vars,
        })
    }
}

fn write_private(dir: &Path, name: &str, doc: &Value) -> crate::Result<PathBuf> {
    let path = dir.join(name);
    let text = serde_json::to_vec_pretty(doc).unwrap_or_default();
    crate::files::replace_private(&path, &text, "writing a file for ansible-playbook")?;
    Ok(path)
}

/// The host's name in the inventory: its display name with anything but letters, digits, `.`,
/// `_` and `-` made `_` (a `host:port` would be read as a port).
fn inventory_name(name: &str) -> String {
    let alias: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if alias.is_empty() {
        "host".into()
    } else {
        alias
    }
}

/// A YAML-plugin inventory (JSON is YAML): the host with its connection variables, in `groups`.
fn inventory(alias: &str, access: &Access, groups: &[String]) -> Value {
    let mut vars = match access {
        Access::Ssh(ssh) => ssh_vars(ssh),
        Access::Container(container) => container_vars(container),
    };
    vars["ansible_python_interpreter"] = json!("auto_silent");
    let children: serde_json::Map<String, Value> = groups
        .iter()
        .map(|group| (group.clone(), json!({ "hosts": { alias: {} } })))
        .collect();
    json!({ "all": { "hosts": { alias: vars }, "children": children } })
}

fn ssh_vars(ssh: &SshAccess) -> Value {
    let mut vars = json!({
        "ansible_connection": "ssh",
        "ansible_host": ssh.address,
        "ansible_port": ssh.port,
        "ansible_user": ssh.username,
    });
    if let Some(password) = &ssh.password {
        vars["ansible_password"] = json!(password.expose_secret());
    }
    if let Some(key) = &ssh.key_file {
        vars["ansible_ssh_private_key_file"] = json!(key);
    }
    vars
}

fn container_vars(container: &ContainerAccess) -> Value {
    json!({
        "ansible_connection": "containers.podman.podman",
        "ansible_host": container.container,
        "ansible_podman_extra_args": format!("--url {}", container.engine),
    })
}

/// OpenSSH options for every connection: no connection kept open after the run (nothing left
/// running), host keys checked as the session checks them, in the same `known_hosts` file. Ansible
/// puts these first, and OpenSSH keeps the first value of an option.
fn ssh_args(ssh: &SshAccess) -> String {
    let known_hosts = match ssh.host_key_policy {
        HostKeyPolicy::Off => "/dev/null".to_owned(),
        _ => ssh.known_hosts.display().to_string(),
    };
    format!(
        "-o ControlMaster=no -o StrictHostKeyChecking={} -o UserKnownHostsFile='{}'",
        ssh.host_key_policy.openssh_option(),
        known_hosts.replace('\'', "'\\''")
    )
}

/// Runs `ansible-playbook` on this machine, its whole process group killed on timeout.
async fn run_playbook(
    cx: &HandoffContext<'_>,
    plan: &Plan,
    work: &Workdir,
    access: &Access,
) -> Result<ExecOutput, StepError> {
    let mut command = tokio::process::Command::new(&plan.command);
    command.arg("-i").arg(&work.inventory);
    if let Some(vars) = &work.extra_vars {
        command.arg("-e").arg(format!("@{}", vars.display()));
    }
    command
        .arg(&plan.playbook)
        .current_dir(plan.playbook.parent().unwrap_or(Path::new("/")))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        // Ansible's own host key check refuses passwords; OpenSSH checks them (`ssh_args`).
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_LOCAL_TEMP", work.dir.path().join("tmp"))
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", work.dir.path().join("cp"));
    if let Access::Ssh(ssh) = access {
        command.env("ANSIBLE_SSH_ARGS", ssh_args(ssh));
    }
    cx.log.line(format!(
        "running {} against {}",
        plan.command,
        cx.host.display_name()
    ));
    local::run(&mut command, cx.run_timeout)
        .await
        .map_err(|failure| {
            StepError::Fatal(match failure {
                local::Failure::Start(e) => Error::io_without_path(
                    "starting ansible-playbook (install Ansible, or set `ansible_playbook_path`)",
                    e,
                ),
                local::Failure::Wait(e) => Error::io_without_path("running ansible-playbook", e),
                local::Failure::TimedOut(_) => Error::Timeout {
                    operation: format!(
                        "ansible-playbook against {} (its processes were stopped)",
                        cx.host.display_name()
                    ),
                    after: cx.run_timeout,
                },
            })
        })
}

/// Exit status 0 succeeds; anything else fails, naming what Ansible's status means.
fn judge(out: &ExecOutput) -> Outcome {
    let meaning = match out.status {
        0 => return Outcome::Succeeded,
        2 => "a task failed",
        4 => "the host was unreachable",
        -1 => "killed by a signal",
        _ => "see the handoff log",
    };
    Outcome::Failed {
        reason: format!(
            "ansible-playbook exited with status {} ({meaning})",
            out.status
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::fake::{self, Script as Host};
    use crate::handoff::run::{self, HandoffState, RunReport};

    fn ssh_access() -> SshAccess {
        let mut ssh = SshAccess::new(
            "localhost",
            2222,
            "root",
            PathBuf::from("/broker/known_hosts"),
            HostKeyPolicy::AcceptNew,
        );
        ssh.password = Some("hunter2".to_owned().into());
        ssh
    }

    #[test]
    fn an_ssh_host_is_in_the_inventory_with_its_address_user_and_password_in_its_groups() {
        let groups = ["web".to_owned(), "staging".to_owned()];
        let doc = inventory("localhost_2222", &Access::Ssh(ssh_access()), &groups);
        assert_eq!(
            doc,
            json!({"all": {
                "hosts": {"localhost_2222": {
                    "ansible_connection": "ssh",
                    "ansible_host": "localhost",
                    "ansible_port": 2222,
                    "ansible_user": "root",
                    "ansible_password": "hunter2",
                    "ansible_python_interpreter": "auto_silent",
                }},
                "children": {
                    "web": {"hosts": {"localhost_2222": {}}},
                    "staging": {"hosts": {"localhost_2222": {}}},
                },
            }})
        );
    }

    #[test]
    fn a_container_host_is_reached_through_podman_at_its_engine() {
        let access = Access::Container(ContainerAccess::new(
            "unix:///run/podman/podman.sock",
            "it_abc",
        ));
        assert_eq!(
            inventory("it_abc", &access, &[])["all"]["hosts"]["it_abc"],
            json!({
                "ansible_connection": "containers.podman.podman",
                "ansible_host": "it_abc",
                "ansible_podman_extra_args": "--url unix:///run/podman/podman.sock",
                "ansible_python_interpreter": "auto_silent",
            })
        );
    }

    #[test]
    fn host_keys_are_checked_as_the_session_checks_them_and_no_connection_is_kept() {
        let mut ssh = ssh_access();
        assert_eq!(
            ssh_args(&ssh),
            "-o ControlMaster=no -o StrictHostKeyChecking=accept-new \
             -o UserKnownHostsFile='/broker/known_hosts'"
        );
        ssh.host_key_policy = HostKeyPolicy::Off;
        ssh.known_hosts = PathBuf::from("/it's");
        assert!(ssh_args(&ssh).ends_with("=no -o UserKnownHostsFile='/dev/null'"));
        ssh.host_key_policy = HostKeyPolicy::Strict;
        assert!(ssh_args(&ssh).ends_with("=yes -o UserKnownHostsFile='/it'\\''s'"));
    }

    #[test]
    fn inventory_names_keep_only_safe_characters() {
        assert_eq!(inventory_name("localhost:2222"), "localhost_2222");
        assert_eq!(inventory_name("web-1.example.com"), "web-1.example.com");
        assert_eq!(inventory_name(""), "host");
    }

    #[test]
    fn the_exit_status_judges_and_says_what_it_means() {
        let out = |status| ExecOutput {
            status,
            ..ExecOutput::default()
        };
        assert_eq!(judge(&out(0)), Outcome::Succeeded);
        assert_eq!(
            judge(&out(2)),
            Outcome::Failed {
                reason: "ansible-playbook exited with status 2 (a task failed)".into()
            }
        );
        assert_eq!(
            judge(&out(4)),
            Outcome::Failed {
                reason: "ansible-playbook exited with status 4 (the host was unreachable)".into()
            }
        );
    }

    /// A target running `fake` (a script standing in for ansible-playbook) with the playbook
    /// `site.yml`, both in `dir`.
    fn target(dir: &tempfile::TempDir, fake: &str, extra: &[(&str, &str)]) -> Target {
        let playbook = dir.path().join("site.yml");
        std::fs::write(&playbook, "- hosts: all\n").unwrap();
        let command = dir.path().join("ansible-playbook");
        std::fs::write(&command, fake).unwrap();
        std::fs::set_permissions(
            &command,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut values = vec![
            (keys::PLAYBOOK, playbook.to_str().unwrap()),
            (keys::ANSIBLE_PLAYBOOK_PATH, command.to_str().unwrap()),
            (run::keys::RETRY_DELAY, "0s"),
        ];
        values.extend_from_slice(extra);
        fake::target("played", "ansible", &values)
    }

    async fn run_on_ssh_host(target: &Target) -> RunReport {
        let (host, _) = fake::host(Host {
            access: Some(Access::Ssh(ssh_access())),
            ..Host::default()
        });
        run::run(&Ansible, &host, target).await.unwrap()
    }

    /// Reports its arguments, its files' modes and contents, and the SSH options it was given.
    const REPORTING: &str = "#!/bin/sh
inventory=$2
echo \"args: $*\"
echo \"modes: $(stat -c %a \"$(dirname \"$inventory\")\") $(stat -c %a \"$inventory\") $(stat -c %a \"${4#@}\")\"
echo \"ssh: $ANSIBLE_SSH_ARGS\"
cat \"$inventory\" \"${4#@}\"
echo \"$(dirname \"$inventory\")\" > \"$(dirname \"$0\")/workdir\"
";

    #[tokio::test]
    async fn the_inventory_and_extra_vars_go_in_private_files_the_password_never_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(
            &dir,
            REPORTING,
            &[(keys::EXTRA_VARS, "greeting: hello"), (keys::GROUPS, "web")],
        );
        let report = run_on_ssh_host(&target).await;
        assert_eq!(report.state, HandoffState::HandedOff, "{report:?}");
        let log = report.log.join("\n");
        let workdir = std::fs::read_to_string(dir.path().join("workdir")).unwrap();
        let workdir = workdir.trim();
        assert!(
            log.contains(&format!(
                "args: -i {workdir}/inventory.json -e @{workdir}/extra-vars.json {}",
                dir.path().join("site.yml").display()
            )),
            "{log}"
        );
        assert!(log.contains("modes: 700 600 600"), "{log}");
        assert!(log.contains("\"ansible_password\": \"********\""), "{log}");
        assert!(log.contains("\"greeting\": \"hello\""), "{log}");
        assert!(log.contains("\"web\": {"), "{log}");
        assert!(
            log.contains("ssh: -o ControlMaster=no -o StrictHostKeyChecking=accept-new"),
            "{log}"
        );
        assert!(!log.contains("hunter2"), "{log}");
        assert!(!Path::new(workdir).exists(), "{workdir} was left behind");
    }

    #[tokio::test]
    async fn a_failing_playbook_fails_once_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fake = "#!/bin/sh\necho \"$(dirname \"$2\")\" > \"$(dirname \"$0\")/workdir\"\necho 'fatal: [h]: FAILED!'\nexit 2\n";
        let report = run_on_ssh_host(&target(&dir, fake, &[])).await;
        assert_eq!(
            (report.state, report.attempts, report.last_error.as_deref()),
            (
                HandoffState::Failed,
                1,
                Some("ansible-playbook exited with status 2 (a task failed)")
            )
        );
        assert!(report.log.contains(&"fatal: [h]: FAILED!".to_owned()));
        let workdir = std::fs::read_to_string(dir.path().join("workdir")).unwrap();
        assert!(!Path::new(workdir.trim()).exists());
    }

    #[tokio::test]
    async fn a_timed_out_playbook_has_its_whole_process_group_killed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("4{}", std::process::id());
        let fake = format!(
            "#!/bin/sh\nsleep {marker} &\necho $! > \"$(dirname \"$0\")/child\"\nsleep {marker}\n"
        );
        let target = target(&dir, &fake, &[(run::keys::RUN_TIMEOUT, "1s")]);
        let report = run_on_ssh_host(&target).await;
        assert_eq!((report.state, report.attempts), (HandoffState::Failed, 1));
        assert_eq!(
            report.last_error.as_deref(),
            Some(
                "ansible-playbook against fake.example.com (its processes were stopped) timed out after 1s"
            )
        );
        let child = std::fs::read_to_string(dir.path().join("child")).unwrap();
        let pid: i32 = child.trim().parse().unwrap();
        // The background child was killed with the group (a zombie until init reaps it at most).
        // A killed process ends when it is next scheduled, which on a busy machine is a while later.
        let state = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ended = || {
            let state = state();
            state.is_empty() || state.contains(") Z ")
        };
        for _ in 0..500 {
            if ended() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{pid} still runs: {}", state());
    }

    #[tokio::test]
    async fn a_missing_playbook_fails_without_touching_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake::with(
            target(&dir, REPORTING, &[]),
            keys::PLAYBOOK,
            "/nonexistent/site.yml",
            false,
        );
        let (host, seen) = fake::host(Host::default());
        let report = run::run(&Ansible, &host, &target).await.unwrap();
        assert_eq!(report.state, HandoffState::Failed);
        assert!(
            report.last_error.as_deref().unwrap().starts_with(
                "cannot read the playbook /nonexistent/site.yml of handoff target `played`"
            ),
            "{report:?}"
        );
        assert_eq!(seen.lock().unwrap().connects, 0);
    }

    #[tokio::test]
    async fn a_host_whose_session_cannot_be_described_fails_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let (host, _) = fake::host(Host::default());
        let report = run::run(&Ansible, &host, &target(&dir, REPORTING, &[]))
            .await
            .unwrap();
        assert_eq!(report.state, HandoffState::Failed);
        let error = report.last_error.unwrap();
        assert!(
            error.starts_with("ansible-playbook cannot reach fake.example.com"),
            "{error}"
        );
        assert!(!dir.path().join("workdir").exists(), "it ran");
    }
}
