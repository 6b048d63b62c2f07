//! `tresor restore`, `tresor snapshots` and `tresor lease`: getting a vault
//! back from its backends (`tresor backend export`, in `backend/export.rs`,
//! writes the restore file).
//!
//! **The restore file.** A machine without the vault has no `config.toml`
//! and no `credentials.toml`. `tresor backend export` writes both as one
//! TOML file (the config with each backend's secrets inline, mode 0600);
//! `tresor restore --backend-config FILE` reads it. A file written by hand
//! works too: only `name`, `service`, `endpoint` (and `bucket`/`region` for
//! S3) and the credentials are needed; a missing `root` is found by listing
//! `tresor/` on the backend (one vault there: that one; several: name it
//! with `vault_id = "…"` at the top of the file).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::{Session, VaultArgs};
use crate::index::Index;
use crate::progress::Progress;
use crate::remote::backend::{self, BackendConfig, Credentials, Secret, VaultConfig};
use crate::remote::snapshot::{self, Manifest, SnapshotCrypto};
use crate::remote::sync::{SyncEngine, REMOTE_KEY_PATH};
use crate::store::Store;
use crate::vault::keys::KeyFile;
use crate::vault::{self, VaultPaths};

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Backends and credentials: the file `tresor backend export` writes on the old machine
    #[arg(long, value_name = "FILE")]
    backend_config: PathBuf,
    /// Restore this generation instead of the newest (see `tresor snapshots`)
    #[arg(long, value_name = "N")]
    generation: Option<u64>,
    /// Accept a snapshot older than one this machine has already seen
    #[arg(long)]
    accept_rollback: bool,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// Print one JSON result line
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// Who holds the vault's lease on each backend, since when, last refresh
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete the lease of a crashed or gone machine so this vault directory can mount
    Break {
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// A vault's remotes, opened with its keys but without its index (works
/// while the vault is mounted).
struct Remotes {
    engine: Arc<SyncEngine>,
    vault_id: [u8; 16],
    instance: String,
}

fn open_remotes(args: &VaultArgs) -> Result<Remotes> {
    let Session { paths, unlocked } = args.open()?;
    let config = VaultConfig::load(&paths.root)?;
    if config.backends.is_empty() {
        bail!(
            "the vault at {} has no remote backends: nothing is snapshotted or leased (add one with `tresor backend add`)",
            paths.root.display()
        );
    }
    let local = Arc::new(Store::open_local(&paths.store())?);
    let engine = SyncEngine::open(&paths, &config, local, &unlocked, false)?;
    let vault_id = unlocked.key_file.vault_id();
    Ok(Remotes {
        engine,
        vault_id,
        instance: snapshot::instance_id(&paths.root)?,
    })
}

pub fn snapshots_cmd(args: &VaultArgs, json_out: bool) -> Result<()> {
    let r = open_remotes(args)?;
    let listings = r.engine.list_snapshots();
    let seen = snapshot::seen_generation(&r.vault_id);
    if json_out {
        let backends: Vec<Value> = listings
            .iter()
            .map(|l| {
                json!({
                    "backend": l.backend,
                    "error": l.error,
                    "snapshots": l.entries.iter().map(|(g, m, size)| json!({
                        "generation": g,
                        "valid": m.is_some(),
                        "created": m.as_ref().map(|m| m.created_s),
                        "object_bytes": size,
                        "index_bytes": m.as_ref().map(|m| m.db_len),
                        "host": m.as_ref().map(|m| m.hostname.clone()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"seen_generation": seen.map(|s| s.0), "backends": backends})
        );
        return Ok(());
    }
    if let Some((g, t)) = seen {
        println!(
            "this machine has seen generation {g} of this vault ({})",
            snapshot::utc(t)
        );
    }
    for l in listings {
        println!("backend {}:", l.backend);
        if let Some(e) = l.error {
            println!("  cannot list: {e}");
            continue;
        }
        if l.entries.is_empty() {
            println!("  no snapshots yet (they are written while mounted and by `tresor sync`)");
            continue;
        }
        println!(
            "  {:>10}  {:<23}  {:>10}  {:>10}  written on",
            "generation", "created", "manifest", "index"
        );
        for (g, m, size) in l.entries {
            match m {
                Some(m) => println!(
                    "  {:>10}  {:<23}  {:>10}  {:>10}  {}",
                    g,
                    snapshot::utc(m.created_s),
                    crate::progress::human(size),
                    crate::progress::human(m.db_len),
                    m.hostname
                ),
                None => println!(
                    "  {g:>10}  INVALID: does not authenticate (tampered, truncated or renamed)"
                ),
            }
        }
    }
    Ok(())
}

pub fn lease_cmd(cmd: LeaseCmd) -> Result<()> {
    match cmd {
        LeaseCmd::Show { vault, json } => {
            let r = open_remotes(&vault)?;
            let mut out = Vec::new();
            for (backend, lease) in r.engine.leases() {
                let v = match lease {
                    Ok(Some(l)) => json!({
                        "backend": backend, "held": true, "host": l.hostname,
                        "vault_dir": l.vault_dir, "pid": l.pid, "since": l.acquired_s,
                        "refreshed": l.refreshed_s, "this_vault_directory": l.holder == r.instance,
                    }),
                    Ok(None) => json!({"backend": backend, "held": false}),
                    Err(e) => json!({"backend": backend, "error": format!("{e:#}")}),
                };
                out.push(v);
            }
            if json {
                println!("{}", json!(out));
                return Ok(());
            }
            for v in out {
                let b = v["backend"].as_str().unwrap_or("");
                if let Some(e) = v["error"].as_str() {
                    println!("{b}: {e}");
                } else if v["held"] == true {
                    println!(
                        "{b}: held by host {} (vault directory {}, pid {}{}) since {}, refreshed {}",
                        v["host"].as_str().unwrap_or(""),
                        v["vault_dir"].as_str().unwrap_or(""),
                        v["pid"],
                        if v["this_vault_directory"] == true {
                            "; this vault directory"
                        } else {
                            ""
                        },
                        snapshot::utc(v["since"].as_u64().unwrap_or(0)),
                        snapshot::ago(v["refreshed"].as_u64().unwrap_or(0)),
                    );
                } else {
                    println!("{b}: free");
                }
            }
            Ok(())
        }
        LeaseCmd::Break { vault } => {
            let paths = vault.paths()?;
            if vault::is_mounted(&paths) {
                bail!(
                    "this vault directory is mounted right now and holds the lease itself; unmount it instead"
                );
            }
            let r = open_remotes(&vault)?;
            for (backend, lease) in r.engine.leases() {
                match lease {
                    Ok(Some(l)) => println!(
                        "{backend}: breaking the lease of host {} (vault directory {}) held since {}, last refreshed {}",
                        l.hostname,
                        l.vault_dir,
                        snapshot::utc(l.acquired_s),
                        snapshot::ago(l.refreshed_s)
                    ),
                    Ok(None) => println!("{backend}: no lease"),
                    Err(e) => println!("{backend}: unreadable lease ({e:#}); deleting it"),
                }
            }
            r.engine.break_leases()?;
            println!("lease broken: this vault directory can mount now. If the other machine comes back, it stops writing snapshots and must be restored afresh.");
            Ok(())
        }
    }
}

/// What a restore file says.
struct RestoreSource {
    vault_id: Option<String>,
    config: VaultConfig,
    secrets: BTreeMap<String, Secret>,
}

fn parse_restore_file(path: &Path) -> Result<RestoreSource> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    // Don't let a parse error quote a secret.
    let mut doc: toml::Table = toml::from_str(&text)
        .map_err(|_| anyhow::anyhow!("cannot parse {} (not valid TOML)", path.display()))?;
    let vault_id = doc
        .remove("vault_id")
        .and_then(|v| v.as_str().map(str::to_string));
    let mut secrets = BTreeMap::new();
    if let Some(toml::Value::Array(bs)) = doc.get_mut("backend") {
        for b in bs.iter_mut() {
            let Some(t) = b.as_table_mut() else { continue };
            let name = t
                .get("name")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .with_context(|| format!("{}: a [[backend]] has no name", path.display()))?;
            let mut s = Secret::default();
            for (k, slot) in [
                ("access_key_id", &mut s.access_key_id),
                ("secret_access_key", &mut s.secret_access_key),
                ("password", &mut s.password),
            ] {
                if let Some(toml::Value::String(v)) = t.remove(k) {
                    *slot = v;
                }
            }
            for k in ["id", "root", "location", "operator", "operator_country"] {
                t.entry(k.to_string())
                    .or_insert_with(|| toml::Value::String(String::new()));
            }
            secrets.insert(name, s);
        }
    }
    let config: VaultConfig = toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    if config.backends.is_empty() {
        bail!(
            "{} names no [[backend]]; write it with `tresor backend export` on the old machine",
            path.display()
        );
    }
    Ok(RestoreSource {
        vault_id,
        config,
        secrets,
    })
}

/// Finds the vault's directory on a backend whose `root` was not given.
fn discover_root(
    b: &BackendConfig,
    secret: &Secret,
    vault_id: Option<&str>,
    runtime: &Arc<tokio::runtime::Runtime>,
) -> Result<String> {
    if let Some(id) = vault_id {
        return Ok(format!("/tresor/{id}/"));
    }
    let probe = BackendConfig {
        root: "/tresor/".into(),
        ..b.clone()
    };
    let op = backend::build_operator(&probe, secret)?;
    let entries = runtime
        .block_on(op.list("/"))
        .with_context(|| format!("backend {}: cannot list tresor/", b.name))?;
    let ids: Vec<String> = entries
        .iter()
        .map(|e| e.path().trim_matches('/').to_string())
        .filter(|p| p.len() == 32 && p.bytes().all(|c| c.is_ascii_hexdigit()))
        .collect();
    match ids.as_slice() {
        [one] => Ok(format!("/tresor/{one}/")),
        [] => bail!(
            "backend {}: no tresor vault under tresor/; give its `root` in the restore file",
            b.name
        ),
        many => bail!(
            "backend {} holds several vaults ({}); put `vault_id = \"…\"` at the top of the restore file",
            b.name,
            many.join(", ")
        ),
    }
}

pub fn restore_cmd(args: RestoreArgs) -> Result<()> {
    let started = Instant::now();
    let paths = args.vault.paths()?;
    if paths.key_file().exists() {
        bail!(
            "a vault already exists at {}; restore into a new directory (--vault DIR)",
            paths.root.display()
        );
    }
    if paths.root.exists()
        && std::fs::read_dir(&paths.root)
            .with_context(|| format!("cannot read {}", paths.root.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; restore into an empty or new directory",
            paths.root.display()
        );
    }
    let mut src = parse_restore_file(&args.backend_config)?;
    let runtime = Arc::new(crate::store::new_runtime("tresor-restore")?);

    // 1. The backends and the key file.
    let mut stores = Vec::new();
    let mut key_file: Option<KeyFile> = None;
    let mut errors = Vec::new();
    for b in src.config.backends.iter_mut() {
        let secret = src.secrets.get(&b.name).cloned().unwrap_or_default();
        let secret = Credentials {
            backends: [(b.name.clone(), secret)].into_iter().collect(),
        }
        .for_backend(&b.name);
        if b.root.is_empty() {
            match discover_root(b, &secret, src.vault_id.as_deref(), &runtime) {
                Ok(r) => b.root = r,
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    continue;
                }
            }
        }
        let op = match backend::build_operator(b, &secret) {
            Ok(op) => op,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        let store = Store::remote(op, runtime.clone());
        match store.read_all(REMOTE_KEY_PATH) {
            Ok(bytes) => {
                let kf = KeyFile::from_bytes(&bytes).with_context(|| {
                    format!(
                        "backend {}: {REMOTE_KEY_PATH} is not a tresor key file",
                        b.name
                    )
                })?;
                if let Some(k) = &key_file {
                    if k.vault_id() != kf.vault_id() {
                        bail!(
                            "the backends hold different vaults ({} and {}); restore from one vault's backends",
                            hex::encode(k.vault_id()),
                            hex::encode(kf.vault_id())
                        );
                    }
                } else {
                    key_file = Some(kf);
                }
                stores.push((b.clone(), store));
            }
            Err(e) => errors.push(format!(
                "backend {}: cannot read the key file {REMOTE_KEY_PATH}: {e}",
                b.name
            )),
        }
    }
    let Some(key_file) = key_file else {
        bail!("no backend could be read:\n  {}", errors.join("\n  "));
    };
    for e in &errors {
        eprintln!("warning: {e}");
    }
    let vault_id = key_file.vault_id();
    let pass = args.vault.secret(false)?;
    let master = match key_file.unlock(&pass) {
        Ok(m) => m,
        Err(crate::vault::keys::KeyError::WrongPassphrase) => {
            return Err(crate::error::wrong_passphrase(format!(
                "wrong passphrase for vault {}: no key slot opens with it",
                hex::encode(vault_id)
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let subkeys = master.subkeys();
    let crypto = SnapshotCrypto::new(&subkeys.snapshot, vault_id);

    // 2. The newest authentic manifest across backends.
    let mut best: Option<(Manifest, usize)> = None;
    let mut newest_per_backend = Vec::new();
    for (i, (b, store)) in stores.iter().enumerate() {
        let gens = match snapshot::list_remote(store) {
            Ok(l) => l.generations,
            Err(e) => {
                eprintln!("warning: backend {}: cannot list snapshots: {e}", b.name);
                continue;
            }
        };
        let mut newest = None;
        for g in gens {
            if args.generation.is_some_and(|want| want != g) {
                continue;
            }
            let obj = match store.read_all(&snapshot::manifest_path(g)) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("warning: backend {}: {e}", b.name);
                    continue;
                }
            };
            match crypto.open_manifest(g, &obj) {
                Ok(m) => {
                    newest = Some(m);
                    break;
                }
                Err(e) => eprintln!("warning: backend {}: {e}; skipping it", b.name),
            }
        }
        if let Some(m) = newest {
            newest_per_backend.push((b.name.clone(), m.generation));
            if best
                .as_ref()
                .is_none_or(|(bm, _)| m.generation > bm.generation)
            {
                best = Some((m, i));
            }
        }
    }
    let Some((manifest, from)) = best else {
        match args.generation {
            Some(g) => bail!("no backend holds a valid snapshot of generation {g} (see `tresor snapshots`)"),
            None => bail!(
                "no backend holds a valid index snapshot of vault {} (snapshots are written while mounted and by `tresor sync`)",
                hex::encode(vault_id)
            ),
        }
    };
    if args.generation.is_none() {
        snapshot::check_rollback(&vault_id, manifest.generation, args.accept_rollback)?;
    }
    for (name, g) in &newest_per_backend {
        if *g < manifest.generation {
            eprintln!(
                "note: backend {name} is behind (generation {g}); it catches up at the next mount or `tresor sync`"
            );
        }
    }

    // 3. Download and authenticate the blocks into a new index file.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.root)
        .with_context(|| format!("cannot create {}", paths.root.display()))?;
    let tmp = restoring_index(&paths);
    let bar = Progress::new(
        args.quiet || args.json,
        "restoring index {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        |done, total, _| format!("restore: {done} of {total} index bytes downloaded"),
    );
    let total = manifest.db_len;
    let order: Vec<usize> = std::iter::once(from)
        .chain((0..stores.len()).filter(|i| *i != from))
        .collect();
    let fetch = |id: &snapshot::BlockId| -> Result<Vec<u8>> {
        let mut last = None;
        for &i in &order {
            let (b, store) = &stores[i];
            match store.read_all(&snapshot::block_path(id)) {
                Ok(obj) => match crypto.open_block(id, &obj) {
                    Ok(raw) => return Ok(raw),
                    Err(e) => last = Some(format!("backend {}: {e}", b.name)),
                },
                Err(e) => last = Some(format!("backend {}: {e}", b.name)),
            }
        }
        bail!(
            "index snapshot block {} is not available intact on any backend ({})",
            hex::encode(id),
            last.unwrap_or_default()
        )
    };
    let blocks = &manifest.blocks;
    let done = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<Result<Vec<u8>>> = {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Result<Vec<u8>>>>> =
            blocks.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..8.min(blocks.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= blocks.len() {
                        break;
                    }
                    let r = fetch(&blocks[i]);
                    if let Ok(raw) = &r {
                        let d = done
                            .fetch_add(raw.len() as u64, std::sync::atomic::Ordering::SeqCst)
                            + raw.len() as u64;
                        bar.update(d, total);
                    }
                    *slots[i].lock() = Some(r);
                });
            }
        });
        slots
            .into_iter()
            .map(|m| m.into_inner().expect("every block fetched"))
            .collect()
    };
    bar.finish();
    let write = || -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut len = 0u64;
        for r in results {
            let raw = r?;
            len += raw.len() as u64;
            f.write_all(&raw)?;
        }
        if len != manifest.db_len {
            bail!(
                "the snapshot's blocks add up to {len} bytes, its manifest says {}",
                manifest.db_len
            );
        }
        f.sync_all()?;
        std::fs::rename(&tmp, paths.index())?;
        Ok(())
    };
    if let Err(e) = write() {
        discard_partial_restore(&paths);
        return Err(e.context("restore failed; nothing was kept"));
    }

    // 4. The local vault around it: cold cache, backends with their ids.
    let mut finish = || -> Result<u64> {
        let index = Index::open(&paths.index(), &subkeys.index, false)
            .context("the restored index does not open")?;
        let placed_ids = index.placement_backends()?;
        for b in src.config.backends.iter_mut() {
            if b.id.is_empty() {
                let mine: Vec<&String> = placed_ids
                    .iter()
                    .filter(|id| id.starts_with(&format!("{}-", b.name)))
                    .collect();
                b.id = match mine.as_slice() {
                    [one] => (*one).clone(),
                    _ => {
                        use rand::RngCore;
                        let mut r = [0u8; 6];
                        rand::rngs::OsRng.fill_bytes(&mut r);
                        format!("{}-{}", b.name, hex::encode(r))
                    }
                };
            }
        }
        let evicted = index.mark_all_evicted()?;
        index.commit(true)?;
        index.close()?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(paths.store())
            .context("cannot create the store directory")?;
        src.config.save(&paths.root)?;
        Credentials {
            backends: src.secrets.clone(),
        }
        .save(&paths.root)?;
        key_file.save_new(&paths.key_file())?;
        Ok(evicted)
    };
    let packs = match finish() {
        Ok(p) => p,
        Err(e) => {
            discard_partial_restore(&paths);
            return Err(e.context("restore failed; nothing was kept"));
        }
    };
    snapshot::record_seen(&vault_id, manifest.generation);
    let from_name = &stores[from].0.name;
    if args.json {
        println!(
            "{}",
            json!({
                "vault": paths.root.display().to_string(),
                "vault_id": hex::encode(vault_id),
                "generation": manifest.generation,
                "created": manifest.created_s,
                "host": manifest.hostname,
                "backend": from_name,
                "index_bytes": manifest.db_len,
                "packs": packs,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else if !args.quiet {
        println!(
            "restored vault {} into {}\n  index snapshot generation {} of {} (written on {}), from backend {}: {}\n  {} packs stay on the backends (cold cache: data arrives on demand)\nmount it with: tresor mount --vault {} MOUNTPOINT",
            hex::encode(vault_id),
            paths.root.display(),
            manifest.generation,
            snapshot::utc(manifest.created_s),
            manifest.hostname,
            from_name,
            crate::progress::human(manifest.db_len),
            packs,
            paths.root.display()
        );
    }
    Ok(())
}

/// Where the index is written while its blocks arrive.
fn restoring_index(paths: &VaultPaths) -> PathBuf {
    let mut name = paths.index().into_os_string();
    name.push(".restoring");
    PathBuf::from(name)
}

/// Removes everything a failed restore wrote, so that the retry finds an
/// empty directory (it refuses a non-empty one). Names come from
/// [`VaultPaths`], never spelled out here: the cleanup once removed
/// `index.db*` while the index is `index.sqlite`, and a retry then refused
/// the half-restored directory.
fn discard_partial_restore(paths: &VaultPaths) {
    let mut files = vec![restoring_index(paths), paths.key_file()];
    files.extend(paths.index_files());
    files.push(VaultConfig::path(&paths.root));
    files.push(Credentials::path(&paths.root));
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir(paths.store());
    // Only if empty: a directory the user made stays, and so does anything
    // that was not ours.
    let _ = std::fs::remove_dir(&paths.root);
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue "One house"): a failed restore deleted `index.db*`,
    /// left `index.sqlite` behind, and the retry refused the directory.
    #[test]
    fn a_failed_restore_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path().join("vault"));
        std::fs::create_dir(&paths.root).unwrap();
        std::fs::create_dir(paths.store()).unwrap();
        let mut written = paths.index_files();
        written.push(restoring_index(&paths));
        written.push(VaultConfig::path(&paths.root));
        written.push(Credentials::path(&paths.root));
        written.push(paths.key_file());
        for f in &written {
            std::fs::write(f, b"partial").unwrap();
        }
        discard_partial_restore(&paths);
        assert!(
            !paths.root.exists(),
            "the half-restored vault directory stayed"
        );
    }

    #[test]
    fn a_directory_with_foreign_files_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path().to_path_buf());
        std::fs::write(paths.index(), b"partial").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        discard_partial_restore(&paths);
        assert!(!paths.index().exists());
        assert!(dir.path().join("notes.txt").exists());
    }
}
