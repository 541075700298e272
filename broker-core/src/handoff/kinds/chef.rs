//! `chef`: register the host with a Chef server and run chef-client, with Razor's keys.
//!
//! Into a private directory on the host (as for `script`) go four files, each 0600: the validation
//! key, `client.rb` (the server URL, the validation client's name, the key's path, the
//! environment; values as Ruby single-quoted strings), `first-boot.json` (the run list) and the
//! bootstrap script, rendered from the target with each value a single-quoted shell word. broker
//! runs `sh BOOTSTRAP`, which installs Chef from `install_sh_url` when `chef_client_path` is not
//! there, copies `client.rb` to `/etc/chef/`, and runs chef-client. The directory — the key with it
//! — is removed when the run ends, however it ends. Judged by the exit status.
//!
//! Undo does nothing: deleting the node and its client from the server needs an admin's key, which
//! none of Razor's keys is.

use serde_json::json;

use crate::handoff::kinds::shell::{become_root, quote};
use crate::handoff::run::{
    Handoff, HandoffContext, Outcome, PrivateDir, StepError, execute_logged, setting,
};
use crate::session::{ExecOutput, Session};

/// The `chef` kind's configuration keys (Razor's).
pub mod keys {
    /// The Chef server's URL.
    pub const CHEF_SERVER_URL: &str = "chef_server_url";
    /// The version `install.sh` installs when chef-client is absent.
    pub const CHEF_VERSION: &str = "chef_version";
    /// The validator's private key (secret).
    pub const VALIDATION_KEY: &str = "validation_key";
    /// The validator's client name.
    pub const VALIDATION_CLIENT_NAME: &str = "validation_client_name";
    /// The node's Chef environment.
    pub const BOOTSTRAP_ENVIRONMENT: &str = "bootstrap_environment";
    /// Where Chef's `install.sh` is downloaded from.
    pub const INSTALL_SH_URL: &str = "install_sh_url";
    /// The chef-client command.
    pub const CHEF_CLIENT_PATH: &str = "chef_client_path";
    /// The first run's run list.
    pub const BASE_RUN_LIST: &str = "base_run_list";
}

/// Where `client.rb` is put for this run and later ones.
pub const CLIENT_RB: &str = "/etc/chef/client.rb";

/// The `chef` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chef;

#[async_trait::async_trait]
impl Handoff for Chef {
    fn name(&self) -> &str {
        "chef"
    }

    async fn run(&self, cx: &HandoffContext<'_>) -> Result<Outcome, StepError> {
        let key = setting(cx.target, keys::VALIDATION_KEY).unwrap_or_default();
        // Whatever chef-client prints, the key never reaches the log.
        cx.log.conceal(key);
        let session = cx.session().await?;
        let dir = PrivateDir::create(&*session, cx).await?;
        let ran = upload_and_run(cx, &*session, &dir, key).await;
        dir.remove_or_warn(cx.log).await;
        let out = ran?;
        Ok(if out.success() {
            Outcome::Succeeded
        } else {
            Outcome::Failed {
                reason: format!("the Chef bootstrap exited with status {}", out.status),
            }
        })
    }
}

/// What the files put on the host are rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The target's name, for the files' headers.
    pub target: String,
    /// `chef_server_url`.
    pub server_url: String,
    /// `chef_version`.
    pub version: String,
    /// `validation_client_name`.
    pub validation_client_name: String,
    /// `bootstrap_environment`.
    pub environment: String,
    /// `install_sh_url`.
    pub install_sh_url: String,
    /// `chef_client_path`.
    pub chef_client: String,
    /// `base_run_list`, item by item.
    pub run_list: Vec<String>,
    /// The private directory on the host the files are in.
    pub dir: String,
}

impl Bootstrap {
    fn of(cx: &HandoffContext<'_>, dir: &str) -> Bootstrap {
        let value = |key, default: &str| setting(cx.target, key).unwrap_or(default).to_owned();
        Bootstrap {
            target: cx.target.name.clone(),
            server_url: value(keys::CHEF_SERVER_URL, ""),
            version: value(keys::CHEF_VERSION, ""),
            validation_client_name: value(keys::VALIDATION_CLIENT_NAME, "chef-validator"),
            environment: value(keys::BOOTSTRAP_ENVIRONMENT, "_default"),
            install_sh_url: value(keys::INSTALL_SH_URL, ""),
            chef_client: value(keys::CHEF_CLIENT_PATH, "chef-client"),
            run_list: run_list(setting(cx.target, keys::BASE_RUN_LIST).unwrap_or_default()),
            dir: dir.to_owned(),
        }
    }

    /// `client.rb`: the values as Ruby single-quoted strings.
    pub fn client_rb(&self) -> String {
        format!(
            "# Written by broker: handoff target {target}.\n\
             chef_server_url {url}\nvalidation_client_name {client}\n\
             validation_key {key}\nenvironment {environment}\n",
            target = self.target.replace('\n', " "),
            url = ruby(&self.server_url),
            client = ruby(&self.validation_client_name),
            key = ruby(&format!("{}/validation.pem", self.dir)),
            environment = ruby(&self.environment),
        )
    }

    /// `first-boot.json`: the run list.
    pub fn first_boot(&self) -> String {
        serde_json::to_string_pretty(&json!({ "run_list": self.run_list })).unwrap_or_default()
    }

    /// The script: the values as single-quoted shell words, then [`BOOTSTRAP_BODY`], which uses
    /// them only as quoted variables.
    pub fn script(&self) -> String {
        format!(
            "#!/bin/sh\n# Written by broker: hands this host to Chef (handoff target {target}).\n\
             dir={dir}\nserver_url={url}\nversion={version}\ninstall_sh_url={install}\n\
             chef_client={client}\n{BOOTSTRAP_BODY}",
            target = quote(&self.target).replace('\n', " "),
            dir = quote(&self.dir),
            url = quote(&self.server_url),
            version = quote(&self.version),
            install = quote(&self.install_sh_url),
            client = quote(&self.chef_client),
        )
    }
}

/// `value` as a Ruby single-quoted string: only `\` and `'` are special in one.
fn ruby(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// The items of a run list (`role[base], recipe[ntp::client]`).
fn run_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The bootstrap after its variables (`dir`, `server_url`, `version`, `install_sh_url`,
/// `chef_client`).
pub const BOOTSTRAP_BODY: &str = concat!(
    r#"set -eu
say() { echo "broker-chef: $*"; }

# Installing Chef and writing /etc/chef need root.
"#,
    become_root!(),
    r#"PATH="$PATH:/opt/chef/bin:/usr/local/bin"
export PATH

if ! command -v "$chef_client" >/dev/null 2>&1; then
    say "installing Chef $version from $install_sh_url"
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$dir/install.sh" "$install_sh_url"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$dir/install.sh" "$install_sh_url"
    else
        say "cannot download the Chef installer: no curl or wget"
        exit 1
    fi
    sh "$dir/install.sh" -v "$version"
    command -v "$chef_client" >/dev/null 2>&1 || { say "no $chef_client after installing Chef"; exit 1; }
fi
mkdir -p /etc/chef
cp "$dir/client.rb" /etc/chef/client.rb
chmod 644 /etc/chef/client.rb
say "running $chef_client against $server_url"
exec "$chef_client" --config /etc/chef/client.rb --json-attributes "$dir/first-boot.json" --no-color
"#
);

/// Puts the key, `client.rb`, `first-boot.json` and the script in `dir` (each 0600) and runs the
/// script; an error running it is fatal (chef-client may have done part of its work).
async fn upload_and_run(
    cx: &HandoffContext<'_>,
    session: &dyn Session,
    dir: &PrivateDir<'_>,
    key: &str,
) -> Result<ExecOutput, StepError> {
    let bootstrap = Bootstrap::of(cx, dir.path());
    dir.write("validation.pem", key.as_bytes(), 0o600).await?;
    dir.write("client.rb", bootstrap.client_rb().as_bytes(), 0o600)
        .await?;
    dir.write("first-boot.json", bootstrap.first_boot().as_bytes(), 0o600)
        .await?;
    let script = dir
        .write("chef-bootstrap.sh", bootstrap.script().as_bytes(), 0o600)
        .await?;
    cx.log.line(format!("running the Chef bootstrap {script}"));
    execute_logged(cx, session, &format!("sh '{script}'"), "the Chef bootstrap").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::fake::{self, DIR};
    use crate::handoff::run::HandoffState;
    use crate::handoff::target::Target;

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretsecret\n-----END RSA PRIVATE KEY-----\n";

    fn target(values: &[(&str, &str)]) -> Target {
        let mut all = vec![
            (
                keys::CHEF_SERVER_URL,
                "https://chef.example.com/organizations/acme",
            ),
            (keys::CHEF_VERSION, "18.2.7"),
            (keys::INSTALL_SH_URL, "https://omnitruck.chef.io/install.sh"),
            (keys::BASE_RUN_LIST, "role[base], recipe[ntp::client]"),
            ("retry_delay", "0s"),
        ];
        all.extend_from_slice(values);
        fake::with(
            fake::target("chef-prod", "chef", &all),
            keys::VALIDATION_KEY,
            KEY,
            true,
        )
    }

    fn hostile() -> Bootstrap {
        Bootstrap {
            target: "it's\nmine".into(),
            server_url: "https://x.example.com/o/it's$(touch /tmp/pwned)".into(),
            version: "1.2.3`id`".into(),
            validation_client_name: "v'al\\id".into(),
            environment: "env".into(),
            install_sh_url: "https://x/install.sh; rm -rf /".into(),
            chef_client: "/opt/chef client".into(),
            run_list: vec!["role[base]".into()],
            dir: "/tmp/broker-handoff.abc".into(),
        }
    }

    #[test]
    fn hostile_values_are_one_shell_word_or_one_ruby_string_each() {
        let script = hostile().script();
        let header: Vec<&str> = script.lines().take(7).collect();
        assert_eq!(
            header,
            [
                "#!/bin/sh",
                "# Written by broker: hands this host to Chef (handoff target 'it'\\''s mine').",
                "dir='/tmp/broker-handoff.abc'",
                "server_url='https://x.example.com/o/it'\\''s$(touch /tmp/pwned)'",
                "version='1.2.3`id`'",
                "install_sh_url='https://x/install.sh; rm -rf /'",
                "chef_client='/opt/chef client'",
            ]
        );
        assert!(script.ends_with(BOOTSTRAP_BODY));
        // The shell reads each back as it was: nothing in them runs.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}\nprintf '%s|' \"$server_url\" \"$version\" \"$install_sh_url\" \"$chef_client\"",
                header[2..].join("\n")
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "https://x.example.com/o/it's$(touch /tmp/pwned)|1.2.3`id`|https://x/install.sh; rm -rf /|/opt/chef client|"
        );
        assert_eq!(
            hostile().client_rb(),
            "# Written by broker: handoff target it's mine.\n\
             chef_server_url 'https://x.example.com/o/it\\'s$(touch /tmp/pwned)'\n\
             validation_client_name 'v\\'al\\\\id'\n\
             validation_key '/tmp/broker-handoff.abc/validation.pem'\n\
             environment 'env'\n"
        );
    }

    #[tokio::test]
    async fn the_key_goes_to_the_host_as_a_0600_file_with_the_run_list_and_all_is_removed() {
        let replies = vec![
            fake::ok(""),
            fake::ok(""),
            fake::ok(""),
            fake::ok(""),
            fake::ok("converged\n"),
        ];
        let (report, seen) = fake::run_in_private_dir(&Chef, &target(&[]), replies).await;
        assert_eq!(report.state, HandoffState::HandedOff, "{report:?}");
        assert_eq!(
            seen.commands,
            [
                "umask 077 && mktemp -d \"${TMPDIR:-/tmp}/broker-handoff.r1.XXXXXXXX\"".to_owned(),
                format!("chmod 600 '{DIR}/validation.pem'"),
                format!("chmod 600 '{DIR}/client.rb'"),
                format!("chmod 600 '{DIR}/first-boot.json'"),
                format!("chmod 600 '{DIR}/chef-bootstrap.sh'"),
                format!(
                    "BROKER_HANDOFF_RUN=r1; export BROKER_HANDOFF_RUN; sh '{DIR}/chef-bootstrap.sh'"
                ),
                format!("rm -rf -- '{DIR}'"),
            ]
        );
        let written: Vec<(&str, String)> = seen
            .written
            .iter()
            .map(|(p, c)| (p.as_str(), String::from_utf8_lossy(c).into_owned()))
            .collect();
        assert_eq!(
            written[0],
            (&*format!("{DIR}/validation.pem"), KEY.to_owned())
        );
        assert_eq!(
            written[1].1,
            format!(
                "# Written by broker: handoff target chef-prod.\n\
                 chef_server_url 'https://chef.example.com/organizations/acme'\n\
                 validation_client_name 'chef-validator'\n\
                 validation_key '{DIR}/validation.pem'\nenvironment '_default'\n"
            )
        );
        let first_boot: serde_json::Value = serde_json::from_str(&written[2].1).unwrap();
        assert_eq!(
            first_boot,
            json!({"run_list": ["role[base]", "recipe[ntp::client]"]})
        );
        assert!(written[3].1.contains("chef_client='chef-client'\n"));
        assert!(report.log.contains(&"converged".to_owned()), "{report:?}");
    }

    #[tokio::test]
    async fn a_failed_run_fails_once_removes_the_key_and_never_shows_it() {
        let replies = vec![
            fake::ok(""),
            fake::ok(""),
            fake::ok(""),
            fake::ok(""),
            fake::status(
                1,
                &format!("ERROR: 401 with key\n{KEY}\nline MIIEowIBAAKCAQEAsecretsecret"),
            ),
        ];
        let (report, seen) = fake::run_in_private_dir(&Chef, &target(&[]), replies).await;
        assert_eq!(
            (report.state, report.attempts, report.last_error.as_deref()),
            (
                HandoffState::Failed,
                1,
                Some("the Chef bootstrap exited with status 1")
            )
        );
        assert_eq!(seen.commands.last().unwrap(), &format!("rm -rf -- '{DIR}'"));
        let log = report.log.join("\n");
        assert!(log.contains("ERROR: 401 with key"), "{log}");
        assert!(log.contains("line ********"), "{log}");
        assert!(!log.contains("secretsecret"), "{log}");
        assert!(!format!("{report:?}").contains("secretsecret"));
    }
}
