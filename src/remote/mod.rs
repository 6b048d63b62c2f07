//! The cloud half: backends built from presets and config, the placement
//! policy, the sync engine (uploads, cache eviction and refill, index
//! snapshots, the lease) and the snapshot format. Only ciphertext crosses
//! this module's boundary.

pub mod backend;
pub mod capabilities;
pub mod deletion;
pub mod integrity;
pub mod object_lock;
pub mod policy;
pub mod presets;
pub mod retention;
pub mod snapshot;
pub mod sync;
