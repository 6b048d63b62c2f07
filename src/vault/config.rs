//! `VAULT/config.toml` and `VAULT/credentials.toml`: the data types and
//! their loading and saving. A leaf: every layer reads the config, so it
//! depends on nothing else in the crate (the logic over it lives with its
//! user: `remote::policy` evaluates [`Policy`], `maintenance::gc` runs with
//! [`GcConfig`], `remote::backend` builds operators from [`BackendConfig`]).
//!
//! Neither file says anything about the vault's contents, and the local
//! machine is trusted (docs/SECURITY.md), so they are plain TOML a user can
//! read and diff. Credentials are created 0600 and never printed or logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Default uploads in flight per backend.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default local cache budget: not-yet-uploaded packs plus cached packs.
pub const DEFAULT_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Index snapshots kept on each backend (older ones and the blocks only
/// they use are deleted).
pub const KEEP_GENERATIONS: u64 = 10;
/// gc repacks packs whose live bytes are below this share (%) of their size.
pub const REPACK_THRESHOLD_PERCENT: u8 = 50;

/// The placement policy (`[policy]`); evaluated by `remote::policy`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    pub copies: u32,
    #[serde(default)]
    pub require_location: Vec<String>,
    #[serde(default)]
    pub allow_location: Vec<String>,
    /// Refuse a backend whose *operator* (the company that runs the
    /// storage and holds the contract) has its legal seat in one of these
    /// countries. Its owners are not looked at: AWS European Sovereign
    /// Cloud (operator seated in Potsdam, DE) passes `["US"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_operator_law: Vec<String>,
    /// Refuse a backend when its operator *or its ultimate parent* has its
    /// legal seat in one of these countries: the law of the parent's seat
    /// can compel the parent to make its subsidiaries hand data over (the
    /// US CLOUD Act reaches data in a US company's "possession, custody, or
    /// control"). AWS European Sovereign Cloud fails `["US"]`. The older
    /// key `deny_operator_country` meant exactly this rule and is read as it.
    #[serde(
        default,
        alias = "deny_operator_country",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deny_parent_law: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            copies: 1,
            require_location: Vec::new(),
            allow_location: Vec::new(),
            deny_operator_law: Vec::new(),
            deny_parent_law: Vec::new(),
        }
    }
}

/// `[gc]` in `VAULT/config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GcConfig {
    /// Seconds between background passes while mounted (0 = off).
    pub interval: u64,
    /// A background pass runs when at least this many bytes are dead…
    pub min_dead_bytes: u64,
    /// …or at least this share (%) of the stored bytes.
    pub min_dead_percent: u8,
    /// Repack packs whose live bytes are below this share (%) of their size.
    pub repack_threshold: u8,
    /// Pack bytes a background pass deletes or rewrites at most.
    pub max_pass_bytes: u64,
    /// Delete wholly dead packs within seconds of a deletion, not only at
    /// the next interval (packs a kept snapshot needs always stay).
    pub prompt: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: 600,
            min_dead_bytes: 64 * 1024 * 1024,
            min_dead_percent: 10,
            repack_threshold: REPACK_THRESHOLD_PERCENT,
            max_pass_bytes: 1024 * 1024 * 1024,
            prompt: true,
        }
    }
}

impl GcConfig {
    pub fn is_default(&self) -> bool {
        *self == GcConfig::default()
    }
}

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
    /// The operator's ultimate parent company (`""`: none, or not recorded
    /// by a tresor older than 2026-12).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    #[serde(default)]
    pub max_concurrency: usize,
    /// What the provider was found to do at the last `backend add` or
    /// `backend test` (probed, not assumed; see `remote::capabilities`).
    #[serde(default, skip_serializing_if = "Capabilities::never_probed")]
    pub capabilities: Capabilities,
    /// Extra OpenDAL configuration keys (from the preset or `--option k=v`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A backend's probed capabilities (`[backend.capabilities]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Capabilities {
    /// Unix time of the probe; 0 = never probed.
    pub probed_at: u64,
    /// A write with `If-None-Match: *` (or an exclusive create) fails when
    /// the object exists.
    pub create_if_absent: Capability,
    /// A write with `If-Match: ETAG` fails for a wrong ETag and succeeds for
    /// the right one.
    pub replace_if_match: Capability,
    /// A ranged read returns exactly the bytes asked for.
    pub ranged_read: Capability,
    /// The bucket has S3 Object Lock enabled (objects can be made
    /// immutable for a retention period).
    pub object_lock: Capability,
    /// The largest single PUT the protocol allows, in bytes (0 = no limit
    /// known); documented, not probed: probing would mean uploading it.
    pub max_single_put: u64,
}

impl Capabilities {
    pub fn never_probed(&self) -> bool {
        self.probed_at == 0
    }
}

/// One probed capability: yes, no, or unknown (the probe could not tell),
/// with what the probe saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Capability {
    pub state: CapabilityState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CapabilityState {
    Yes,
    No,
    #[default]
    Unknown,
}

impl Capability {
    pub fn yes(detail: impl Into<String>) -> Capability {
        Capability {
            state: CapabilityState::Yes,
            detail: detail.into(),
        }
    }
    pub fn no(detail: impl Into<String>) -> Capability {
        Capability {
            state: CapabilityState::No,
            detail: detail.into(),
        }
    }
    pub fn unknown(detail: impl Into<String>) -> Capability {
        Capability {
            state: CapabilityState::Unknown,
            detail: detail.into(),
        }
    }
    /// "yes", "no" or "unknown".
    pub fn word(&self) -> &'static str {
        match self.state {
            CapabilityState::Yes => "yes",
            CapabilityState::No => "no",
            CapabilityState::Unknown => "unknown",
        }
    }
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

    /// "Hetzner Online GmbH (DE)", or with a parent seated elsewhere
    /// "AWS European Sovereign Cloud GmbH, Potsdam (DE), parent Amazon.com,
    /// Inc., Seattle (US)", for messages and tables.
    pub fn describe_law(&self) -> String {
        let mut s = format!("{} ({})", self.operator, self.operator_country);
        if !self.parent_country.is_empty() && self.parent_country != self.operator_country {
            if self.parent.is_empty() {
                s.push_str(&format!(", parent seated in {}", self.parent_country));
            } else {
                s.push_str(&format!(
                    ", parent {} ({})",
                    self.parent, self.parent_country
                ));
            }
        }
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
    /// `[upload]`: when small packs go to the backends.
    #[serde(default, skip_serializing_if = "UploadConfig::is_default")]
    pub upload: UploadConfig,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// `[gc]`: garbage collection (`maintenance/gc.rs`).
    #[serde(default, skip_serializing_if = "GcConfig::is_default")]
    pub gc: GcConfig,
    /// `[keys]`: what of the key file goes to the backends.
    #[serde(default, skip_serializing_if = "KeysConfig::is_default")]
    pub keys: KeysConfig,
}

/// `[keys]` (`tresor key passphrase-slots --local|--uploaded`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysConfig {
    /// Keep passphrase slots on this machine: the key file on every backend
    /// holds only the recovery-key and key-file slots, so nobody with a
    /// provider's copy can guess the passphrase offline (a restore on a new
    /// machine then needs the recovery key or a key file).
    #[serde(default)]
    pub local_passphrase_slots: bool,
}

impl KeysConfig {
    pub fn is_default(&self) -> bool {
        *self == KeysConfig::default()
    }
}

/// The bytes of the key file at `path` as the backends get them (see
/// [`KeysConfig::local_passphrase_slots`]).
pub fn key_file_for_backends(vault: &Path, path: &Path) -> Result<Vec<u8>> {
    let local = VaultConfig::load(vault)?.keys.local_passphrase_slots;
    let kf = crate::vault::keys::KeyFile::load(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    kf.bytes_for_backend(!local).with_context(|| {
        format!(
            "the key file {} has only passphrase slots, which are kept on this machine \
             (`tresor key passphrase-slots --local`); add a recovery key or key file \
             (`tresor key add-recovery`) so a backend's copy can open the vault",
            path.display()
        )
    })
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

/// `[upload]`: packs closed small (by an fsync or the commit timer) are
/// held back and coalesced into size-class packs (FORMAT.md §6); this is
/// how long the oldest of them waits for more data before it goes anyway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadConfig {
    /// Seconds (default 60).
    #[serde(default = "default_upload_delay")]
    pub delay: u64,
}

fn default_upload_delay() -> u64 {
    60
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            delay: default_upload_delay(),
        }
    }
}

impl UploadConfig {
    pub fn is_default(&self) -> bool {
        *self == UploadConfig::default()
    }
}

/// `[snapshot]`: index snapshots to every backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotConfig {
    /// Seconds between snapshots while mounted (only when the index changed).
    #[serde(default = "default_snapshot_interval")]
    pub interval: u64,
    /// The newest snapshots kept on each backend (`keep_last` is a synonym).
    #[serde(default = "default_snapshot_keep", alias = "keep_last")]
    pub keep: u64,
    /// Also keep the newest snapshot of each of the last N hours, days,
    /// weeks, months (UTC; `remote/retention.rs`), like restic's `forget`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_hourly: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_daily: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_weekly: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_monthly: u64,
    /// S3 Object Lock: where the bucket has it, every object version is
    /// immutable for this many days after its upload, and the packs and
    /// blocks a new snapshot needs are extended to its end
    /// (`remote/object_lock.rs`). 0: tresor leaves the bucket's rule alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lock_days: u64,
    /// `governance` (an account allowed `s3:BypassGovernanceRetention` can
    /// still delete) or `compliance` (nobody can, not even the root account,
    /// until the lock ends).
    #[serde(
        default = "default_lock_mode",
        skip_serializing_if = "is_default_lock_mode"
    )]
    pub lock_mode: String,
}

fn default_lock_mode() -> String {
    "governance".into()
}

fn is_default_lock_mode(m: &String) -> bool {
    *m == default_lock_mode()
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn default_snapshot_interval() -> u64 {
    300
}

fn default_snapshot_keep() -> u64 {
    KEEP_GENERATIONS
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            interval: default_snapshot_interval(),
            keep: default_snapshot_keep(),
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            lock_days: 0,
            lock_mode: default_lock_mode(),
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

/// Replaces `path` with `bytes` atomically (a fresh temp file in the same
/// directory, fsynced, renamed over it, directory fsynced). The temp name
/// carries 64 random bits and is created with `O_EXCL`, so nobody can
/// predict it or plant a symlink there; a failed write removes it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", path.display()));
    }
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
