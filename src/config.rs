//! Configuration in layers: the built-in defaults (the embedded `config.toml`), then a
//! configuration file (`--config FILE`, else `./config.toml` when present) whose keys are all
//! optional, then `WAGATE_*` environment variables, then command-line flags. A key the
//! defaults do not know is an error naming the key and the file. Loaded once, passed down.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wagate_actors::settings::{
    EventSettings, GroupSettings, Settings, SupervisionSettings, WebhookSettings, WhatsAppSettings,
};

/// The default configuration, as shipped in the repository root.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");

const ENV_PREFIX: &str = "WAGATE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: unknown key `{key}` (config.toml in the repository lists every key)", path = path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("{path}: {message}", path = path.display())]
    File { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log: String,
    pub body_limit: u64,
    pub http: HttpConfig,
    pub whatsapp: WhatsAppConfig,
    pub supervision: SupervisionConfig,
    pub storage: StorageConfig,
    pub groups: GroupsConfig,
    pub events: EventsConfig,
    pub webhooks: WebhooksConfig,
    #[serde(skip)]
    pub api_token: Option<Secret>,
    #[serde(skip)]
    pub admin_token: Option<Secret>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    pub url: String,
    pub version: String,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub healthy_after: Duration,
    pub connect_concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub link_check_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub link_check_timeout: Duration,
    pub link_check_failures: u32,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub restart_period: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    pub cache_capacity_mb: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

/// A bearer token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Command-line overrides (the highest layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the file (or the embedded default), then the environment, then the flags.
    pub fn load(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(DEFAULT_CONFIG).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(path) = &overrides.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            layer(&mut table, file, "").map_err(|key| ConfigError::UnknownKey {
                path: path.clone(),
                key,
            })?;
        }
        let mut api_token = None;
        let mut admin_token = None;
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (var, value) in env {
            match var.as_str() {
                "WAGATE_API_TOKEN" => api_token = non_empty_secret(&var, value)?,
                "WAGATE_ADMIN_TOKEN" => admin_token = non_empty_secret(&var, value)?,
                _ => apply_env(&mut table, &var, &value)?,
            }
        }
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| match &overrides.config {
                    Some(path) => ConfigError::File {
                        path: path.clone(),
                        message: e.to_string(),
                    },
                    None => ConfigError::Parse(e.to_string()),
                })?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        config.api_token = api_token;
        config.admin_token = admin_token;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        parse_version(&self.whatsapp.version)?;
        if !(self.whatsapp.url.starts_with("ws://") || self.whatsapp.url.starts_with("wss://")) {
            return Err(ConfigError::Parse(
                "whatsapp.url must be a ws:// or wss:// URL".into(),
            ));
        }
        if self.whatsapp.reconnect_backoff_min > self.whatsapp.reconnect_backoff_max {
            return Err(ConfigError::Parse(
                "whatsapp.reconnect_backoff_min exceeds reconnect_backoff_max".into(),
            ));
        }
        if self.supervision.call_timeout <= self.whatsapp.request_timeout {
            return Err(ConfigError::Parse(
                "supervision.call_timeout must be longer than whatsapp.request_timeout".into(),
            ));
        }
        if self.body_limit == 0 {
            return Err(ConfigError::Parse("body_limit must be positive".into()));
        }
        if self.http.max_connections == 0 {
            return Err(ConfigError::Parse(
                "http.max_connections must be positive".into(),
            ));
        }
        if self.http.header_timeout.is_zero()
            || self.http.body_timeout.is_zero()
            || self.http.keep_alive.is_zero()
        {
            return Err(ConfigError::Parse(
                "http.header_timeout, http.body_timeout and http.keep_alive must be positive"
                    .into(),
            ));
        }
        if self.whatsapp.link_check_interval.is_zero() || self.whatsapp.link_check_timeout.is_zero()
        {
            return Err(ConfigError::Parse(
                "whatsapp.link_check_interval and whatsapp.link_check_timeout must be positive"
                    .into(),
            ));
        }
        if self.events.retention.is_zero() {
            return Err(ConfigError::Parse(
                "events.retention must be positive".into(),
            ));
        }
        if self.webhooks.timeout.is_zero() || self.webhooks.backoff_min.is_zero() {
            return Err(ConfigError::Parse(
                "webhooks.timeout and webhooks.backoff_min must be positive".into(),
            ));
        }
        if self.webhooks.backoff_min > self.webhooks.backoff_max {
            return Err(ConfigError::Parse(
                "webhooks.backoff_min exceeds webhooks.backoff_max".into(),
            ));
        }
        Ok(())
    }

    /// What the actors need.
    pub fn settings(&self) -> Settings {
        Settings {
            data_dir: self.data_dir.clone(),
            snapshot_interval: self.storage.snapshot_interval,
            cache_capacity_bytes: self.storage.cache_capacity_mb.saturating_mul(1 << 20),
            whatsapp: WhatsAppSettings {
                url: self.whatsapp.url.clone(),
                // Validated in `load`.
                version: parse_version(&self.whatsapp.version).unwrap_or((2, 3000, 0)),
                request_timeout: self.whatsapp.request_timeout,
                reconnect_backoff_min: self.whatsapp.reconnect_backoff_min,
                reconnect_backoff_max: self.whatsapp.reconnect_backoff_max,
                healthy_after: self.whatsapp.healthy_after,
                connect_concurrency: self.whatsapp.connect_concurrency.max(1),
                link_check_interval: self.whatsapp.link_check_interval,
                link_check_timeout: self.whatsapp.link_check_timeout,
                link_check_failures: self.whatsapp.link_check_failures.max(1),
            },
            supervision: SupervisionSettings {
                max_restarts: self.supervision.max_restarts,
                restart_period: self.supervision.restart_period,
                restart_backoff_min: self.supervision.restart_backoff_min,
                restart_backoff_max: self.supervision.restart_backoff_max,
                call_timeout: self.supervision.call_timeout,
                shutdown_timeout: self.supervision.shutdown_timeout,
            },
            groups: GroupSettings {
                refresh_interval: self.groups.refresh_interval,
            },
            events: EventSettings {
                retention: self.events.retention,
            },
            webhooks: WebhookSettings {
                timeout: self.webhooks.timeout,
                max_in_flight: self.webhooks.max_in_flight.max(1),
                backoff_min: self.webhooks.backoff_min,
                backoff_max: self.webhooks.backoff_max,
            },
        }
    }

    pub fn api_token_path(&self) -> PathBuf {
        self.data_dir.join("api-token")
    }
}

fn non_empty_secret(var: &str, value: String) -> Result<Option<Secret>, ConfigError> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() < 8 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Env {
            var: var.into(),
            message: "a token needs at least 8 characters and no whitespace".into(),
        });
    }
    Ok(Some(Secret(value)))
}

/// Applies `WAGATE_<KEY>` or `WAGATE_<SECTION>_<KEY>` to the table, typed like the value it
/// replaces.
/// Lays `file` over `base`, key by key; a key `base` does not have is returned as an error
/// (dotted, e.g. `http.max_conections`).
fn layer(base: &mut toml::Table, file: toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in file {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (None, _) => return Err(dotted),
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => {
                layer(inner, value, &dotted)?
            }
            (Some(slot), value) => *slot = value,
        }
    }
    Ok(())
}

/// The configuration file to read: `--config FILE`, else `./config.toml` when it exists.
pub fn config_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        let local = PathBuf::from("config.toml");
        local.is_file().then_some(local)
    })
}

impl Config {
    /// The effective configuration as TOML, secrets redacted, for `--print-config`.
    pub fn to_redacted_toml(&self) -> String {
        let body = toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"));
        let state = |s: &Option<Secret>| {
            if s.is_some() {
                "set (redacted)"
            } else {
                "not set"
            }
        };
        format!(
            "# Effective configuration (defaults, file, environment, flags).\n\
             # WAGATE_API_TOKEN: {}\n# WAGATE_ADMIN_TOKEN: {}\n\n{body}",
            state(&self.api_token),
            state(&self.admin_token),
        )
    }
}

fn apply_env(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let key = rest.to_ascii_lowercase();
    let unknown = || ConfigError::Env {
        var: var.into(),
        message: "no such setting (see config.toml for the keys)".into(),
    };
    let slot = if table.get(&key).is_some_and(|v| !v.is_table()) {
        table.get_mut(&key)
    } else {
        let section = table
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(name, _)| name.clone())
            .find(|name| key.starts_with(&format!("{name}_")))
            .ok_or_else(unknown)?;
        let inner = key[section.len() + 1..].to_owned();
        table
            .get_mut(&section)
            .and_then(|v| v.as_table_mut())
            .and_then(|t| t.get_mut(&inner))
    };
    let slot = slot.ok_or_else(unknown)?;
    let bad = |what: &str| ConfigError::Env {
        var: var.into(),
        message: format!("expected {what}, got {raw:?}"),
    };
    *slot = match slot {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?)
        }
        _ => toml::Value::String(raw.to_owned()),
    };
    Ok(())
}

fn parse_version(raw: &str) -> Result<(u32, u32, u32), ConfigError> {
    let parts: Vec<u32> = raw
        .split('.')
        .map(|p| p.parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| ConfigError::Parse(format!("whatsapp.version {raw:?} is not a.b.c")))?;
    match parts.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => Err(ConfigError::Parse(format!(
            "whatsapp.version {raw:?} is not a.b.c"
        ))),
    }
}

/// Reads the stored API token, or creates one (mode 0600). Returns the token and whether it
/// was generated now.
pub fn load_or_create_api_token(path: &Path) -> std::io::Result<(Secret, bool)> {
    use std::io::Write;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok((Secret(text.trim().to_owned()), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let token = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok((Secret(token), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_loads() {
        let c = Config::load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.supervision.restart_period, Duration::from_secs(30));
        assert!(c.api_token.is_none());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let c = Config::load(
            &Overrides {
                listen: Some("127.0.0.1:4000".parse().unwrap()),
                ..Default::default()
            },
            env(&[
                ("WAGATE_LISTEN", "127.0.0.1:5000"),
                ("WAGATE_DATA_DIR", "/tmp/x"),
                ("WAGATE_WHATSAPP_URL", "ws://127.0.0.1:1/ws/chat"),
                ("WAGATE_SUPERVISION_MAX_RESTARTS", "7"),
                ("WAGATE_SUPERVISION_RESTART_PERIOD", "2m"),
                ("WAGATE_API_TOKEN", "secret-token"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.whatsapp.url, "ws://127.0.0.1:1/ws/chat");
        assert_eq!(c.supervision.max_restarts, 7);
        assert_eq!(c.supervision.restart_period, Duration::from_secs(120));
        assert_eq!(c.api_token.unwrap().expose(), "secret-token");
    }

    #[test]
    fn bad_values_are_reported_by_name() {
        let err = Config::load(
            &Overrides::default(),
            env(&[("WAGATE_SUPERVISION_MAX_RESTARTS", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("WAGATE_SUPERVISION_MAX_RESTARTS"), "{err}");
        let err = Config::load(&Overrides::default(), env(&[("WAGATE_NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WAGATE_NOPE"), "{err}");
        let err = Config::load(
            &Overrides::default(),
            env(&[("WAGATE_GROUPS_REFRESH_INTERVAL", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("refresh_interval") || err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret("very-secret-token".into());
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wagate.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_partial_file_is_layered_over_the_defaults() {
        let (_dir, path) = file("[http]\nmax_connections = 7\n");
        let c = Config::load(
            &Overrides {
                config: Some(path),
                ..Default::default()
            },
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.http.max_connections, 7);
        assert_eq!(c.http.keep_alive, Duration::from_secs(60), "defaults stay");
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        for (text, key) in [
            ("[http]\nmax_conections = 7\n", "http.max_conections"),
            ("colour = \"red\"\n", "colour"),
            ("[nope]\nx = 1\n", "nope"),
        ] {
            let (_dir, path) = file(text);
            let err = Config::load(
                &Overrides {
                    config: Some(path.clone()),
                    ..Default::default()
                },
                env(&[]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let (_dir, path) = file("[http]\nmax_connections = \"many\"\n");
        let err = Config::load(
            &Overrides {
                config: Some(path.clone()),
                ..Default::default()
            },
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn the_printed_configuration_hides_secrets_and_loads_back() {
        let c = Config::load(
            &Overrides::default(),
            env(&[("WAGATE_API_TOKEN", "super-secret-token")]),
        )
        .unwrap();
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("super-secret-token"), "{printed}");
        assert!(printed.contains("WAGATE_API_TOKEN: set (redacted)"));
        let (_dir, path) = file(&printed);
        let again = Config::load(
            &Overrides {
                config: Some(path),
                ..Default::default()
            },
            env(&[]),
        )
        .unwrap();
        assert_eq!(
            again.to_redacted_toml().lines().skip(3).collect::<Vec<_>>(),
            printed.lines().skip(3).collect::<Vec<_>>()
        );
    }
}
