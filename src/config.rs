//! Typed settings: defaults < `holdless.toml` (or `--config FILE`) < `HOLDLESS__SECTION__KEY`
//! environment variables. Unknown keys are an error, so a typo never silently falls
//! back to a default. `deploy/holdless.toml` documents every key (a test parses it).
//!
//! Principals can come from the environment too ([`PRINCIPALS_ENV`], a TOML array of
//! inline tables), so a container started with nothing but `docker run -e ...` can
//! listen on all interfaces with authentication on, without a config file mounted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// The supervisor web console: loopback by default, next to `/metrics` but on a port of
/// its own, so `/metrics` can be opened to a remote Prometheus while the console stays
/// private.
pub const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:9465";
/// A console session lasts one long shift (8 hours) from sign-in, then asks again.
pub const DEFAULT_CONSOLE_SESSION_MINUTES: u32 = 8 * 60;
pub const DEFAULT_STORE_PATH: &str = "./holdless-data";
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// A waiting call unreported for 4 hours is stale: far past any real wait.
pub const DEFAULT_STALE_CALL_AFTER_SECS: u64 = 4 * 3600;
pub const DEFAULT_RESERVATION_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_CONTACT_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_CONFIG_FILE: &str = "holdless.toml";
/// Largest gRPC message accepted, in bytes (a plan is the biggest legitimate one).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 64 * 1024;
/// Calls running at once (all connections together) before new ones are shed.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// A call still without a response after this many seconds gets DEADLINE_EXCEEDED.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_CALLBACK_REQUESTS_PER_PHONE_PER_HOUR: u32 = 3;
pub use crate::scheduler::policy::DEFAULT_SLOT_HORIZON_DAYS;
pub const DEFAULT_CALLBACK_REQUESTS_PER_PRINCIPAL_PER_HOUR: u32 = 600;

/// Environment variable holding `auth.principals` as a TOML array of inline tables:
/// `[{name = 'pbx', token_sha256 = '<hex>', roles = ['telephony']}]`. The config crate
/// reads `HOLDLESS__SECTION__KEY` variables as scalars only, so holdless parses this one
/// itself. Set, it replaces the file's principals (the environment wins, as for every key).
pub const PRINCIPALS_ENV: &str = "HOLDLESS__AUTH__PRINCIPALS";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub metrics: MetricsSettings,
    pub console: ConsoleSettings,
    pub store: StoreSettings,
    pub plan: PlanSettings,
    pub live: LiveSettings,
    pub callbacks: CallbackSettings,
    /// Defaulted here because the config crate drops an empty list (and so the table).
    #[serde(default)]
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub stats: StatsSettings,
    pub cluster: ClusterSettings,
}

/// Several nodes over one PostgreSQL store (`store.backend = "postgres"`), one leader at
/// a time (see the `cluster` module). Ignored with the sled backend, which is one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Seconds a leader's lease lasts without renewal; renewed every third of it,
    /// polled by followers every tenth. A new leader takes over within about
    /// `lease_ttl_secs * 1.1` of a leader's loss, plus its store load.
    pub lease_ttl_secs: u64,
    /// This node's name in the lease row. Empty (default): the host name and a ULID,
    /// new at each process start, so nodes on one machine never collide.
    pub node_id: String,
    /// The gRPC address followers name as the leader's (`host:port`). Empty (default):
    /// the address `server.listen` bound to; set it when that is a wildcard
    /// (`0.0.0.0`) or behind NAT (in Kubernetes: the pod IP).
    pub advertise_addr: String,
}

/// Wallboards (`WatchQueueStats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSettings {
    /// Most messages a second one watcher gets, and most board computations a second
    /// however many watch (a watcher may ask for fewer). Positive, at most
    /// [`MAX_WATCH_PER_SEC`].
    pub watch_max_per_sec: f64,
}

/// Highest `stats.watch_max_per_sec`: a wallboard has no use for more, and the
/// publisher's work grows with it.
pub const MAX_WATCH_PER_SEC: f64 = 1_000.0;
pub use crate::service::board::DEFAULT_WATCH_MAX_PER_SEC;

/// How `holdless serve` writes its log (to stderr; the level comes from `HOLDLESS_LOG`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields), for log
    /// shippers that parse rather than grep.
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Who may call. Empty: no authentication, and `serve` stays on loopback.
    #[serde(default)]
    pub principals: Vec<PrincipalSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSettings {
    /// A dialer must report an attempt's outcome within this many seconds, or the same
    /// attempt is dispatched again (possibly to another dialer).
    pub lease_secs: u64,
    /// Idempotency keys of RequestCallback, and dispatch attempts whose outcome is
    /// stored (a repeated report is answered duplicate), are remembered this many hours.
    pub request_id_retention_hours: u32,
    /// How many local days ahead (today included) `ListSlots` lists and
    /// `RequestCallback`/`RescheduleCallback` book scheduled slots: one horizon for
    /// both, 1 to 31.
    pub slot_horizon_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSettings {
    /// Shown in logs and audit records.
    pub name: String,
    /// Hex SHA-256 of the bearer token (`printf %s "$TOKEN" | sha256sum`); the token
    /// itself is never stored.
    pub token_sha256: String,
    pub roles: Vec<crate::auth::Role>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Callback requests accepted per phone number in any hour (0: no limit).
    pub callback_requests_per_phone_per_hour: u32,
    /// Callback requests accepted per principal in any hour (0: no limit).
    pub callback_requests_per_principal_per_hour: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates for client certificates; set: mutual TLS is required.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSettings {
    /// An agent reserved for a routed call is released if `answered` does not follow
    /// within this many seconds.
    pub reservation_timeout_secs: u64,
    /// Contact history is kept this many days (first-contact resolution needs 7).
    pub contact_retention_days: u32,
    /// A finished call (ended, abandoned) stays in live state this many seconds, so a
    /// late or repeated event about it is recognized instead of refused as unknown.
    pub finished_call_memory_secs: u64,
    /// A waiting call the platform reported nothing about for this many seconds is
    /// dropped from its line as stale (a lost `abandoned` or `answered`), so it stops
    /// counting in positions and wait estimates.
    pub stale_call_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// How long in-flight calls may take to finish after SIGINT/SIGTERM, in seconds.
    pub shutdown_grace_secs: u64,
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// Calls running at once before new ones get UNAVAILABLE (load shedding).
    pub max_concurrent_requests: usize,
    /// Per-call deadline in seconds (DEADLINE_EXCEEDED after it).
    pub request_timeout_secs: u64,
    /// TLS for the gRPC port; absent: plaintext.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// HTTP listen address for Prometheus `/metrics`.
    pub listen: SocketAddr,
}

/// The supervisor web console (`holdless::console`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the console at all.
    pub enabled: bool,
    /// HTTP(S) listen address; uses `server.tls` when that is set. Without principals it
    /// must be a loopback address, as for gRPC.
    pub listen: SocketAddr,
    /// How long a sign-in lasts, in minutes (the session cookie's lifetime).
    pub session_minutes: u32,
}

/// sled's own default is 1 GiB. The hot pages of a center are few (the newest
/// records, the dedupe entries being looked up; the scheduler keeps its index in
/// memory, not in sled), so 32 MB costs durable callback creates nothing measurable,
/// even into a store holding a million open callbacks, while the start-up scan of a
/// million callbacks fills whatever the cache allows: sled counts pages at their
/// on-disk size, so resident memory runs to a few times this once warm (256 held
/// ~250 MB more after a restart than 64, and 64 about 40 MB more than 32; see
/// docs/PERFORMANCE.md).
pub const DEFAULT_STORE_CACHE_MB: u64 = 32;

/// Connections in the PostgreSQL pool: enough for 64 concurrent writers to keep the
/// server's group commit busy on a small machine without a connection per request.
/// Callback creates use a quarter of them (at most 4), each transaction carrying every
/// create queued meanwhile.
pub const DEFAULT_PG_POOL_SIZE: usize = 16;

/// Which [`crate::store::Store`] implementation holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded, in `store.path` (the default: nothing else to run).
    Sled,
    /// A PostgreSQL server at `store.postgres.url` (several nodes, the database's own
    /// replication for high availability).
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sled` (default) or `postgres`.
    pub backend: StoreBackend,
    /// Directory of the embedded sled store.
    pub path: PathBuf,
    /// sled's page cache, in MiB: the store's share of resident memory once warm.
    pub cache_mb: u64,
    /// A clean stop saves the scheduler's index of open callbacks as a warm-start
    /// image, and the next start reads it instead of every open callback's record
    /// (a million in about a second instead of several). The store keeps it only while
    /// no callback changes after the stop, and never after a crash, which always reads
    /// the records. `false` always reads the records.
    pub warm_start: bool,
    /// Used when `backend = "postgres"`.
    pub postgres: PostgresSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:5432/dbname` (or libpq key=value form). Prefer
    /// `HOLDLESS__STORE__POSTGRES__URL` over the file when it holds a password.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// The sessions' `synchronous_commit`: `on` (default), `remote_apply` or
    /// `remote_write` (with synchronous standbys), `local`. `off` is refused: a reply
    /// must only follow a durable commit.
    pub synchronous_commit: String,
    /// `disable` (default) or `require`: TLS verified against `ca_file`.
    pub tls: PgTls,
    /// PEM file of the CA that signed the server's certificate (`tls = "require"`).
    pub ca_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgTls {
    Disable,
    Require,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// Plan imported into an empty store; empty: the example plan built into the
    /// binary (`deploy/plan.example.toml`). On SIGHUP a set file is re-imported when
    /// its content changed since its last import (see `source`); the built-in example
    /// never is.
    pub file: String,
    /// `api` (default): supervisors own the plan; a changed file does not replace a
    /// version applied through the API since its last import (SIGHUP refuses with a
    /// warning). `file`: the file is the source of truth and a changed file always
    /// becomes the active version.
    pub source: crate::service::PlanSource,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings {
                listen: DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses"),
                shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
                request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
                tls: None,
            },
            metrics: MetricsSettings {
                listen: DEFAULT_METRICS_LISTEN
                    .parse()
                    .expect("default metrics address parses"),
            },
            console: ConsoleSettings {
                enabled: true,
                listen: DEFAULT_CONSOLE_LISTEN
                    .parse()
                    .expect("default console address parses"),
                session_minutes: DEFAULT_CONSOLE_SESSION_MINUTES,
            },
            store: StoreSettings {
                backend: StoreBackend::Sled,
                path: PathBuf::from(DEFAULT_STORE_PATH),
                cache_mb: DEFAULT_STORE_CACHE_MB,
                warm_start: true,
                postgres: PostgresSettings {
                    url: String::new(),
                    pool_size: DEFAULT_PG_POOL_SIZE,
                    synchronous_commit: "on".into(),
                    tls: PgTls::Disable,
                    ca_file: String::new(),
                },
            },
            plan: PlanSettings {
                file: String::new(),
                source: crate::service::PlanSource::Api,
            },
            callbacks: CallbackSettings {
                lease_secs: 60,
                request_id_retention_hours: 24,
                slot_horizon_days: DEFAULT_SLOT_HORIZON_DAYS,
            },
            live: LiveSettings {
                reservation_timeout_secs: DEFAULT_RESERVATION_TIMEOUT_SECS,
                contact_retention_days: DEFAULT_CONTACT_RETENTION_DAYS,
                finished_call_memory_secs: 3600,
                stale_call_after_secs: DEFAULT_STALE_CALL_AFTER_SECS,
            },
            auth: AuthSettings::default(),
            limits: LimitSettings {
                callback_requests_per_phone_per_hour: DEFAULT_CALLBACK_REQUESTS_PER_PHONE_PER_HOUR,
                callback_requests_per_principal_per_hour:
                    DEFAULT_CALLBACK_REQUESTS_PER_PRINCIPAL_PER_HOUR,
            },
            log: LogSettings {
                format: LogFormat::Text,
            },
            stats: StatsSettings {
                watch_max_per_sec: DEFAULT_WATCH_MAX_PER_SEC,
            },
            cluster: ClusterSettings {
                lease_ttl_secs: crate::cluster::DEFAULT_LEASE_TTL_SECS,
                node_id: String::new(),
                advertise_addr: String::new(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads settings. With `file`, that file must exist; without, `holdless.toml` in the
    /// working directory is read if present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut vars = HashMap::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with("HOLDLESS")) else {
                continue;
            };
            let value = value.into_string().map_err(|_| {
                ConfigError(format!("environment variable {key} is not valid UTF-8"))
            })?;
            vars.insert(key.to_owned(), value);
        }
        Self::load_with_env(file, vars)
    }

    /// `vars`: the process's `HOLDLESS*` environment variables (tests pass their own).
    fn load_with_env(
        file: Option<&Path>,
        mut vars: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let principals_key = vars
            .keys()
            .find(|k| k.eq_ignore_ascii_case(PRINCIPALS_ENV))
            .cloned();
        let env_principals = principals_key
            .and_then(|k| vars.remove(&k))
            .map(|v| parse_env_principals(&v))
            .transpose()?;
        let env = Environment::with_prefix("HOLDLESS").source(Some(vars));
        let defaults =
            Config::try_from(&Settings::default()).map_err(|e| ConfigError(e.to_string()))?;
        let mut builder = Config::builder().add_source(defaults);
        builder = match file {
            Some(f) => {
                if !f.is_file() {
                    return Err(ConfigError(format!(
                        "config file {} not found",
                        f.display()
                    )));
                }
                builder.add_source(File::from(f).format(FileFormat::Toml).required(true))
            }
            None => {
                builder.add_source(File::new(DEFAULT_CONFIG_FILE, FileFormat::Toml).required(false))
            }
        };
        builder = builder.add_source(env.prefix_separator("__").separator("__").try_parsing(true));
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        if let Some(principals) = env_principals {
            settings.auth.principals = principals;
        }
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.store.path.as_os_str().is_empty() {
            return Err(ConfigError("store.path must not be empty".into()));
        }
        if self.store.backend == StoreBackend::Postgres {
            let pg = &self.store.postgres;
            if pg.url.trim().is_empty() {
                return Err(ConfigError(
                    "store.postgres.url must be set when store.backend = \"postgres\"".into(),
                ));
            }
            if pg.pool_size == 0 {
                return Err(ConfigError(
                    "store.postgres.pool_size must be positive".into(),
                ));
            }
            if !["on", "remote_apply", "remote_write", "local"]
                .contains(&pg.synchronous_commit.as_str())
            {
                return Err(ConfigError(format!(
                    "store.postgres.synchronous_commit must be on, remote_apply, remote_write \
                     or local (an acknowledged write must be durable), not {:?}",
                    pg.synchronous_commit
                )));
            }
            if pg.tls == PgTls::Require && pg.ca_file.is_empty() {
                return Err(ConfigError(
                    "store.postgres.ca_file must name the server's CA when tls = \"require\""
                        .into(),
                ));
            }
        }
        if self.callbacks.lease_secs == 0 {
            return Err(ConfigError("callbacks.lease_secs must be positive".into()));
        }
        if self.live.stale_call_after_secs == 0 {
            return Err(ConfigError(
                "live.stale_call_after_secs must be positive".into(),
            ));
        }
        let max_horizon = crate::scheduler::policy::MAX_SLOT_DAYS;
        if !(1..=max_horizon).contains(&self.callbacks.slot_horizon_days) {
            return Err(ConfigError(format!(
                "callbacks.slot_horizon_days must be 1 to {max_horizon}"
            )));
        }
        let rate = self.stats.watch_max_per_sec;
        if !(rate.is_finite()
            && (crate::service::board::MIN_WATCH_PER_SEC..=MAX_WATCH_PER_SEC).contains(&rate))
        {
            return Err(ConfigError(format!(
                "stats.watch_max_per_sec must be {} to {MAX_WATCH_PER_SEC}",
                crate::service::board::MIN_WATCH_PER_SEC
            )));
        }
        if self.live.reservation_timeout_secs == 0 {
            return Err(ConfigError(
                "live.reservation_timeout_secs must be positive".into(),
            ));
        }
        if self.live.contact_retention_days < 7 {
            return Err(ConfigError(
                "live.contact_retention_days must be at least 7 (the context window)".into(),
            ));
        }
        if self.console.session_minutes == 0 {
            return Err(ConfigError(
                "console.session_minutes must be positive".into(),
            ));
        }
        if self.server.max_message_bytes < 1024 {
            return Err(ConfigError(
                "server.max_message_bytes must be at least 1024".into(),
            ));
        }
        if self.server.max_concurrent_requests == 0 {
            return Err(ConfigError(
                "server.max_concurrent_requests must be positive".into(),
            ));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(ConfigError(
                "server.request_timeout_secs must be positive".into(),
            ));
        }
        if let Some(tls) = &self.server.tls {
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(ConfigError("server.tls needs both cert and key".into()));
            }
        }
        if self.cluster.lease_ttl_secs < crate::cluster::MIN_LEASE_TTL_SECS {
            return Err(ConfigError(format!(
                "cluster.lease_ttl_secs must be at least {}",
                crate::cluster::MIN_LEASE_TTL_SECS
            )));
        }
        crate::auth::Access::from_settings(&self.auth.principals).map_err(ConfigError)?;
        Ok(())
    }
}

/// Parses [`PRINCIPALS_ENV`]. The message names the variable and the problem in one
/// line (exit 64 prints one line); it never echoes the value.
fn parse_env_principals(value: &str) -> Result<Vec<PrincipalSettings>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Principals {
        principals: Vec<PrincipalSettings>,
    }
    toml::from_str::<Principals>(&format!("principals = {value}"))
        .map(|p| p.principals)
        .map_err(|e| {
            let why = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            ConfigError(format!(
                "{PRINCIPALS_ENV} must be a TOML array of principals \
                 ([{{name = '...', token_sha256 = '...', roles = ['...']}}]): {why}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert!(Settings::load_with_env(Some(&missing), env(&[])).is_err());
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.metrics.listen.to_string(), DEFAULT_METRICS_LISTEN);
        assert_eq!(s.store.path, PathBuf::from(DEFAULT_STORE_PATH));
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"127.0.0.1:6000\"\n[store]\npath = \"/tmp/x\"\n",
        )
        .unwrap();
        let s =
            Settings::load_with_env(Some(&f), env(&[("HOLDLESS__STORE__PATH", "/tmp/y")])).unwrap();
        assert_eq!(s.server.listen.port(), 6000);
        assert_eq!(s.store.path, PathBuf::from("/tmp/y"));
        let s = Settings::load_with_env(
            Some(&f),
            env(&[("HOLDLESS__SERVER__SHUTDOWN_GRACE_SECS", "3")]),
        )
        .unwrap();
        assert_eq!(s.server.shutdown_grace_secs, 3);
    }

    #[test]
    fn the_postgres_backend_needs_a_url_and_a_durable_commit() {
        let pg = |extra: &[(&str, &str)]| {
            let mut vars = vec![("HOLDLESS__STORE__BACKEND", "postgres")];
            vars.extend_from_slice(extra);
            Settings::load_with_env(None, env(&vars))
        };
        let err = pg(&[]).unwrap_err().to_string();
        assert!(err.contains("store.postgres.url must be set"), "{err}");
        let url = ("HOLDLESS__STORE__POSTGRES__URL", "postgres://h/db");
        let s = pg(&[url]).unwrap();
        assert_eq!(s.store.backend, StoreBackend::Postgres);
        assert_eq!(s.store.postgres.pool_size, DEFAULT_PG_POOL_SIZE);
        assert_eq!(s.store.postgres.synchronous_commit, "on");
        let off = ("HOLDLESS__STORE__POSTGRES__SYNCHRONOUS_COMMIT", "off");
        let err = pg(&[url, off]).unwrap_err().to_string();
        assert!(err.contains("synchronous_commit"), "{err}");
        let tls = ("HOLDLESS__STORE__POSTGRES__TLS", "require");
        let err = pg(&[url, tls]).unwrap_err().to_string();
        assert!(err.contains("ca_file"), "{err}");
        let err = pg(&[url, ("HOLDLESS__STORE__BACKEND", "mysql")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h.toml");
        std::fs::write(&f, "[server]\nlisen = \"127.0.0.1:6000\"\n").unwrap();
        let e = Settings::load_with_env(Some(&f), env(&[])).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        std::fs::write(&f, "[server]\nlisten = \"not an address\"\n").unwrap();
        assert!(Settings::load_with_env(Some(&f), env(&[])).is_err());
        assert!(Settings::load_with_env(None, env(&[("HOLDLESS__STORE__PATHH", "x")])).is_err());
    }

    #[test]
    fn the_console_is_on_by_default_on_loopback_and_its_settings_are_checked() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(s.console.enabled);
        assert_eq!(s.console.listen.to_string(), DEFAULT_CONSOLE_LISTEN);
        assert_eq!(s.console.session_minutes, DEFAULT_CONSOLE_SESSION_MINUTES);
        let off = env(&[("HOLDLESS__CONSOLE__ENABLED", "false")]);
        assert!(!Settings::load_with_env(None, off).unwrap().console.enabled);
        let zero = env(&[("HOLDLESS__CONSOLE__SESSION_MINUTES", "0")]);
        let e = Settings::load_with_env(None, zero).unwrap_err();
        assert!(e.to_string().contains("console.session_minutes"), "{e}");
    }

    #[test]
    fn principals_tls_and_limits_parse_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h.toml");
        let hash = crate::auth::token_sha256("tok");
        std::fs::write(
            &f,
            format!(
                "[server]\nlisten = \"0.0.0.0:0\"\nmax_concurrent_requests = 8\n\
                 [server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
                 [[auth.principals]]\nname = \"pbx\"\ntoken_sha256 = \"{hash}\"\n\
                 roles = [\"telephony\", \"supervisor\"]\n\
                 [limits]\ncallback_requests_per_phone_per_hour = 5\n"
            ),
        )
        .unwrap();
        let s = Settings::load_with_env(Some(&f), env(&[])).unwrap();
        assert_eq!(s.auth.principals.len(), 1);
        assert_eq!(
            s.auth.principals[0].roles,
            vec![crate::auth::Role::Telephony, crate::auth::Role::Supervisor]
        );
        let tls = s.server.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert_eq!(tls.client_ca, None);
        assert_eq!(s.server.max_concurrent_requests, 8);
        assert_eq!(s.limits.callback_requests_per_phone_per_hour, 5);
        assert_eq!(
            s.limits.callback_requests_per_principal_per_hour,
            DEFAULT_CALLBACK_REQUESTS_PER_PRINCIPAL_PER_HOUR
        );

        std::fs::write(
            &f,
            "[[auth.principals]]\nname = \"x\"\ntoken_sha256 = \"abc\"\nroles = [\"customer\"]\n",
        )
        .unwrap();
        let e = Settings::load_with_env(Some(&f), env(&[])).unwrap_err();
        assert!(e.to_string().contains("token_sha256"), "{e}");
        std::fs::write(
            &f,
            format!("[[auth.principals]]\nname = \"x\"\ntoken_sha256 = \"{hash}\"\nroles = [\"admin\"]\n"),
        )
        .unwrap();
        assert!(Settings::load_with_env(Some(&f), env(&[])).is_err());
        let e = Settings::load_with_env(
            None,
            env(&[("HOLDLESS__SERVER__MAX_CONCURRENT_REQUESTS", "0")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_concurrent_requests"), "{e}");
    }

    #[test]
    fn principals_from_the_environment_replace_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h.toml");
        let (a, b) = (
            crate::auth::token_sha256("a"),
            crate::auth::token_sha256("b"),
        );
        std::fs::write(
            &f,
            format!("[[auth.principals]]\nname = \"file\"\ntoken_sha256 = \"{a}\"\nroles = [\"customer\"]\n"),
        )
        .unwrap();
        let value = format!(
            "[{{name = 'pbx', token_sha256 = '{a}', roles = ['telephony']}}, \
             {{name = 'ops', token_sha256 = '{b}', roles = ['supervisor', 'customer']}}]"
        );
        let s = Settings::load_with_env(Some(&f), env(&[(PRINCIPALS_ENV, &value)])).unwrap();
        let names: Vec<&str> = s.auth.principals.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["pbx", "ops"]);
        assert_eq!(
            s.auth.principals[1].roles,
            vec![crate::auth::Role::Supervisor, crate::auth::Role::Customer]
        );
        let s = Settings::load_with_env(Some(&f), env(&[])).unwrap();
        assert_eq!(s.auth.principals[0].name, "file");

        // Not TOML, an unknown field, a bad hash: one line naming the variable.
        for bad in [
            "pbx:telephony".to_owned(),
            format!("[{{name = 'x', token_sha256 = '{a}', roles = ['telephony'], extra = 1}}]"),
            "[{name = 'x', token_sha256 = 'abc', roles = ['telephony']}]".to_owned(),
        ] {
            let e = Settings::load_with_env(None, env(&[(PRINCIPALS_ENV, &bad)])).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("PRINCIPALS") || e.contains("token_sha256"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn deploy_example_parses_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/holdless.toml");
        let s = Settings::load_with_env(Some(&path), env(&[])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(Settings::default()).unwrap();
        for (section, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            let documented = doc.get(section).and_then(|v| v.as_table());
            for key in keys.keys() {
                assert!(
                    documented.is_some_and(|t| t.contains_key(key)),
                    "deploy/holdless.toml does not document {section}.{key}"
                );
            }
        }
        assert_eq!(s.server.listen.to_string(), DEFAULT_LISTEN);
    }
}
