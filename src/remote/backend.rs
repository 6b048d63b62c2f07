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

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use crate::remote::presets::Service;
pub use crate::vault::config::{
    BackendConfig, CacheConfig, Credentials, Policy, Secret, ServiceName, SnapshotConfig,
    VaultConfig, DEFAULT_CACHE_BYTES, DEFAULT_CONCURRENCY,
};

/// A single request (one ≤ 16 MiB pack) may take this long before the
/// attempt is abandoned and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// No progress on a request's body for this long: abandon the attempt.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per request for temporary errors, before the engine's own
/// (unbounded, backed-off) retry takes over.
const RETRY_TIMES: usize = 4;

/// rustls needs one process-wide crypto provider, and OpenDAL one default
/// HTTP transport. The build enables only ring (reqwest's default would
/// compile aws-lc as a second C crypto library: minutes of a clean build,
/// see docs/ARCHITECTURE.md), and OpenDAL installs its reqwest transport by
/// itself only with that default, so both are installed here, before the
/// first operator exists.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // First installed wins; the reqwest transport builds its client lazily.
        opendal_http_transport_reqwest::install_default();
    });
}

/// Builds the layered OpenDAL operator for a backend.
pub fn build_operator(cfg: &BackendConfig, secret: &Secret) -> Result<opendal::Operator> {
    install_tls_provider();
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
            // A bucket with S3 Object Lock and a default retention rule
            // refuses uploads without Content-MD5 (or a checksum header):
            // sent unless the probe found no Object Lock (an unprobed
            // backend at `backend add` gets it too). MD5 because every
            // S3-compatible service knows that header; packs are single PUTs.
            if cfg.capabilities.object_lock.state != crate::vault::config::CapabilityState::No {
                b = b.checksum_algorithm("md5");
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The build has rustls without a default crypto provider and OpenDAL
    /// without its auto-installed transport; `build_operator` installs
    /// both. Without them an HTTPS request panics in reqwest ("No rustls
    /// crypto provider") or fails as ConfigInvalid ("default HTTP transport
    /// is not installed"); with them it is an ordinary connection error.
    #[test]
    fn https_requests_reach_the_network() {
        let cfg = BackendConfig {
            name: "tls".into(),
            id: "tls-1".into(),
            service: ServiceName::S3,
            preset: None,
            // Port 1 on loopback: nothing listens, the connect is refused.
            endpoint: "https://127.0.0.1:1".into(),
            region: "eu-central-1".into(),
            bucket: "b".into(),
            root: "/tresor".into(),
            username: String::new(),
            key_path: String::new(),
            known_hosts_strategy: String::new(),
            location: "DE".into(),
            operator: "nobody".into(),
            operator_country: "DE".into(),
            parent_country: String::new(),
            parent: String::new(),
            max_concurrency: 1,
            capabilities: Default::default(),
            options: BTreeMap::new(),
        };
        let secret = Secret {
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            password: String::new(),
        };
        let op = build_operator(&cfg, &secret).expect("operator");
        let rt = crate::store::new_runtime("tls-test").expect("runtime");
        let err = rt
            .block_on(op.stat("probe"))
            .expect_err("nothing listens on port 1");
        assert_ne!(err.kind(), opendal::ErrorKind::ConfigInvalid, "{err}");
        assert!(!format!("{err:?}").contains("not installed"), "{err:?}");
    }
}
