//! `tresor backend add NAME`: adds a remote backend from a preset or from
//! `--s3` / `--webdav` / `--sftp` / `--dir`. The backend is checked against
//! the placement policy and, unless `--no-test`, probed before anything is
//! saved. Secrets go into `credentials.toml` (mode 0600), never into
//! `config.toml`. A mounted daemon is told to re-read the configuration.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroize::Zeroizing;

use crate::cli::VaultArgs;

use crate::remote::backend::{self, BackendConfig, Credentials, ServiceName, VaultConfig};
use crate::remote::presets;

use super::test::probe;
use super::{notify_daemon, paths_of};

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Name for the backend (a-z, 0-9, '-', '_')
    name: String,
    /// Start from a provider preset (see `tresor backend presets`)
    #[arg(long, value_name = "PRESET")]
    preset: Option<String>,
    /// Per-customer part of a preset's endpoint (account id, Storage Box user, host)
    #[arg(long)]
    account: Option<String>,
    /// An S3-compatible service (give --endpoint, --region, --bucket)
    #[arg(long, conflicts_with_all = ["webdav", "sftp", "dir"])]
    s3: bool,
    /// A WebDAV server at URL
    #[arg(long, value_name = "URL", conflicts_with_all = ["sftp", "dir"])]
    webdav: Option<String>,
    /// An SFTP server: [user@]host[:port]
    #[arg(long, value_name = "USER@HOST:PORT", conflicts_with = "dir")]
    sftp: Option<String>,
    /// A directory on another disk or a network mount (OpenDAL fs)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    bucket: Option<String>,
    /// Directory inside the bucket/server [default: tresor/VAULT-ID]
    #[arg(long)]
    root: Option<String>,
    #[arg(long)]
    access_key_id: Option<String>,
    /// File whose first line is the S3 secret access key
    #[arg(long, value_name = "FILE")]
    secret_access_key_file: Option<PathBuf>,
    /// WebDAV user name
    #[arg(long)]
    username: Option<String>,
    /// File whose first line is the WebDAV password
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// SFTP private key file
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// SFTP host key check: strict (default), accept, add
    #[arg(long, value_name = "STRATEGY")]
    known_hosts_strategy: Option<String>,
    /// ISO country where the data is stored (DE, FI, ...; EU if no single country)
    #[arg(long, value_name = "CC")]
    location: Option<String>,
    /// The operating company
    #[arg(long)]
    operator: Option<String>,
    /// ISO country of the operator's legal seat
    #[arg(long, value_name = "CC")]
    operator_country: Option<String>,
    /// ISO country of the operator's ultimate parent company, if different
    #[arg(long, value_name = "CC")]
    parent_country: Option<String>,
    /// The operator's ultimate parent company, if any
    #[arg(long, value_name = "NAME")]
    parent: Option<String>,
    /// Uploads in flight at most
    #[arg(long)]
    concurrency: Option<usize>,
    /// Extra OpenDAL option KEY=VALUE (repeatable)
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// Do not test the connection before adding
    #[arg(long)]
    no_test: bool,
}

pub(super) fn add(a: AddArgs) -> Result<()> {
    let paths = paths_of(&a.vault)?;
    backend::check_name(&a.name)?;
    let mut config = VaultConfig::load(&paths.root)?;
    if config.backend(&a.name).is_some() {
        bail!(
            "the vault already has a backend named {}; remove it first or pick another name",
            a.name
        );
    }
    let preset = match &a.preset {
        Some(p) => Some(
            presets::find(p)
                .with_context(|| format!("no preset named {p}; see `tresor backend presets`"))?,
        ),
        None => None,
    };
    let vault_id = hex::encode(crate::vault::keys::KeyFile::load(&paths.key_file())?.vault_id());
    let (service, endpoint, username) = if let Some(p) = preset {
        let ep = match &a.endpoint {
            Some(e) => e.clone(),
            None => p
                .endpoint_for(a.account.as_deref())
                .map_err(anyhow::Error::msg)?,
        };
        (
            ServiceName::from(p.service),
            ep,
            a.username.clone().unwrap_or_default(),
        )
    } else if a.s3 {
        let ep = a
            .endpoint
            .clone()
            .context("--s3 needs --endpoint URL (and --region, --bucket)")?;
        (ServiceName::S3, ep, String::new())
    } else if let Some(url) = &a.webdav {
        (
            ServiceName::Webdav,
            url.clone(),
            a.username.clone().unwrap_or_default(),
        )
    } else if let Some(target) = &a.sftp {
        let (user, hostport) = match target.split_once('@') {
            Some((u, h)) => (u.to_string(), h.to_string()),
            None => (a.username.clone().unwrap_or_default(), target.clone()),
        };
        let ep = if user.is_empty() {
            format!("ssh://{hostport}")
        } else {
            format!("ssh://{user}@{hostport}")
        };
        (ServiceName::Sftp, ep, user)
    } else if let Some(dir) = &a.dir {
        let d = std::path::absolute(dir)?;
        (
            ServiceName::Fs,
            d.to_string_lossy().into_owned(),
            String::new(),
        )
    } else {
        bail!("say what the backend is: --preset NAME, --s3, --webdav URL, --sftp USER@HOST:PORT or --dir DIR");
    };
    let pick = |flag: &Option<String>, preset_value: Option<&str>| -> String {
        flag.clone()
            .or_else(|| preset_value.filter(|v| !v.is_empty()).map(str::to_string))
            .unwrap_or_default()
    };
    let location = pick(&a.location, preset.map(|p| p.location));
    if location.is_empty() {
        bail!("say where the data is stored: --location CC (ISO country code such as DE, or EU)");
    }
    let operator = pick(&a.operator, preset.map(|p| p.operator));
    let operator_country = pick(&a.operator_country, preset.map(|p| p.operator_country));
    if operator.is_empty() || operator_country.is_empty() {
        bail!("say who operates the storage and where it has its legal seat: --operator NAME --operator-country CC");
    }
    let parent_country = pick(&a.parent_country, preset.map(|p| p.parent_country));
    let mut options = std::collections::BTreeMap::new();
    if let Some(p) = preset {
        for (k, v) in p.options {
            options.insert(k.to_string(), v.to_string());
        }
    }
    for o in &a.options {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--option {o}: expected KEY=VALUE"))?;
        options.insert(k.to_string(), v.to_string());
    }
    let mut id_bytes = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id_bytes);
    let mut cfg = BackendConfig {
        name: a.name.clone(),
        id: format!("{}-{}", a.name, hex::encode(id_bytes)),
        service,
        preset: preset.map(|p| p.name.to_string()),
        endpoint,
        region: pick(&a.region, preset.map(|p| p.region)),
        bucket: a.bucket.clone().unwrap_or_default(),
        root: a
            .root
            .clone()
            .unwrap_or_else(|| format!("/tresor/{vault_id}/")),
        username,
        key_path: a
            .key
            .as_ref()
            .map(|k| std::path::absolute(k).map(|p| p.to_string_lossy().into_owned()))
            .transpose()?
            .unwrap_or_default(),
        known_hosts_strategy: a.known_hosts_strategy.clone().unwrap_or_default(),
        location: backend::normalise_country("--location", &location)?,
        operator,
        operator_country: backend::normalise_country("--operator-country", &operator_country)?,
        parent_country: if parent_country.is_empty() {
            String::new()
        } else {
            backend::normalise_country("--parent-country", &parent_country)?
        },
        parent: pick(&a.parent, preset.map(|p| p.parent)),
        max_concurrency: a
            .concurrency
            .or(preset.map(|p| p.max_concurrency))
            .unwrap_or(0),
        capabilities: Default::default(),
        options,
    };
    if cfg.service == ServiceName::S3 && cfg.bucket.is_empty() {
        bail!("an S3 backend needs --bucket NAME");
    }
    let rule_breaks = config.policy.backend_violations(&cfg);
    if !rule_breaks.is_empty() {
        bail!(
            "refused by the placement policy:\n  {}\n(see `tresor policy show`)",
            rule_breaks.join("\n  ")
        );
    }
    if let Some(p) = preset {
        if !p.warning.is_empty() {
            eprintln!("warning: {}", p.warning);
        }
    }
    // Secrets: into credentials.toml (0600), never into config.toml.
    let mut creds = Credentials::load(&paths.root)?;
    let mut secret = backend::Secret::default();
    if let Some(k) = &a.access_key_id {
        secret.access_key_id = k.clone();
    }
    if let Some(f) = &a.secret_access_key_file {
        secret.secret_access_key = read_secret_file(f)?.to_string();
    }
    if let Some(f) = &a.password_file {
        secret.password = read_secret_file(f)?.to_string();
    }
    if let Some(host) = cleartext_host(&cfg.endpoint) {
        eprintln!(
            "warning: {} is plain http to {host}: the provider's password or \
             access key travels in clear on the network (the data stays \
             encrypted); use https unless this is a trusted local network",
            cfg.endpoint
        );
    }
    creds.backends.insert(cfg.name.clone(), secret);
    if !a.no_test {
        let own = crate::vault::keys::KeyFile::load(&paths.key_file())?.vault_id();
        probe(&cfg, &creds, false, Some(&own)).with_context(|| {
            format!(
                "backend {} failed its connection test (nothing was saved; --no-test skips the test)",
                cfg.name
            )
        })?;
        cfg.capabilities = super::test::probe_capabilities(&cfg, &creds)?;
    }
    creds.save(&paths.root)?;
    config.backends.push(cfg.clone());
    config.save(&paths.root)?;
    println!(
        "added backend {}: {} at {}, data in {}, operator {}",
        cfg.name,
        cfg.service.as_str(),
        cfg.endpoint,
        cfg.location,
        cfg.describe_law()
    );
    if !cfg.capabilities.never_probed() {
        println!(
            "capabilities: {}",
            crate::remote::capabilities::summary(&cfg.capabilities)
        );
    }
    for (_, verdict) in config.policy.law_verdicts(&cfg) {
        println!("policy: {verdict}");
    }
    let v = config.policy.violations(&config.backends);
    if !v.is_empty() {
        println!(
            "note: the policy is not satisfied yet (mount refuses until it is):\n  {}",
            v.join("\n  ")
        );
    }
    notify_daemon(&paths)?;
    Ok(())
}

/// Reads the first line of a secret file.
fn read_secret_file(path: &Path) -> Result<Zeroizing<String>> {
    let mut s = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .read_to_string(&mut s)?;
    let line = Zeroizing::new(s.lines().next().unwrap_or("").trim_end().to_string());
    if line.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(line)
}

/// The host of a plain-`http://` endpoint that is not loopback (credentials
/// would cross the network in clear); `None` for https, files, loopback.
fn cleartext_host(endpoint: &str) -> Option<String> {
    let rest = endpoint.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::cleartext_host;

    #[test]
    fn plain_http_off_loopback_is_flagged() {
        assert_eq!(
            cleartext_host("http://dav.example.org/remote.php/dav").as_deref(),
            Some("dav.example.org")
        );
        assert_eq!(
            cleartext_host("http://user@10.0.0.5:8080/x").as_deref(),
            Some("10.0.0.5")
        );
        for quiet in [
            "https://dav.example.org/",
            "http://127.0.0.1:9000",
            "http://localhost:8080/dav",
            "http://[::1]:80/",
            "/mnt/backup",
        ] {
            assert_eq!(cleartext_host(quiet), None, "{quiet}");
        }
    }
}
