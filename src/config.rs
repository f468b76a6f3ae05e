//! Configuration: the embedded `config.toml` (or `--config FILE`), overridden by `WAGATE_*`
//! environment variables, overridden by command-line flags. Loaded once, then passed down.

use serde::Deserialize;
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
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    pub cache_capacity_mb: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Deserialize)]
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
        let text = match &overrides.config {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?,
            None => DEFAULT_CONFIG.to_owned(),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))?;
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
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
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
}
