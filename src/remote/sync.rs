//! The sync engine: write-back upload of sealed packs to every remote
//! backend, the local store as a bounded read-through cache, and the facts
//! `status`, `where` and `cache` report.
//!
//! **The queue is the index.** A pack is queued for backend B exactly when
//! it is stored locally (`packs.state = 1`) and has no `placements` row for
//! B. Uploads therefore survive crashes and restarts without a queue file of
//! their own: after `kill -9`, the next mount finds the same unplaced packs
//! (a pack uploaded but not yet recorded is uploaded again; uploads are
//! idempotent: same name, same bytes). A backend added later gets every
//! existing pack the same way.
//!
//! **Writes never wait for the network.** Packs go to the local store first
//! (as in a local vault); `concurrency` worker threads per backend upload
//! them in the background. Only packs of a size class are uploaded; small
//! packs an fsync or the commit timer closed are coalesced first
//! (`sync/coalesce.rs`), so remote objects do not follow files. An unreachable backend only grows the backlog:
//! the worker records the error (shown by `status`) and retries with
//! jittered exponential backoff (100 ms … 60 s), indefinitely. When the
//! backlog reaches the cache budget, writers are slowed (each FUSE write
//! waits) — never failed — until uploads catch up.
//!
//! **The local store is a cache** once packs are uploaded: after each index
//! commit, packs that every backend holds are evicted, oldest first, while
//! the local store exceeds the budget. The eviction is committed before the
//! files are deleted. A read of an evicted pack is a ranged GET of just the
//! chunk (or its 1 MiB pack window, for small chunks) from the first backend
//! that answers (the config order is the preference order); the whole pack
//! then comes back into the cache in the background, so the next reads of
//! its neighbours are local. Sequential reads prefetch ahead in parallel
//! through the same path (the filesystem's 4 MiB read-ahead). Chunks are
//! authenticated as always, so a backend that serves wrong bytes produces
//! EIO, never wrong data.
//!
//! Packs are never deleted remotely by the upload path. Garbage
//! collection retires them (`gc_dead`), and `snapshots.rs` deletes them
//! from every backend once an index snapshot that no longer references
//! them is on every backend.

use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::chunk::pack::PackId;
use crate::fs::{IndexAccess, SyncHooks};
use crate::index::Index;
use crate::remote::backend::{self, BackendConfig, Credentials, VaultConfig};
use crate::store::packstore::RemoteFetch;
use crate::store::{Store, StoreError};

mod coalesce;
mod lease;
pub mod locks;
mod snapshots;
pub use lease::lease_enforced;
pub use snapshots::LEASE_STALE_S;

/// Candidates fetched per queue query.
const CLAIM_BATCH: usize = 64;
/// Idle workers look for new packs at least this often.
const IDLE_POLL: Duration = Duration::from_millis(500);
pub use crate::remote::integrity::{check_key_owner, REMOTE_KEY_PATH};
/// Whole-pack downloads back into the cache running at once.
const MAX_REFILLS: usize = 4;
/// Evicted per commit at most (the deletes run under the index lock).
const EVICT_BATCH: usize = 64;
/// A ranged read of at most this many bytes (a random reader's segment)
/// does not bring its whole pack back into the cache.
const REFILL_MIN_READ: u64 = 128 * 1024;

/// One remote backend with its operator and live state.
pub struct Remote {
    pub cfg: BackendConfig,
    pub(crate) store: Store,
    state: Mutex<RemoteState>,
    /// S3 Object Lock on this backend (`sync/locks.rs`).
    pub(crate) lock: locks::RemoteLock,
}

struct RemoteState {
    in_flight: HashSet<u64>,
    last_error: Option<(SystemTime, String)>,
    retry_at: Option<Instant>,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    key_uploaded: bool,
    uploaded_packs: u64,
    uploaded_bytes: u64,
}

/// The longest wait between two attempts after an outage (documented).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// backon's jitter adds up to the current delay again, so the base delay is
/// capped at half the maximum: waits grow 0.1–0.2 s, 0.2–0.4 s, … and end
/// between 30 and 60 s, never above (92 s were seen with the cap at 60 s).
fn new_backoff() -> Box<dyn Iterator<Item = Duration> + Send> {
    use backon::BackoffBuilder;
    Box::new(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(MAX_RETRY_DELAY / 2)
            .with_jitter()
            .without_max_times()
            .build()
            .map(|d| d.min(MAX_RETRY_DELAY)),
    )
}

impl Remote {
    pub fn open(
        cfg: &BackendConfig,
        creds: &Credentials,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Result<Remote> {
        let secret = creds.for_backend(&cfg.name);
        let op = backend::build_operator(cfg, &secret)?;
        Ok(Remote {
            cfg: cfg.clone(),
            store: Store::remote(op, runtime),
            lock: locks::RemoteLock::new(cfg, &secret),
            state: Mutex::new(RemoteState {
                in_flight: HashSet::new(),
                last_error: None,
                retry_at: None,
                backoff: new_backoff(),
                key_uploaded: false,
                uploaded_packs: 0,
                uploaded_bytes: 0,
            }),
        })
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut st = self.state.lock();
        let msg = format!("{what}: {e}");
        let now = Instant::now();
        // The other workers of this backend fail in the same round: the
        // first sets the wait, the rest join it (else each failure would
        // double the delay again).
        if st.retry_at.is_some_and(|t| t > now) {
            st.last_error = Some((SystemTime::now(), msg));
            return;
        }
        let delay = st.backoff.next().unwrap_or(MAX_RETRY_DELAY);
        log::warn!(
            "backend {}: {msg}; retrying in {:.1} s",
            self.cfg.name,
            delay.as_secs_f64()
        );
        st.last_error = Some((SystemTime::now(), msg));
        st.retry_at = Some(now + delay);
    }

    /// When the next attempt is due, if the backend waits for a retry.
    pub fn retry_at(&self) -> Option<Instant> {
        self.state.lock().retry_at.filter(|t| *t > Instant::now())
    }

    /// Ends a retry wait now (an explicit `tresor sync`); the backoff
    /// keeps growing if the attempt fails again. Returns whether it waited.
    fn retry_now(&self) -> bool {
        let mut st = self.state.lock();
        let waiting = st.retry_at.is_some_and(|t| t > Instant::now());
        st.retry_at = None;
        waiting
    }

    fn succeeded(&self) {
        let mut st = self.state.lock();
        if st.last_error.take().is_some() {
            log::info!("backend {}: reachable again", self.cfg.name);
        }
        st.retry_at = None;
        st.backoff = new_backoff();
    }

    pub fn last_error(&self) -> Option<String> {
        self.state
            .lock()
            .last_error
            .as_ref()
            .map(|(_, m)| m.clone())
    }
}

pub struct SyncEngine {
    remotes: RwLock<Vec<Arc<Remote>>>,
    local: Arc<Store>,
    key_file: PathBuf,
    vault: PathBuf,
    index: Mutex<Option<Arc<dyn IndexAccess>>>,
    runtime: Arc<tokio::runtime::Runtime>,
    cache_budget: AtomicU64,
    /// Stored bytes not yet on every backend (refreshed after commits and uploads).
    backlog: AtomicU64,
    /// Placements recorded since the last commit: not durable, not evictable.
    placed_since_commit: Mutex<HashSet<u64>>,
    /// Packs fetched back into the cache, to un-mark as evicted at the next commit.
    refetched: Arc<Mutex<Vec<[u8; 16]>>>,
    /// Packs being downloaded back into the cache.
    fetching: Arc<Mutex<HashSet<String>>>,
    wake: Condvar,
    wake_lock: Mutex<u64>,
    stop: AtomicBool,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    throttling: AtomicBool,
    /// `cache clear`: evict everything evictable at the next commit.
    clear_requested: AtomicBool,
    /// Index snapshots and the lease (`sync/snapshots.rs`).
    snap: Mutex<snapshots::SnapState>,
    /// Serialises snapshot rounds (timer, `sync`, unmount).
    snap_round: Mutex<()>,
    snapshot_cfg: RwLock<backend::SnapshotConfig>,
    /// A read-only mount (`-o ro`): no lease, no snapshots.
    read_only: AtomicBool,
    /// Authenticates a whole pack object before a refill puts it into the
    /// local cache (set at mount, [`SyncEngine::set_pack_check`]).
    pack_check: Arc<std::sync::OnceLock<PackCheck>>,
    /// Packs whose every remote copy failed that check this mount: not
    /// downloaded again on each read (the reads themselves still fail or
    /// succeed chunk by chunk).
    refill_refused: Arc<Mutex<HashSet<String>>>,
    /// Held-back small packs (`sync/coalesce.rs`); also held while an index
    /// snapshot is captured, so none vanishes under a capture.
    coalescing: Mutex<coalesce::CoalesceState>,
    /// `[upload] delay`, seconds.
    upload_delay: AtomicU64,
}

/// Checks a downloaded pack object (`path`, bytes); Err says what is wrong.
pub type PackCheck = Arc<dyn Fn(&str, &[u8]) -> Result<(), String> + Send + Sync>;

impl SyncEngine {
    /// The engine of an unlocked vault, ready to [`start`](Self::start):
    /// the configured backends (none: a local vault, the engine then does
    /// nothing), index snapshots and the lease keyed from `unlocked`, and
    /// refilled packs authenticated before they enter the local cache.
    /// `read_only` (a `-o ro` mount): no lease, no snapshots. This is the one
    /// way to build an engine; mounted, [`attach`](Self::attach) then plugs
    /// it into the core.
    pub fn open(
        paths: &crate::vault::VaultPaths,
        config: &VaultConfig,
        local: Arc<Store>,
        unlocked: &crate::vault::UnlockedVault,
        read_only: bool,
    ) -> Result<Arc<SyncEngine>> {
        let engine = SyncEngine::new(&paths.root, config, local, paths.key_file())?;
        let pack_key = unlocked.subkeys.pack.clone();
        let sealer = crate::chunk::seal::ChunkSealer::new(&unlocked.subkeys);
        let check: PackCheck = Arc::new(move |path: &str, object: &[u8]| {
            crate::chunk::pack::check_pack_object(path, object, &pack_key, &sealer)
        });
        let _ = engine.pack_check.set(check);
        engine.enable_snapshots(unlocked)?;
        engine.set_read_only(read_only);
        Ok(engine)
    }

    /// Plugs the engine into a mounted core and starts its workers: reads
    /// of evicted packs fetch through it, writers are throttled by its cache
    /// budget, and every commit reports durable placements to it.
    pub fn attach(self: &Arc<Self>, core: &Arc<crate::fs::FsCore>) {
        core.packs().set_remote(self.clone());
        core.set_sync_hooks(self.clone());
        self.start(core.clone());
    }

    fn new(
        vault: &std::path::Path,
        config: &VaultConfig,
        local: Arc<Store>,
        key_file: PathBuf,
    ) -> Result<Arc<SyncEngine>> {
        let runtime = Arc::new(crate::store::new_runtime("tresor-sync")?);
        let creds = Credentials::load(vault)?;
        let mut remotes = Vec::new();
        for b in &config.backends {
            remotes.push(Arc::new(Remote::open(b, &creds, runtime.clone())?));
        }
        Ok(Arc::new(SyncEngine {
            remotes: RwLock::new(remotes),
            local,
            key_file,
            vault: vault.to_path_buf(),
            index: Mutex::new(None),
            runtime,
            cache_budget: AtomicU64::new(config.cache.size),
            backlog: AtomicU64::new(0),
            placed_since_commit: Mutex::new(HashSet::new()),
            refetched: Arc::new(Mutex::new(Vec::new())),
            fetching: Arc::new(Mutex::new(HashSet::new())),
            wake: Condvar::new(),
            wake_lock: Mutex::new(0),
            stop: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
            throttling: AtomicBool::new(false),
            clear_requested: AtomicBool::new(false),
            snap: Mutex::new(snapshots::SnapState::default()),
            snap_round: Mutex::new(()),
            snapshot_cfg: RwLock::new(config.snapshot.clone()),
            read_only: AtomicBool::new(false),
            pack_check: Arc::new(std::sync::OnceLock::new()),
            refill_refused: Arc::new(Mutex::new(HashSet::new())),
            coalescing: Mutex::new(coalesce::CoalesceState::default()),
            upload_delay: AtomicU64::new(config.upload.delay),
        }))
    }

    pub fn remotes(&self) -> Vec<Arc<Remote>> {
        self.remotes.read().clone()
    }

    /// The placement keys (backend ids) of the configured backends.
    fn names(&self) -> Vec<String> {
        self.remotes().iter().map(|r| r.cfg.id.clone()).collect()
    }

    /// The index the workers run over, once [`SyncEngine::start`] ran.
    pub(crate) fn index_access(&self) -> Option<Arc<dyn IndexAccess>> {
        self.index.lock().clone()
    }

    fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> Option<R> {
        let access = self.index.lock().clone()?;
        Some(crate::fs::read_index(access.as_ref(), f))
    }

    /// Starts the upload workers over `index`.
    pub fn start(self: &Arc<Self>, index: Arc<dyn IndexAccess>) {
        *self.index.lock() = Some(index);
        self.stop.store(false, Ordering::SeqCst);
        self.refresh_backlog();
        let mut workers = self.workers.lock();
        for remote in self.remotes() {
            for i in 0..remote.cfg.concurrency() {
                let engine = self.clone();
                let remote = remote.clone();
                let name = format!("tresor-up-{}-{i}", remote.cfg.name);
                match std::thread::Builder::new()
                    .name(name)
                    .spawn(move || engine.upload_worker(remote, i))
                {
                    Ok(h) => workers.push(h),
                    Err(e) => log::error!("cannot start an upload worker: {e}"),
                }
            }
        }
        if !self.remotes().is_empty() {
            let engine = self.clone();
            match std::thread::Builder::new()
                .name("tresor-coalesce".into())
                .spawn(move || engine.coalesce_worker())
            {
                Ok(h) => workers.push(h),
                Err(e) => log::error!("cannot start the coalescing thread: {e}"),
            }
            let engine = self.clone();
            match std::thread::Builder::new()
                .name("tresor-snapshot".into())
                .spawn(move || engine.snapshot_worker())
            {
                Ok(h) => workers.push(h),
                Err(e) => log::error!("cannot start the snapshot thread: {e}"),
            }
        }
    }

    /// Snapshots the index every `[snapshot] interval` seconds when it
    /// changed, and keeps the lease fresh.
    fn snapshot_worker(self: Arc<Self>) {
        let mut last = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            self.sleep(Duration::from_secs(1));
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            self.refresh_leases();
            let interval = Duration::from_secs(self.snapshot_cfg.read().interval.max(1));
            if last.elapsed() >= interval
                || (!self.snapshot_settled() && last.elapsed() >= Duration::from_secs(5))
            {
                last = Instant::now();
                if let Err(e) = self.snapshot_round() {
                    log::debug!("snapshot round: {e:#}");
                }
            }
        }
    }

    /// Coalesces held-back small packs once a second (`sync/coalesce.rs`).
    fn coalesce_worker(self: Arc<Self>) {
        let mut failing = false;
        while !self.stop.load(Ordering::SeqCst) {
            self.sleep(Duration::from_secs(1));
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            match self.coalesce(false) {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    log::warn!("coalescing small packs for upload failed (retried): {e:#}");
                }
                Err(e) => log::debug!("coalescing small packs: {e:#}"),
            }
        }
    }

    /// Stops and joins the workers (in-flight uploads finish first).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick();
        let handles: Vec<_> = self.workers.lock().drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
    }

    /// Re-reads config.toml and credentials (after `backend add/remove`,
    /// `cache set-size` while mounted) and restarts the workers.
    pub fn reload(self: &Arc<Self>) -> Result<()> {
        let config = VaultConfig::load(&self.vault)?;
        let creds = Credentials::load(&self.vault)?;
        let mut remotes = Vec::new();
        for b in &config.backends {
            remotes.push(Arc::new(Remote::open(b, &creds, self.runtime.clone())?));
        }
        let index = self.index.lock().clone();
        self.stop();
        *self.remotes.write() = remotes;
        self.cache_budget.store(config.cache.size, Ordering::SeqCst);
        self.upload_delay
            .store(config.upload.delay, Ordering::SeqCst);
        *self.snapshot_cfg.write() = config.snapshot.clone();
        if let Some(index) = index {
            self.start(index);
        }
        log::info!(
            "configuration reloaded: {} backend(s)",
            config.backends.len()
        );
        Ok(())
    }

    /// Wakes idle workers and waiters (new packs, shutdown, progress).
    pub fn kick(&self) {
        let mut g = self.wake_lock.lock();
        *g = g.wrapping_add(1);
        self.wake.notify_all();
    }

    fn sleep(&self, d: Duration) {
        let mut g = self.wake_lock.lock();
        let _ = self.wake.wait_for(&mut g, d);
    }

    fn refresh_backlog(&self) {
        let names = self.names();
        if names.is_empty() {
            self.backlog.store(0, Ordering::Relaxed);
            return;
        }
        if let Some(Ok(b)) = self.with_index(|idx| idx.unplaced_bytes(&names)) {
            self.backlog.store(b, Ordering::Relaxed);
        }
    }

    fn upload_worker(self: Arc<Self>, remote: Arc<Remote>, worker: usize) {
        while !self.stop.load(Ordering::SeqCst) {
            let wait = remote
                .state
                .lock()
                .retry_at
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            if !wait.is_zero() {
                self.sleep(wait.min(IDLE_POLL));
                continue;
            }
            if worker == 0 && !remote.state.lock().key_uploaded {
                match self.upload_key(&remote) {
                    Ok(()) => {
                        remote.state.lock().key_uploaded = true;
                        remote.succeeded();
                    }
                    Err(e) => {
                        remote.failed("uploading the key file", &format!("{e:#}"));
                        continue;
                    }
                }
            }
            let Some(job) = self.claim(&remote) else {
                self.sleep(IDLE_POLL);
                continue;
            };
            let (number, name, _size) = job;
            let path = PackId(name).object_path();
            let result = self
                .local
                .read_all(&path, crate::chunk::pack::MAX_PACK_LEN)
                .and_then(|bytes| {
                    remote
                        .store
                        .write(&path, bytes.clone())
                        .map(|_| bytes.len())
                });
            match result {
                Ok(len) => {
                    let recorded = self.with_index(|idx| idx.add_placement(number, &remote.cfg.id));
                    remote.state.lock().in_flight.remove(&number);
                    match recorded {
                        Some(Ok(())) => {
                            self.placed_since_commit.lock().insert(number);
                            let mut st = remote.state.lock();
                            st.uploaded_packs += 1;
                            st.uploaded_bytes += len as u64;
                            drop(st);
                            remote.succeeded();
                            self.refresh_backlog();
                            self.kick();
                        }
                        Some(Err(e)) => log::error!("recording an upload failed: {e}"),
                        None => {}
                    }
                }
                Err(e) => {
                    remote.state.lock().in_flight.remove(&number);
                    // Collected by garbage collection while queued: the
                    // pack left the queue; not the backend's failure.
                    let collected = e.is_not_found()
                        && matches!(self.with_index(|idx| idx.pack_name(number)), Some(Ok(None)));
                    if !collected {
                        remote.failed(&format!("uploading {path}"), &e);
                    }
                }
            }
        }
    }

    fn upload_key(&self, remote: &Remote) -> Result<()> {
        let bytes = crate::vault::config::key_file_for_backends(&self.vault, &self.key_file)?;
        let own = crate::vault::keys::KeyFile::from_bytes(&bytes)
            .with_context(|| format!("{} is not a key file", self.key_file.display()))?
            .vault_id();
        check_key_owner(&remote.store, &own)?;
        if remote.store.size_of(REMOTE_KEY_PATH)? == Some(bytes.len() as u64)
            && remote
                .store
                .read_all(REMOTE_KEY_PATH, crate::vault::keys::MAX_KEYFILE_LEN as u64)?
                .as_ref()
                == bytes.as_slice()
        {
            return Ok(());
        }
        remote.store.write(REMOTE_KEY_PATH, bytes.into())?;
        Ok(())
    }

    /// The next unplaced pack for `remote` that no other worker holds.
    fn claim(&self, remote: &Remote) -> Option<(u64, [u8; 16], u64)> {
        let candidates =
            match self.with_index(|idx| idx.unplaced_packs(&remote.cfg.id, CLAIM_BATCH)) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    log::error!("reading the upload queue failed: {e}");
                    return None;
                }
                None => return None,
            };
        let mut st = remote.state.lock();
        let job = candidates
            .into_iter()
            .find(|(n, _, _)| !st.in_flight.contains(n))?;
        st.in_flight.insert(job.0);
        Some(job)
    }

    /// Packs and bytes each backend still lacks, and whether its key file
    /// is up: `(name, packs, bytes, key_uploaded)`.
    pub fn pending(&self) -> Vec<(String, u64, u64, bool)> {
        let remotes = self.remotes();
        let mut out = Vec::new();
        for r in remotes {
            let t = self
                .with_index(|idx| idx.placement_totals(&r.cfg.id))
                .and_then(|r| r.ok())
                .unwrap_or_default();
            let key = r.state.lock().key_uploaded;
            out.push((
                r.cfg.name.clone(),
                t.packs.saturating_sub(t.placed_packs),
                t.bytes.saturating_sub(t.placed_bytes),
                key,
            ));
        }
        out
    }

    /// Waits until every backend has every stored pack and the key file, or
    /// `timeout` passes; `progress` gets (bytes left, bytes left at start).
    /// Err names each backend still behind and its last error.
    pub fn wait_synced(
        &self,
        timeout: Option<Duration>,
        commit: &dyn Fn(),
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        self.wait_synced_saying(timeout, commit, progress, &mut |_| {})
    }

    /// [`SyncEngine::wait_synced`], also telling `waiting` (each time it
    /// changes) which backends wait for a retry after an error, and when.
    /// A backend waiting for a retry is retried at once: the caller asked
    /// for a sync now.
    pub fn wait_synced_saying(
        &self,
        timeout: Option<Duration>,
        commit: &dyn Fn(),
        progress: &mut dyn FnMut(u64, u64),
        waiting: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let start = Instant::now();
        for r in self.remotes() {
            if r.retry_now() {
                log::info!("backend {}: retrying now for `tresor sync`", r.cfg.name);
            }
        }
        self.kick();
        let mut said = Vec::new();
        let mut initial = None;
        loop {
            commit();
            // Held-back small packs go now (padded to their size class).
            if let Err(e) = self.coalesce(true) {
                log::warn!("coalescing small packs for upload failed: {e:#}");
            }
            let pending = self.pending();
            let left: u64 = pending.iter().map(|p| p.2).sum();
            let initial = *initial.get_or_insert(left);
            progress(left, initial);
            if pending.iter().all(|p| p.1 == 0 && p.3) {
                return Ok(());
            }
            // Said once per wait, not at every poll.
            let waits: Vec<(String, Instant)> = self
                .remotes()
                .iter()
                .filter_map(|r| Some((r.cfg.name.clone(), r.retry_at()?)))
                .collect();
            if waits != said {
                if !waits.is_empty() {
                    waiting(&self.waiting_for_retry());
                }
                said = waits;
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                let mut msg = String::from("not everything is uploaded yet:");
                for (name, packs, bytes, key) in pending {
                    if packs == 0 && key {
                        continue;
                    }
                    msg.push_str(&format!(
                        "\n  backend {name}: {packs} packs ({bytes} bytes) pending"
                    ));
                    if !key {
                        msg.push_str(", key file not uploaded");
                    }
                    if let Some(e) = self
                        .remotes()
                        .iter()
                        .find(|r| r.cfg.name == name)
                        .and_then(|r| r.last_error())
                    {
                        msg.push_str(&format!("; last error: {e}"));
                    }
                }
                msg.push_str("\nuploads continue in the background while mounted; run `tresor sync` again to wait");
                anyhow::bail!(msg);
            }
            self.sleep(Duration::from_millis(200));
        }
    }

    /// "backend s3 waits for a retry in 42 s (last error: …)", one per
    /// waiting backend, `; `-joined; empty if none waits.
    pub fn waiting_for_retry(&self) -> String {
        let mut out = Vec::new();
        for r in self.remotes() {
            if let Some(t) = r.retry_at() {
                out.push(format!(
                    "backend {} waits for a retry in {:.0} s (last error: {})",
                    r.cfg.name,
                    t.saturating_duration_since(Instant::now())
                        .as_secs_f64()
                        .ceil(),
                    r.last_error().unwrap_or_default()
                ));
            }
        }
        out.join("; ")
    }

    pub fn cache_budget(&self) -> u64 {
        self.cache_budget.load(Ordering::Relaxed)
    }

    /// Makes the next commit evict every uploaded pack from the cache.
    pub fn request_clear(&self) {
        self.clear_requested.store(true, Ordering::SeqCst);
    }

    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Evicts uploaded packs while the local store exceeds `budget`; the
    /// caller holds the index lock and has just committed. Returns bytes freed.
    pub fn evict(&self, idx: &Index, budget: u64) -> Result<u64> {
        let names = self.names();
        if names.is_empty() {
            return Ok(0);
        }
        let mut local = idx.local_pack_bytes()?;
        if local <= budget {
            return Ok(0);
        }
        let recent = self.placed_since_commit.lock().clone();
        let mut chosen = Vec::new();
        for (id, name, size) in idx.evictable_packs(&names, EVICT_BATCH * 4)? {
            if local <= budget || chosen.len() >= EVICT_BATCH {
                break;
            }
            if recent.contains(&id) {
                continue;
            }
            idx.mark_evicted(id)?;
            local = local.saturating_sub(size);
            chosen.push((name, size));
        }
        if chosen.is_empty() {
            return Ok(0);
        }
        // The eviction is durable before the files go.
        idx.commit(true)?;
        let mut freed = 0;
        for (name, size) in chosen {
            let path = PackId(name).object_path();
            match self.local.delete(&path) {
                Ok(()) => freed += size,
                Err(e) => log::warn!("evicting {path} from the cache failed: {e}"),
            }
        }
        log::debug!("cache: evicted {freed} bytes");
        Ok(freed)
    }

    /// After a commit (under the index lock): placements are durable now.
    fn after_commit(&self, idx: &Index) {
        self.placed_since_commit.lock().clear();
        let refetched: Vec<[u8; 16]> = std::mem::take(&mut *self.refetched.lock());
        for name in &refetched {
            if let Err(e) = idx.mark_cached(name) {
                log::warn!("recording a cache refill failed: {e}");
            }
        }
        let names = self.names();
        if !names.is_empty() {
            if let Ok(b) = idx.unplaced_bytes(&names) {
                self.backlog.store(b, Ordering::Relaxed);
            }
            let budget = if self.clear_requested.swap(false, Ordering::SeqCst) {
                0
            } else {
                self.cache_budget()
            };
            if let Err(e) = self.evict(idx, budget) {
                log::warn!("cache eviction failed: {e:#}");
            }
        }
        self.kick();
    }
}

impl SyncHooks for SyncEngine {
    fn throttle_writes(&self, unindexed: &dyn Fn() -> u64) {
        if self.remotes.read().is_empty() {
            return;
        }
        let over = || self.backlog.load(Ordering::Relaxed) + unindexed() > self.cache_budget();
        if !over() {
            return;
        }
        if !self.throttling.swap(true, Ordering::Relaxed) {
            log::warn!(
                "upload backlog ({} bytes) exceeds the cache budget ({} bytes): slowing writers until uploads catch up",
                self.backlog(),
                self.cache_budget()
            );
        }
        while over() && !self.stop.load(Ordering::Relaxed) {
            self.sleep(Duration::from_millis(100));
        }
        if self.throttling.swap(false, Ordering::Relaxed) {
            log::info!("upload backlog within the cache budget again: writers run at full speed");
        }
    }

    fn committed(&self, index: &Index) {
        self.after_commit(index);
    }
}

impl RemoteFetch for SyncEngine {
    fn uploads(&self) -> bool {
        !self.remotes().is_empty()
    }

    fn fetch_range(&self, path: &str, offset: u64, len: u64) -> Result<bytes::Bytes, StoreError> {
        // A concurrent refill may have brought the pack back already.
        if let Ok(b) = self.local.read_range(path, offset, len) {
            return Ok(b);
        }
        let mut last_err = None;
        for r in self.remotes() {
            match r.store.read_range(path, offset, len) {
                Ok(bytes) => {
                    // A random reader's segment: that range only (a cold
                    // 4 KiB read transfers ≤ 128 KiB); whole chunks and
                    // windows (sequential readers) bring the pack back.
                    if len > REFILL_MIN_READ {
                        self.refill_in_background(path);
                    }
                    return Ok(bytes);
                }
                Err(e) => {
                    log::warn!("backend {}: cannot read {path}: {e}", r.cfg.name);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(StoreError::Short {
            path: path.to_string(),
            got: 0,
            want: len as usize,
        }))
    }

    fn fetch_authentic(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        accept: &mut dyn FnMut(&[u8]) -> bool,
    ) -> bool {
        for r in self.remotes() {
            match r.store.read_range(path, offset, len) {
                Ok(bytes) => {
                    if accept(&bytes) {
                        // Replaces a damaged local copy with an authentic one.
                        self.refill_in_background(path);
                        return true;
                    }
                    log::warn!(
                        "backend {}: {path} holds a damaged copy (a chunk failed authentication)",
                        r.cfg.name
                    );
                }
                Err(e) => log::warn!("backend {}: cannot read {path}: {e}", r.cfg.name),
            }
        }
        false
    }
}

impl SyncEngine {
    /// Downloads a whole pack back into the local cache, once, in the
    /// background (at most [`MAX_REFILLS`] at a time; a read that finds the
    /// limit reached just reads remotely again).
    fn refill_in_background(&self, path: &str) {
        let Some(check) = self.pack_check.get().cloned() else {
            return;
        };
        if self.refill_refused.lock().contains(path) {
            return;
        }
        {
            let mut f = self.fetching.lock();
            if f.contains(path) || f.len() >= MAX_REFILLS {
                return;
            }
            f.insert(path.to_string());
        }
        let index = self.index.lock().clone();
        let remotes = self.remotes();
        let local = self.local.clone();
        let owned = path.to_string();
        let refetched = self.refetched.clone();
        let fetching = self.fetching.clone();
        let refused = self.refill_refused.clone();
        let spawned = std::thread::Builder::new()
            .name("tresor-refill".into())
            .spawn(move || {
                let path = owned;
                // The size the index recorded for this pack caps the
                // download (looked up here, not by the reader that may
                // hold the index lock).
                let mut max = crate::chunk::pack::MAX_PACK_LEN;
                if let (Some(access), Some(name)) = (index, pack_name_of(&path)) {
                    access.with_index(&mut |idx| {
                        if let Ok(Some(size)) = idx.pack_size_by_name(&name) {
                            max = size;
                        }
                    });
                }
                let mut authentic = false;
                for r in remotes {
                    // Only a copy that authenticates in full (trailer bound
                    // to this pack's name, every chunk) enters the cache: a
                    // damaged or swapped object stays remote, where each
                    // read still fails or succeeds chunk by chunk.
                    let fetched = r
                        .store
                        .read_all(&path, max)
                        .map(|b| (check(&path, &b), b));
                    match fetched {
                        Ok((Err(why), _)) => {
                            log::error!(
                                "backend {}: {path} is damaged ({why}); not put into the local cache; run `tresor verify --data`",
                                r.cfg.name
                            );
                        }
                        Ok((Ok(()), bytes)) => {
                            authentic = true;
                            match local.write(&path, bytes.clone()) {
                                Ok(()) => {
                                    log::debug!("cache: {path} back from backend {}", r.cfg.name);
                                    if let Some(name) = pack_name_of(&path) {
                                        refetched.lock().push(name);
                                    }
                                }
                                Err(e) => {
                                    log::warn!("cannot put {path} back into the local cache: {e}")
                                }
                            }
                            break;
                        }
                        Err(e) => log::warn!("backend {}: cannot fetch {path}: {e}", r.cfg.name),
                    }
                }
                if !authentic {
                    refused.lock().insert(path.clone());
                }
                fetching.lock().remove(&path);
            });
        if spawned.is_err() {
            self.fetching.lock().remove(path);
        }
    }
}

/// The pack name in an object path (`packs/ab/<32 hex>`).
fn pack_name_of(path: &str) -> Option<[u8; 16]> {
    let file = path.rsplit('/').next()?;
    let v = hex::decode(file.trim_end_matches(".pack")).ok()?;
    v.try_into().ok()
}

/// `status` facts for every backend, as JSON.
pub fn backend_status(
    engine: Option<&SyncEngine>,
    config: &VaultConfig,
    idx: &Index,
) -> Result<Value> {
    let mut out = Vec::new();
    for b in &config.backends {
        let t = idx.placement_totals(&b.id)?;
        let remote = engine.and_then(|e| e.remotes().into_iter().find(|r| r.cfg.name == b.name));
        let (last_error, uploaded_session) = match &remote {
            Some(r) => {
                let st = r.state.lock();
                (
                    st.last_error.as_ref().map(|(_, m)| m.clone()),
                    st.uploaded_bytes,
                )
            }
            None => (None, 0),
        };
        out.push(json!({
            "name": b.name,
            "service": b.service.as_str(),
            "preset": b.preset,
            "endpoint": b.endpoint,
            "bucket": b.bucket,
            "root": b.root,
            "location": b.location,
            "operator": b.operator,
            "operator_country": b.operator_country,
            "parent": b.parent,
            "parent_country": b.parent_country,
            "jurisdictions": b.jurisdictions(),
            "capabilities": b.capabilities,
            "capabilities_summary": crate::remote::capabilities::summary(&b.capabilities),
            // Whether the provider refuses a second lease (conditional create).
            "lease_enforced": lease_enforced(b),
            "objects": t.placed_packs,
            "bytes_stored": t.placed_bytes,
            "packs_pending": t.packs.saturating_sub(t.placed_packs),
            "bytes_pending": t.bytes.saturating_sub(t.placed_bytes),
            "uploaded_this_mount": uploaded_session,
            "last_error": last_error,
            // Seconds until the next attempt after an error (null: not waiting).
            "retry_in_s": remote.as_ref().and_then(|r| r.retry_at()).map(|t| {
                t.saturating_duration_since(Instant::now()).as_secs_f64()
            }),
            "snapshot_generation": engine.and_then(|e| e.backend_generation(&b.id)),
            // The last check of the root after a snapshot round (null: not
            // checked yet; `remote/integrity.rs`).
            "integrity": engine.and_then(|e| e.integrity_of(&b.id)),
            // S3 Object Lock: until when each kept state is protected.
            "object_lock": engine.map(|e| e.lock_status(&b.id)),
        }));
    }
    let violations = config.policy.violations(&config.backends);
    let names: Vec<String> = config.backends.iter().map(|b| b.id.clone()).collect();
    let unplaced = idx.unplaced_bytes(&names)?;
    Ok(json!({
        "backends": out,
        "index_generation": idx.meta_u64(crate::remote::snapshot::META_GENERATION)?.unwrap_or(0),
        "lease_lost": engine.and_then(|e| e.lease_lost()),
        "policy": {
            "rules": config.policy.describe(),
            "violations": violations,
            "compliant": violations.is_empty(),
            "bytes_below_required_copies": unplaced,
        },
        "cache": cache_status(engine, config, idx)?,
    }))
}

/// `cache show` facts.
pub fn cache_status(
    engine: Option<&SyncEngine>,
    config: &VaultConfig,
    idx: &Index,
) -> Result<Value> {
    let local = idx.local_pack_bytes()?;
    let names: Vec<String> = config.backends.iter().map(|b| b.id.clone()).collect();
    let pinned = if names.is_empty() {
        local
    } else {
        idx.unplaced_bytes(&names)?
    };
    let budget = engine
        .map(|e| e.cache_budget())
        .unwrap_or(config.cache.size);
    Ok(json!({
        "budget_bytes": budget,
        "local_bytes": local,
        "not_yet_uploaded_bytes": pinned,
        "evictable_bytes": local.saturating_sub(pinned),
        "remote_backends": names.len(),
    }))
}

/// `where PATH` facts: which backends hold the data under an inode.
pub fn where_status(config: &VaultConfig, idx: &Index, path: &[u8]) -> Result<Value> {
    let ino = idx.resolve(path)?.with_context(|| {
        format!(
            "{} does not exist in the vault",
            String::from_utf8_lossy(path)
        )
    })?;
    let per_pack = idx.bytes_per_pack_under(ino)?;
    let total: u64 = per_pack.iter().map(|p| p.1).sum();
    let mut local_bytes = 0;
    for (pack, bytes) in &per_pack {
        if !idx.is_evicted(*pack)? {
            local_bytes += bytes;
        }
    }
    let mut backends = Vec::new();
    for b in &config.backends {
        let mut placed = 0;
        for (pack, bytes) in &per_pack {
            if idx.is_placed(*pack, &b.id)? {
                placed += bytes;
            }
        }
        let pending_pct = if total == 0 {
            0.0
        } else {
            100.0 * (total - placed) as f64 / total as f64
        };
        backends.push(json!({
            "name": b.name,
            "location": b.location,
            "operator": b.operator,
            "operator_country": b.operator_country,
            "parent": b.parent,
            "parent_country": b.parent_country,
            "jurisdictions": b.jurisdictions(),
            "bytes": placed,
            "pending_bytes": total - placed,
            "pending_percent": (pending_pct * 10.0).round() / 10.0,
        }));
    }
    Ok(json!({
        "path": String::from_utf8_lossy(path),
        "data_bytes": total,
        "packs": per_pack.len(),
        "local_cache_bytes": local_bytes,
        "backends": backends,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jitter never takes a wait past the documented maximum, and the
    /// waits do reach the upper half of it.
    #[test]
    fn retry_waits_stay_within_the_documented_maximum() {
        for _ in 0..20 {
            let waits: Vec<Duration> = new_backoff().take(40).collect();
            assert!(waits.iter().all(|d| *d <= MAX_RETRY_DELAY), "{waits:?}");
            assert!(waits[0] >= Duration::from_millis(100), "{waits:?}");
            assert!(waits[39] >= MAX_RETRY_DELAY / 2, "{waits:?}");
        }
    }
}
