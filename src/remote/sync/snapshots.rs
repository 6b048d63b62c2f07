//! The engine's side of index snapshots and the lease: when to capture,
//! what each backend still lacks, pruning, and the single-writer lease.
//!
//! A *round* (timer, `sync`, unmount) does, serialised by one mutex:
//! 1. learn each backend's snapshots once (list `index/`, open the kept
//!    manifests: which blocks each references);
//! 2. capture: checkpoint the index and hash its file; unchanged since the
//!    last capture → nothing to do. Otherwise bump the generation in the
//!    index (meta `snapshot_generation`), checkpoint again and keep the
//!    bytes of every block some backend lacks;
//! 3. per backend, once every pack that was unplaced at capture time is on
//!    it (a snapshot must never reference a pack its backend lacks): upload
//!    the missing blocks, then the manifest — the manifest is the commit
//!    point — then delete manifests beyond `keep` and blocks no kept
//!    manifest references.
//!
//! Only the newest capture is kept in memory: a backend that was down
//! receives the newest state when it returns, not every missed one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::locks::Deleted;
use super::{Remote, SyncEngine};
use crate::remote::integrity::{self, RootReport};
use crate::remote::snapshot::{self, BlockId, Lease, Manifest, SnapshotCrypto};

/// How often a mounted vault rewrites its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(60);
/// A lease not refreshed for this long belongs to a crashed or gone machine.
pub const LEASE_STALE_S: u64 = 5 * 60;
/// Rounds `snapshot_and_wait` gives a root found incomplete to be repaired.
const REPAIR_ROUNDS: u32 = 2;

#[derive(Default)]
pub(super) struct SnapState {
    /// Set by `enable_snapshots`, from `SyncEngine::open`.
    pub(super) setup: Option<Arc<Setup>>,
    pub(super) backends: HashMap<String, BackendSnaps>,
    /// The generation this engine captured last (change detection).
    last_generation: Option<u64>,
    /// The newest capture not yet on every backend.
    pending: Option<Arc<Capture>>,
    /// Another machine took the lease: stop writing snapshots.
    pub(super) lease_lost: Option<String>,
    last_lease_refresh: Option<Instant>,
    /// The epoch of the lease this mount holds (0: none enforced).
    pub(super) epoch: u64,
    /// A backend's newest state does not descend from ours: publishing
    /// stopped (see [`fork_message`]).
    forked: Option<String>,
    /// Per backend id: what the last check of its root after a round found
    /// (`remote/integrity.rs`), for `status` and `sync`.
    integrity: BTreeMap<String, RootReport>,
    /// The check found the newest snapshot incomplete: capture again even
    /// if the index did not change, so the missing blocks go up again.
    force_capture: bool,
}

/// What a fork means and how to merge it; the mount refusal and a running
/// mount that meets one say the same.
pub fn fork_message(backend: &str, generation: u64, host: &str, vault: &std::path::Path) -> String {
    format!(
        "fork: backend {backend} holds generation {generation}, written on host {host}, which does not \
         contain what this vault directory wrote since its last snapshot there. The first state to reach \
         the backends stays the newest, and nothing was overwritten: this vault directory keeps its own \
         state, unpublished. To merge: mount it read-only (`tresor mount -o ro --vault {dir} MNT`), \
         get the newest state (mount it on the machine that wrote it, or `tresor restore --vault NEW`), \
         and copy your changes across",
        dir = vault.display()
    )
}

/// What a capture stamps into the index besides the generation.
#[derive(Default)]
struct Lineage {
    content: snapshot::Digest,
    /// The new manifest's ancestors (the index's lineage before the stamp).
    trail: Vec<(u64, snapshot::Digest)>,
}

/// Under the index lock: the next generation (above the local one and
/// `remote_max`), and the lineage `(generation, content)` ‖ ancestors
/// recorded in meta, so the captured file knows what it descends from.
fn stamp_generation(
    idx: &crate::index::Index,
    remote_max: u64,
) -> Result<(u64, Lineage), crate::index::IndexError> {
    let local = idx.meta_u64(snapshot::META_GENERATION)?.unwrap_or(0);
    let generation = local.max(remote_max) + 1;
    let mut trail =
        snapshot::decode_trail(&idx.meta_bytes(snapshot::META_LINEAGE)?.unwrap_or_default());
    trail.truncate(snapshot::TRAIL_LEN);
    let content = idx.content_digest()?;
    let mut lineage = vec![(generation, content)];
    lineage.extend_from_slice(&trail);
    idx.set_meta_u64(snapshot::META_GENERATION, generation)?;
    idx.set_meta_bytes(snapshot::META_LINEAGE, &snapshot::encode_trail(&lineage))?;
    Ok((generation, Lineage { content, trail }))
}

/// What [`capture_locked`] found.
enum Locked {
    Unchanged,
    /// A held-back small pack is referenced: coalesce first.
    HeldBack,
    Captured {
        generation: u64,
        lineage: Lineage,
        blocks: snapshot::FileBlocks,
        /// Per backend id: packs stored but not on it at capture time.
        waits_for: HashMap<String, Vec<u64>>,
    },
}

/// The capture proper, under the index lock with the WAL checkpointed and
/// no transaction open (`IndexAccess::with_checkpoint`); nothing commits
/// meanwhile, so the file read is exactly the stamped state. Costs O(1) in
/// the index's size except the one read of the file (`unchanged` decides
/// from the change counter, the digest is maintained by triggers).
fn capture_locked(
    idx: &crate::index::Index,
    setup: &Setup,
    remotes: &[Arc<Remote>],
    everywhere: &HashSet<BlockId>,
    unchanged: impl Fn(u64, u64, Option<u64>) -> bool,
    remote_max: u64,
) -> Result<Locked> {
    let changes = idx.content_change_count()?;
    let local = idx.meta_u64(snapshot::META_GENERATION)?.unwrap_or(0);
    if unchanged(local, changes, idx.meta_u64(snapshot::META_CHANGES)?) {
        return Ok(Locked::Unchanged);
    }
    if !idx.held_back_packs()?.is_empty() {
        return Ok(Locked::HeldBack);
    }
    let mut waits_for = HashMap::new();
    for r in remotes {
        let packs = idx.unplaced_packs(&r.cfg.id, usize::MAX >> 1)?;
        waits_for.insert(r.cfg.id.clone(), packs.into_iter().map(|p| p.0).collect());
    }
    let (generation, lineage) = idx.write_checkpointed(|idx| {
        let (generation, lineage) = stamp_generation(idx, remote_max)?;
        // What this snapshot references, recorded in the file it is.
        snapshot::record_mark(idx, generation, &idx.snapshot_mark()?)?;
        idx.set_meta_u64(snapshot::META_CHANGES, idx.content_change_count()?)?;
        Ok((generation, lineage))
    })?;
    let blocks = snapshot::read_blocks(&setup.index_path, &setup.crypto, &|id| {
        !everywhere.contains(id)
    })
    .context("reading the index for a snapshot")?;
    Ok(Locked::Captured {
        generation,
        lineage,
        blocks,
        waits_for,
    })
}

pub(super) struct Setup {
    pub(super) crypto: SnapshotCrypto,
    /// This vault's id: a backend whose key file names another is refused.
    pub(super) vault_id: [u8; 16],
    pub(super) index_path: PathBuf,
    pub(super) instance: String,
    pub(super) hostname: String,
    /// Random per mount (engine): this mount's lease carries it.
    pub(super) token: String,
}

#[derive(Default)]
pub(super) struct BackendSnaps {
    loaded: bool,
    blocks: HashSet<BlockId>,
    pub(super) manifests: BTreeMap<u64, Vec<BlockId>>,
    /// Creation time (s) of each manifest in `manifests` (retention).
    created: BTreeMap<u64, u64>,
    /// Generations whose manifest exists but does not open.
    unreadable: Vec<u64>,
    /// Newest generation uploaded to this backend by this engine or found there.
    pub(super) durable: u64,
    /// Writer of the newest manifest found there.
    newest_holder: Option<(String, String)>,
    /// The lease epoch the newest manifest found there was written under.
    newest_epoch: u64,
    /// Content digest of the newest manifest there (zero: an older manifest).
    newest_content: snapshot::Digest,
}

struct Capture {
    manifest: Manifest,
    bytes: BTreeMap<BlockId, Arc<Vec<u8>>>,
    /// Per backend id: packs stored but not on it at capture time.
    waits_for: HashMap<String, Vec<u64>>,
}

/// What `forget` did (or would do) on one backend.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForgetReport {
    pub backend: String,
    pub kept: Vec<u64>,
    pub forgotten: Vec<u64>,
    /// Forgotten by the policy, but the provider refused the deletion (S3
    /// Object Lock): still kept, until the lock ends.
    pub protected: Vec<Protected>,
}

/// A snapshot generation the provider would not delete, and until when.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Protected {
    pub generation: u64,
    /// Unix seconds; `None`: the provider did not say.
    pub until: Option<u64>,
}

/// The readable generations on `b` the policy does not keep, oldest first.
fn forgotten(policy: &crate::remote::retention::SnapshotConfig, b: &BackendSnaps) -> Vec<u64> {
    let list: Vec<(u64, u64)> = b
        .manifests
        .keys()
        .map(|g| (*g, b.created.get(g).copied().unwrap_or(0)))
        .collect();
    let kept = crate::remote::retention::kept(policy, &list);
    b.manifests
        .keys()
        .copied()
        .filter(|g| !kept.contains(g))
        .collect()
}

/// One backend's snapshot list for `tresor snapshots`.
pub struct SnapshotListing {
    pub backend: String,
    pub entries: Vec<(u64, Option<Manifest>, u64)>,
    pub error: Option<String>,
}

impl SyncEngine {
    /// Turns snapshots and the lease on (the caller has unlocked the vault).
    pub(super) fn enable_snapshots(&self, unlocked: &crate::vault::UnlockedVault) -> Result<()> {
        let instance = snapshot::instance_id(&self.vault)?;
        self.snap.lock().setup = Some(Arc::new(Setup {
            crypto: SnapshotCrypto::new(&unlocked.subkeys.snapshot, unlocked.key_file.vault_id()),
            vault_id: unlocked.key_file.vault_id(),
            index_path: crate::vault::VaultPaths::new(self.vault.clone()).index(),
            instance,
            hostname: snapshot::hostname(),
            token: {
                let mut t = [0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut t);
                hex::encode(t)
            },
        }));
        Ok(())
    }

    fn setup(&self) -> Option<Arc<Setup>> {
        self.snap.lock().setup.clone()
    }

    /// A read-only mount reads the vault without taking the lease and
    /// without writing snapshots, so it works next to the writer (or after
    /// a crash, without breaking its lease).
    pub(super) fn set_read_only(&self, ro: bool) {
        self.read_only.store(ro, Ordering::SeqCst);
    }

    fn writes_snapshots(&self) -> bool {
        !self.read_only.load(Ordering::SeqCst)
    }

    /// Lists `index/` on a backend and opens the manifests there.
    fn load_backend(&self, setup: &Setup, remote: &Remote) -> Result<()> {
        let id = remote.cfg.id.clone();
        if self.snap.lock().backends.get(&id).is_some_and(|b| b.loaded) {
            return Ok(());
        }
        // Another vault's snapshots are not garbage to collect: never list,
        // lease or delete on a root that holds another vault's key file.
        super::check_key_owner(&remote.store, &setup.vault_id)
            .with_context(|| format!("backend {}", remote.cfg.name))?;
        let listing = snapshot::list_remote(&remote.store)
            .with_context(|| format!("listing snapshots on backend {}", remote.cfg.name))?;
        let mut b = BackendSnaps {
            blocks: listing.blocks.into_iter().collect(),
            ..BackendSnaps::default()
        };
        for g in listing.generations {
            let obj = remote.store.read_all(
                &snapshot::manifest_path(g),
                snapshot::MAX_MANIFEST_OBJECT_LEN,
            )?;
            match setup.crypto.open_manifest(g, &obj) {
                Ok(m) => {
                    if g > b.durable {
                        b.durable = g;
                        b.newest_holder = Some((m.holder.clone(), m.hostname.clone()));
                        b.newest_epoch = m.epoch;
                        b.newest_content = m.content;
                    }
                    b.created.insert(g, m.created_s);
                    b.manifests.insert(g, m.blocks);
                }
                Err(e) => {
                    log::warn!("backend {}: {e}; ignoring it", remote.cfg.name);
                    b.unreadable.push(g);
                }
            }
        }
        b.loaded = true;
        remote.check_lock(&self.snapshot_cfg.read().clone());
        for g in b.manifests.keys() {
            remote.note_generation_lock(*g);
        }
        self.snap.lock().backends.insert(id, b);
        Ok(())
    }

    /// Refuses to mount when a backend holds a newer index than this vault
    /// (another machine wrote the vault since), then takes the lease on
    /// every reachable backend. Unreachable backends are only warned about:
    /// writes must keep working offline; the lease is taken when they return.
    pub fn acquire(&self) -> Result<()> {
        let Some(setup) = self.setup().filter(|_| self.writes_snapshots()) else {
            return Ok(());
        };
        let local = self
            .with_index(|idx| idx.meta_u64(snapshot::META_GENERATION))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        let lineage = snapshot::decode_trail(
            &self
                .with_index(|idx| idx.meta_bytes(snapshot::META_LINEAGE))
                .transpose()?
                .flatten()
                .unwrap_or_default(),
        );
        for remote in self.remotes() {
            if let Err(e) = self.load_backend(&setup, &remote) {
                // Another vault's root is no outage: touch nothing there.
                if crate::error::kind_of(&e) == Some(crate::error::Kind::Foreign) {
                    return Err(e);
                }
                log::warn!(
                    "backend {}: cannot check its snapshots and lease now ({e:#}); mounting anyway, retrying in the background",
                    remote.cfg.name
                );
                remote.failed("checking snapshots", &format!("{e:#}"));
                continue;
            }
            let st = self.snap.lock();
            let b = &st.backends[&remote.cfg.id];
            // The backend's newest state must be ours or one we descend
            // from; the same generation number written by two machines
            // (a fork) differs in content.
            let unknown_state = b.newest_content != [0; 32]
                && !lineage.is_empty()
                && !lineage.contains(&(b.durable, b.newest_content));
            if b.durable > local || unknown_state {
                let (holder, host) = b.newest_holder.clone().unwrap_or_default();
                if holder != setup.instance || unknown_state {
                    // The hand-over does not pull while another vault
                    // directory holds a live lease: then that mount, not a
                    // fork, is why the newer state is not here.
                    if let Ok(Some(l)) = self.lease_of(&setup, &remote) {
                        let live = snapshot::now_s().saturating_sub(l.refreshed_s) <= LEASE_STALE_S;
                        if live && l.holder != setup.instance {
                            drop(st);
                            return self.held_by_another(&remote, &l, false);
                        }
                    }
                    return Err(crate::error::in_use(format!(
                        "backend {} holds index generation {} written on host {host} (this vault's is {local}), \
                         and it could not be pulled: {}",
                        remote.cfg.name,
                        b.durable,
                        fork_message(&remote.cfg.name, b.durable, &host, &self.vault)
                    )));
                }
            }
            drop(st);
            self.take_lease(&setup, &remote, false)?;
        }
        Ok(())
    }

    pub(super) fn lease_of(&self, setup: &Setup, remote: &Remote) -> Result<Option<Lease>> {
        match remote
            .store
            .read_all(snapshot::LEASE_PATH, snapshot::MAX_LEASE_OBJECT_LEN) {
            Ok(obj) => Ok(Some(setup.crypto.open_lease(&obj).with_context(|| {
                format!(
                    "the lease on backend {} is unreadable; if nobody else uses the vault, `tresor lease break` replaces it",
                    remote.cfg.name
                )
            })?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrites the lease on every backend (background, once a minute).
    pub(super) fn refresh_leases(&self) {
        let Some(setup) = self.setup().filter(|_| self.writes_snapshots()) else {
            return;
        };
        {
            let mut st = self.snap.lock();
            if st.lease_lost.is_some()
                || st
                    .last_lease_refresh
                    .is_some_and(|t| t.elapsed() < LEASE_REFRESH)
            {
                return;
            }
            st.last_lease_refresh = Some(Instant::now());
        }
        for remote in self.remotes() {
            if let Err(e) = self.take_lease(&setup, &remote, true) {
                remote.failed("refreshing the lease", &format!("{e:#}"));
            }
        }
    }

    /// Removes our lease from every backend (unmount).
    pub fn release(&self) {
        let Some(setup) = self.setup().filter(|_| self.writes_snapshots()) else {
            return;
        };
        for remote in self.remotes() {
            match self.lease_of(&setup, &remote) {
                Ok(Some(l)) if l.holder == setup.instance => {
                    if let Err(e) = remote.store.delete(snapshot::LEASE_PATH) {
                        log::warn!("backend {}: releasing the lease: {e}", remote.cfg.name);
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("backend {}: releasing the lease: {e:#}", remote.cfg.name),
            }
        }
    }

    /// The lease on each backend: `(backend name, lease or error)`.
    pub fn leases(&self) -> Vec<(String, Result<Option<Lease>>)> {
        let Some(setup) = self.setup() else {
            return Vec::new();
        };
        self.remotes()
            .iter()
            .map(|r| (r.cfg.name.clone(), self.lease_of(&setup, r)))
            .collect()
    }

    /// Deletes the lease object on every backend (`tresor lease break`).
    pub fn break_leases(&self) -> Result<()> {
        for r in self.remotes() {
            r.store
                .delete(snapshot::LEASE_PATH)
                .with_context(|| format!("deleting the lease on backend {}", r.cfg.name))?;
        }
        Ok(())
    }

    /// The highest lease epoch a newest manifest on any backend carries.
    pub(super) fn newest_epoch(&self) -> u64 {
        let st = self.snap.lock();
        st.backends
            .values()
            .map(|b| b.newest_epoch)
            .max()
            .unwrap_or(0)
    }

    /// The newest generation that is on every backend (0: none yet).
    pub fn durable_generation(&self) -> u64 {
        let st = self.snap.lock();
        self.remotes()
            .iter()
            .map(|r| st.backends.get(&r.cfg.id).map_or(0, |b| b.durable))
            .min()
            .unwrap_or(0)
    }

    /// The newest snapshot generation known to be on backend `id`.
    pub fn backend_generation(&self, id: &str) -> Option<u64> {
        let st = self.snap.lock();
        st.backends.get(id).filter(|b| b.loaded).map(|b| b.durable)
    }

    /// Why this mount stopped writing snapshots, if it did.
    pub fn lease_lost(&self) -> Option<String> {
        let st = self.snap.lock();
        st.lease_lost.clone().or_else(|| st.forked.clone())
    }

    /// Whether the newest capture is on every backend.
    pub fn snapshot_settled(&self) -> bool {
        self.snap.lock().pending.is_none()
    }

    /// One snapshot round (see the module doc). Returns the generation now
    /// durable on every backend; errors name the backends still behind.
    pub fn snapshot_round(&self) -> Result<u64> {
        let Some(setup) = self.setup() else {
            return Ok(0);
        };
        if !self.writes_snapshots() {
            return Ok(self.durable_generation());
        }
        let remotes = self.remotes();
        if remotes.is_empty() {
            return Ok(0);
        }
        let _round = self.snap_round.lock();
        if let Some(lost) = self.lease_lost() {
            bail!("not writing snapshots: {lost}");
        }
        let mut problems = Vec::new();
        for r in &remotes {
            if let Err(e) = self.load_backend(&setup, r) {
                problems.push(format!("backend {}: {e:#}", r.cfg.name));
            }
        }
        // A snapshot must reference only packs that go to the backends:
        // held-back small packs are coalesced first, and the coalescer
        // waits while the capture runs. A small pack committed in between
        // makes the capture start over.
        let mut captured = false;
        for _ in 0..3 {
            let mut co = self.coalescing.lock();
            if let Err(e) = self.coalesce_locked(&mut co, true) {
                problems.push(format!("coalescing small packs: {e:#}"));
                break;
            }
            if self.capture(&setup, &remotes)? {
                captured = true;
                break;
            }
        }
        if !captured && self.snap.lock().pending.is_none() {
            problems.push("the index kept changing during the capture (new small packs or commits); the next round tries again".into());
        }
        let pending = self.snap.lock().pending.clone();
        if let Some(cap) = pending {
            for r in &remotes {
                if let Err(e) = self.upload_snapshot(&setup, r, &cap) {
                    r.failed("uploading the index snapshot", &format!("{e:#}"));
                    problems.push(format!("backend {}: {e:#}", r.cfg.name));
                }
            }
            let mut st = self.snap.lock();
            let all = remotes.iter().all(|r| {
                st.backends
                    .get(&r.cfg.id)
                    .is_some_and(|b| b.durable >= cap.manifest.generation)
            });
            if all {
                st.pending = None;
            }
        }
        let durable = self.durable_generation();
        if let Err(e) = self.delete_collected() {
            problems.push(format!("deleting collected packs: {e:#}"));
        }
        // What was published, checked by listing: a root another vault (or
        // anyone) took blocks or the key file from is not "synced".
        if self.snapshot_settled() {
            problems.extend(self.check_published(&setup, &remotes));
        }
        if problems.is_empty() {
            Ok(durable)
        } else {
            bail!(problems.join("; "))
        }
    }

    /// Captures the index as a new generation if it changed since the last
    /// capture (its change counter, `index/digest.rs`), in one hold of the
    /// index lock: commit and checkpoint, stamp the generation, lineage and
    /// mark, commit and checkpoint again, read the file once. False: the
    /// index referenced a held-back pack (try again after coalescing).
    fn capture(&self, setup: &Setup, remotes: &[Arc<Remote>]) -> Result<bool> {
        let Some(access) = self.index.lock().clone() else {
            return Ok(true);
        };
        let (remote_max, remote_newest, last, force) = {
            let st = self.snap.lock();
            let newest = st
                .backends
                .values()
                .filter_map(|b| b.manifests.keys().next_back().copied())
                .max();
            let max = st.backends.values().map(|b| b.durable).max().unwrap_or(0);
            (max, newest, st.last_generation, st.force_capture)
        };
        // Blocks every backend already holds (their bytes need not be kept).
        let everywhere: HashSet<BlockId> = {
            let st = self.snap.lock();
            let sets: Vec<Option<&HashSet<BlockId>>> = remotes
                .iter()
                .map(|r| st.backends.get(&r.cfg.id).map(|b| &b.blocks))
                .collect();
            match sets.split_first() {
                Some((Some(first), rest)) => first
                    .iter()
                    .filter(|id| rest.iter().all(|s| s.is_some_and(|s| s.contains(*id))))
                    .copied()
                    .collect(),
                _ => HashSet::new(),
            }
        };
        let mut out: Option<Result<Locked>> = None;
        access.with_checkpoint(&mut |idx| {
            out = Some(capture_locked(
                idx,
                setup,
                remotes,
                &everywhere,
                |generation, changes, captured| {
                    // Unchanged since a generation this engine captured or
                    // a backend holds (a mount that changed nothing).
                    !force
                        && captured == Some(changes)
                        && (Some(generation) == last || Some(generation) == remote_newest)
                },
                remote_max,
            ))
        })?;
        let (generation, lineage, fb, waits_for) = match out.expect("set by the closure")? {
            Locked::Unchanged => return Ok(true),
            Locked::HeldBack => return Ok(false),
            Locked::Captured {
                generation,
                lineage,
                blocks,
                waits_for,
            } => (generation, lineage, blocks, waits_for),
        };
        let manifest = Manifest {
            generation,
            created_s: snapshot::now_s(),
            db_len: fb.len,
            blocks: fb.ids.clone(),
            holder: setup.instance.clone(),
            hostname: setup.hostname.clone(),
            content: lineage.content,
            epoch: self.snap.lock().epoch,
            trail: lineage.trail,
        };
        log::info!(
            "index snapshot generation {generation}: {} blocks ({} bytes), {} not on every backend",
            fb.ids.len(),
            fb.len,
            fb.bytes.len()
        );
        let mut st = self.snap.lock();
        st.last_generation = Some(generation);
        st.force_capture = false;
        st.pending = Some(Arc::new(Capture {
            manifest,
            bytes: fb.bytes,
            waits_for,
        }));
        Ok(true)
    }

    /// Puts `cap` on `remote` once the packs it needs are there.
    fn upload_snapshot(&self, setup: &Setup, remote: &Remote, cap: &Capture) -> Result<()> {
        let id = &remote.cfg.id;
        let generation = cap.manifest.generation;
        let (have, durable) = {
            let st = self.snap.lock();
            match st.backends.get(id) {
                Some(b) if b.loaded => (b.blocks.clone(), b.durable),
                _ => bail!("its snapshots could not be listed yet"),
            }
        };
        if durable >= generation {
            return Ok(());
        }
        if let Some(waits) = cap.waits_for.get(id) {
            let mut missing = 0;
            for &pack in waits {
                let placed = self
                    .with_index(|idx| idx.pack_needs_upload(pack, id))
                    .transpose()?
                    .unwrap_or(false);
                if placed {
                    missing += 1;
                }
            }
            if missing > 0 {
                bail!("snapshot generation {generation} waits for {missing} pack(s) to be uploaded first");
            }
        }
        let mut uploaded = 0u64;
        for block in &cap.manifest.blocks {
            if have.contains(block) {
                continue;
            }
            let Some(raw) = cap.bytes.get(block) else {
                bail!("internal: the bytes of a block the backend lacks were not captured");
            };
            let obj = setup.crypto.seal_block(block, raw);
            uploaded += obj.len() as u64;
            remote
                .store
                .write(&snapshot::block_path(block), obj.into())?;
            self.snap
                .lock()
                .backends
                .get_mut(id)
                .map(|b| b.blocks.insert(*block));
        }
        // A newest state there that ours does not descend from is a fork:
        // the first state to reach the backends stays the newest.
        let newest = {
            let st = self.snap.lock();
            st.backends
                .get(id)
                .map(|b| (b.durable, b.newest_content, b.newest_holder.clone()))
        };
        if let Some((g, content, holder)) = newest {
            let ours = cap.manifest.trail.contains(&(g, content));
            if g > 0 && content != [0; 32] && !ours {
                let (_, host) = holder.unwrap_or_default();
                let msg = fork_message(&remote.cfg.name, g, &host, &self.vault);
                log::error!("{msg}");
                self.snap.lock().forked = Some(msg.clone());
                bail!(msg);
            }
        }
        // The fence: only the lease holder publishes (see `lease.rs`).
        self.fence(setup, remote)?;
        let obj = setup.crypto.seal_manifest(&cap.manifest);
        uploaded += obj.len() as u64;
        remote
            .store
            .write(&snapshot::manifest_path(generation), obj.into())?;
        log::info!(
            "backend {}: index snapshot generation {generation} uploaded ({uploaded} bytes)",
            remote.cfg.name
        );
        // Seen = on a backend (not merely captured: a crash before any
        // upload must not make the previous snapshot look like a rollback).
        snapshot::record_seen(&setup.crypto.vault_id(), generation);
        {
            let mut st = self.snap.lock();
            if let Some(b) = st.backends.get_mut(id) {
                b.durable = generation;
                b.manifests.insert(generation, cap.manifest.blocks.clone());
                b.created.insert(generation, cap.manifest.created_s);
                b.newest_holder = Some((setup.instance.clone(), setup.hostname.clone()));
                b.newest_content = cap.manifest.content;
            }
        }
        remote.succeeded();
        remote.protect_generation(generation, &cap.manifest.blocks);
        self.prune(remote);
        Ok(())
    }

    /// The marks of every kept state: each generation kept on a backend or
    /// captured and not yet everywhere, and each local index copy. `None`
    /// while some backend's snapshots are not loaded (then nothing may go).
    pub fn kept_marks(&self) -> Option<Vec<crate::index::SnapshotMark>> {
        let remotes = self.remotes();
        let mut gens = std::collections::BTreeSet::new();
        {
            let st = self.snap.lock();
            for r in &remotes {
                let b = st.backends.get(&r.cfg.id).filter(|b| b.loaded)?;
                gens.extend(b.manifests.keys().copied());
                gens.extend(b.unreadable.iter().copied());
            }
            if let Some(cap) = &st.pending {
                gens.insert(cap.manifest.generation);
            }
        }
        let mut marks: Vec<crate::index::SnapshotMark> = self
            .with_index(|idx| {
                gens.iter()
                    .map(|&g| snapshot::mark_of(idx, g))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        marks.extend(crate::vault::index_copies::marks(
            &crate::vault::VaultPaths::new(self.vault.clone()),
        ));
        Some(marks)
    }

    /// Deletes the manifests the retention policy does not keep
    /// (`remote/retention.rs`) and the blocks no kept manifest uses. A
    /// manifest the provider refuses to delete (S3 Object Lock) stays a
    /// kept state, with its blocks and packs; returned with its lock end.
    fn prune(&self, remote: &Remote) -> Vec<Protected> {
        let policy = self.snapshot_cfg.read().clone();
        let old = {
            let st = self.snap.lock();
            let Some(b) = st.backends.get(&remote.cfg.id) else {
                return Vec::new();
            };
            let mut old = forgotten(&policy, b);
            // Unreadable manifests older than the newest are garbage too.
            old.extend(b.unreadable.iter().copied().filter(|g| *g < b.durable));
            old
        };
        let mut protected = Vec::new();
        for g in old {
            match remote.delete_object(&snapshot::manifest_path(g)) {
                Deleted::Gone => {
                    let mut st = self.snap.lock();
                    if let Some(b) = st.backends.get_mut(&remote.cfg.id) {
                        b.manifests.remove(&g);
                        b.created.remove(&g);
                        b.unreadable.retain(|u| *u != g);
                    }
                }
                Deleted::Protected(until) => protected.push(Protected {
                    generation: g,
                    until,
                }),
                Deleted::Failed(e) => log::warn!(
                    "backend {}: deleting old snapshot {g}: {e}",
                    remote.cfg.name
                ),
            }
        }
        let dead_blocks: Vec<BlockId> = {
            let st = self.snap.lock();
            let Some(b) = st.backends.get(&remote.cfg.id) else {
                return protected;
            };
            let live: HashSet<BlockId> = b.manifests.values().flatten().copied().collect();
            b.blocks.difference(&live).copied().collect()
        };
        for id in dead_blocks {
            match remote.delete_object(&snapshot::block_path(&id)) {
                Deleted::Gone => {
                    if let Some(b) = self.snap.lock().backends.get_mut(&remote.cfg.id) {
                        b.blocks.remove(&id);
                    }
                }
                // Retried at the next round, once its lock ended.
                Deleted::Protected(_) => {}
                Deleted::Failed(e) => log::warn!(
                    "backend {}: deleting an unused snapshot block: {e}",
                    remote.cfg.name
                ),
            }
        }
        for p in &protected {
            log::warn!(
                "backend {}: snapshot generation {} is locked by the provider until {}; it stays kept",
                remote.cfg.name,
                p.generation,
                p.until.map_or("an unknown date".into(), snapshot::utc)
            );
        }
        protected
    }

    /// Deletes from every backend the packs garbage collection retired that
    /// no kept state references any more ([`Self::kept_marks`]), then
    /// forgets them. Idempotent: an object already gone counts as deleted;
    /// rows are dropped only when every backend succeeded (a pack a
    /// provider's Object Lock protects stays queued and is reported).
    pub fn delete_collected(&self) -> Result<crate::remote::deletion::RemoteDeletion> {
        let remotes = self.remotes();
        if remotes.is_empty() || !self.writes_snapshots() {
            return Ok(Default::default());
        }
        let Some(access) = self.index_access() else {
            return Ok(Default::default());
        };
        let backends: Vec<&Remote> = remotes.iter().map(|r| r.as_ref()).collect();
        // Every kept state must stay restorable (with `keep = 10`, ten
        // states stay readable, not one).
        let kept = self.kept_marks();
        Ok(crate::remote::deletion::delete_collected(
            access.as_ref(),
            &backends,
            kept.as_deref(),
        )?)
    }

    /// Takes a snapshot now and waits (up to `timeout`) until it is on every
    /// backend and the listing there shows it whole (`tresor sync`,
    /// unmount). A root found incomplete is repaired by the next round (a
    /// new capture uploads what is missing); if it is still incomplete
    /// after [`REPAIR_ROUNDS`], or another vault's key file is there, the
    /// error says so with its kind (damaged, foreign).
    pub fn snapshot_and_wait(&self, timeout: Option<Duration>) -> Result<u64> {
        let start = Instant::now();
        let mut failed_checks = 0;
        loop {
            let r = self.snapshot_round();
            if self.snapshot_settled() {
                match (r, self.integrity_error()) {
                    (Ok(g), None) => return Ok(g),
                    (_, Some(e)) => {
                        failed_checks += 1;
                        if failed_checks > REPAIR_ROUNDS {
                            return Err(e.context("the published index snapshot is not whole"));
                        }
                        continue;
                    }
                    (Err(e), None) if timeout.is_some_and(|t| start.elapsed() >= t) => {
                        return Err(e.context("the index snapshot is not on every backend yet"))
                    }
                    (Err(_), None) => {}
                }
            } else if timeout.is_some_and(|t| start.elapsed() >= t) {
                return match r {
                    Err(e) => Err(e.context("the index snapshot is not on every backend yet")),
                    Ok(_) => bail!("the index snapshot is not on every backend yet"),
                };
            }
            self.kick();
            self.sleep(Duration::from_millis(300));
        }
    }

    /// Lists each backend's root after a settled round and checks that the
    /// newest snapshot there is whole, the key file there and this
    /// vault's (`remote/integrity.rs`). A root that fails is forgotten
    /// (listed again next round), a new capture is forced and the key file
    /// is uploaded again, so the next round repairs what it can. Returns
    /// the problems found.
    fn check_published(&self, setup: &Setup, remotes: &[Arc<Remote>]) -> Vec<String> {
        let mut problems = Vec::new();
        for r in remotes {
            let mut report = integrity::check_root(&r.cfg.name, &r.store, &setup.crypto);
            if report.key_file_missing {
                match self.upload_key(r) {
                    Ok(()) => {
                        log::warn!(
                            "backend {}: {} was missing; uploaded it again",
                            r.cfg.name,
                            integrity::REMOTE_KEY_PATH
                        );
                        report.key_file_missing = false;
                    }
                    Err(e) => log::warn!("backend {}: uploading the key file: {e:#}", r.cfg.name),
                }
            }
            if report.incomplete() || report.is_foreign() {
                for p in report.problems() {
                    log::error!("backend {}: {p}", r.cfg.name);
                    problems.push(format!("backend {}: {p}", r.cfg.name));
                }
                let mut st = self.snap.lock();
                st.backends.remove(&r.cfg.id);
                st.force_capture = true;
                st.last_generation = None;
                drop(st);
                self.kick();
            }
            self.snap.lock().integrity.insert(r.cfg.id.clone(), report);
        }
        problems
    }

    /// Checks every backend's root now, changing nothing (`tresor
    /// snapshots`).
    pub fn check_roots(&self) -> Vec<RootReport> {
        let Some(setup) = self.setup() else {
            return Vec::new();
        };
        self.remotes()
            .iter()
            .map(|r| integrity::check_root(&r.cfg.name, &r.store, &setup.crypto))
            .collect()
    }

    /// What the last check found on backend `id` (`None`: not checked yet).
    pub fn integrity_of(&self, id: &str) -> Option<RootReport> {
        self.snap.lock().integrity.get(id).cloned()
    }

    /// The typed error for the roots the last check found damaged or
    /// foreign (`None`: every checked root is whole).
    pub fn integrity_error(&self) -> Option<anyhow::Error> {
        let reports: Vec<RootReport> = self.snap.lock().integrity.values().cloned().collect();
        integrity::error_of(&reports, true)
    }

    /// Applies the retention policy now on every backend (`tresor snapshots
    /// forget`): per backend, the generations kept and those forgotten
    /// (with `dry_run`, those that would be). The packs only forgotten
    /// snapshots needed go at the next garbage collection.
    pub fn forget(&self, dry_run: bool) -> Result<Vec<ForgetReport>> {
        let Some(setup) = self.setup() else {
            bail!("snapshots are not enabled on this vault");
        };
        let policy = self.snapshot_cfg.read().clone();
        let _round = self.snap_round.lock();
        let mut out = Vec::new();
        for r in self.remotes() {
            self.load_backend(&setup, &r)
                .with_context(|| format!("listing snapshots on backend {}", r.cfg.name))?;
            let (kept, forgotten) = {
                let st = self.snap.lock();
                let b = &st.backends[&r.cfg.id];
                let forgotten = forgotten(&policy, b);
                let kept: Vec<u64> = b
                    .manifests
                    .keys()
                    .copied()
                    .filter(|g| !forgotten.contains(g))
                    .collect();
                (kept, forgotten)
            };
            let protected = if !dry_run && self.writes_snapshots() {
                self.prune(&r)
            } else {
                Vec::new()
            };
            out.push(ForgetReport {
                backend: r.cfg.name.clone(),
                kept,
                forgotten: forgotten
                    .into_iter()
                    .filter(|g| !protected.iter().any(|p| p.generation == *g))
                    .collect(),
                protected,
            });
        }
        Ok(out)
    }

    /// Every backend's snapshots, newest first, opened where possible.
    pub fn list_snapshots(&self) -> Vec<SnapshotListing> {
        let setup = self.setup();
        let mut out = Vec::new();
        for r in self.remotes() {
            let mut l = SnapshotListing {
                backend: r.cfg.name.clone(),
                entries: Vec::new(),
                error: None,
            };
            match snapshot::list_remote(&r.store) {
                Ok(listing) => {
                    for g in listing.generations {
                        let obj = r.store.read_all(
                            &snapshot::manifest_path(g),
                            snapshot::MAX_MANIFEST_OBJECT_LEN,
                        );
                        let (m, size) = match (&obj, &setup) {
                            (Ok(o), Some(s)) => (s.crypto.open_manifest(g, o).ok(), o.len() as u64),
                            (Ok(o), None) => (None, o.len() as u64),
                            _ => (None, 0),
                        };
                        l.entries.push((g, m, size));
                    }
                }
                Err(e) => l.error = Some(e.to_string()),
            }
            out.push(l);
        }
        out
    }
}

/// The `.snapshots` view's source of old generations
/// (`fs/history.rs`): the kept generations on the backends, each index
/// downloaded once into `VAULT/history/` and opened read-only.
pub struct GenerationViews {
    engine: Arc<SyncEngine>,
    index_key: crate::vault::keys::SecretKey,
    dir: PathBuf,
}

impl SyncEngine {
    /// The `.snapshots` source for this engine's vault (`None` without
    /// backends or snapshots). Clears index files an earlier mount left.
    pub fn generation_views(
        self: &Arc<Self>,
        index_key: crate::vault::keys::SecretKey,
    ) -> Option<GenerationViews> {
        if self.remotes().is_empty() || self.setup().is_none() {
            return None;
        }
        let dir = self.vault.join("history");
        let _ = std::fs::remove_dir_all(&dir);
        Some(GenerationViews {
            engine: self.clone(),
            index_key,
            dir,
        })
    }

    /// Generations kept on some backend (listed on first use), with their
    /// creation time in seconds.
    fn kept_generations(&self) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        let Some(setup) = self.setup() else {
            return out;
        };
        for r in self.remotes() {
            if let Err(e) = self.load_backend(&setup, &r) {
                log::warn!("{e:#}");
                continue;
            }
            let st = self.snap.lock();
            if let Some(b) = st.backends.get(&r.cfg.id) {
                for g in b.manifests.keys() {
                    out.insert(*g, b.created.get(g).copied().unwrap_or(0));
                }
            }
        }
        out
    }

    /// Writes generation `generation`'s index into `dest`. Blocks are
    /// content-addressed (keyed hash of their bytes), and an old state
    /// shares most of them with the current index, its local copies and
    /// generations opened before: those are read from the local files
    /// (checked against their id, so a page rewritten meanwhile is simply
    /// not used) and only the rest is downloaded, authenticated, from the
    /// first backend that has it. Returns (blocks reused, downloaded).
    fn fetch_generation(&self, generation: u64, dest: &std::path::Path) -> Result<(usize, usize)> {
        use std::io::Write;
        let setup = self.setup().context("snapshots are not enabled")?;
        let remotes = self.remotes();
        let blocks = {
            let st = self.snap.lock();
            remotes
                .iter()
                .find_map(|r| {
                    st.backends
                        .get(&r.cfg.id)
                        .and_then(|b| b.manifests.get(&generation).cloned())
                })
                .with_context(|| format!("generation {generation} is not kept on any backend"))?
        };
        let wanted: HashSet<BlockId> = blocks.iter().copied().collect();
        let local = self.local_blocks(&setup.crypto, &wanted, dest);
        let tmp = dest.with_extension("part");
        let mut f = std::fs::File::create(&tmp)?;
        let mut downloaded = 0;
        for id in &blocks {
            if let Some(raw) = local.get(id) {
                f.write_all(raw)?;
                continue;
            }
            let path = snapshot::block_path(id);
            let raw = remotes
                .iter()
                .find_map(|r| {
                    let obj = r
                        .store
                        .read_all(&path, snapshot::MAX_BLOCK_OBJECT_LEN)
                        .ok()?;
                    setup.crypto.open_block(id, &obj).ok()
                })
                .with_context(|| format!("index block {path} is not intact on any backend"))?;
            downloaded += 1;
            f.write_all(&raw)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        Ok((blocks.len() - downloaded, downloaded))
    }

    /// The blocks of `wanted` found in local index files: the live index,
    /// its local copies, and the generations opened before (in `dest`'s
    /// directory). Each is cut into [`snapshot::BLOCK_SIZE`] blocks as a
    /// snapshot does and kept only if its keyed hash is wanted.
    fn local_blocks(
        &self,
        crypto: &SnapshotCrypto,
        wanted: &HashSet<BlockId>,
        dest: &std::path::Path,
    ) -> HashMap<BlockId, Arc<Vec<u8>>> {
        let paths = crate::vault::VaultPaths::new(self.vault.clone());
        let mut files = vec![paths.index()];
        files.extend(
            crate::vault::index_copies::list(&paths)
                .into_iter()
                .map(|c| c.path),
        );
        if let Some(dir) = dest.parent() {
            if let Ok(rd) = std::fs::read_dir(dir) {
                files.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "sqlite")),
                );
            }
        }
        let mut out = HashMap::new();
        for file in files {
            let keep = |id: &BlockId| wanted.contains(id) && !out.contains_key(id);
            if let Ok(found) = snapshot::read_blocks(&file, crypto, &keep) {
                out.extend(found.bytes);
            }
            if out.len() == wanted.len() {
                break;
            }
        }
        out
    }
}

impl crate::fs::history::GenerationSource for GenerationViews {
    fn generations(&self) -> Vec<(u64, String)> {
        let kept = self.engine.kept_generations();
        let mut seen = HashSet::new();
        kept.into_iter()
            .map(|(g, t)| {
                // `2026-12-07T173005Z` (ISO 8601, no colons: scp and rsync
                // read `a:b` as a host); a second one within the same
                // second gets its generation appended.
                let u = snapshot::utc(t).replace(':', "");
                let mut name = format!("{}T{}Z", &u[..10], &u[11..17]);
                if !seen.insert(name.clone()) {
                    name = format!("{name}-g{g}");
                }
                (g, name)
            })
            .collect()
    }

    fn open(&self, generation: u64) -> std::result::Result<crate::index::Index, String> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.dir.join(format!("{generation}.sqlite"));
        if !path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| e.to_string())?;
            let start = std::time::Instant::now();
            let (reused, downloaded) = self
                .engine
                .fetch_generation(generation, &path)
                .map_err(|e| format!("{e:#}"))?;
            log::info!(
                "snapshot view: generation {generation} opened in {:.0?} ({reused} index blocks found locally, {downloaded} downloaded)",
                start.elapsed()
            );
        }
        crate::index::Index::open_read_only(&path, &self.index_key).map_err(|e| e.to_string())
    }
}
