//! The chunk pipeline: how file bytes become ciphertext objects, and back.
//!
//! ```text
//! plaintext ─ chunker (keyed FastCDC, 256 KiB..4 MiB) ─▶ chunks
//!   chunk ─ seal::ChunkSealer::chunk_id (keyed BLAKE3) ─▶ ChunkId ─▶ dedup lookup (index)
//!   chunk ─ segmented: ChunkSealer::seal: 64 KiB segments, each zstd-1 if it
//!           shrinks, padded and sealed with XChaCha20-Poly1305 (AAD binds id,
//!           index, last flag), behind a sealed segment table ─▶ sealed chunk (v2)
//!   sealed chunks ─ pack::PackBuilder (~16 MiB) ─ finish: sealed trailer ─▶ pack object
//! ```
//! Reading reverses it: ranged read of a pack → `ChunkSealer::open`, which
//! authenticates, decompresses, and recomputes the keyed hash against the id
//! (v1 chunks too); or, for random reads, `open_header` + `open_segment` of
//! just the segments needed.
//! Nothing here touches the index, disk or network: callers own I/O and
//! parallelism (`ChunkSealer` is `Send + Sync`). Byte layouts: `docs/FORMAT.md`.

pub mod chunker;
pub mod pack;
pub mod seal;
pub mod segmented;
