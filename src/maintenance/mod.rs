//! Tools that check or rewrite a vault as a whole: `gc` (reclaim dead
//! packs, repack), `fsck` (index and store consistency, repair) and
//! `verify` (every pack on every location against the index). They work on
//! an unlocked vault, mounted (through the daemon) or not (`offline.rs`).

pub mod fsck;
pub mod gc;
pub mod offline;
pub mod verify;
