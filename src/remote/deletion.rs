//! Remote deletion of collected packs: the one implementation, used by the
//! sync engine after every snapshot round and by `tresor gc` when mounted.
//!
//! gc marks a dead pack in `gc_dead` with the snapshot generation after
//! which no index snapshot references it. Its `packs/…` object leaves the
//! backends once no *kept* state references it: no snapshot generation
//! kept on any backend (or captured and still on its way there) and no
//! local index copy ([`SnapshotMark::needs`]; a copy pins remote objects
//! only, so an index put back from it reads them remotely). So every kept state stays
//! restorable, and a pack no kept state ever saw (written and deleted
//! between two snapshots) goes at the next round (`maintenance/gc.rs` has
//! the full argument).

use crate::chunk::pack::PackId;
use crate::fs::{read_index, IndexAccess};
use crate::index::{IndexError, SnapshotMark};
use crate::remote::sync::locks::Deleted;
use crate::store::Store;

/// What [`delete_collected`] removed from every backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteDeletion {
    pub packs: u64,
    pub bytes: u64,
    /// Objects a provider refused to delete (S3 Object Lock): they stay
    /// queued and are retried once their lock ended.
    pub protected: Vec<ProtectedObject>,
}

/// An object a backend would not delete, and until when (Unix s).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProtectedObject {
    pub backend: String,
    pub object: String,
    pub until: Option<u64>,
}

/// Somewhere a collected pack is deleted from.
pub trait DeletionTarget {
    fn name(&self) -> &str;
    fn delete_object(&self, path: &str) -> Deleted;
}

/// A bare store (no Object Lock): a plain delete.
impl DeletionTarget for (String, &Store) {
    fn name(&self) -> &str {
        &self.0
    }
    fn delete_object(&self, path: &str) -> Deleted {
        match self.1.delete(path) {
            Ok(()) => Deleted::Gone,
            Err(e) if e.is_not_found() => Deleted::Gone,
            Err(e) => Deleted::Failed(e.to_string()),
        }
    }
}

impl DeletionTarget for &crate::remote::sync::Remote {
    fn name(&self) -> &str {
        &self.cfg.name
    }
    fn delete_object(&self, path: &str) -> Deleted {
        crate::remote::sync::Remote::delete_object(self, path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("deleting collected packs failed on backend {backend}: {message} (the packs stay queued for deletion; it is retried after the next snapshot)")]
    Remote { backend: String, message: String },
}

/// Deletes the remote objects of collected packs that no kept state needs
/// any more from every backend, then forgets them (their local files went
/// when gc collected them).
///
/// `backends`: every configured backend as (name, store). `kept`: the
/// marks of every kept state — each snapshot generation on any backend or
/// pending upload, and each local index copy; the caller passes `None` when
/// it cannot know them all (a backend's snapshots are not listed yet), and
/// then nothing is deleted. An object already gone counts as deleted, so an
/// interrupted run is simply repeated; a row is dropped only once every
/// backend succeeded. The drops join the index's open batch; losing them in
/// a crash only repeats the (idempotent) deletion.
pub fn delete_collected<T: DeletionTarget>(
    index: &dyn IndexAccess,
    backends: &[T],
    kept: Option<&[SnapshotMark]>,
) -> Result<RemoteDeletion, DeletionError> {
    let Some(kept) = kept else {
        return Ok(RemoteDeletion::default());
    };
    if backends.is_empty() {
        return Ok(RemoteDeletion::default());
    }
    let rows = read_index(index, |idx| idx.gc_dead(u64::MAX))?;
    let mut done = RemoteDeletion::default();
    let mut first_error = None;
    for row in rows {
        if kept.iter().any(|m| m.needs(&row)) {
            continue;
        }
        let path = PackId(row.name).object_path();
        let mut ok = true;
        for b in backends {
            match b.delete_object(&path) {
                Deleted::Gone => {}
                Deleted::Protected(until) => {
                    ok = false;
                    done.protected.push(ProtectedObject {
                        backend: b.name().to_string(),
                        object: path.clone(),
                        until,
                    });
                }
                Deleted::Failed(e) => {
                    let name = b.name();
                    log::warn!("gc: backend {name}: cannot delete {path}: {e}");
                    ok = false;
                    first_error.get_or_insert(DeletionError::Remote {
                        backend: name.to_string(),
                        message: format!("{path}: {e}"),
                    });
                }
            }
        }
        if ok {
            read_index(index, |idx| idx.gc_drop_dead(row.pack))?;
            done.packs += 1;
            done.bytes += row.size;
        }
    }
    if let Some(last) = done.protected.iter().filter_map(|p| p.until).max() {
        log::warn!(
            "gc: {} collected pack objects are locked by their provider (S3 Object Lock) until {} at the latest; they stay queued",
            done.protected.len(),
            crate::remote::snapshot::utc(last)
        );
    }
    if done.packs > 0 {
        log::info!(
            "gc: {} collected packs ({} bytes) deleted from every backend",
            done.packs,
            done.bytes
        );
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
