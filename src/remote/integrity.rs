//! Is a backend's storage root whole, and this vault's alone?
//!
//! One check, used by `verify`, `snapshots`, `status` and by `sync` after it
//! published a snapshot (issue 13: another vault's sync had deleted this
//! vault's index-snapshot blocks, and `verify` exited 0, `status` showed
//! nothing, `snapshots` printed INVALID with exit 0, and `sync` claimed
//! success while a restore failed on a 404). From one listing of `index/`,
//! the key file and the newest manifest that authenticates:
//! - **foreign**: `keys/tresor.key` is another vault's (or not a key file);
//! - **missing blocks**: blocks the newest authentic manifest lists that
//!   the listing lacks (a restore from this backend would fail);
//! - **unreadable manifests**: manifests that do not authenticate under
//!   this vault's key (another vault's, or damaged); those newer than the
//!   newest authentic one hide the real newest state;
//! - **no key file** while snapshots are there (a new machine could not
//!   restore from this backend).
//!
//! Packs are `verify`'s business (it compares every placement with a
//! listing of `packs/`); this module reads no pack.

use std::collections::HashSet;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::remote::snapshot::{self, SnapshotCrypto};
use crate::store::Store;

/// Where the key file goes on every backend (useless without a passphrase;
/// needed to restore on a new machine).
pub const REMOTE_KEY_PATH: &str = "keys/tresor.key";

/// Refuses a storage root that holds another vault's key file: two vaults
/// on one root would overwrite each other's key file and collect each
/// other's index snapshots as garbage (seen: 1,622 snapshot blocks → 7, and
/// a restore that brought back the other vault). A root without a key
/// file, or with this vault's, is fine.
pub fn check_key_owner(store: &Store, own: &[u8; 16]) -> Result<()> {
    match key_owner(store, own)? {
        None => Ok(()),
        Some(why) => Err(crate::error::foreign(why)),
    }
}

/// `Some(why)` when the root's key file is not this vault's.
fn key_owner(store: &Store, own: &[u8; 16]) -> Result<Option<String>> {
    if store.size_of(REMOTE_KEY_PATH)?.is_none() {
        return Ok(None);
    }
    let bytes = store.read_all(REMOTE_KEY_PATH, crate::vault::keys::MAX_KEYFILE_LEN as u64)?;
    let theirs = match crate::vault::keys::KeyFile::from_bytes(&bytes) {
        Ok(k) => k.vault_id(),
        Err(e) => {
            return Ok(Some(format!(
                "{REMOTE_KEY_PATH} there is not a tresor key file ({e}); \
                 this storage root is used by something else: choose an empty one"
            )))
        }
    };
    Ok((&theirs != own).then(|| {
        format!(
            "this storage root holds another vault (vault id {}, this one is {}); \
             two vaults cannot share one root: give this backend its own bucket or --root",
            hex::encode(theirs),
            hex::encode(own)
        )
    }))
}

/// What [`check_root`] found on one backend.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootReport {
    pub backend: String,
    /// The newest generation whose manifest authenticates.
    pub newest: Option<u64>,
    /// Blocks that manifest lists (distinct).
    pub blocks: usize,
    /// Of those, the ones the backend does not hold.
    pub missing_blocks: usize,
    /// Manifests that do not authenticate under this vault's key.
    pub unreadable_manifests: Vec<u64>,
    /// The key file is another vault's (or not a key file): why.
    pub foreign: Option<String>,
    /// Snapshots are there, the key file is not.
    pub key_file_missing: bool,
    /// The root could not be checked (unreachable, …).
    pub error: Option<String>,
    /// When the check ran (Unix seconds).
    pub checked_s: u64,
}

impl RootReport {
    /// What this vault published here is not whole: a restore from this
    /// backend would fail (blocks or the key file missing).
    pub fn incomplete(&self) -> bool {
        self.missing_blocks > 0 || self.key_file_missing
    }

    /// Manifests newer than the newest authentic one that do not
    /// authenticate: they hide or fake this vault's newest state.
    pub fn unreadable_newer(&self) -> usize {
        self.unreadable_manifests
            .iter()
            .filter(|g| self.newest.is_none_or(|n| **g > n))
            .count()
    }

    /// Incomplete, or a newer manifest that does not authenticate. Older
    /// unreadable manifests are only mentioned: the snapshot rounds delete
    /// them, and a restore takes the newest authentic one.
    pub fn damaged(&self) -> bool {
        self.incomplete() || self.unreadable_newer() > 0
    }

    pub fn is_foreign(&self) -> bool {
        self.foreign.is_some()
    }

    /// One line per problem, for humans; empty when the root is whole.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.foreign {
            out.push(format!("FOREIGN VAULT: {f}"));
        }
        if self.missing_blocks > 0 {
            out.push(format!(
                "INCOMPLETE: index snapshot generation {} lacks {} of its {} blocks \
                 (a restore from this backend fails); `tresor sync` uploads them again",
                self.newest.unwrap_or(0),
                self.missing_blocks,
                self.blocks
            ));
        }
        if !self.unreadable_manifests.is_empty() {
            let newer = self.unreadable_newer();
            out.push(format!(
                "{} manifest(s) do not authenticate (another vault's, or damaged): generation(s) {}{}",
                self.unreadable_manifests.len(),
                self.unreadable_manifests
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if newer > 0 {
                    format!("; {newer} newer than the newest authentic one")
                } else {
                    String::new()
                }
            ));
        }
        if self.key_file_missing {
            out.push(format!(
                "{REMOTE_KEY_PATH} is missing: a new machine cannot restore from this backend; \
                 `tresor sync` uploads it again"
            ));
        }
        if let Some(e) = &self.error {
            out.push(format!("not checked: {e}"));
        }
        out
    }
}

/// Checks one backend's root (see the module doc). Never fails: a root
/// that cannot be read is reported in `error`.
pub fn check_root(name: &str, store: &Store, crypto: &SnapshotCrypto) -> RootReport {
    let mut r = RootReport {
        backend: name.to_string(),
        checked_s: snapshot::now_s(),
        ..RootReport::default()
    };
    if let Err(e) = fill(&mut r, store, crypto) {
        r.error = Some(format!("{e:#}"));
    }
    r
}

fn fill(r: &mut RootReport, store: &Store, crypto: &SnapshotCrypto) -> Result<()> {
    r.foreign = key_owner(store, &crypto.vault_id())?;
    let listing = snapshot::list_remote(store)?;
    let have: HashSet<snapshot::BlockId> = listing.blocks.into_iter().collect();
    for g in &listing.generations {
        let obj = match store.read_all(
            &snapshot::manifest_path(*g),
            snapshot::MAX_MANIFEST_OBJECT_LEN,
        ) {
            Ok(o) => o,
            // Pruned between the listing and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match crypto.open_manifest(*g, &obj) {
            Ok(m) if r.newest.is_none() => {
                r.newest = Some(*g);
                let wanted: HashSet<_> = m.blocks.iter().collect();
                r.blocks = wanted.len();
                r.missing_blocks = wanted.iter().filter(|id| !have.contains(**id)).count();
            }
            Ok(_) => {}
            Err(_) => r.unreadable_manifests.push(*g),
        }
    }
    r.key_file_missing = !listing.generations.is_empty()
        && r.foreign.is_none()
        && store.size_of(REMOTE_KEY_PATH)?.is_none();
    Ok(())
}

/// The error a command raises for `reports` with problems: foreign roots
/// first (their exit code says another vault is there), then damage
/// ([`RootReport::damaged`], or only [`RootReport::incomplete`] when
/// `published_only`: what `sync` answers for). `None` when every checked
/// root is whole.
pub fn error_of(reports: &[RootReport], published_only: bool) -> Option<anyhow::Error> {
    let lines = |f: &dyn Fn(&RootReport) -> bool| -> Vec<String> {
        reports
            .iter()
            .filter(|r| f(r))
            .flat_map(|r| {
                r.problems()
                    .into_iter()
                    .map(move |p| format!("backend {}: {p}", r.backend))
            })
            .collect()
    };
    let foreign = lines(&|r: &RootReport| r.is_foreign());
    if !foreign.is_empty() {
        return Some(crate::error::foreign(foreign.join("; ")));
    }
    let damaged = lines(&|r: &RootReport| {
        if published_only {
            r.incomplete()
        } else {
            r.damaged()
        }
    });
    if !damaged.is_empty() {
        return Some(crate::error::Error::Damaged(damaged.join("; ")).into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_decide_the_kind_of_error() {
        let whole = RootReport {
            backend: "a".into(),
            newest: Some(5),
            blocks: 10,
            unreadable_manifests: vec![2],
            ..RootReport::default()
        };
        assert!(
            !whole.damaged(),
            "an older unreadable manifest is only mentioned"
        );
        assert!(error_of(std::slice::from_ref(&whole), false).is_none());
        let hidden = RootReport {
            unreadable_manifests: vec![9],
            ..whole.clone()
        };
        assert!(hidden.damaged() && !hidden.incomplete());
        assert!(error_of(std::slice::from_ref(&hidden), true).is_none());
        let e = error_of(&[whole.clone(), hidden], false).unwrap();
        assert_eq!(crate::error::kind_of(&e), Some(crate::error::Kind::Damaged));
        let holed = RootReport {
            missing_blocks: 3,
            ..whole.clone()
        };
        let e = error_of(std::slice::from_ref(&holed), true).unwrap();
        assert!(format!("{e}").contains("lacks 3 of its 10 blocks"), "{e}");
        let foreign = RootReport {
            foreign: Some("another vault".into()),
            ..holed
        };
        let e = error_of(&[whole, foreign], true).unwrap();
        assert_eq!(crate::error::kind_of(&e), Some(crate::error::Kind::Foreign));
    }
}
