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
use crate::store::Store;

/// What [`delete_collected`] removed from every backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteDeletion {
    pub packs: u64,
    pub bytes: u64,
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
pub fn delete_collected(
    index: &dyn IndexAccess,
    backends: &[(String, &Store)],
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
        for (name, store) in backends {
            match store.delete(&path) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    log::warn!("gc: backend {name}: cannot delete {path}: {e}");
                    ok = false;
                    first_error.get_or_insert(DeletionError::Remote {
                        backend: name.clone(),
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
