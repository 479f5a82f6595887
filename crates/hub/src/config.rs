//! Configuration: embedded defaults that work on a laptop, then a TOML file, then
//! `CMDM_*` environment variables and flags (clap reads both), in rising precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use cmdm_matching::normalise::DateOrder;
use cmdm_matching::{FuzzyMatcher, MatcherConfig, Model, PrepareConfig, Survivorship};
use serde::Deserialize;

/// Everything the hub can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// The store's own page cache in MiB (hot golden records are read from it).
    pub store_cache_mb: u64,
    /// Address the gRPC API listens on.
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`).
    pub metrics_addr: SocketAddr,
    pub api: ApiConfig,
    pub kafka: KafkaConfig,
    pub matching: MatchingConfig,
    pub survivorship: Survivorship,
    pub contact: ContactConfig,
    pub privacy: PrivacyConfig,
    /// Seconds allowed for a graceful shutdown before the hub exits anyway.
    pub shutdown_deadline_secs: u64,
    /// `text` or `json`.
    pub log_format: String,
}

/// Who may call the gRPC API, and over what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens and their roles. None: the API is open, which the hub allows only
    /// on a loopback address.
    pub tokens: Vec<cmdm_api::TokenConfig>,
    /// PEM certificate chain and private key; both set: the API speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The operator's contact rules; customers' own declarations come on top.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactConfig {
    /// Local hours without contact on `quiet_channels`, like `21:00-08:00`; empty: none.
    pub quiet_hours: String,
    pub quiet_channels: Vec<cmdm_domain::Channel>,
    /// IANA time zone for customers whose golden record has no `timezone` attribute.
    pub default_time_zone: String,
    /// A cap per channel when the customer declared no frequency (`email = "3 per week"`).
    pub default_caps: std::collections::BTreeMap<cmdm_domain::Channel, String>,
    /// Purposes that need no consent (contract or legal obligation).
    pub consent_not_required: Vec<String>,
}

impl Default for ContactConfig {
    fn default() -> Self {
        let policy = cmdm_domain::ContactPolicy::default();
        ContactConfig {
            quiet_hours: policy
                .quiet_hours
                .map(|q| q.to_string())
                .unwrap_or_default(),
            quiet_channels: policy.quiet_channels,
            default_time_zone: policy.default_time_zone.name().to_owned(),
            default_caps: Default::default(),
            consent_not_required: policy.consent_not_required,
        }
    }
}

impl ContactConfig {
    /// The policy the engine applies.
    pub fn policy(&self) -> anyhow::Result<cmdm_domain::ContactPolicy> {
        let quiet_hours = if self.quiet_hours.trim().is_empty() {
            None
        } else {
            Some(
                cmdm_domain::QuietHours::parse(&self.quiet_hours)
                    .map_err(|e| anyhow::anyhow!("contact.{e}"))?,
            )
        };
        let default_time_zone = self.default_time_zone.parse().map_err(|_| {
            anyhow::anyhow!(
                "contact.default_time_zone: `{}` is not an IANA time zone",
                self.default_time_zone
            )
        })?;
        let mut default_caps = std::collections::BTreeMap::new();
        for (channel, text) in &self.default_caps {
            let cap = cmdm_domain::FrequencyCap::parse(text).ok_or_else(|| {
                anyhow::anyhow!(
                    "contact.default_caps.{}: `{text}` is not a frequency like `weekly` or `3 per week`",
                    channel.as_str()
                )
            })?;
            default_caps.insert(*channel, cap);
        }
        Ok(cmdm_domain::ContactPolicy {
            quiet_hours,
            quiet_channels: self.quiet_channels.clone(),
            default_time_zone,
            default_caps,
            consent_not_required: self.consent_not_required.clone(),
        })
    }
}

/// What the hub does about erased persons.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Events about an erased person's record: `reject` (to the dead letter topic) or
    /// `accept_as_new` (a new person).
    pub after_erasure: cmdm_engine::AfterErasure,
    /// Seconds an erasure may wait for the rewrite of the store's files, so one rewrite
    /// (minutes on a large store, writes waiting) serves all erasures of that window.
    /// 0: each erasure rewrites the store before it answers.
    pub purge_delay_secs: u64,
}

/// Kafka settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; when absent the hub starts an embedded broker on loopback.
    pub brokers: Option<String>,
    pub group_id: String,
    /// Milliseconds without heartbeats after which the group gives a hub's partitions to
    /// another member.
    pub session_timeout_ms: u64,
    pub events_topic: String,
    pub golden_topic: String,
    pub dlq_topic: String,
    /// Partitions of each topic the embedded broker creates.
    pub embedded_partitions: i32,
    pub batch_max: usize,
    pub batch_linger_ms: u64,
    pub max_event_bytes: usize,
}

/// Matching settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingConfig {
    /// Calling code assumed for phone numbers written without one (`44`, `1`, …).
    pub default_country_code: String,
    /// Reading of ambiguous dates like 01/02/2000: `dmy` or `mdy`.
    pub date_order: DateOrder,
    /// A blocking key shared by more records than this is generic and links nothing.
    pub generic_limit: usize,
    /// Most candidate records scored per record (those sharing the most keys).
    pub max_candidates: usize,
    /// A record sharing only one blocking key with the arriving record, a key held by
    /// more records than this, is no candidate (at `generic_limit` or above: off).
    pub weak_key_limit: usize,
    /// A model file from `cmdm model train`; unset uses the shipped default model.
    pub model: Option<PathBuf>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            data_dir: PathBuf::from("data"),
            store_cache_mb: 256,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            api: ApiConfig::default(),
            kafka: KafkaConfig::default(),
            matching: MatchingConfig::default(),
            survivorship: Survivorship::default(),
            contact: ContactConfig::default(),
            privacy: PrivacyConfig::default(),
            shutdown_deadline_secs: 10,
            log_format: "text".to_owned(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            group_id: "cmdm-hub".to_owned(),
            session_timeout_ms: 10_000,
            events_topic: "cmdm.events.v1".to_owned(),
            golden_topic: "cmdm.golden.v1".to_owned(),
            dlq_topic: "cmdm.events.v1.dlq".to_owned(),
            embedded_partitions: 4,
            batch_max: 500,
            batch_linger_ms: 20,
            max_event_bytes: 1 << 20,
        }
    }
}

impl Default for MatchingConfig {
    fn default() -> Self {
        MatchingConfig {
            default_country_code: "44".to_owned(),
            date_order: DateOrder::Dmy,
            generic_limit: MatcherConfig::default().generic_limit,
            max_candidates: MatcherConfig::default().max_candidates,
            weak_key_limit: MatcherConfig::default().weak_key_limit,
            model: None,
        }
    }
}

/// Flags, each also read from its `CMDM_*` environment variable; they override the file.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// TOML configuration file (see deploy/cmdm-hub.toml).
    #[arg(long, env = "CMDM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory of the sled store [default: data].
    #[arg(long, env = "CMDM_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The store's page cache in MiB [default: 256].
    #[arg(long, env = "CMDM_STORE_CACHE_MB", global = true)]
    pub store_cache_mb: Option<u64>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "CMDM_GRPC_ADDR", global = true)]
    pub grpc_addr: Option<SocketAddr>,
    /// API tokens as `name:role:token`, comma-separated (role: spoke, steward or admin);
    /// they replace the file's `[[api.tokens]]`.
    #[arg(long, env = "CMDM_API_TOKENS", global = true, hide_env_values = true)]
    pub api_tokens: Option<String>,
    /// PEM certificate chain for the gRPC API; with --tls-key the API speaks TLS only.
    #[arg(long, env = "CMDM_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the gRPC API.
    #[arg(long, env = "CMDM_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Prometheus metrics listen address (GET /metrics) [default: 127.0.0.1:9464].
    #[arg(long, env = "CMDM_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,
    /// Kafka bootstrap servers; unset starts an embedded broker on loopback.
    #[arg(long, env = "CMDM_KAFKA_BROKERS", global = true)]
    pub brokers: Option<String>,
    /// Consumer group id [default: cmdm-hub].
    #[arg(long, env = "CMDM_KAFKA_GROUP_ID", global = true)]
    pub group_id: Option<String>,
    /// Consumer group session timeout in milliseconds [default: 10000].
    #[arg(long, env = "CMDM_KAFKA_SESSION_TIMEOUT_MS", global = true)]
    pub session_timeout_ms: Option<u64>,
    /// Inbound topic [default: cmdm.events.v1].
    #[arg(long, env = "CMDM_KAFKA_EVENTS_TOPIC", global = true)]
    pub events_topic: Option<String>,
    /// Change feed topic [default: cmdm.golden.v1].
    #[arg(long, env = "CMDM_KAFKA_GOLDEN_TOPIC", global = true)]
    pub golden_topic: Option<String>,
    /// Dead letter topic [default: cmdm.events.v1.dlq].
    #[arg(long, env = "CMDM_KAFKA_DLQ_TOPIC", global = true)]
    pub dlq_topic: Option<String>,
    /// Partitions per topic of the embedded broker [default: 4].
    #[arg(long, env = "CMDM_KAFKA_EMBEDDED_PARTITIONS", global = true)]
    pub embedded_partitions: Option<i32>,
    /// Most events applied per batch write [default: 500].
    #[arg(long, env = "CMDM_KAFKA_BATCH_MAX", global = true)]
    pub batch_max: Option<usize>,
    /// Milliseconds a batch waits to fill [default: 20].
    #[arg(long, env = "CMDM_KAFKA_BATCH_LINGER_MS", global = true)]
    pub batch_linger_ms: Option<u64>,
    /// Largest accepted event in bytes; larger ones are dead-lettered [default: 1048576].
    #[arg(long, env = "CMDM_KAFKA_MAX_EVENT_BYTES", global = true)]
    pub max_event_bytes: Option<usize>,
    /// Calling code for phone numbers without one [default: 44].
    #[arg(long, env = "CMDM_DEFAULT_COUNTRY_CODE", global = true)]
    pub default_country_code: Option<String>,
    /// Sources from most to least trusted, comma-separated, for survivorship ties.
    #[arg(long, env = "CMDM_SOURCE_TRUST", value_delimiter = ',', global = true)]
    pub source_trust: Option<Vec<String>>,
    /// Reading of ambiguous dates such as 01/02/2000, `dmy` or `mdy` [default: dmy].
    #[arg(long, env = "CMDM_DATE_ORDER", global = true, value_parser = parse_date_order)]
    pub date_order: Option<DateOrder>,
    /// Records sharing a blocking key above which the key is generic [default: 100].
    #[arg(long, env = "CMDM_GENERIC_LIMIT", global = true)]
    pub generic_limit: Option<usize>,
    /// Most candidate records scored per arriving record [default: 200].
    #[arg(long, env = "CMDM_MAX_CANDIDATES", global = true)]
    pub max_candidates: Option<usize>,
    /// Records holding a blocking key above which a record sharing only that key with
    /// the arriving one is no candidate [default: 25].
    #[arg(long, env = "CMDM_WEAK_KEY_LIMIT", global = true)]
    pub weak_key_limit: Option<usize>,
    /// Matching model file from `cmdm model train` [default: the shipped model].
    #[arg(long, env = "CMDM_MODEL", global = true)]
    pub model: Option<PathBuf>,
    /// Seconds allowed for a graceful shutdown [default: 10].
    #[arg(long, env = "CMDM_SHUTDOWN_DEADLINE_SECS", global = true)]
    pub shutdown_deadline_secs: Option<u64>,
    /// Log format, `text` or `json` [default: text]; the level comes from RUST_LOG.
    #[arg(long, env = "CMDM_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

impl HubConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Defaults, then the file named by the overrides (if any), then the overrides.
    pub fn load(overrides: &Overrides) -> anyhow::Result<Self> {
        let mut config = match &overrides.config {
            Some(path) => HubConfig::from_file(path)?,
            None => HubConfig::default(),
        };
        let o = overrides.clone();
        set(&mut config.data_dir, o.data_dir);
        set(&mut config.store_cache_mb, o.store_cache_mb);
        set(&mut config.grpc_addr, o.grpc_addr);
        set(&mut config.metrics_addr, o.metrics_addr);
        if let Some(tokens) = &o.api_tokens {
            config.api.tokens = parse_tokens(tokens)?;
        }
        if o.tls_cert.is_some() {
            config.api.tls_cert = o.tls_cert;
        }
        if o.tls_key.is_some() {
            config.api.tls_key = o.tls_key;
        }
        if o.brokers.is_some() {
            config.kafka.brokers = o.brokers.filter(|b| !b.trim().is_empty());
        }
        set(&mut config.kafka.group_id, o.group_id);
        set(&mut config.kafka.session_timeout_ms, o.session_timeout_ms);
        set(&mut config.kafka.events_topic, o.events_topic);
        set(&mut config.kafka.golden_topic, o.golden_topic);
        set(&mut config.kafka.dlq_topic, o.dlq_topic);
        set(&mut config.kafka.embedded_partitions, o.embedded_partitions);
        set(&mut config.kafka.batch_max, o.batch_max);
        set(&mut config.kafka.batch_linger_ms, o.batch_linger_ms);
        set(&mut config.kafka.max_event_bytes, o.max_event_bytes);
        set(
            &mut config.matching.default_country_code,
            o.default_country_code,
        );
        set(&mut config.matching.date_order, o.date_order);
        set(&mut config.matching.generic_limit, o.generic_limit);
        set(&mut config.matching.max_candidates, o.max_candidates);
        set(&mut config.matching.weak_key_limit, o.weak_key_limit);
        if o.model.is_some() {
            config.matching.model = o.model;
        }
        set(&mut config.survivorship.source_trust, o.source_trust);
        set(&mut config.shutdown_deadline_secs, o.shutdown_deadline_secs);
        set(&mut config.log_format, o.log_format);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.contact.policy()?;
        anyhow::ensure!(
            self.api.tls_cert.is_some() == self.api.tls_key.is_some(),
            "api.tls_cert and api.tls_key go together: set both or neither"
        );
        cmdm_api::Auth::with_tokens(&self.api.tokens)
            .map_err(|e| anyhow::anyhow!("api.tokens: {e}"))?;
        anyhow::ensure!(
            !self.api.tokens.is_empty() || self.grpc_addr.ip().is_loopback(),
            "the gRPC API would listen on {} without tokens: configure api.tokens, or listen on a loopback address",
            self.grpc_addr
        );
        anyhow::ensure!(
            self.kafka.batch_max > 0,
            "kafka.batch_max must be at least 1"
        );
        anyhow::ensure!(
            self.kafka.embedded_partitions > 0,
            "kafka.embedded_partitions must be at least 1"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "log_format must be `text` or `json`, not `{}`",
            self.log_format
        );
        anyhow::ensure!(
            !self.matching.default_country_code.is_empty()
                && self
                    .matching
                    .default_country_code
                    .bytes()
                    .all(|b| b.is_ascii_digit()),
            "matching.default_country_code must be digits such as 44"
        );
        Ok(())
    }
}

/// Reads `name:role:token,…`.
pub fn parse_tokens(text: &str) -> anyhow::Result<Vec<cmdm_api::TokenConfig>> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(token)) = (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("an API token must be written name:role:token");
            };
            let role = match role {
                "spoke" => cmdm_api::Role::Spoke,
                "steward" => cmdm_api::Role::Steward,
                "admin" => cmdm_api::Role::Admin,
                other => anyhow::bail!("`{other}` is not a role: use spoke, steward or admin"),
            };
            Ok(cmdm_api::TokenConfig {
                token: token.to_owned(),
                name: name.to_owned(),
                role,
            })
        })
        .collect()
}

/// Reads `dmy` or `mdy`.
pub fn parse_date_order(text: &str) -> Result<DateOrder, String> {
    match text {
        "dmy" => Ok(DateOrder::Dmy),
        "mdy" => Ok(DateOrder::Mdy),
        other => Err(format!("`{other}` is not a date order: use dmy or mdy")),
    }
}

impl MatchingConfig {
    /// The matcher these settings describe, with its model loaded and checked.
    pub fn matcher(&self) -> anyhow::Result<FuzzyMatcher> {
        let model = self
            .configured_model()?
            .unwrap_or_else(Model::default_person);
        FuzzyMatcher::new(model, self.matcher_config())
            .map_err(|e| anyhow::anyhow!("matching model: {e}"))
    }

    /// The model file named by `model`, read and decoded; `None` when none is set.
    pub fn configured_model(&self) -> anyhow::Result<Option<Model>> {
        let Some(path) = &self.model else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model file {}", path.display()))?;
        let model = serde_json::from_str::<Model>(&text)
            .with_context(|| format!("invalid model file {}", path.display()))?;
        Ok(Some(model))
    }

    /// The matcher settings besides the model.
    pub fn matcher_config(&self) -> MatcherConfig {
        MatcherConfig {
            prepare: PrepareConfig {
                default_country_code: self.default_country_code.clone(),
                date_order: self.date_order,
            },
            generic_limit: self.generic_limit,
            max_candidates: self.max_candidates,
            weak_key_limit: self.weak_key_limit,
        }
    }
}

/// Replaces `target` when an override is given.
fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/cmdm\"\n[kafka]\nbrokers = \"k1:9092\"\nbatch_max = 50\n[survivorship]\nsource_trust = [\"crm\"]\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(path),
            batch_max: Some(7),
            ..Overrides::default()
        };
        let config = HubConfig::load(&overrides).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/cmdm"));
        assert_eq!(config.kafka.brokers.as_deref(), Some("k1:9092"));
        assert_eq!(config.kafka.batch_max, 7);
        assert_eq!(config.survivorship.source_trust, vec!["crm".to_owned()]);
        assert_eq!(config.kafka.group_id, "cmdm-hub");
    }

    #[test]
    fn a_model_file_is_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let mut model = Model::default_person();
        model.name = "from a file".into();
        std::fs::write(&path, serde_json::to_string(&model).unwrap()).unwrap();
        let matching = MatchingConfig {
            model: Some(path.clone()),
            ..MatchingConfig::default()
        };
        assert_eq!(matching.matcher().unwrap().model().name, "from a file");
        model.format = 99;
        std::fs::write(&path, serde_json::to_string(&model).unwrap()).unwrap();
        assert!(matching.matcher().is_err(), "a newer format is refused");
        std::fs::write(&path, "{").unwrap();
        let err = format!("{:#}", matching.matcher().unwrap_err());
        assert!(err.contains("model.json"), "{err}");
    }

    #[test]
    fn the_deploy_example_is_a_valid_configuration() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cmdm-hub.toml");
        // It listens on every interface, so it needs tokens: the compose file passes them.
        let open = Overrides {
            config: Some(example.clone()),
            ..Overrides::default()
        };
        let refused = format!("{:#}", HubConfig::load(&open).unwrap_err());
        assert!(refused.contains("without tokens"), "{refused}");
        let with_tokens = Overrides {
            api_tokens: Some(
                "callcenter:spoke:callcenter-secret-0001, alice:steward:alice-secret-000001".into(),
            ),
            ..open
        };
        let config = HubConfig::load(&with_tokens).unwrap();
        assert_eq!(config.api.tokens.len(), 2);
        assert_eq!(config.api.tokens[1].role, cmdm_api::Role::Steward);
        assert!(parse_tokens("alice:root:secret-secret-secret").is_err());
        assert_eq!(config.matching.date_order, DateOrder::Dmy);
        assert_eq!(
            config.survivorship.attributes.get("address_line1"),
            Some(&cmdm_matching::Strategy::MostComplete)
        );
        let policy = config.contact.policy().unwrap();
        assert_eq!(
            policy.default_caps[&cmdm_domain::Channel::Email],
            cmdm_domain::FrequencyCap { count: 3, days: 7 }
        );
        assert_eq!(policy.default_time_zone.name(), "Europe/London");
        assert_eq!(policy.quiet_hours.unwrap().to_string(), "21:00-08:00");
        assert_eq!(
            config.privacy.after_erasure,
            cmdm_engine::AfterErasure::Reject
        );
    }

    #[test]
    fn contact_rules_that_do_not_parse_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (text, named) in [
            ("[contact]\nquiet_hours = \"late\"\n", "quiet_hours"),
            (
                "[contact]\ndefault_time_zone = \"Mars/Olympus\"\n",
                "default_time_zone",
            ),
            (
                "[contact.default_caps]\nemail = \"often\"\n",
                "default_caps.email",
            ),
            ("[privacy]\nafter_erasure = \"keep\"\n", "after_erasure"),
        ] {
            let path = dir.path().join("hub.toml");
            std::fs::write(&path, text).unwrap();
            let overrides = Overrides {
                config: Some(path),
                ..Overrides::default()
            };
            let err = format!("{:#}", HubConfig::load(&overrides).unwrap_err());
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "data_dri = \"x\"\n").unwrap();
        let err = HubConfig::from_file(&path).unwrap_err();
        assert!(format!("{err:#}").contains("data_dri"));
        let overrides = Overrides {
            log_format: Some("xml".into()),
            ..Overrides::default()
        };
        assert!(HubConfig::load(&overrides).is_err());
    }
}
