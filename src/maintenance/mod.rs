//! Tools that check, rewrite or bring back a vault as a whole: `gc`
//! (reclaim dead packs, repack), `fsck` (index and store consistency,
//! repair), `verify` (every pack on every location against the index),
//! `restore` (a new vault directory from the backends' key file and index
//! snapshot) and `overlay` (the journal, copies and verification behind
//! encrypting a folder in place). `gc`, `fsck` and `verify` work on an
//! unlocked vault, mounted (through the daemon) or not (`offline.rs`). The
//! commands in `cli/` open the vault, mount (this layer cannot) and print.

pub mod fsck;
pub mod gc;
pub mod handover;
pub mod offline;
pub mod overlay;
pub mod restore;
pub mod verify;
