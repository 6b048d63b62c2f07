//! Restoring a vault from its backends into a new vault directory, step by
//! step, for `tresor restore` (`cli/restore.rs` opens nothing but the
//! restore file and the secret, and prints).
//!
//! **The restore file.** A machine without the vault has no `config.toml`
//! and no `credentials.toml`. `tresor backend export` writes both as one
//! TOML file (the config with each backend's secrets inline, mode 0600);
//! `tresor restore --backend-config FILE` reads it. A file written by hand
//! works too: only `name`, `service`, `endpoint` (and `bucket`/`region` for
//! S3) and the credentials are needed; a missing `root` is found by listing
//! `tresor/` on the backend (one vault there: that one; several: name it
//! with `vault_id = "…"` at the top of the file).
//!
//! The steps, in the order the command runs them: [`check_target`],
//! [`parse_restore_file`], [`open_backends`] (the key file from the first
//! backend that answers), [`unlock`], [`find_manifests`] and [`choose`]
//! (the newest generation that authenticates, refused if this machine has
//! seen a newer one), [`download_index`] (every block authenticated, from
//! any backend) and [`finish`] (cold cache, config, credentials and the key
//! file last). A failure in the last two removes everything written
//! ([`discard_partial_restore`]), so a retry finds an empty directory.
//! Nothing here prints: warnings are returned for the caller to show, and
//! the download reports through [`Progress`].

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::index::Index;

use crate::progress::Progress;
use crate::remote::backend::{self, BackendConfig, Credentials, Secret, VaultConfig};
use crate::remote::snapshot::{self, Manifest, SnapshotCrypto};
use crate::remote::sync::REMOTE_KEY_PATH;
use crate::store::Store;
use crate::vault::keys::{self, KeyFile, MasterKey, SecretKey};
use crate::vault::VaultPaths;

/// What a restore file says.
pub struct RestoreSource {
    pub vault_id: Option<String>,
    pub config: VaultConfig,
    pub secrets: BTreeMap<String, Secret>,
}

/// Refuses a directory that holds a vault or anything else.
pub fn check_target(paths: &VaultPaths) -> Result<()> {
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
    Ok(())
}

pub fn parse_restore_file(path: &Path) -> Result<RestoreSource> {
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

/// The backends that answered, each with its store, and the vault's key file.
pub struct Backends {
    pub stores: Vec<(BackendConfig, Store)>,
    pub key_file: KeyFile,
    /// One line per backend that could not be read (a warning: the others suffice).
    pub errors: Vec<String>,
}

/// Opens every backend of the restore file (finding a missing `root`,
/// which is written into `src`) and reads the key file from each. Fails
/// when none can be read or when they hold different vaults.
pub fn open_backends(
    src: &mut RestoreSource,
    runtime: &Arc<tokio::runtime::Runtime>,
) -> Result<Backends> {
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
            match discover_root(b, &secret, src.vault_id.as_deref(), runtime) {
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
        match store.read_all(REMOTE_KEY_PATH, keys::MAX_KEYFILE_LEN as u64) {
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
    Ok(Backends {
        stores,
        key_file,
        errors,
    })
}

/// Opens the key file; a wrong secret is a typed `WrongPassphrase` error.
pub fn unlock(key_file: &KeyFile, secret: &[u8]) -> Result<MasterKey> {
    match key_file.unlock(secret) {
        Ok(m) => Ok(m),
        Err(crate::vault::keys::KeyError::WrongPassphrase) => {
            Err(crate::error::wrong_passphrase(format!(
                "wrong passphrase for vault {}: no key slot opens with it",
                hex::encode(key_file.vault_id())
            )))
        }
        Err(e) => Err(crate::vault::key_error(e)),
    }
}

/// The newest authentic manifest of each backend.
pub struct Candidates {
    /// The newest of them all and the index of its backend in `stores`.
    pub best: Option<(Manifest, usize)>,
    /// Each backend's newest generation, by backend name.
    pub newest_per_backend: Vec<(String, u64)>,
    /// Backends or manifests that could not be read or did not authenticate.
    pub warnings: Vec<String>,
}

/// Opens every manifest on every backend (only `generation` if given),
/// newest first, and keeps each backend's newest that authenticates.
pub fn find_manifests(
    stores: &[(BackendConfig, Store)],
    crypto: &SnapshotCrypto,
    generation: Option<u64>,
) -> Candidates {
    let mut best: Option<(Manifest, usize)> = None;
    let mut newest_per_backend = Vec::new();
    let mut warnings = Vec::new();
    for (i, (b, store)) in stores.iter().enumerate() {
        let gens = match snapshot::list_remote(store) {
            Ok(l) => l.generations,
            Err(e) => {
                warnings.push(format!("backend {}: cannot list snapshots: {e}", b.name));
                continue;
            }
        };
        let mut newest = None;
        for g in gens {
            if generation.is_some_and(|want| want != g) {
                continue;
            }
            let obj = match store.read_all(
                &snapshot::manifest_path(g),
                snapshot::MAX_MANIFEST_OBJECT_LEN,
            ) {
                Ok(o) => o,
                Err(e) => {
                    warnings.push(format!("backend {}: {e}", b.name));
                    continue;
                }
            };
            match crypto.open_manifest(g, &obj) {
                Ok(m) => {
                    newest = Some(m);
                    break;
                }
                Err(e) => warnings.push(format!("backend {}: {e}; skipping it", b.name)),
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
    Candidates {
        best,
        newest_per_backend,
        warnings,
    }
}

/// The snapshot to restore and the index of the backend it came from.
/// Without an explicit `generation`, one older than this machine has seen
/// is a rollback, refused unless `accept_rollback`.
pub fn choose(
    candidates: &mut Candidates,
    vault_id: &[u8; 16],
    generation: Option<u64>,
    accept_rollback: bool,
) -> Result<(Manifest, usize)> {
    let Some((manifest, from)) = candidates.best.take() else {
        match generation {
            Some(g) => bail!("no backend holds a valid snapshot of generation {g} (see `tresor snapshots`)"),
            None => bail!(
                "no backend holds a valid index snapshot of vault {} (snapshots are written while mounted and by `tresor sync`)",
                hex::encode(vault_id)
            ),
        }
    };
    if generation.is_none() {
        snapshot::check_rollback(vault_id, manifest.generation, accept_rollback)?;
    }
    Ok((manifest, from))
}

/// Creates the vault directory, downloads and authenticates the
/// manifest's blocks (8 at a time, each from the backend `from` first,
/// then from the others) and writes them as the vault's index. On a
/// failure after the directory exists, everything written is removed.
pub fn download_index(
    paths: &VaultPaths,
    stores: &[(BackendConfig, Store)],
    from: usize,
    crypto: &SnapshotCrypto,
    manifest: &Manifest,
    bar: &Progress,
) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.root)
        .with_context(|| format!("cannot create {}", paths.root.display()))?;
    if let Err(e) = fetch_index(paths, stores, from, crypto, manifest, bar) {
        discard_partial_restore(paths);
        return Err(e.context("restore failed; nothing was kept"));
    }
    Ok(())
}

/// Downloads the manifest's blocks into `VAULT/index.sqlite.restoring`
/// and renames that to the index (removing only the temp file on failure).
fn fetch_index(
    paths: &VaultPaths,
    stores: &[(BackendConfig, Store)],
    from: usize,
    crypto: &SnapshotCrypto,
    manifest: &Manifest,
    bar: &Progress,
) -> Result<()> {
    let tmp = restoring_index(paths);
    let results = fetch_blocks(stores, from, crypto, &manifest.blocks, manifest.db_len, bar);
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
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Downloads and authenticates `blocks` (8 at a time, each from backend
/// `from` first, then from the others), in order. `total`: bytes expected,
/// for the progress bar. Restore and hand-over both fetch through it.
pub(crate) fn fetch_blocks(
    stores: &[(BackendConfig, Store)],
    from: usize,
    crypto: &SnapshotCrypto,
    blocks: &[snapshot::BlockId],
    total: u64,
    bar: &Progress,
) -> Vec<Result<Vec<u8>>> {
    let order: Vec<usize> = std::iter::once(from)
        .chain((0..stores.len()).filter(|i| *i != from))
        .collect();
    let fetch = |id: &snapshot::BlockId| -> Result<Vec<u8>> {
        let mut last = None;
        for &i in &order {
            let (b, store) = &stores[i];
            match store.read_all(&snapshot::block_path(id), snapshot::MAX_BLOCK_OBJECT_LEN) {
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
    let done = std::sync::atomic::AtomicU64::new(0);
    {
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
    }
}

/// Each configured backend with its store.
pub type BackendStores = Vec<(BackendConfig, Store)>;

/// The vault's configured backends as stores on one runtime (its threads
/// named `thread`); `None` when it has none. A backend whose operator cannot
/// be built is left out and described in the second list, for the caller to
/// print or log.
pub fn vault_backend_stores(
    paths: &VaultPaths,
    thread: &str,
) -> Result<Option<(BackendStores, Vec<String>)>> {
    let config = VaultConfig::load(&paths.root)?;
    if config.backends.is_empty() {
        return Ok(None);
    }
    let creds = Credentials::load(&paths.root)?;
    let runtime = Arc::new(crate::store::new_runtime(thread)?);
    let mut stores = Vec::new();
    let mut unusable = Vec::new();
    for b in &config.backends {
        match backend::build_operator(b, &creds.for_backend(&b.name)) {
            Ok(op) => stores.push((b.clone(), Store::remote(op, runtime.clone()))),
            Err(e) => unusable.push(format!("backend {}: {e:#}", b.name)),
        }
    }
    Ok(Some((stores, unusable)))
}

/// `fsck --repair` of an existing vault whose index is damaged and has no
/// intact local copy: puts the newest authentic snapshot from the vault's
/// own backends in its place, with the same search, rollback check and
/// download as `restore`. The damaged index files are moved aside (not
/// deleted). `None` when the vault has no backend or none holds a snapshot.
/// Returns the manifest and the name of the backend it came from.
pub fn index_from_backends(
    paths: &VaultPaths,
    subkeys: &crate::vault::keys::Subkeys,
    vault_id: [u8; 16],
) -> Result<Option<(Manifest, String)>> {
    let Some((stores, unusable)) = vault_backend_stores(paths, "tresor-repair")? else {
        return Ok(None);
    };
    for problem in &unusable {
        eprintln!("{problem}");
    }
    let crypto = SnapshotCrypto::new(&subkeys.snapshot, vault_id);
    let mut candidates = find_manifests(&stores, &crypto, None);
    for w in &candidates.warnings {
        eprintln!("{w}");
    }
    if candidates.best.is_none() {
        return Ok(None);
    }
    let (manifest, from) = choose(&mut candidates, &vault_id, None, false)?;
    crate::vault::index_copies::move_damaged_aside(paths)?;
    fetch_index(
        paths,
        &stores,
        from,
        &crypto,
        &manifest,
        &Progress::new(true, "", |_, _, _| String::new()),
    )?;
    Ok(Some((manifest, stores[from].0.name.clone())))
}

/// The local vault around the downloaded index: every pack marked evicted
/// (cold cache), backends without an id given the one the index places
/// packs under (or a new one), every pack placed on the backends named in
/// `holders` (they hold the restored manifest, so every pack it references:
/// packs uploaded after the capture have no placement row in it, and
/// without this they stayed queued with no local file to upload), then
/// config, credentials and the key file, last. Records `generation` as
/// seen. Returns the number of packs, which stay on the backends. On a
/// failure, everything written is removed.
pub fn finish(
    paths: &VaultPaths,
    src: &mut RestoreSource,
    key_file: &KeyFile,
    index_key: &SecretKey,
    generation: u64,
    holders: &[String],
) -> Result<u64> {
    let mut finish = || -> Result<u64> {
        let index = Index::open(&paths.index(), index_key, false)
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
        for b in src
            .config
            .backends
            .iter()
            .filter(|b| holders.contains(&b.name))
        {
            index.place_all_stored(&b.id)?;
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
    match finish() {
        Ok(packs) => {
            snapshot::record_seen(&key_file.vault_id(), generation);
            Ok(packs)
        }
        Err(e) => {
            discard_partial_restore(paths);
            Err(e.context("restore failed; nothing was kept"))
        }
    }
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
pub fn discard_partial_restore(paths: &VaultPaths) {
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
