//! Index snapshots, the lease, and the per-machine record of the newest
//! snapshot generation seen.
//!
//! **Why snapshots are blocks of the database file.** The index is a
//! SQLCipher database: every 4 KiB page is encrypted on its own with a fresh
//! IV when it is written, and pages nobody touched keep their bytes. After a
//! WAL checkpoint the main file is a complete, consistent database. A
//! snapshot therefore cuts that file into 16 KiB blocks, names each by a
//! keyed BLAKE3 hash of its bytes, uploads only the blocks a backend does
//! not hold yet, and finishes with a small *manifest* (generation, size, the
//! list of block ids). A change to one file touches a handful of pages — the
//! inode, its directory entry, its extents and chunk rows, page 1 — so a
//! snapshot after a small change costs a few blocks plus the manifest
//! (32 bytes per 16 KiB of index), never the whole index. This is s3ql's
//! scheme (it uploads changed 64 KiB blocks of its metadata database), with
//! the blocks sealed. 16 KiB, not 64: a one-file change dirties 6–9 pages
//! scattered over the file (inode, dirent, extent, two chunk rows, pack,
//! placement, meta, page 1); measured on a 5,000-file index, 64 KiB blocks
//! re-uploaded 28 % of it, 16 KiB blocks 10.7 %; on a 100,000-file index
//! (27.6 MB) a one-file change uploads 185 KB (0.7 %): 8 blocks and the
//! 54 KB manifest (the manifest is 0.2 % of the index).
//!
//! **Rollback.** Each manifest is sealed with AAD = vault id ‖ generation
//! and the generation is also its object name, so a renamed or edited
//! manifest fails authentication. Generations only grow: the index records
//! the one it was captured as (meta `snapshot_generation`), and every
//! machine records the highest it has seen for each vault outside the vault
//! directory (`$XDG_STATE_HOME/tresor/seen/<vault id>`), so a provider that
//! hides newer manifests and serves an older one is caught at `restore`,
//! even when the vault directory was deleted.
//!
//! **The lease** names the vault directory that may write the vault. It is
//! sealed, so only a holder of the passphrase can read who holds it (the
//! provider sees an opaque object being rewritten once a minute).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::index::SnapshotMark;
use crate::vault::keys::SecretKey;

/// Bytes of the index file per snapshot block.
pub const BLOCK_SIZE: usize = 16 * 1024;
pub use crate::vault::config::KEEP_GENERATIONS;
/// Where manifests live: `index/<generation as 16 hex digits>.snap`.
pub const MANIFEST_PREFIX: &str = "index/";
/// Where blocks live: `index/blocks/<block id hex>`.
pub const BLOCK_PREFIX: &str = "index/blocks/";
/// The lease object.
pub const LEASE_PATH: &str = "lease";
/// Meta key in the index: the generation this index was captured as.
pub const META_GENERATION: &str = "snapshot_generation";
/// The index's change counter (`Index::content_change_count`) at its last capture:
/// equal now means nothing a snapshot carries changed since.
pub const META_CHANGES: &str = "snapshot_changes";
/// Meta keys in the index: generation `G`'s [`SnapshotMark`]
/// (`snapshot_mark_generation/G`, `snapshot_mark_pack/G`), written in the
/// capture's own commit, so a snapshot's file holds its own mark.
const META_MARK_GENERATION: &str = "snapshot_mark_generation/";
const META_MARK_PACK: &str = "snapshot_mark_pack/";

/// Records what generation `generation` references (joins the open batch).
pub fn record_mark(
    idx: &crate::index::Index,
    generation: u64,
    mark: &SnapshotMark,
) -> Result<(), crate::index::IndexError> {
    if let (Some(g), Some(p)) = (mark.generation, mark.max_pack) {
        idx.set_meta_u64(&format!("{META_MARK_GENERATION}{generation}"), g)?;
        idx.set_meta_u64(&format!("{META_MARK_PACK}{generation}"), p)?;
    }
    Ok(())
}

/// What generation `generation` references. Without a recorded mark (a
/// snapshot of an older tresor, or of another vault directory) it is
/// assumed to hold every pack collected after it: the manifest's name is
/// at most the generation in its file.
pub fn mark_of(idx: &crate::index::Index, generation: u64) -> SnapshotMark {
    let g = idx
        .meta_u64(&format!("{META_MARK_GENERATION}{generation}"))
        .ok()
        .flatten();
    let p = idx
        .meta_u64(&format!("{META_MARK_PACK}{generation}"))
        .ok()
        .flatten();
    match (g, p) {
        (Some(g), Some(p)) => SnapshotMark {
            generation: Some(g),
            max_pack: Some(p),
        },
        _ => SnapshotMark {
            generation: Some(generation),
            max_pack: None,
        },
    }
}

const BLOCK_MAGIC: &[u8; 4] = b"TRSB";
const MANIFEST_MAGIC: &[u8; 4] = b"TRSM";
const LEASE_MAGIC: &[u8; 4] = b"TRSL";
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 4 + 1 + NONCE_LEN;

/// Size caps for objects read from a backend (a hostile provider must not
/// be able to exhaust memory with an oversized body; `Store::read_all`
/// stops reading past them). A sealed block is exactly header ‖ 16 KiB ‖ tag.
pub const MAX_BLOCK_OBJECT_LEN: u64 = (HEADER_LEN + BLOCK_SIZE + 16) as u64;
/// 32 bytes per 16 KiB block: 64 MiB lists two million blocks, a 32 GiB index.
pub const MAX_MANIFEST_OBJECT_LEN: u64 = 64 * 1024 * 1024;
/// A lease is a few short strings of JSON.
pub const MAX_LEASE_OBJECT_LEN: u64 = 64 * 1024;

const CONTEXT_BLOCK_ID: &str = "tresor v1 snapshot block-id";
const CONTEXT_SEAL: &str = "tresor v1 snapshot seal";

pub type BlockId = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} is not a tresor {kind} object (bad magic or version)")]
    Format { what: String, kind: &'static str },
    #[error("{what} failed authentication: modified, truncated, renamed or from another vault")]
    Auth { what: String },
    #[error("{what} is malformed after decryption")]
    Malformed { what: String },
}

/// Snapshot and lease sealing, keyed from the snapshot subkey.
pub struct SnapshotCrypto {
    id_key: Zeroizing<[u8; 32]>,
    aead: XChaCha20Poly1305,
    vault_id: [u8; 16],
}

/// One generation's manifest.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    pub generation: u64,
    pub created_s: u64,
    pub db_len: u64,
    pub blocks: Vec<BlockId>,
    /// The vault directory's instance id that wrote it.
    pub holder: String,
    pub hostname: String,
    /// Digest of the files, directories and their data at capture time
    /// (`Index::content_digest`; all zero in manifests written before it).
    pub content: Digest,
    /// The writer's lease epoch (0: written without an enforced lease).
    pub epoch: u64,
    /// The states this one descends from, newest first: `(generation,
    /// content digest)`, at most [`TRAIL_LEN`]. Hand-over pulls a newer
    /// generation only when the local state is in its trail.
    pub trail: Vec<(u64, Digest)>,
}

pub type Digest = [u8; 32];

/// Ancestors a manifest names (40 bytes each: 5 KiB at most). A machine
/// that missed more generations than this is told to restore instead.
pub const TRAIL_LEN: usize = 128;
/// Meta key in the index: this state's lineage, `(generation, content
/// digest)` of the generation it was captured or pulled as, then its trail.
pub const META_LINEAGE: &str = "snapshot_lineage";

/// `(generation, digest)` pairs as stored in the index meta table.
pub fn encode_trail(t: &[(u64, Digest)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * 40);
    for (g, d) in t.iter().take(TRAIL_LEN + 1) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(d);
    }
    out
}

pub fn decode_trail(b: &[u8]) -> Vec<(u64, Digest)> {
    b.chunks_exact(40)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().unwrap()),
                c[8..].try_into().unwrap(),
            )
        })
        .collect()
}

/// Who holds the vault open for writing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub hostname: String,
    pub vault_dir: String,
    pub pid: u32,
    pub acquired_s: u64,
    pub refreshed_s: u64,
    /// Random per mount: tells this mount's lease from any other's, even
    /// of a copied vault directory, and tells a retried conditional write
    /// that found its own first attempt (read back: our token) from a lost
    /// race. Empty in leases written before it.
    #[serde(default)]
    pub token: String,
    /// Raised at every take; manifests carry the writer's epoch.
    #[serde(default)]
    pub epoch: u64,
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn manifest_path(generation: u64) -> String {
    format!("{MANIFEST_PREFIX}{generation:016x}.snap")
}

/// The generation a manifest object name stands for.
pub fn generation_of(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    let hex = name.strip_suffix(".snap")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What `index/` on a backend holds: manifest generations (newest first)
/// and block ids, from one recursive listing.
pub struct RemoteIndex {
    pub generations: Vec<u64>,
    pub blocks: Vec<BlockId>,
}

pub fn list_remote(store: &crate::store::Store) -> Result<RemoteIndex, crate::store::StoreError> {
    let mut out = RemoteIndex {
        generations: Vec::new(),
        blocks: Vec::new(),
    };
    for p in store.list(MANIFEST_PREFIX)? {
        if p.starts_with(BLOCK_PREFIX) {
            out.blocks.extend(block_id_of(&p));
        } else {
            out.generations.extend(generation_of(&p));
        }
    }
    out.generations.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

pub fn block_path(id: &BlockId) -> String {
    format!("{BLOCK_PREFIX}{}", hex::encode(id))
}

pub fn block_id_of(path: &str) -> Option<BlockId> {
    let name = path.rsplit('/').next()?;
    let v = hex::decode(name).ok()?;
    v.try_into().ok()
}

impl SnapshotCrypto {
    pub fn new(snapshot_key: &SecretKey, vault_id: [u8; 16]) -> SnapshotCrypto {
        let k = snapshot_key.as_bytes();
        let id_key = Zeroizing::new(blake3::derive_key(CONTEXT_BLOCK_ID, k));
        let seal_key = Zeroizing::new(blake3::derive_key(CONTEXT_SEAL, k));
        SnapshotCrypto {
            id_key,
            aead: XChaCha20Poly1305::new(seal_key.as_ref().into()),
            vault_id,
        }
    }

    pub fn vault_id(&self) -> [u8; 16] {
        self.vault_id
    }

    pub fn block_id(&self, raw: &[u8]) -> BlockId {
        *blake3::keyed_hash(&self.id_key, raw).as_bytes()
    }

    fn aad(&self, magic: &[u8; 4], extra: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(4 + 1 + 16 + extra.len());
        aad.extend_from_slice(magic);
        aad.push(FORMAT_VERSION);
        aad.extend_from_slice(&self.vault_id);
        aad.extend_from_slice(extra);
        aad
    }

    fn seal(&self, magic: &[u8; 4], extra: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(magic, extra);
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for these lengths");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(magic);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    fn open(
        &self,
        magic: &[u8; 4],
        kind: &'static str,
        extra: &[u8],
        obj: &[u8],
        what: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SnapshotError> {
        if obj.len() < HEADER_LEN + 16 || &obj[..4] != magic || obj[4] != FORMAT_VERSION {
            return Err(SnapshotError::Format {
                what: what.to_string(),
                kind,
            });
        }
        let aad = self.aad(magic, extra);
        self.aead
            .decrypt(
                XNonce::from_slice(&obj[5..HEADER_LEN]),
                Payload {
                    msg: &obj[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SnapshotError::Auth {
                what: what.to_string(),
            })
    }

    pub fn seal_block(&self, id: &BlockId, raw: &[u8]) -> Vec<u8> {
        self.seal(BLOCK_MAGIC, id, raw)
    }

    /// Opens a block and checks that its bytes hash to its id.
    pub fn open_block(&self, id: &BlockId, obj: &[u8]) -> Result<Vec<u8>, SnapshotError> {
        let what = block_path(id);
        let raw = self.open(BLOCK_MAGIC, "snapshot block", id, obj, &what)?;
        if self.block_id(&raw) != *id {
            return Err(SnapshotError::Auth { what });
        }
        Ok(raw.to_vec())
    }

    pub fn seal_manifest(&self, m: &Manifest) -> Vec<u8> {
        let mut p = Vec::with_capacity(28 + m.blocks.len() * 32 + 64);
        p.extend_from_slice(&m.created_s.to_le_bytes());
        p.extend_from_slice(&m.db_len.to_le_bytes());
        p.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        p.extend_from_slice(&(m.blocks.len() as u32).to_le_bytes());
        for b in &m.blocks {
            p.extend_from_slice(b);
        }
        for s in [&m.holder, &m.hostname] {
            let b = s.as_bytes();
            let n = b.len().min(u16::MAX as usize);
            p.extend_from_slice(&(n as u16).to_le_bytes());
            p.extend_from_slice(&b[..n]);
        }
        // Appended in 0.x (issue 13); older readers stop before them.
        p.extend_from_slice(&m.content);
        p.extend_from_slice(&m.epoch.to_le_bytes());
        let n = m.trail.len().min(TRAIL_LEN);
        p.extend_from_slice(&(n as u16).to_le_bytes());
        p.extend_from_slice(&encode_trail(&m.trail[..n]));
        self.seal(MANIFEST_MAGIC, &m.generation.to_le_bytes(), &p)
    }

    /// Opens the manifest stored as `generation` (the name's generation is
    /// part of the AAD, so a manifest under another name does not open).
    pub fn open_manifest(&self, generation: u64, obj: &[u8]) -> Result<Manifest, SnapshotError> {
        let what = manifest_path(generation);
        let p = self.open(
            MANIFEST_MAGIC,
            "snapshot manifest",
            &generation.to_le_bytes(),
            obj,
            &what,
        )?;
        let bad = || SnapshotError::Malformed { what: what.clone() };
        let mut r = Reader { b: &p, at: 0 };
        let created_s = r.u64().ok_or_else(bad)?;
        let db_len = r.u64().ok_or_else(bad)?;
        let block_size = r.u32().ok_or_else(bad)?;
        let n = r.u32().ok_or_else(bad)? as usize;
        if block_size as usize != BLOCK_SIZE || db_len.div_ceil(BLOCK_SIZE as u64) != n as u64 {
            return Err(bad());
        }
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            blocks.push(r.take(32).ok_or_else(bad)?.try_into().unwrap());
        }
        let holder = r.string().ok_or_else(bad)?;
        let hostname = r.string().ok_or_else(bad)?;
        let (mut content, mut epoch, mut trail) = ([0u8; 32], 0, Vec::new());
        if r.at < r.b.len() {
            content = r.take(32).ok_or_else(bad)?.try_into().unwrap();
            epoch = r.u64().ok_or_else(bad)?;
            let n = u16::from_le_bytes(r.take(2).ok_or_else(bad)?.try_into().unwrap()) as usize;
            trail = decode_trail(r.take(n * 40).ok_or_else(bad)?);
        }
        Ok(Manifest {
            generation,
            created_s,
            db_len,
            blocks,
            holder,
            hostname,
            content,
            epoch,
            trail,
        })
    }

    pub fn seal_lease(&self, l: &Lease) -> Vec<u8> {
        let json = serde_json::to_vec(l).expect("a lease serialises");
        self.seal(LEASE_MAGIC, b"", &json)
    }

    pub fn open_lease(&self, obj: &[u8]) -> Result<Lease, SnapshotError> {
        let p = self.open(LEASE_MAGIC, "lease", b"", obj, LEASE_PATH)?;
        serde_json::from_slice(&p).map_err(|_| SnapshotError::Malformed {
            what: LEASE_PATH.into(),
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

/// The index file cut into blocks: ids of all, bytes of those `keep` wants.
pub struct FileBlocks {
    pub len: u64,
    pub ids: Vec<BlockId>,
    pub bytes: BTreeMap<BlockId, std::sync::Arc<Vec<u8>>>,
}

/// Reads the (checkpointed) index file and hashes it block by block,
/// keeping the bytes of blocks for which `keep` says yes.
pub fn read_blocks(
    path: &Path,
    crypto: &SnapshotCrypto,
    keep: &dyn Fn(&BlockId) -> bool,
) -> std::io::Result<FileBlocks> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut out = FileBlocks {
        len: 0,
        ids: Vec::new(),
        bytes: BTreeMap::new(),
    };
    let mut buf = vec![0u8; BLOCK_SIZE];
    loop {
        let mut filled = 0;
        while filled < BLOCK_SIZE {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let id = crypto.block_id(&buf[..filled]);
        if keep(&id) && !out.bytes.contains_key(&id) {
            out.bytes
                .insert(id, std::sync::Arc::new(buf[..filled].to_vec()));
        }
        out.ids.push(id);
        out.len += filled as u64;
        if filled < BLOCK_SIZE {
            break;
        }
    }
    Ok(out)
}

// ----- this machine's identity and memory -----

/// A random id for this vault directory (a restored copy elsewhere gets its
/// own): the lease holder and manifest writer.
pub fn instance_id(vault: &Path) -> Result<String> {
    let p = vault.join("instance-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim();
        if s.len() == 32 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Ok(s.to_string());
        }
    }
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let id = hex::encode(b);
    std::fs::write(&p, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(id)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Where this machine remembers the newest generation it has seen of each
/// vault: `$XDG_STATE_HOME/tresor/seen/` (`~/.local/state/tresor/seen/`).
/// `TRESOR_STATE_DIR` overrides it (tests).
fn seen_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TRESOR_STATE_DIR") {
        return Some(PathBuf::from(d).join("seen"));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("tresor/seen"))
}

/// The newest generation of `vault_id` this machine has seen, with when.
pub fn seen_generation(vault_id: &[u8; 16]) -> Option<(u64, u64)> {
    let p = seen_dir()?.join(hex::encode(vault_id));
    let s = std::fs::read_to_string(p).ok()?;
    let mut it = s.split_whitespace();
    let g = it.next()?.parse().ok()?;
    let t = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some((g, t))
}

/// Raises this machine's record for `vault_id` to `generation`.
pub fn record_seen(vault_id: &[u8; 16], generation: u64) {
    let Some(dir) = seen_dir() else { return };
    if seen_generation(vault_id).is_some_and(|(g, _)| g >= generation) {
        return;
    }
    let r = std::fs::create_dir_all(&dir).and_then(|_| {
        let p = dir.join(hex::encode(vault_id));
        let tmp = dir.join(format!(".{}.tmp", hex::encode(vault_id)));
        std::fs::write(&tmp, format!("{generation} {}\n", now_s()))?;
        std::fs::rename(&tmp, &p)
    });
    if let Err(e) = r {
        log::warn!(
            "cannot record snapshot generation {generation} in {}: {e}",
            dir.display()
        );
    }
}

/// "3 min ago" for messages.
pub fn ago(t: u64) -> String {
    let d = now_s().saturating_sub(t);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

/// UTC time as `2026-11-23 06:14:11 UTC`.
pub fn utc(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Refuses `found` if this machine has seen a newer generation, unless
/// `accept` (the user's explicit `--accept-rollback`).
pub fn check_rollback(vault_id: &[u8; 16], found: u64, accept: bool) -> Result<()> {
    if let Some((seen, when)) = seen_generation(vault_id) {
        if found < seen {
            if accept {
                log::warn!(
                    "accepting snapshot generation {found} although this machine saw generation {seen} ({}); --accept-rollback",
                    utc(when)
                );
                return Ok(());
            }
            return Err(crate::error::rollback(format!(
                "rollback refused: the newest index snapshot the backends offer is generation {found}, \
                 but this machine has seen generation {seen} of this vault ({}). \
                 A backend is serving an old index (replayed, or newer snapshots deleted). \
                 If you know why (for example you restored an older backup yourself), pass --accept-rollback",
                utc(when)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(fill: u8) -> SnapshotCrypto {
        let m = crate::vault::keys::MasterKey::for_tests(fill);
        SnapshotCrypto::new(&m.subkeys().snapshot, [7; 16])
    }

    fn manifest() -> Manifest {
        Manifest {
            generation: 42,
            created_s: 1_800_000_000,
            db_len: BLOCK_SIZE as u64 * 2 + 100,
            blocks: vec![[1; 32], [2; 32], [3; 32]],
            holder: "ab".repeat(16),
            hostname: "laptop".into(),
            content: [5; 32],
            epoch: 3,
            trail: vec![(41, [4; 32]), (40, [3; 32])],
        }
    }

    #[test]
    fn manifest_round_trips_and_binds_its_generation() {
        let c = crypto(1);
        let m = manifest();
        let obj = c.seal_manifest(&m);
        assert!(c.open_manifest(42, &obj).unwrap() == m);
        // Served under another generation's name: refused.
        assert!(matches!(
            c.open_manifest(43, &obj),
            Err(SnapshotError::Auth { .. })
        ));
        // Another vault's key: refused.
        assert!(crypto(2).open_manifest(42, &obj).is_err());
        // Any flipped byte, and truncation: refused.
        for i in [0, 4, 10, obj.len() / 2, obj.len() - 1] {
            let mut bad = obj.clone();
            bad[i] ^= 1;
            assert!(c.open_manifest(42, &bad).is_err(), "flip at {i}");
        }
        assert!(c.open_manifest(42, &obj[..obj.len() - 1]).is_err());
    }

    #[test]
    fn blocks_are_bound_to_their_ids() {
        let c = crypto(1);
        let raw = vec![9u8; 1000];
        let id = c.block_id(&raw);
        let obj = c.seal_block(&id, &raw);
        assert_eq!(c.open_block(&id, &obj).unwrap(), raw);
        let other = c.block_id(b"other");
        assert!(c.open_block(&other, &obj).is_err());
        // Keyed: another vault names the same bytes differently.
        assert_ne!(crypto(2).block_id(&raw), id);
    }

    #[test]
    fn lease_round_trips() {
        let c = crypto(1);
        let l = Lease {
            holder: "h".into(),
            hostname: "x".into(),
            vault_dir: "/v".into(),
            pid: 5,
            acquired_s: 1,
            refreshed_s: 2,
            token: "t".into(),
            epoch: 4,
        };
        assert_eq!(c.open_lease(&c.seal_lease(&l)).unwrap(), l);
        let mut bad = c.seal_lease(&l);
        bad[30] ^= 4;
        assert!(c.open_lease(&bad).is_err());
    }

    #[test]
    fn names_parse() {
        assert_eq!(generation_of(&manifest_path(0x1234)), Some(0x1234));
        assert_eq!(generation_of("index/blocks/ab"), None);
        let id = [0xab; 32];
        assert_eq!(block_id_of(&block_path(&id)), Some(id));
    }

    #[test]
    fn read_blocks_cuts_the_file() {
        let c = crypto(1);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut data = vec![1u8; BLOCK_SIZE * 2 + 10];
        data[BLOCK_SIZE] = 2;
        std::fs::write(&p, &data).unwrap();
        let fb = read_blocks(&p, &c, &|_| true).unwrap();
        assert_eq!(fb.len, data.len() as u64);
        assert_eq!(fb.ids.len(), 3);
        assert_eq!(fb.ids[0], c.block_id(&data[..BLOCK_SIZE]));
        assert_eq!(fb.bytes.len(), 3);
        let none = read_blocks(&p, &c, &|_| false).unwrap();
        assert!(none.bytes.is_empty());
    }

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_412_051), "2026-11-23 05:34:11 UTC");
    }
}
