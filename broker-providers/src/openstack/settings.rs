//! The `OpenStack` settings section as the Python broker's users write it, a cloud of
//! `clouds.yaml`, and the templates: read once, when the provider is built, into what it uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::settings::{ProviderSettings, field};
use broker_core::value::scalar_text;
use broker_core::{Error, Mapping, ProviderConfig, Result, Value};
use serde::Deserialize;

use super::api::{Credentials, Domain, Login, Project};

/// What a template (or the `default_*` settings) gives a checkout: `image`, `flavor`, `network`
/// (a name or an id each), `key_name`, and a server `name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct Template {
    #[serde(deserialize_with = "field::text")]
    pub image: Option<String>,
    #[serde(deserialize_with = "field::text")]
    pub flavor: Option<String>,
    #[serde(deserialize_with = "field::text")]
    pub network: Option<String>,
    #[serde(deserialize_with = "field::text")]
    pub key_name: Option<String>,
    #[serde(deserialize_with = "field::text")]
    pub name: Option<String>,
}

/// The settings of one instance, as the provider uses them.
#[derive(Debug)]
pub(crate) struct OpenStackSettings {
    pub server_timeout: Duration,
    pub poll_interval: Duration,
    pub templates: Vec<(String, Template)>,
    pub defaults: Template,
}

/// The `OpenStack` section of one instance, as written: upstream's keys (login by `cloud`, by
/// application credential or by password; `server_timeout`, domains, `identity_api_version`,
/// `region_name`, `interface`, `templates`, `default_*`) and `server_poll_interval`. A cloud's
/// `auth` of `clouds.yaml` is read into it too: its keys are the same.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct OpenStackSection {
    #[serde(deserialize_with = "field::text")]
    cloud: Option<String>,
    #[serde(deserialize_with = "field::text")]
    auth_url: Option<String>,
    #[serde(deserialize_with = "field::text")]
    username: Option<String>,
    #[serde(deserialize_with = "field::secret")]
    password: Option<SecretString>,
    #[serde(deserialize_with = "field::text")]
    project_name: Option<String>,
    #[serde(deserialize_with = "field::text")]
    project_id: Option<String>,
    #[serde(deserialize_with = "field::text")]
    user_domain_name: Option<String>,
    #[serde(deserialize_with = "field::text")]
    user_domain_id: Option<String>,
    #[serde(deserialize_with = "field::text")]
    project_domain_name: Option<String>,
    #[serde(deserialize_with = "field::text")]
    project_domain_id: Option<String>,
    #[serde(deserialize_with = "field::text")]
    application_credential_id: Option<String>,
    #[serde(deserialize_with = "field::text")]
    application_credential_name: Option<String>,
    #[serde(deserialize_with = "field::secret")]
    application_credential_secret: Option<SecretString>,
    #[serde(deserialize_with = "field::text")]
    region_name: Option<String>,
    #[serde(deserialize_with = "field::text")]
    interface: Option<String>,
    #[serde(deserialize_with = "field::text")]
    identity_api_version: Option<String>,
    #[serde(deserialize_with = "field::seconds")]
    server_timeout: Option<Duration>,
    #[serde(deserialize_with = "field::seconds")]
    server_poll_interval: Option<Duration>,
    #[serde(deserialize_with = "templates")]
    templates: Vec<(String, Template)>,
    #[serde(deserialize_with = "field::text")]
    default_image: Option<String>,
    #[serde(deserialize_with = "field::text")]
    default_flavor: Option<String>,
    #[serde(deserialize_with = "field::text")]
    default_network: Option<String>,
    #[serde(deserialize_with = "field::text")]
    default_key_name: Option<String>,
}

impl ProviderSettings for OpenStackSection {}

impl OpenStackSection {
    /// What the checkouts use, defaults filled in.
    pub(crate) fn settings(&self) -> OpenStackSettings {
        OpenStackSettings {
            server_timeout: self.server_timeout.unwrap_or(Duration::from_secs(600)),
            poll_interval: self
                .server_poll_interval
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(10)),
            templates: self.templates.clone(),
            defaults: Template {
                image: self.default_image.clone(),
                flavor: self.default_flavor.clone(),
                network: self.default_network.clone(),
                key_name: self.default_key_name.clone(),
                name: None,
            },
        }
    }

    /// How to log in: a `cloud` of `clouds.yaml`, else `auth_url` with an application credential,
    /// else with a password, as upstream tries them.
    pub(crate) fn login(&self, config: &ProviderConfig) -> Result<Login> {
        check_identity_version(config, self.identity_api_version.as_deref())?;
        if let Some(cloud) = self.cloud.as_deref().filter(|c| !c.is_empty()) {
            return cloud_login(config, cloud, self);
        }
        let origin = match config.instance() {
            Some(i) => format!("OpenStack instance `{i}` in broker_settings.yaml"),
            None => "OpenStack in broker_settings.yaml".to_owned(),
        };
        login_from(
            config,
            self,
            self.region_name.clone(),
            self.interface.clone(),
            origin,
        )
    }
}

/// Keystone v3 is the only identity API broker speaks (`3`, `3.x` or `v3`).
fn check_identity_version(config: &ProviderConfig, version: Option<&str>) -> Result<()> {
    match version.map(|v| v.trim().trim_start_matches('v')) {
        None | Some("") => Ok(()),
        Some(v) if v == "3" || v.starts_with("3.") => Ok(()),
        Some(v) => Err(config.setting_error(
            "identity_api_version",
            format!("`{v}` is not supported: broker speaks Keystone v3 only; set it to 3"),
        )),
    }
}

/// A login from its keys: an application credential (by id, or by name with its user), else a
/// password with a project.
fn login_from(
    config: &ProviderConfig,
    keys: &OpenStackSection,
    region: Option<String>,
    interface: Option<String>,
    origin: String,
) -> Result<Login> {
    let secret = |v: &Option<SecretString>| v.clone().filter(|s| !s.expose_secret().is_empty());
    refuse_placeholders(config, keys)?;
    let Some(auth_url) = non_blank(&keys.auth_url) else {
        return Err(Error::configuration(format!(
            "{origin}: OpenStack needs `cloud` (a cloud of clouds.yaml) or `auth_url` with an \
             application credential or a username, password and project"
        )));
    };
    check_auth_url(&auth_url, &origin)?;
    let user_domain = domain(&keys.user_domain_id, &keys.user_domain_name);
    let credentials = match (
        non_blank(&keys.application_credential_id),
        non_blank(&keys.application_credential_name),
        secret(&keys.application_credential_secret),
        non_blank(&keys.username),
        secret(&keys.password),
    ) {
        (Some(id), _, Some(secret), _, _) => Credentials::ApplicationCredential {
            id: Some(id),
            name: None,
            secret,
        },
        (None, Some(name), Some(secret), Some(user), _) => Credentials::ApplicationCredential {
            id: None,
            name: Some((name, user, user_domain)),
            secret,
        },
        (_, _, _, Some(username), Some(password)) => Credentials::Password {
            username,
            user_domain,
            password,
            project: project_of(keys, &origin)?,
        },
        _ => {
            return Err(Error::configuration(format!(
                "{origin}: OpenStack needs `application_credential_id` and \
                 `application_credential_secret`, or `username`, `password` and `project_name`, \
                 besides `auth_url`"
            )));
        }
    };
    Ok(Login {
        auth_url,
        credentials,
        region: region.filter(|r| !r.is_empty()),
        interface: interface
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| "public".to_owned()),
        origin,
    })
}

/// `keys`' value when set to something other than blanks.
fn non_blank(value: &Option<String>) -> Option<String> {
    value.clone().filter(|s| !s.trim().is_empty())
}

/// Refuses the keys still holding the example settings' placeholder.
fn refuse_placeholders(config: &ProviderConfig, keys: &OpenStackSection) -> Result<()> {
    for (key, value) in [
        ("auth_url", keys.auth_url.as_deref()),
        ("username", keys.username.as_deref()),
        (
            "password",
            keys.password.as_ref().map(ExposeSecret::expose_secret),
        ),
    ] {
        if value.is_some_and(|v| broker_core::settings::is_placeholder(&Value::from(v))) {
            return Err(config.setting_error(
                key,
                "is still the example's placeholder; set a real value or remove the key",
            ));
        }
    }
    Ok(())
}

/// The project a password login is scoped to: by id when given, else by name in its domain.
fn project_of(keys: &OpenStackSection, origin: &str) -> Result<Project> {
    match (non_blank(&keys.project_id), non_blank(&keys.project_name)) {
        (Some(id), _) => Ok(Project::Id(id)),
        (None, Some(name)) => Ok(Project::Name {
            name,
            domain: domain(&keys.project_domain_id, &keys.project_domain_name),
        }),
        (None, None) => Err(Error::configuration(format!(
            "{origin}: a password login needs `project_name` (or `project_id`)"
        ))),
    }
}

/// A domain by id when given, else by name (`Default` when neither is).
fn domain(id: &Option<String>, name: &Option<String>) -> Domain {
    match (id.as_deref(), name.as_deref()) {
        (Some(id), _) if !id.is_empty() => Domain::Id(id.to_owned()),
        (_, Some(name)) if !name.is_empty() => Domain::Name(name.to_owned()),
        _ => Domain::Name("Default".to_owned()),
    }
}

fn check_auth_url(auth_url: &str, origin: &str) -> Result<()> {
    let fine = reqwest::Url::parse(auth_url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if fine {
        return Ok(());
    }
    Err(Error::configuration(format!(
        "{origin}: `auth_url: {auth_url}` is not the address of Keystone; write it as \
         `https://keystone.example.com:5000/v3`"
    )))
}

/// The login of cloud `name` of `clouds.yaml` (with `secure.yaml` next to it merged over it).
/// `region_name` and `interface` of the settings apply where the cloud sets none.
fn cloud_login(config: &ProviderConfig, name: &str, section: &OpenStackSection) -> Result<Login> {
    let Some(path) = clouds_file(config.directory()) else {
        return Err(Error::configuration(format!(
            "OpenStack `cloud: {name}`: no clouds.yaml found; put one in $OS_CLIENT_CONFIG_FILE, the \
             current directory, the broker directory, ~/.config/openstack/ or /etc/openstack/"
        )));
    };
    let mut cloud = read_cloud(&path, name)?.ok_or_else(|| {
        Error::configuration(format!(
            "OpenStack `cloud: {name}`: {} has no cloud `{name}` under `clouds:`",
            path.display()
        ))
    })?;
    if let Some(secure) = path.parent().map(|d| d.join("secure.yaml"))
        && secure.is_file()
        && let Some(secrets) = read_cloud(&secure, name)?
    {
        merge(&mut cloud, secrets);
    }
    let origin = format!("cloud `{name}` of {}", path.display());
    let text = |key: &str| cloud.get(key).and_then(scalar_text);
    check_identity_version(config, text("identity_api_version").as_deref())?;
    let auth = cloud.get("auth").cloned().unwrap_or(Value::Null);
    let keys: OpenStackSection = serde_yaml::from_value(auth).map_err(|e| {
        Error::configuration(format!("{origin}: its `auth` cannot be read")).caused_by(e)
    })?;
    login_from(
        config,
        &keys,
        text("region_name").or_else(|| section.region_name.clone()),
        text("interface").or_else(|| section.interface.clone()),
        origin,
    )
}

/// The first `clouds.yaml` of openstacksdk's search path, with the broker directory after the
/// current one.
fn clouds_file(broker_dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("OS_CLIENT_CONFIG_FILE") {
        candidates.push(file.into());
    }
    candidates.push(PathBuf::from("clouds.yaml"));
    candidates.push(broker_dir.join("clouds.yaml"));
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(home) = config_home {
        candidates.push(home.join("openstack/clouds.yaml"));
    }
    candidates.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    candidates.into_iter().find(|p| p.is_file())
}

/// Cloud `name` of a `clouds.yaml`-shaped file, if it has one.
fn read_cloud(path: &Path, name: &str) -> Result<Option<Mapping>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| {
        Error::configuration(format!("{} is not YAML", path.display())).caused_by(e)
    })?;
    Ok(doc
        .get("clouds")
        .and_then(|c| c.get(name))
        .and_then(Value::as_mapping)
        .cloned())
}

/// `over` merged into `base`, mappings key by key.
fn merge(base: &mut Mapping, over: Mapping) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Mapping(inner)), Value::Mapping(more)) => merge(inner, more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `templates`: a mapping of names to `{image, flavor, network, key_name}`, in file order.
fn templates<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<(String, Template)>, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(entries) => entries
            .into_iter()
            .map(|(key, value)| {
                let name = scalar_text(&key)
                    .ok_or_else(|| D::Error::custom("a template's name must be text"))?;
                let template = serde_yaml::from_value::<Template>(value)
                    .map_err(|e| D::Error::custom(format!("template `{name}`: {e}")))?;
                Ok((name, template))
            })
            .collect(),
        _ => Err(D::Error::custom(
            "must map template names to `{image, flavor, network, key_name}`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str, dir: &Path) -> ProviderConfig {
        ProviderConfig::new("OpenStack", None, serde_yaml::from_str(yaml).unwrap(), dir)
    }

    fn login(yaml: &str) -> Result<Login> {
        let dir = tempfile::tempdir().unwrap();
        let config = config(yaml, dir.path());
        OpenStackSection::from_section(&config)?.login(&config)
    }

    #[test]
    fn an_application_credential_wins_over_a_password_as_upstream() {
        let l = login(
            "{auth_url: 'http://k/v3', username: u, password: p, project_name: demo, \
             application_credential_id: cred, application_credential_secret: s}",
        )
        .unwrap();
        assert!(
            matches!(&l.credentials, Credentials::ApplicationCredential { id: Some(id), .. } if id == "cred"),
            "{l:?}"
        );
        assert_eq!(l.interface, "public");
    }

    #[test]
    fn a_password_login_names_its_project_and_domains() {
        let l = login(
            "{auth_url: 'http://k/v3', username: u, password: p, project_name: demo, \
             project_domain_name: Lab, region_name: East, interface: internal}",
        )
        .unwrap();
        match &l.credentials {
            Credentials::Password {
                username,
                user_domain,
                project,
                ..
            } => {
                assert_eq!(username, "u");
                assert_eq!(user_domain, &Domain::Name("Default".into()));
                assert_eq!(
                    project,
                    &Project::Name {
                        name: "demo".into(),
                        domain: Domain::Name("Lab".into())
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(l.region.as_deref(), Some("East"));
        assert_eq!(l.interface, "internal");
    }

    #[test]
    fn incomplete_or_unsupported_logins_are_configuration_errors() {
        let err = login("{username: u}").unwrap_err();
        assert_eq!(err.exit_code(), 8);
        assert!(err.to_string().contains("needs `cloud`"), "{err}");
        let err = login("{auth_url: 'http://k/v3', username: u, password: p}").unwrap_err();
        assert!(err.to_string().contains("needs `project_name`"), "{err}");
        let err = login("{auth_url: 'http://k/v3', username: u}").unwrap_err();
        assert!(
            err.to_string().contains("application_credential_id"),
            "{err}"
        );
        let err =
            login("{auth_url: keystone, username: u, password: p, project_name: d}").unwrap_err();
        assert!(
            err.to_string().contains("is not the address of Keystone"),
            "{err}"
        );
        let err = login("{auth_url: 'http://k', identity_api_version: 2}").unwrap_err();
        assert!(err.to_string().contains("Keystone v3 only"), "{err}");
        assert_eq!(err.exit_code(), 8);
    }

    #[test]
    fn a_cloud_is_read_from_clouds_yaml_with_secure_yaml_over_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("clouds.yaml"),
            "clouds:\n  lab:\n    auth:\n      auth_url: http://k:5000\n      username: u\n      \
             project_id: p1\n      user_domain_id: default\n    region_name: West\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("secure.yaml"),
            "clouds:\n  lab:\n    auth:\n      password: from-secure\n",
        )
        .unwrap();
        let lab = config("{cloud: lab, interface: admin}", dir.path());
        let l = OpenStackSection::from_section(&lab)
            .unwrap()
            .login(&lab)
            .unwrap();
        assert_eq!(l.auth_url, "http://k:5000");
        assert_eq!(l.region.as_deref(), Some("West"));
        assert_eq!(l.interface, "admin");
        match &l.credentials {
            Credentials::Password {
                password,
                project,
                user_domain,
                ..
            } => {
                assert_eq!(password.expose_secret(), "from-secure");
                assert_eq!(project, &Project::Id("p1".into()));
                assert_eq!(user_domain, &Domain::Id("default".into()));
            }
            other => panic!("{other:?}"),
        }
        let missing = config("{cloud: elsewhere}", dir.path());
        let err = OpenStackSection::from_section(&missing)
            .unwrap()
            .login(&missing)
            .unwrap_err();
        assert!(
            err.to_string().contains("has no cloud `elsewhere`"),
            "{err}"
        );
    }

    #[test]
    fn templates_keep_their_order_and_refuse_a_non_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(
            "{templates: {small: {image: rhel-9.4, flavor: m1.small, network: private}, \
             big: {image: fedora, flavor: m1.large, network: private, key_name: k}}}",
            dir.path(),
        );
        let s = OpenStackSection::from_section(&c).unwrap().settings();
        let names: Vec<&str> = s.templates.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["small", "big"]);
        assert_eq!(s.templates[1].1.key_name.as_deref(), Some("k"));
        assert_eq!(s.server_timeout, Duration::from_secs(600));
        let bad = config("{templates: [small]}", dir.path());
        let err = OpenStackSection::from_section(&bad).unwrap_err();
        assert!(err.to_string().contains("must map template names"), "{err}");
    }
}
