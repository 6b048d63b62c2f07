//! tresor: an encrypted, deduplicating FUSE filesystem that keeps only
//! ciphertext in the stores you choose. See README.md and docs/.
//!
//! The module tree follows the data flow (docs/ARCHITECTURE.md draws it):
//!
//! ```text
//! cli ──► mount ──► fs ──► index
//!  │        │        └───► chunk ─► store (packs, local objects)
//!  │        ├──► remote (backends, sync, cache, snapshots, lease)
//!  └──► maintenance (gc, fsck, verify)      vault (keys, config) below all
//! ```
//!
//! Allowed imports point down: `cli` → `mount` → {`maintenance`, `remote`}
//! → `fs` → {`index`, `store`} → {`chunk`, `vault`}; `vault::config`,
//! `error`, `logging` and `progress` are leaves. `tests/layout.rs` checks that no
//! module imports from `cli` and that the layers have no cycles.

pub mod chunk;
pub mod cli;
pub mod error;
pub mod fs;
pub mod index;
pub mod logging;
pub mod maintenance;
pub mod mount;
pub mod progress;
pub mod remote;
pub mod store;
pub mod vault;
