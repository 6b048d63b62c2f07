//! A vault opened by a command while it is not mounted (`gc`, `sync`,
//! `where`, `cache`, `backend remove`): the index behind a mutex, the pack
//! store and the sync engine, with the vault lock held so no mount starts
//! meanwhile. It offers the same [`IndexAccess`] as the mounted core, so gc,
//! sync and index snapshots run one code path, mounted or not.

use std::sync::Arc;

use anyhow::Result;
use parking_lot::{Mutex, MutexGuard};

use crate::chunk::seal::ChunkSealer;
use crate::fs::{FsResult, IndexAccess, SyncHooks};
use crate::index::Index;
use crate::remote::backend::VaultConfig;
use crate::remote::sync::SyncEngine;
use crate::store::packstore::PackStore;
use crate::store::Store;
use crate::vault::{self, UnlockedVault, VaultLock, VaultPaths};

/// Whether an offline command talks to the configured backends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backends {
    /// Local only: the engine is built without backends (status queries).
    Ignore,
    /// The configured backends: evicted packs are read from them, and
    /// `sync` uploads to them.
    Use,
}

pub struct OfflineVault {
    index: Mutex<Index>,
    packs: PackStore,
    engine: Arc<SyncEngine>,
    has_backends: bool,
    _lock: VaultLock,
}

impl OfflineVault {
    /// Takes the vault lock (fails if mounted) and opens the index, the
    /// local store and the engine.
    pub fn open(
        paths: &VaultPaths,
        unlocked: &UnlockedVault,
        backends: Backends,
    ) -> Result<Arc<OfflineVault>> {
        let lock = vault::lock_vault(paths)?;
        let index = vault::open_index(paths, &unlocked.subkeys.index)?;
        let mut config = VaultConfig::load(&paths.root)?;
        if backends == Backends::Ignore {
            config.backends.clear();
        }
        let has_backends = !config.backends.is_empty();
        let local = Arc::new(Store::open_local(&paths.store())?);
        let sealer = Arc::new(ChunkSealer::new(&unlocked.subkeys));
        let packs = PackStore::new(local.clone(), sealer, unlocked.subkeys.pack.clone());
        let engine = SyncEngine::open(paths, &config, local, unlocked, false)?;
        if has_backends {
            packs.set_remote(engine.clone());
        }
        Ok(Arc::new(OfflineVault {
            index: Mutex::new(index),
            packs,
            engine,
            has_backends,
            _lock: lock,
        }))
    }

    pub fn engine(&self) -> &Arc<SyncEngine> {
        &self.engine
    }

    pub fn has_backends(&self) -> bool {
        self.has_backends
    }

    /// The index, for queries (changes join the batch [`Self::commit`] ends).
    pub fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock()
    }

    /// Commits durably, as the mounted core's commit does.
    pub fn commit(&self) -> FsResult<()> {
        self.locked_commit(&mut |_| {})
    }

    /// Commits, stops the engine and the pack writers and closes the index.
    pub fn close(self: Arc<Self>) -> Result<()> {
        let r = self.commit();
        self.engine.stop();
        self.packs.shutdown();
        r?;
        Ok(())
    }
}

impl IndexAccess for OfflineVault {
    fn with_index(&self, f: &mut dyn FnMut(&Index)) {
        f(&self.index.lock())
    }

    fn locked_commit(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()> {
        let idx = self.index.lock();
        f(&idx);
        self.packs.seal_and_wait(&idx)?;
        idx.commit(true)?;
        self.engine.committed(&idx);
        Ok(())
    }

    fn with_checkpoint(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()> {
        let idx = self.index.lock();
        self.packs.seal_and_wait(&idx)?;
        idx.checkpointed(|| f(&idx))?;
        self.engine.committed(&idx);
        Ok(())
    }

    fn pack_store(&self) -> &PackStore {
        &self.packs
    }
}
