//! The cloud commands: `backend`, `policy`, `sync`, `where`, `cache`, and
//! the per-backend part of `status`.
//!
//! Commands that only read or change `config.toml` / `credentials.toml`
//! (`backend presets|add|list|test`, `policy`) need no passphrase. Commands
//! that read the index ask the mounted daemon over the control socket, or —
//! when the vault is not mounted — unlock the vault and do the work
//! themselves, printing the same output.

use crate::maintenance::offline::{Backends, OfflineVault};
use crate::mount::control::Request;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::cli::VaultArgs;

use crate::mount::control;
use crate::progress::Progress;
use crate::remote::backend::{self, BackendConfig, Credentials, ServiceName, VaultConfig};
use crate::remote::presets;
use crate::remote::sync;
use crate::store::Store;
use crate::vault::VaultPaths;

#[derive(Subcommand)]
pub enum BackendCmd {
    /// List the provider presets: service, data location, operator and legal seat, notes
    Presets {
        #[arg(long)]
        json: bool,
    },
    /// Add a remote backend (checked against the placement policy, then tested)
    Add(Box<AddArgs>),
    /// List the vault's backends
    List {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// Write, read, list and delete a probe object; print latencies
    Test {
        #[command(flatten)]
        vault: VaultArgs,
        name: String,
    },
    /// Remove a backend from the vault (its remote objects are left alone)
    Remove {
        #[command(flatten)]
        vault: VaultArgs,
        name: String,
    },
    /// Write the backends and their credentials as one file for `tresor restore` on another machine
    Export {
        #[command(flatten)]
        vault: VaultArgs,
        /// Write to FILE (created with mode 0600; must not exist) instead of standard output
        #[arg(long, short, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

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
    /// ISO country of the operator's parent company, if different
    #[arg(long, value_name = "CC")]
    parent_country: Option<String>,
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

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Change the placement policy (refused if the backends would break it)
    Set {
        #[command(flatten)]
        vault: VaultArgs,
        /// Copies of every pack on remote backends
        #[arg(long)]
        copies: Option<u32>,
        /// At least one copy in this location (repeatable; ISO code or EU)
        #[arg(long, value_name = "CC")]
        require_location: Vec<String>,
        /// Copies may be here too (repeatable; ISO code or EU)
        #[arg(long, value_name = "CC")]
        allow_location: Vec<String>,
        /// Refuse operators (or their parents) seated here (repeatable)
        #[arg(long, value_name = "CC")]
        deny_operator_country: Vec<String>,
        /// Start from the default policy (1 copy, no rules)
        #[arg(long)]
        reset: bool,
    },
    /// Show the policy and whether the backends satisfy it
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Local cache budget and use
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// Evict every pack that all backends hold
    Clear {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Set the cache budget (bytes; K, M, G, T suffixes allowed)
    SetSize {
        #[command(flatten)]
        vault: VaultArgs,
        size: String,
    },
}

fn paths_of(v: &VaultArgs) -> Result<VaultPaths> {
    let p = v.paths()?;
    if !p.key_file().exists() {
        bail!(
            "no vault at {} (no tresor.key); create one with `tresor init`",
            p.root.display()
        );
    }
    Ok(p)
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

pub fn backend(cmd: BackendCmd) -> Result<()> {
    match cmd {
        BackendCmd::Presets { json } => presets_table(json),
        BackendCmd::Add(a) => add(*a),
        BackendCmd::List { vault, json } => {
            let paths = paths_of(&vault)?;
            let cfg = VaultConfig::load(&paths.root)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg.backends)?);
                return Ok(());
            }
            if cfg.backends.is_empty() {
                println!(
                    "no remote backends: data stays in the local store ({})",
                    paths.store().display()
                );
                return Ok(());
            }
            println!(
                "{:<14} {:<7} {:<4} {:<38} ENDPOINT",
                "NAME", "SERVICE", "LOC", "OPERATOR (SEAT)"
            );
            for b in &cfg.backends {
                println!(
                    "{:<14} {:<7} {:<4} {:<38} {}{}",
                    b.name,
                    b.service.as_str(),
                    b.location,
                    b.describe_law(),
                    b.endpoint,
                    if b.bucket.is_empty() {
                        String::new()
                    } else {
                        format!(" bucket {}", b.bucket)
                    }
                );
            }
            Ok(())
        }
        BackendCmd::Test { vault, name } => {
            let paths = paths_of(&vault)?;
            let cfg = VaultConfig::load(&paths.root)?;
            let b = cfg
                .backend(&name)
                .with_context(|| format!("no backend named {name}; see `tresor backend list`"))?;
            let creds = Credentials::load(&paths.root)?;
            probe(b, &creds, true)
        }
        BackendCmd::Remove { vault, name } => remove(&vault, &name),
        BackendCmd::Export { vault, output } => {
            crate::cli::restore::export_cmd(&vault, output.as_deref())
        }
    }
}

fn presets_table(json: bool) -> Result<()> {
    if json {
        let v: Vec<Value> = presets::all()
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "provider": p.provider, "service": p.service.as_str(),
                    "endpoint": p.endpoint, "region": p.region, "location": p.location,
                    "operator": p.operator, "operator_country": p.operator_country,
                    "parent_country": p.parent_country, "jurisdictions": p.jurisdictions(),
                    "notes": p.notes, "warning": p.warning,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<26} {:<7} {:<4} {:<44} {:<5} NOTES",
        "PRESET", "SERVICE", "LOC", "OPERATOR", "LAW"
    );
    for p in presets::all() {
        let law = p.jurisdictions().join("+");
        let loc = if p.location.is_empty() {
            "?"
        } else {
            p.location
        };
        let mut op = p.operator.to_string();
        if op.len() > 43 {
            op.truncate(
                op.char_indices()
                    .nth(42)
                    .map(|(i, _)| i)
                    .unwrap_or(op.len()),
            );
            op.push('…');
        }
        println!(
            "{:<26} {:<7} {:<4} {:<44} {:<5} {}",
            p.name,
            p.service.as_str(),
            loc,
            op,
            if law.is_empty() { "?" } else { &law },
            p.notes
        );
    }
    println!();
    println!("LOC: where the data is stored (? = you give --location). LAW: the operator's and its parent's legal seats;");
    println!("a US operator is subject to the US CLOUD Act wherever the data is stored.");
    Ok(())
}

fn add(a: AddArgs) -> Result<()> {
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
    let cfg = BackendConfig {
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
        max_concurrency: a
            .concurrency
            .or(preset.map(|p| p.max_concurrency))
            .unwrap_or(0),
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
    creds.backends.insert(cfg.name.clone(), secret);
    if !a.no_test {
        probe(&cfg, &creds, false).with_context(|| {
            format!(
                "backend {} failed its connection test (nothing was saved; --no-test skips the test)",
                cfg.name
            )
        })?;
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

/// Tells a running daemon to re-read the configuration.
fn notify_daemon(paths: &VaultPaths) -> Result<()> {
    if control::request(&paths.root, &Request::Reload, &mut |_| {})?.is_some() {
        println!("the mounted vault now uses the new configuration");
    }
    Ok(())
}

/// Writes, reads, lists and deletes a probe object.
fn probe(cfg: &BackendConfig, creds: &Credentials, verbose: bool) -> Result<()> {
    let runtime = Arc::new(crate::store::new_runtime("tresor-probe")?);
    let op = backend::build_operator(cfg, &creds.for_backend(&cfg.name))?;
    let store = Store::remote(op, runtime);
    let mut nonce = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let path = format!("probe/{}", hex::encode(nonce));
    let mut body = vec![0u8; 64 * 1024];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut body);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    store.write(&path, body.clone().into())?;
    let w = ms(t);
    let t = Instant::now();
    let back = store.read_all(&path)?;
    let r = ms(t);
    if back.as_ref() != body.as_slice() {
        bail!("the probe object read back differs from what was written");
    }
    let t = Instant::now();
    let listed = store.list("probe/")?;
    let l = ms(t);
    if !listed.iter().any(|p| p.ends_with(&hex::encode(nonce))) {
        bail!("the probe object was written but does not show up in a listing");
    }
    let t = Instant::now();
    store.delete(&path)?;
    let d = ms(t);
    if verbose || std::io::stdout().is_terminal() {
        println!(
            "backend {}: write 64 KiB {w:.0} ms, read {r:.0} ms, list {l:.0} ms, delete {d:.0} ms: OK",
            cfg.name
        );
    }
    Ok(())
}

fn remove(vault: &VaultArgs, name: &str) -> Result<()> {
    let paths = paths_of(vault)?;
    let mut config = VaultConfig::load(&paths.root)?;
    let b = config
        .backend(name)
        .with_context(|| format!("no backend named {name}"))?
        .clone();
    let rest: Vec<BackendConfig> = config
        .backends
        .iter()
        .filter(|x| x.name != name)
        .cloned()
        .collect();
    let v = config.policy.violations(&rest);
    if !v.is_empty() {
        bail!(
            "removing backend {name} would break the placement policy:\n  {}\nchange the policy first (`tresor policy set`)",
            v.join("\n  ")
        );
    }
    let others: Vec<String> = rest.iter().map(|x| x.id.clone()).collect();
    let only_there = match control::request(
        &paths.root,
        &Request::CanRemove { id: b.id.clone() },
        &mut |_| {},
    )? {
        Some(v) => v["packs_only_there"].as_u64().unwrap_or(0),
        None => {
            let off = open_offline(vault, Backends::Ignore)?;
            let idx = off.index();
            idx.packs_only_on(&b.id, &others)?
        }
    };
    if only_there > 0 {
        bail!(
            "{only_there} packs are evicted from the local cache and exist only on backend {name}; \
             removing it would lose data"
        );
    }
    config.backends = rest;
    config.save(&paths.root)?;
    let mut creds = Credentials::load(&paths.root)?;
    if creds.backends.remove(name).is_some() {
        creds.save(&paths.root)?;
    }
    println!(
        "removed backend {name} (objects under {} on it were not deleted)",
        b.root
    );
    notify_daemon(&paths)?;
    Ok(())
}

pub fn policy(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Set {
            vault,
            copies,
            require_location,
            allow_location,
            deny_operator_country,
            reset,
        } => {
            let paths = paths_of(&vault)?;
            let mut config = VaultConfig::load(&paths.root)?;
            let mut p = if reset {
                backend::Policy::default()
            } else {
                config.policy.clone()
            };
            let norm = |what: &str, v: &[String]| -> Result<Vec<String>> {
                v.iter()
                    .flat_map(|s| s.split(','))
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| backend::normalise_country(what, s))
                    .collect()
            };
            if let Some(c) = copies {
                p.copies = c;
            }
            if !require_location.is_empty() {
                p.require_location = norm("--require-location", &require_location)?;
            }
            if !allow_location.is_empty() {
                p.allow_location = norm("--allow-location", &allow_location)?;
            }
            if !deny_operator_country.is_empty() {
                p.deny_operator_country = norm("--deny-operator-country", &deny_operator_country)?;
            }
            let v = p.violations(&config.backends);
            if !v.is_empty() {
                bail!(
                    "refused: the vault's backends would break this policy:\n  {}",
                    v.join("\n  ")
                );
            }
            config.policy = p;
            config.save(&paths.root)?;
            for l in config.policy.describe() {
                println!("{l}");
            }
            Ok(())
        }
        PolicyCmd::Show { vault, json } => {
            let paths = paths_of(&vault)?;
            let config = VaultConfig::load(&paths.root)?;
            let v = config.policy.violations(&config.backends);
            if json {
                println!(
                    "{}",
                    json!({"policy": config.policy, "violations": v, "compliant": v.is_empty()})
                );
                return Ok(());
            }
            for l in config.policy.describe() {
                println!("{l}");
            }
            if v.is_empty() {
                println!("satisfied by the configured backends");
            } else {
                println!("NOT satisfied:\n  {}", v.join("\n  "));
            }
            Ok(())
        }
    }
}

/// Opens the vault here (it is not mounted).
fn open_offline(args: &VaultArgs, backends: Backends) -> Result<Arc<OfflineVault>> {
    let session = args.open()?;
    OfflineVault::open(&session.paths, &session.unlocked, backends)
}

/// Asks the daemon, else runs `offline` on a vault opened here.
fn daemon_or_offline(
    vault: &VaultArgs,
    req: Request,
    offline: impl FnOnce(&OfflineVault, &VaultConfig) -> Result<Value>,
) -> Result<Value> {
    let paths = paths_of(vault)?;
    if let Some(v) = control::request(&paths.root, &req, &mut |_| {})? {
        return Ok(v);
    }
    let off = open_offline(vault, Backends::Ignore)?;
    let config = VaultConfig::load(&paths.root)?;
    let v = offline(&off, &config)?;
    off.close()?;
    Ok(v)
}

pub fn where_cmd(vault: &VaultArgs, path: &Path, json_out: bool) -> Result<()> {
    let rel = vault_relative(path)?;
    let v = daemon_or_offline(vault, Request::Where { path: rel.clone() }, |off, cfg| {
        let idx = off.index();
        sync::where_status(cfg, &idx, rel.as_bytes())
    })?;
    if json_out {
        println!("{v}");
        return Ok(());
    }
    let total = v["data_bytes"].as_u64().unwrap_or(0);
    println!(
        "{}: {} of data in {} packs; {} in the local cache",
        v["path"].as_str().unwrap_or(""),
        crate::progress::human(total),
        v["packs"],
        crate::progress::human(v["local_cache_bytes"].as_u64().unwrap_or(0))
    );
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    if backends.is_empty() {
        println!("  no remote backends: the data is only in the local store");
    }
    for b in backends {
        println!(
            "  {:<14} {:<3} {:<40} law {:<6} holds {:>6.1} %  pending {:.1} %",
            b["name"].as_str().unwrap_or(""),
            b["location"].as_str().unwrap_or(""),
            b["operator"].as_str().unwrap_or(""),
            laws(&b),
            100.0 - b["pending_percent"].as_f64().unwrap_or(0.0),
            b["pending_percent"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}

/// A path inside a mounted vault, or already vault-relative, as `/a/b`.
fn vault_relative(path: &Path) -> Result<String> {
    if let Ok(abs) = std::path::absolute(path) {
        if let Some(mp) = crate::mount::daemon::mountpoint_containing(&abs) {
            let rel = abs.strip_prefix(&mp).unwrap_or(Path::new(""));
            return Ok(format!("/{}", rel.to_string_lossy()));
        }
    }
    let s = path.to_string_lossy();
    Ok(if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    })
}

pub fn cache(cmd: CacheCmd) -> Result<()> {
    let print = |v: &Value| {
        println!(
            "cache budget:        {}\nin the local store:  {}\nnot yet uploaded:    {} (always kept)\nevictable:           {}",
            crate::progress::human(v["budget_bytes"].as_u64().unwrap_or(0)),
            crate::progress::human(v["local_bytes"].as_u64().unwrap_or(0)),
            crate::progress::human(v["not_yet_uploaded_bytes"].as_u64().unwrap_or(0)),
            crate::progress::human(v["evictable_bytes"].as_u64().unwrap_or(0)),
        );
        if v["remote_backends"].as_u64() == Some(0) {
            println!("(no remote backends: the local store is the vault's only copy and is never evicted)");
        }
    };
    match cmd {
        CacheCmd::Show { vault, json } => {
            let v = daemon_or_offline(&vault, Request::CacheShow, |off, cfg| {
                let idx = off.index();
                sync::cache_status(Some(off.engine()), cfg, &idx)
            })?;
            if json {
                println!("{v}");
            } else {
                print(&v);
            }
        }
        CacheCmd::Clear { vault } => {
            let paths = paths_of(&vault)?;
            let v = match control::request(&paths.root, &Request::CacheClear, &mut |_| {})? {
                Some(v) => v,
                None => {
                    let off = open_offline(&vault, Backends::Use)?;
                    off.engine().request_clear();
                    off.commit()?;
                    let cfg = VaultConfig::load(&paths.root)?;
                    let idx = off.index();
                    sync::cache_status(Some(off.engine()), &cfg, &idx)?
                }
            };
            print(&v);
        }
        CacheCmd::SetSize { vault, size } => {
            let bytes = parse_size(&size)?;
            let paths = paths_of(&vault)?;
            let mut cfg = VaultConfig::load(&paths.root)?;
            cfg.cache.size = bytes;
            cfg.save(&paths.root)?;
            println!("cache budget set to {}", crate::progress::human(bytes));
            notify_daemon(&paths)?;
        }
    }
    Ok(())
}

/// "10G", "512M", "1000000".
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a size (like 10G, 512M, 1000000)"))?;
    if n < 0.0 {
        bail!("a size cannot be negative");
    }
    Ok((n * mult as f64) as u64)
}

pub fn sync_cmd(
    vault: &VaultArgs,
    timeout: Option<f64>,
    quiet: bool,
    json_out: bool,
) -> Result<()> {
    let paths = paths_of(vault)?;
    let bar = Progress::new(
        quiet || json_out,
        "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        |done, total, _| format!("sync: {done} of {total} uploaded"),
    );
    // The engine reports bytes left; the bar counts bytes done.
    let progress = |left: u64, total: u64| bar.update(total.saturating_sub(left), total);
    let req = Request::Sync { timeout };
    let started = Instant::now();
    let answered = control::request(&paths.root, &req, &mut |p| {
        progress(
            p["left"].as_u64().unwrap_or(0),
            p["total"].as_u64().unwrap_or(0),
        );
    });
    let result = match answered {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let off = open_offline(vault, Backends::Use)?;
            let config = VaultConfig::load(&paths.root)?;
            let v = config.policy.violations(&config.backends);
            if !v.is_empty() {
                bail!(
                    "the configuration breaks the placement policy:\n  {}",
                    v.join("\n  ")
                );
            }
            off.engine().start(off.clone());
            let r = off.engine().acquire().and_then(|_| {
                off.engine().wait_synced(
                    timeout.map(Duration::from_secs_f64),
                    &|| {
                        if let Err(e) = off.commit() {
                            log::error!("index commit failed: {e}");
                        }
                    },
                    &mut |left, total| progress(left, total),
                )
            });
            let r = r.and_then(|_| {
                off.engine()
                    .snapshot_and_wait(timeout.map(Duration::from_secs_f64))
                    .map(|_| ())
            });
            off.engine().release();
            let closed = off.close();
            r.and(closed)
        }
        Err(e) => Err(e),
    };
    bar.finish();
    result?;
    if json_out {
        println!(
            "{}",
            json!({"synced": true, "seconds": started.elapsed().as_secs_f64()})
        );
    } else if !quiet {
        println!("synced: every pack, the key file and an index snapshot are on every backend");
    }
    Ok(())
}

/// "DE" or "DE+US": the jurisdictions of a backend in a JSON answer.
fn laws(b: &Value) -> String {
    b["jurisdictions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("+")
        })
        .unwrap_or_default()
}

pub fn print_status_sync(v: &Value) {
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    if backends.is_empty() {
        println!("backends:       none (local store only)");
    } else {
        println!("backends:");
        for b in backends {
            println!(
                "  {:<14} {:<6} in {:<3} by {} [{}]",
                b["name"].as_str().unwrap_or(""),
                b["service"].as_str().unwrap_or(""),
                b["location"].as_str().unwrap_or(""),
                b["operator"].as_str().unwrap_or(""),
                laws(&b),
            );
            println!(
                "                 {} objects, {} stored, {} pending ({} packs)",
                b["objects"],
                crate::progress::human(b["bytes_stored"].as_u64().unwrap_or(0)),
                crate::progress::human(b["bytes_pending"].as_u64().unwrap_or(0)),
                b["packs_pending"]
            );
            if let Some(g) = b["snapshot_generation"].as_u64() {
                println!("                 index snapshot: generation {g} is there");
            }
            if let Some(e) = b["last_error"].as_str() {
                println!("                 last error: {e}");
            }
        }
        println!(
            "index:          generation {} (the last snapshot taken)",
            v["index_generation"]
        );
        if let Some(l) = v["lease_lost"].as_str() {
            println!("LEASE LOST:     {l}");
        }
    }
    let p = &v["policy"];
    println!(
        "policy:         {}",
        if p["compliant"].as_bool() == Some(true) {
            "satisfied by the configuration"
        } else {
            "NOT satisfied"
        }
    );
    for r in p["rules"].as_array().cloned().unwrap_or_default() {
        println!("                {}", r.as_str().unwrap_or(""));
    }
    for r in p["violations"].as_array().cloned().unwrap_or_default() {
        println!("  violation:    {}", r.as_str().unwrap_or(""));
    }
    let below = p["bytes_below_required_copies"].as_u64().unwrap_or(0);
    if below > 0 {
        println!(
            "                {} not yet on every backend (uploads pending)",
            crate::progress::human(below)
        );
    }
    let c = &v["cache"];
    println!(
        "cache:          {} local of {} budget ({} not yet uploaded)",
        crate::progress::human(c["local_bytes"].as_u64().unwrap_or(0)),
        crate::progress::human(c["budget_bytes"].as_u64().unwrap_or(0)),
        crate::progress::human(c["not_yet_uploaded_bytes"].as_u64().unwrap_or(0)),
    );
}
