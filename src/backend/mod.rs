//! Remote backends: where ciphertext goes besides the local store, and under
//! whose law it sits there.
//!
//! A vault's backend definitions and placement policy live in
//! `VAULT/config.toml` (no secrets: endpoints, buckets, locations, operators);
//! credentials live in `VAULT/credentials.toml`, created 0600 and never
//! printed or logged (or come from the environment, see [`Credentials`]).
//! Neither file says anything about the vault's contents, and the local
//! machine is trusted (docs/SECURITY.md), so they are plain TOML a user can
//! read and diff.
//!
//! Every backend is an OpenDAL operator wrapped, innermost first, in
//! - a timeout layer (a stalled connection fails instead of hanging a worker),
//! - a retry layer with jittered exponential backoff that retries only the
//!   errors OpenDAL marks temporary (throttling, 5xx, resets) — a wrong key
//!   or a missing bucket fails at once,
//! - a concurrency limit per backend (a Hetzner Storage Box allows 10
//!   connections per account),
//! - logging of failed operations (never of credentials: OpenDAL's logging
//!   layer logs operation, path and error only).
//!
//! Longer outages are not this layer's business: the sync engine keeps
//! every pack queued in the index and retries it with its own backoff.

pub mod policy;
pub mod presets;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use policy::Policy;
pub use presets::Service;

/// Default uploads in flight per backend.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default local cache budget: not-yet-uploaded packs plus cached packs.
pub const DEFAULT_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// A single request (one ≤ 16 MiB pack) may take this long before the
/// attempt is abandoned and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// No progress on a request's body for this long: abandon the attempt.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per request for temporary errors, before the engine's own
/// (unbounded, backed-off) retry takes over.
const RETRY_TIMES: usize = 4;

/// One remote backend, as recorded in `config.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    /// Random id fixed at `backend add`: placements in the index are keyed
    /// by it, so a backend removed and added again under the same name
    /// starts empty instead of inheriting stale placements.
    pub id: String,
    pub service: ServiceName,
    /// Preset this was made from, if any (for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// s3: endpoint URL; webdav: base URL; sftp: `ssh://user@host:port`.
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    /// Directory (key prefix) inside the bucket/server that holds this vault.
    pub root: String,
    /// webdav/sftp user name (not a secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// sftp: path to the private key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_path: String,
    /// sftp: `strict` (default), `accept` or `add`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub known_hosts_strategy: String,
    /// ISO 3166-1 alpha-2 country where the data is stored (or `EU`).
    pub location: String,
    /// The operating company.
    pub operator: String,
    /// ISO country of the operator's legal seat.
    pub operator_country: String,
    /// ISO country of the operator's ultimate parent (same as
    /// `operator_country` when there is none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_country: String,
    #[serde(default)]
    pub max_concurrency: usize,
    /// Extra OpenDAL configuration keys (from the preset or `--option k=v`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    S3,
    Webdav,
    Sftp,
    /// A directory (another disk, a NAS mount): OpenDAL's fs service.
    Fs,
}

impl ServiceName {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::S3 => "s3",
            ServiceName::Webdav => "webdav",
            ServiceName::Sftp => "sftp",
            ServiceName::Fs => "fs",
        }
    }
}

impl From<Service> for ServiceName {
    fn from(s: Service) -> Self {
        match s {
            Service::S3 => ServiceName::S3,
            Service::Webdav => ServiceName::Webdav,
            Service::Sftp => ServiceName::Sftp,
        }
    }
}

impl BackendConfig {
    /// Countries whose law applies to the operator.
    pub fn jurisdictions(&self) -> Vec<String> {
        let mut v = vec![self.operator_country.clone()];
        if !self.parent_country.is_empty() && self.parent_country != self.operator_country {
            v.push(self.parent_country.clone());
        }
        v
    }

    pub fn concurrency(&self) -> usize {
        if self.max_concurrency > 0 {
            self.max_concurrency
        } else {
            DEFAULT_CONCURRENCY
        }
    }

    /// "DE, operator Hetzner Online GmbH (DE)" for messages and tables.
    pub fn describe_law(&self) -> String {
        let mut s = format!("{} ({}", self.operator, self.operator_country);
        if !self.parent_country.is_empty() && self.parent_country != self.operator_country {
            s.push_str(&format!(", parent {}", self.parent_country));
        }
        s.push(')');
        s
    }
}

/// `VAULT/config.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VaultConfig {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// `[gc]`: garbage collection (`src/gc.rs`).
    #[serde(default, skip_serializing_if = "crate::gc::GcConfig::is_default")]
    pub gc: crate::gc::GcConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Local store budget in bytes: packs not yet on every backend always
    /// stay; uploaded packs beyond this are evicted oldest first.
    pub size: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size: DEFAULT_CACHE_BYTES,
        }
    }
}

/// `[snapshot]`: index snapshots to every backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotConfig {
    /// Seconds between snapshots while mounted (only when the index changed).
    #[serde(default = "default_snapshot_interval")]
    pub interval: u64,
    /// Snapshots kept on each backend.
    #[serde(default = "default_snapshot_keep")]
    pub keep: u64,
}

fn default_snapshot_interval() -> u64 {
    300
}

fn default_snapshot_keep() -> u64 {
    crate::snapshot::KEEP_GENERATIONS
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            interval: default_snapshot_interval(),
            keep: default_snapshot_keep(),
        }
    }
}

impl VaultConfig {
    pub fn path(vault: &Path) -> PathBuf {
        vault.join("config.toml")
    }

    /// The vault's config; the default (local store only) when absent.
    pub fn load(vault: &Path) -> Result<VaultConfig> {
        let p = Self::path(vault);
        match std::fs::read_to_string(&p) {
            Ok(s) => toml::from_str(&s).with_context(|| format!("cannot parse {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VaultConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// Atomically replaces `config.toml` (write temp, fsync, rename).
    pub fn save(&self, vault: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).context("cannot serialise the config")?;
        let header = "# tresor vault configuration: backends and placement policy.\n\
                      # Credentials are not here: see credentials.toml (mode 0600).\n\n";
        write_atomic(
            &Self::path(vault),
            format!("{header}{text}").as_bytes(),
            0o600,
        )
    }

    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Secrets for one backend. No `Debug`: it must never be printed.
#[derive(Clone, Default, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secret {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
}

/// `VAULT/credentials.toml` (0600): backend name → secrets.
///
/// For each backend, variables in the environment override the file:
/// `TRESOR_<NAME>_ACCESS_KEY_ID`, `TRESOR_<NAME>_SECRET_ACCESS_KEY`,
/// `TRESOR_<NAME>_PASSWORD` (`NAME` upper-cased, `-` as `_`).
#[derive(Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(flatten)]
    pub backends: BTreeMap<String, Secret>,
}

impl Credentials {
    pub fn path(vault: &Path) -> PathBuf {
        vault.join("credentials.toml")
    }

    pub fn load(vault: &Path) -> Result<Credentials> {
        let p = Self::path(vault);
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let s = Zeroizing::new(s);
                let mode = std::fs::metadata(&p)?.permissions().mode();
                if mode & 0o077 != 0 {
                    bail!(
                        "{} is readable by others (mode {:o}); run `chmod 600 {}`",
                        p.display(),
                        mode & 0o777,
                        p.display()
                    );
                }
                // Parse errors from toml quote the offending line: don't
                // let a secret reach a terminal that way.
                toml::from_str(&s)
                    .map_err(|_| anyhow::anyhow!("cannot parse {} (not valid TOML)", p.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    pub fn save(&self, vault: &Path) -> Result<()> {
        let text = Zeroizing::new(
            toml::to_string_pretty(self).context("cannot serialise the credentials")?,
        );
        write_atomic(&Self::path(vault), text.as_bytes(), 0o600)
    }

    /// The secrets for `name`, with environment overrides applied.
    pub fn for_backend(&self, name: &str) -> Secret {
        let mut s = self.backends.get(name).cloned().unwrap_or_default();
        let prefix = format!("TRESOR_{}_", name.to_uppercase().replace('-', "_"));
        let env = |k: &str| std::env::var(format!("{prefix}{k}")).ok();
        if let Some(v) = env("ACCESS_KEY_ID") {
            s.access_key_id = v;
        }
        if let Some(v) = env("SECRET_ACCESS_KEY") {
            s.secret_access_key = v;
        }
        if let Some(v) = env("PASSWORD") {
            s.password = v;
        }
        s
    }
}

/// Builds the layered OpenDAL operator for a backend.
pub fn build_operator(cfg: &BackendConfig, secret: &Secret) -> Result<opendal::Operator> {
    use opendal::services;
    // Installs the process-wide HTTP transport (reqwest with rustls) once.
    opendal::install_default();
    let err = |e: opendal::Error| anyhow::anyhow!("backend {}: {e}", cfg.name);
    let op = match cfg.service {
        ServiceName::S3 => {
            if cfg.bucket.is_empty() {
                bail!("backend {}: an s3 backend needs --bucket", cfg.name);
            }
            let mut b = services::S3::default()
                .endpoint(&cfg.endpoint)
                .region(if cfg.region.is_empty() {
                    "us-east-1"
                } else {
                    &cfg.region
                })
                .bucket(&cfg.bucket)
                .root(&cfg.root)
                // No ambient AWS_* variables, profiles or instance metadata.
                .disable_config_load()
                .disable_ec2_metadata();
            if !secret.access_key_id.is_empty() {
                b = b.access_key_id(&secret.access_key_id);
            }
            if !secret.secret_access_key.is_empty() {
                b = b.secret_access_key(&secret.secret_access_key);
            }
            if secret.access_key_id.is_empty() && secret.secret_access_key.is_empty() {
                b = b.skip_signature();
            }
            for (k, v) in &cfg.options {
                b = match (k.as_str(), v.as_str()) {
                    ("disable_list_objects_v2", "true") => b.disable_list_objects_v2(),
                    ("enable_virtual_host_style", "true") => b.enable_virtual_host_style(),
                    // Settings OpenDAL 0.59 made defaults or no-ops: accepted
                    // (presets and older configs name them), nothing to do.
                    (
                        "disable_write_with_if_match"
                        | "disable_stat_with_override"
                        | "delete_max_size",
                        _,
                    ) => b,
                    ("default_storage_class", c) => b.default_storage_class(c),
                    // Always set (no ambient AWS configuration), see above.
                    ("disable_config_load" | "disable_ec2_metadata", "true") => b,
                    _ => bail!(
                        "backend {}: unknown s3 option {k}={v} (known: disable_write_with_if_match, \
                         disable_stat_with_override, disable_list_objects_v2, \
                         enable_virtual_host_style, delete_max_size, default_storage_class)",
                        cfg.name
                    ),
                };
            }
            opendal::Operator::new(b).map_err(err)?
        }
        ServiceName::Webdav => {
            // OpenDAL appends the root to the endpoint as is: no `//`.
            let mut b = services::Webdav::default()
                .endpoint(cfg.endpoint.trim_end_matches('/'))
                .root(&cfg.root);
            if !cfg.username.is_empty() {
                b = b.username(&cfg.username);
            }
            if !secret.password.is_empty() {
                b = b.password(&secret.password);
            }
            opendal::Operator::new(b).map_err(err)?
        }
        ServiceName::Sftp => {
            let mut b = services::Sftp::default()
                .endpoint(&cfg.endpoint)
                .root(&cfg.root);
            if !cfg.username.is_empty() {
                b = b.user(&cfg.username);
            }
            if !cfg.key_path.is_empty() {
                b = b.key(&cfg.key_path);
            }
            if !cfg.known_hosts_strategy.is_empty() {
                b = b.known_hosts_strategy(&cfg.known_hosts_strategy);
            }
            opendal::Operator::new(b).map_err(err)?
        }
        ServiceName::Fs => {
            let root = Path::new(&cfg.endpoint).join(cfg.root.trim_start_matches('/'));
            std::fs::create_dir_all(&root).with_context(|| {
                format!("backend {}: cannot create {}", cfg.name, root.display())
            })?;
            let b = services::Fs::default().root(&root.to_string_lossy());
            opendal::Operator::new(b).map_err(err)?
        }
    };
    Ok(op
        .layer(
            opendal::layers::TimeoutLayer::new()
                .with_timeout(REQUEST_TIMEOUT)
                .with_io_timeout(IO_TIMEOUT),
        )
        .layer(
            opendal::layers::RetryLayer::new()
                .with_jitter()
                .with_max_times(RETRY_TIMES)
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5)),
        )
        .layer(opendal::layers::ConcurrentLimitLayer::new(
            cfg.concurrency(),
        ))
        .layer(opendal::layers::LoggingLayer::default()))
}

/// Checks a backend name: it names files and environment variables.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok || name == "local" {
        bail!(
            "invalid backend name {name:?}: use 1-40 characters a-z, 0-9, '-', '_' \
             (and not \"local\", which is the vault's own store)"
        );
    }
    Ok(())
}

/// An ISO 3166-1 alpha-2 code (or `EU`), upper-cased.
pub fn normalise_country(what: &str, code: &str) -> Result<String> {
    let c = code.trim().to_ascii_uppercase();
    if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        bail!("{what} must be a two-letter ISO 3166 country code (like DE, FR, US) or EU, not {code:?}");
    }
    Ok(c)
}
