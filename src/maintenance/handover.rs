//! Hand-over between machines: when the backends hold a newer generation
//! that descends from this vault directory's own state, `mount` pulls it
//! before opening the index, so machines can take turns with one vault
//! without a restore.
//!
//! **Descends.** Every capture stamps the index with its lineage (meta
//! `snapshot_lineage`: the generation and content digest it was captured
//! as, then its ancestors) and every manifest carries its trail of
//! ancestors (`Manifest::trail`, at most [`snapshot::TRAIL_LEN`]). The local
//! state *is* generation `g` when the lineage's head is `(g, d)` and the
//! index's content digest is still `d` (nothing written here since; atimes,
//! placements and evictions do not count). A remote generation descends
//! from it when `(g, d)` is in its trail. Anything else — local writes not
//! on any backend, a remote state that does not name ours, a trail too
//! short — is not pulled; `mount` then refuses as before (fork), and
//! nothing is overwritten.
//!
//! **What moves.** Only the blocks of the new index file this machine does
//! not have (unchanged pages keep their bytes under SQLCipher, see
//! `remote/snapshot.rs`); the old file supplies the rest. Cached packs the
//! new index still names stay in the local store; packs it no longer names
//! (garbage-collected on the other machine) are deleted from it; packs
//! written elsewhere are marked evicted and read through on demand. Every
//! pack of a snapshot is on each backend that holds its manifest (a
//! manifest is uploaded only after its packs), so those placements are
//! recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::chunk::pack::PackId;
use crate::index::Index;
use crate::progress::Progress;
use crate::remote::backend::BackendConfig;
use crate::remote::snapshot::{self, BlockId, Manifest, SnapshotCrypto};
use crate::store::Store;
use crate::vault::keys::Subkeys;
use crate::vault::VaultPaths;

/// What a pull did, for the one line `mount` prints.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub from_generation: u64,
    pub generation: u64,
    pub backend: String,
    pub hostname: String,
    pub created_s: u64,
    pub blocks: usize,
    pub blocks_fetched: usize,
    pub bytes_fetched: u64,
    pub packs_kept: u64,
    pub packs_cold: u64,
    pub packs_dropped: u64,
    pub seconds: f64,
}

impl Pulled {
    pub fn line(&self) -> String {
        format!(
            "pulled generation {} (written on {} {}) over local generation {} from backend {}: \
             {} of {} index blocks downloaded ({} bytes), {} cached packs kept, {} dropped, {} to read on demand, {:.1} s",
            self.generation,
            self.hostname,
            snapshot::ago(self.created_s),
            self.from_generation,
            self.backend,
            self.blocks_fetched,
            self.blocks,
            self.bytes_fetched,
            self.packs_kept,
            self.packs_dropped,
            self.packs_cold,
            self.seconds
        )
    }
}

/// This vault directory's state as the index records it.
pub struct LocalState {
    pub generation: u64,
    /// `(generation, content digest)` it was captured or pulled as.
    pub head: Option<(u64, snapshot::Digest)>,
    /// The head and its ancestors.
    pub lineage: Vec<(u64, snapshot::Digest)>,
    /// The index's content digest, read by [`LocalState::read_content`]
    /// only when a newer generation is on a backend: it reads every row of
    /// the index (linear in the vault), and a mount whose own state is the
    /// newest must not pay for that.
    pub content: Option<snapshot::Digest>,
}

impl LocalState {
    pub fn read(idx: &Index) -> Result<LocalState> {
        let generation = idx.meta_u64(snapshot::META_GENERATION)?.unwrap_or(0);
        let lineage =
            snapshot::decode_trail(&idx.meta_bytes(snapshot::META_LINEAGE)?.unwrap_or_default());
        Ok(LocalState {
            generation,
            head: lineage.first().copied(),
            lineage,
            content: None,
        })
    }

    pub fn read_content(&mut self, idx: &Index) -> Result<()> {
        self.content = Some(idx.content_digest()?);
        Ok(())
    }

    /// Nothing was written here since the state was captured or pulled
    /// (false until [`LocalState::read_content`] ran).
    pub fn clean(&self) -> bool {
        self.head
            .is_some_and(|(g, d)| g == self.generation && Some(d) == self.content)
    }

    /// `m` is this state or one this state descends from: nothing to pull.
    /// Manifests from before content digests are compared by generation.
    pub fn has(&self, m: &Manifest) -> bool {
        if m.content == [0; 32] {
            return m.generation <= self.generation;
        }
        self.lineage.contains(&(m.generation, m.content))
    }

    /// `m` is this state or one of its descendants.
    pub fn is_ancestor_of(&self, m: &Manifest) -> bool {
        let Some((g, d)) = self.head else {
            return false;
        };
        (m.generation == g && m.content == d) || m.trail.contains(&(g, d))
    }
}

/// Pulls the newest generation on the backends into `paths` when it
/// descends from the local state (see the module doc). `Ok(None)`: nothing
/// to pull, or not a descendant (the mount's fork check then speaks).
///
/// `follower`: a read-only mount. It pulls even while another vault
/// directory holds the lease (it takes none and publishes nothing, so it
/// reads the newest published generation next to the writer).
pub fn pull_if_newer(
    paths: &VaultPaths,
    subkeys: &Subkeys,
    vault_id: [u8; 16],
    follower: bool,
) -> Result<Option<Pulled>> {
    let start = Instant::now();
    let Some((stores, unusable)) = super::restore::vault_backend_stores(paths, "tresor-handover")?
    else {
        return Ok(None);
    };
    for problem in &unusable {
        log::warn!("{problem}");
    }
    let crypto = SnapshotCrypto::new(&subkeys.snapshot, vault_id);
    let idx = Index::open(&paths.index(), &subkeys.index, false)?;
    let mut local = LocalState::read(&idx)?;
    let candidates = super::restore::find_manifests(&stores, &crypto, None);
    if candidates.best.as_ref().is_some_and(|(m, _)| !local.has(m)) {
        local.read_content(&idx)?;
    }
    // Closing checkpoints the WAL: afterwards the file is the whole index.
    idx.close()?;
    for w in &candidates.warnings {
        log::warn!("hand-over: {w}");
    }
    let Some((manifest, from)) = candidates.best else {
        return Ok(None);
    };
    if local.has(&manifest) {
        return Ok(None);
    }
    if !local.clean() || !local.is_ancestor_of(&manifest) {
        log::warn!(
            "hand-over: generation {} on backend {} does not descend from this vault's generation {} \
             (written here since: {}; named in its trail: {})",
            manifest.generation,
            stores[from].0.name,
            local.generation,
            !local.clean(),
            local.is_ancestor_of(&manifest)
        );
        return Ok(None);
    }
    // Someone writes the vault now: the mount is refused anyway (lease);
    // pull once they are done.
    if let Some(l) = foreign_lease(&stores, &crypto, paths).filter(|_| !follower) {
        log::info!("hand-over: not pulling while {l}");
        return Ok(None);
    }
    snapshot::check_rollback(&vault_id, manifest.generation, false)?;
    let holders: Vec<String> = candidates
        .newest_per_backend
        .iter()
        .filter(|(_, g)| *g == manifest.generation)
        .filter_map(|(name, _)| stores.iter().find(|(b, _)| &b.name == name))
        .map(|(b, _)| b.id.clone())
        .collect();
    let mut pulled = replace_index(paths, &stores, from, &crypto, &manifest)?;
    fix_cache(paths, subkeys, &holders, &mut pulled)?;
    snapshot::record_seen(&vault_id, manifest.generation);
    pulled.from_generation = local.generation;
    pulled.seconds = start.elapsed().as_secs_f64();
    log::info!("hand-over: {}", pulled.line());
    Ok(Some(pulled))
}

/// "host H holds the lease" when a live lease of another vault directory
/// is on some backend.
fn foreign_lease(
    stores: &[(BackendConfig, Store)],
    crypto: &SnapshotCrypto,
    paths: &VaultPaths,
) -> Option<String> {
    let instance = snapshot::instance_id(&paths.root).ok()?;
    stores.iter().find_map(|(b, store)| {
        let obj = store
            .read_all(snapshot::LEASE_PATH, snapshot::MAX_LEASE_OBJECT_LEN)
            .ok()?;
        let l = crypto.open_lease(&obj).ok()?;
        let live =
            snapshot::now_s().saturating_sub(l.refreshed_s) <= crate::remote::sync::LEASE_STALE_S;
        (l.holder != instance && live)
            .then(|| format!("host {} holds the lease on backend {}", l.hostname, b.name))
    })
}

/// Writes `manifest`'s index file over the local one, downloading only the
/// blocks the local file lacks.
fn replace_index(
    paths: &VaultPaths,
    stores: &[(BackendConfig, Store)],
    from: usize,
    crypto: &SnapshotCrypto,
    manifest: &Manifest,
) -> Result<Pulled> {
    let wanted: HashSet<BlockId> = manifest.blocks.iter().copied().collect();
    let have = snapshot::read_blocks(&paths.index(), crypto, &|id| wanted.contains(id))
        .context("reading the local index")?
        .bytes;
    let missing: Vec<BlockId> = {
        let mut seen = HashSet::new();
        manifest
            .blocks
            .iter()
            .filter(|id| !have.contains_key(*id) && seen.insert(**id))
            .copied()
            .collect()
    };
    let quiet = Progress::new(true, "", |_, _, _| String::new());
    let fetched = super::restore::fetch_blocks(
        stores,
        from,
        crypto,
        &missing,
        (missing.len() * snapshot::BLOCK_SIZE) as u64,
        &quiet,
    );
    let mut got: HashMap<BlockId, Vec<u8>> = HashMap::new();
    let mut bytes_fetched = 0u64;
    for (id, r) in missing.iter().zip(fetched) {
        let raw = r?;
        bytes_fetched += (raw.len() + 45) as u64;
        got.insert(*id, raw);
    }
    let mut tmp = paths.index().into_os_string();
    tmp.push(".pulling");
    let tmp = std::path::PathBuf::from(tmp);
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
        for id in &manifest.blocks {
            let raw: &[u8] = match have.get(id) {
                Some(b) => b.as_slice(),
                None => got.get(id).context("a fetched block went missing")?,
            };
            len += raw.len() as u64;
            f.write_all(raw)?;
        }
        if len != manifest.db_len {
            bail!(
                "the snapshot's blocks add up to {len} bytes, its manifest says {}",
                manifest.db_len
            );
        }
        f.sync_all()?;
        // The old file's WAL (empty after the close) must not be replayed
        // onto the new file.
        for p in paths.index_files().into_iter().skip(1) {
            let _ = std::fs::remove_file(p);
        }
        std::fs::rename(&tmp, paths.index())?;
        if let Ok(d) = std::fs::File::open(&paths.root) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context("pulling the newer index failed; the local index is unchanged"));
    }
    Ok(Pulled {
        from_generation: 0,
        generation: manifest.generation,
        backend: stores[from].0.name.clone(),
        hostname: manifest.hostname.clone(),
        created_s: manifest.created_s,
        blocks: manifest.blocks.len(),
        blocks_fetched: missing.len(),
        bytes_fetched,
        packs_kept: 0,
        packs_cold: 0,
        packs_dropped: 0,
        seconds: 0.0,
    })
}

/// The local store against the pulled index: cached packs it names stay
/// (un-evicted), the others are evicted; pack files it does not name go;
/// every pack is placed on the backends that hold the pulled manifest.
fn fix_cache(
    paths: &VaultPaths,
    subkeys: &Subkeys,
    holders: &[String],
    pulled: &mut Pulled,
) -> Result<()> {
    let idx = Index::open(&paths.index(), &subkeys.index, false)
        .context("the pulled index does not open")?;
    let store_root = paths.store();
    let mut named = HashSet::new();
    for (id, name) in idx.stored_pack_names()? {
        let path = PackId(name).object_path();
        if store_root.join(&path).exists() {
            idx.mark_cached(&name)?;
            pulled.packs_kept += 1;
        } else {
            idx.mark_evicted(id)?;
            pulled.packs_cold += 1;
        }
        for b in holders {
            idx.add_placement(id, b)?;
        }
        named.insert(path);
    }
    idx.close()?;
    let local = Store::open_local(&store_root)?;
    let files: BTreeMap<String, ()> = local
        .list("packs/")
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.ends_with(".pack"))
        .map(|p| (p, ()))
        .collect();
    for p in files.keys().filter(|p| !named.contains(*p)) {
        if local.delete(p).is_ok() {
            pulled.packs_dropped += 1;
        }
    }
    Ok(())
}
