//! Packs: the only kind of data object a backend ever stores. Sealed chunks
//! are appended back to back (~16 MiB per pack, so small files never become
//! one object each) and closed with a sealed trailer listing every chunk, so
//! the index can be rebuilt from packs alone.
//!
//! ```text
//! pack object     = chunk region (data_len bytes) ‖ sealed trailer ‖ footer
//! chunk region    = sealed chunks ‖ random padding up to a size class (v2)
//! sealed trailer  = nonce:[24] ‖ AEAD(trailer) ‖ tag:[16]        (trailer_len bytes)
//! trailer         = data_len:u64le ‖ count:u32le ‖ count × entry ‖ zeros
//!                   (zeros up to seal::padded_len(12 + 48·count))
//! entry           = chunk id:[32] ‖ offset:u64le ‖ sealed_len:u32le ‖ plain_len:u32le
//! footer          = trailer_len:u32le ‖ "TPK" ‖ version:u8            (8 bytes)
//! AAD             = "tresor pack trailer" ‖ pack id:[16] ‖ footer
//! trailer key     = blake3::derive_key("tresor v1 pack trailer seal", Subkeys::pack)
//! ```
//! Invariants checked by `read_trailer`: the AEAD verifies under this pack's
//! id (a pack stored under another pack's name fails), the entries tile the
//! chunk region from offset 0 without gaps (up to its end in version 1, up
//! to the padding in version 2), and `data_len` equals the region's actual
//! length (no truncation, no inserted or appended bytes).
//!
//! The trailer is padded (Padmé) so its length only roughly reveals how many
//! chunks a pack holds; exact chunk lengths and offsets are inside the AEAD.
//! Pack ids are random, not derived from content, so names reveal nothing.

use std::ops::Range;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use rayon::prelude::*;

use super::seal::{padded_len, ChunkId};
use crate::vault::keys::SecretKey;

/// Target size of a pack: the largest size class. The pack assembler
/// closes a pack before a chunk would take the whole object past it, and
/// a pack closed that way is padded to exactly this size.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
/// The sizes a pack object that goes to a backend has (FORMAT.md §6):
/// 1, 2, 4, 8 and 16 MiB. A pack of another size (closed small by an fsync
/// or the commit timer) stays local until the sync engine coalesces it.
pub const SIZE_CLASSES: [u64; 5] = [1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20];
/// Version 2: the trailer may be padded beyond Padmé (to a size class).
pub const PACK_FORMAT_VERSION: u8 = 2;
/// Version 1: the trailer is exactly Padmé-padded (still read).
const PACK_FORMAT_V1: u8 = 1;

/// Is `len` one of [`SIZE_CLASSES`]?
pub fn is_size_class(len: u64) -> bool {
    SIZE_CLASSES.contains(&len)
}

/// The smallest size class an object of `len` bytes fits in, if any.
pub fn size_class_for(len: u64) -> Option<u64> {
    SIZE_CLASSES.iter().copied().find(|&c| c >= len)
}

/// Object length of a pack with `data_len` bytes of chunks and `count`
/// entries, unpadded (the trailer Padmé-padded only).
pub fn object_len(data_len: usize, count: usize) -> usize {
    data_len + NONCE_LEN + padded_len(TRAILER_HEADER_LEN + count * ENTRY_LEN) + TAG_LEN + FOOTER_LEN
}
/// The most a pack object can be: a chunk region under 16 MiB plus one
/// sealed chunk (≤ 4.2 MiB), a trailer of at most one 48-byte entry per
/// 553-byte minimal sealed chunk (< 2 MiB padded) and the footer, < 23 MiB.
/// Reads of whole packs whose size the index does not know are capped here
/// (`Store::read_all`), so a hostile object cannot exhaust memory.
pub const MAX_PACK_LEN: u64 = 32 * 1024 * 1024;
pub const FOOTER_LEN: usize = 8;

const FOOTER_MAGIC: &[u8; 3] = b"TPK";
const TRAILER_KEY_CONTEXT: &str = "tresor v1 pack trailer seal";
const AAD_LABEL: &[u8] = b"tresor pack trailer";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const ENTRY_LEN: usize = 32 + 8 + 4 + 4;
const TRAILER_HEADER_LEN: usize = 8 + 4;

/// Random 16-byte pack name. Random rather than keyed: it must only be
/// unique, and a random name cannot leak anything about the content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub fn random() -> PackId {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        PackId(b)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<PackId> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(PackId(b))
    }

    /// `packs/<first 2 hex>/<32 hex>.pack`: 256 shards keep directory sizes
    /// sane on the fs backend and spread S3 key prefixes.
    pub fn object_path(&self) -> String {
        let h = self.to_hex();
        format!("packs/{}/{}.pack", &h[..2], h)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Byte offset of the sealed chunk within the pack object.
    pub offset: u64,
    pub sealed_len: u32,
    pub plain_len: u32,
}

impl PackEntry {
    /// Byte range of the sealed chunk within the pack object (for ranged GETs).
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + u64::from(self.sealed_len)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// AEAD failure; deliberately says nothing more.
    #[error("pack trailer failed authentication: the pack was modified, truncated, or stored under another pack's name; run `tresor verify`")]
    Authentication,
    #[error("pack is malformed ({0}); run `tresor verify`")]
    Malformed(String),
    #[error("pack has format version {0}, which this tresor does not understand; upgrade tresor")]
    UnsupportedVersion(u8),
    /// The footer's version byte is one this tresor never wrote and the
    /// trailer authenticates as the current version: damage, not a format.
    #[error("pack {pack} is damaged: {what}; run `tresor verify`")]
    Damaged { pack: String, what: String },
}

/// Accumulates sealed chunks in memory; `finish` appends the sealed trailer.
pub struct PackBuilder {
    pack_id: PackId,
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new(pack_id: PackId) -> Self {
        PackBuilder {
            pack_id,
            data: Vec::with_capacity(PACK_TARGET + PACK_TARGET / 4),
            entries: Vec::new(),
        }
    }

    pub fn pack_id(&self) -> PackId {
        self.pack_id
    }

    /// Appends a sealed chunk; the returned entry's offset is final (the
    /// trailer goes after all chunks). Panics if `sealed` exceeds 4 GiB.
    pub fn push(&mut self, id: ChunkId, sealed: &[u8], plain_len: u32) -> PackEntry {
        let entry = PackEntry {
            id,
            offset: self.data.len() as u64,
            sealed_len: u32::try_from(sealed.len()).expect("sealed chunk larger than 4 GiB"),
            plain_len,
        };
        self.data.extend_from_slice(sealed);
        self.entries.push(entry);
        entry
    }

    /// Bytes of chunk data so far (compare with `PACK_TARGET`).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// The chunk bytes so far, laid out exactly as in the finished object, so
    /// a reader can serve `entry.range()` of an unfinished pack from memory.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The object's length if a chunk of `sealed_len` bytes were pushed
    /// now and the pack finished unpadded.
    pub fn len_with(&self, sealed_len: usize) -> usize {
        object_len(self.data.len() + sealed_len, self.entries.len() + 1)
    }

    /// The object's length if finished now, unpadded.
    pub fn object_len(&self) -> usize {
        object_len(self.data.len(), self.entries.len())
    }

    /// Full object: chunks ‖ sealed trailer ‖ footer. `key` is `Subkeys::pack`.
    pub fn finish(self, key: &SecretKey) -> Vec<u8> {
        let len = self.object_len();
        self.finish_to(key, len)
    }

    /// Like [`finish`](Self::finish), with random bytes after the last
    /// chunk so the object is exactly `total` bytes (a size class). The
    /// padding is outside the trailer, whose length is in the clear footer:
    /// inside it, the footer would give away where the chunks end. Random,
    /// not zeros, for the same reason. Panics if `total` is below the
    /// unpadded length.
    pub fn finish_to(self, key: &SecretKey, total: usize) -> Vec<u8> {
        let unpadded = self.object_len();
        assert!(
            total >= unpadded,
            "pack of {unpadded} bytes padded to {total}"
        );
        let PackBuilder {
            pack_id,
            mut data,
            entries,
        } = self;
        let chunks_end = data.len();
        data.resize(chunks_end + (total - unpadded), 0);
        OsRng.fill_bytes(&mut data[chunks_end..]);
        // The region: chunks and padding; the entries say where chunks end.
        let data_len = data.len() as u64;
        let trailer_plain = padded_len(TRAILER_HEADER_LEN + entries.len() * ENTRY_LEN);
        let sealed_len = NONCE_LEN + trailer_plain + TAG_LEN;
        let footer = footer(u32::try_from(sealed_len).expect("trailer larger than 4 GiB"));

        data.reserve(sealed_len + FOOTER_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        data.extend_from_slice(&nonce);
        let start = data.len();
        data.extend_from_slice(&data_len.to_le_bytes());
        data.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in &entries {
            data.extend_from_slice(&e.id.0);
            data.extend_from_slice(&e.offset.to_le_bytes());
            data.extend_from_slice(&e.sealed_len.to_le_bytes());
            data.extend_from_slice(&e.plain_len.to_le_bytes());
        }
        data.resize(start + trailer_plain, 0);
        let tag = trailer_cipher(key)
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aad(pack_id, &footer),
                &mut data[start..],
            )
            .expect("XChaCha20-Poly1305 accepts any length below 256 GiB");
        data.extend_from_slice(&tag);
        data.extend_from_slice(&footer);
        data
    }
}

fn footer(trailer_len: u32) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[..4].copy_from_slice(&trailer_len.to_le_bytes());
    f[4..7].copy_from_slice(FOOTER_MAGIC);
    f[7] = PACK_FORMAT_VERSION;
    f
}

fn aad(pack_id: PackId, footer: &[u8; FOOTER_LEN]) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_LABEL.len() + 16 + FOOTER_LEN);
    a.extend_from_slice(AAD_LABEL);
    a.extend_from_slice(&pack_id.0);
    a.extend_from_slice(footer);
    a
}

/// The pack subkey is only ever used to derive this key (and future
/// pack-related keys), never directly by a primitive.
fn trailer_cipher(pack_key: &SecretKey) -> XChaCha20Poly1305 {
    let mut hasher = blake3::Hasher::new_derive_key(TRAILER_KEY_CONTEXT);
    hasher.update(pack_key.as_bytes());
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hasher.finalize_xof().fill(&mut k[..]);
    XChaCha20Poly1305::new((&*k).into())
}

/// Length of the sealed trailer, from the last `FOOTER_LEN` bytes of a pack.
/// With it a reader can fetch just the tail (`trailer_len + FOOTER_LEN`
/// bytes) and call `read_trailer_tail`.
pub fn parse_footer(footer: &[u8]) -> Result<u32, PackError> {
    if footer.len() != FOOTER_LEN || &footer[4..7] != FOOTER_MAGIC {
        return Err(PackError::Malformed(
            "no pack footer (truncated or not a pack)".into(),
        ));
    }
    if footer[7] != PACK_FORMAT_VERSION && footer[7] != PACK_FORMAT_V1 {
        return Err(PackError::UnsupportedVersion(footer[7]));
    }
    Ok(footer_len_field(footer))
}

fn footer_len_field(footer: &[u8]) -> u32 {
    u32::from_le_bytes(footer[..4].try_into().expect("4 bytes"))
}

/// A footer with the right magic but a version other than this tresor's:
/// a newer pack format, or a damaged last byte. The trailer tells them apart:
/// if it authenticates with the version byte read as the current one, only
/// that byte is damaged. Version 0 was never written, so it is damage too;
/// only a higher version that does not authenticate asks for an upgrade.
fn classify_version(pack_id: PackId, object_len: u64, tail: &[u8], key: &SecretKey) -> PackError {
    let (sealed, footer) = tail.split_at(tail.len() - FOOTER_LEN);
    let version = footer[7];
    let trailer_len = footer_len_field(footer) as usize;
    let authentic_as = [PACK_FORMAT_VERSION, PACK_FORMAT_V1]
        .into_iter()
        .find(|&v| {
            let mut repaired: [u8; FOOTER_LEN] = footer.try_into().expect("FOOTER_LEN bytes");
            repaired[7] = v;
            sealed.len() >= trailer_len
                && trailer_len >= NONCE_LEN + TAG_LEN
                && open_trailer(
                    pack_id,
                    &sealed[sealed.len() - trailer_len..],
                    &repaired,
                    key,
                )
                .is_ok()
        });
    let damaged = |what: String| PackError::Damaged {
        pack: pack_id.to_hex(),
        what,
    };
    if let Some(v) = authentic_as {
        damaged(format!(
            "the footer's version byte (the object's last byte, at offset {}) reads {version}, \
             but the trailer authenticates as version {v}",
            object_len - 1
        ))
    } else if version < PACK_FORMAT_VERSION {
        damaged(format!(
            "the footer's version byte reads {version}, which no tresor ever wrote, \
             and the trailer does not authenticate"
        ))
    } else {
        PackError::UnsupportedVersion(version)
    }
}

/// Decrypts a sealed trailer (nonce ‖ ciphertext ‖ tag) under `footer`.
fn open_trailer(
    pack_id: PackId,
    sealed: &[u8],
    footer: &[u8; FOOTER_LEN],
    key: &SecretKey,
) -> Result<Vec<u8>, PackError> {
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plain = ct.to_vec();
    trailer_cipher(key)
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &aad(pack_id, footer),
            &mut plain,
            tag.into(),
        )
        .map_err(|_| PackError::Authentication)?;
    Ok(plain)
}

/// Parses the trailer of a complete pack object, authenticated with AAD
/// binding the pack id and format version.
pub fn read_trailer(
    pack_id: PackId,
    object: &[u8],
    key: &SecretKey,
) -> Result<Vec<PackEntry>, PackError> {
    if object.len() < FOOTER_LEN {
        return Err(PackError::Malformed(format!(
            "{} bytes is shorter than a footer",
            object.len()
        )));
    }
    let trailer_len = match parse_footer(&object[object.len() - FOOTER_LEN..]) {
        Err(PackError::UnsupportedVersion(_)) => {
            return Err(classify_version(pack_id, object.len() as u64, object, key))
        }
        r => r? as usize,
    };
    let tail_len = trailer_len
        .checked_add(FOOTER_LEN)
        .filter(|&t| t <= object.len())
        .ok_or_else(|| {
            PackError::Malformed("trailer longer than the object (truncated?)".into())
        })?;
    read_trailer_tail(
        pack_id,
        object.len() as u64,
        &object[object.len() - tail_len..],
        key,
    )
}

/// Like `read_trailer`, given only the object's total length and its last
/// `trailer_len + FOOTER_LEN` bytes (sealed trailer ‖ footer).
pub fn read_trailer_tail(
    pack_id: PackId,
    object_len: u64,
    tail: &[u8],
    key: &SecretKey,
) -> Result<Vec<PackEntry>, PackError> {
    if tail.len() < FOOTER_LEN {
        return Err(PackError::Malformed("tail shorter than a footer".into()));
    }
    let (sealed, footer_bytes) = tail.split_at(tail.len() - FOOTER_LEN);
    let trailer_len = match parse_footer(footer_bytes) {
        Err(PackError::UnsupportedVersion(_)) => {
            return Err(classify_version(pack_id, object_len, tail, key))
        }
        r => r? as usize,
    };
    if sealed.len() != trailer_len || trailer_len < NONCE_LEN + TAG_LEN {
        return Err(PackError::Malformed(format!(
            "trailer is {} bytes, footer says {trailer_len}",
            sealed.len()
        )));
    }
    let footer: [u8; FOOTER_LEN] = footer_bytes.try_into().expect("FOOTER_LEN bytes");
    let plain = open_trailer(pack_id, sealed, &footer, key)?;

    // Authentic from here: inconsistencies are tresor bugs or the object was
    // cut/extended in its chunk region (which the AEAD does not cover).
    let malformed = |m: &str| PackError::Malformed(m.to_string());
    if plain.len() < TRAILER_HEADER_LEN {
        return Err(malformed("trailer shorter than its header"));
    }
    let data_len = u64::from_le_bytes(plain[..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(plain[8..12].try_into().expect("4 bytes")) as usize;
    // Version 1: the entries cover the region; version 2: they may end
    // before it (padding to a size class follows the last chunk).
    let v1 = footer[7] == PACK_FORMAT_V1;
    let used = count
        .checked_mul(ENTRY_LEN)
        .and_then(|n| n.checked_add(TRAILER_HEADER_LEN))
        .filter(|&n| padded_len(n) == plain.len())
        .ok_or_else(|| malformed("entry count disagrees with trailer length"))?;
    if plain[used..].iter().any(|&b| b != 0) {
        return Err(malformed("non-zero trailer padding"));
    }
    let actual = object_len.checked_sub((trailer_len + FOOTER_LEN) as u64);
    if actual != Some(data_len) {
        return Err(PackError::Malformed(format!(
            "chunk region is {actual:?} bytes, trailer says {data_len} (truncated or extended)"
        )));
    }
    let mut entries = Vec::with_capacity(count);
    let mut next = 0u64;
    for e in plain[TRAILER_HEADER_LEN..used].chunks_exact(ENTRY_LEN) {
        let entry = PackEntry {
            id: ChunkId(e[..32].try_into().expect("32 bytes")),
            offset: u64::from_le_bytes(e[32..40].try_into().expect("8 bytes")),
            sealed_len: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
            plain_len: u32::from_le_bytes(e[44..48].try_into().expect("4 bytes")),
        };
        if entry.offset != next {
            return Err(malformed("entries do not tile the chunk region"));
        }
        next += u64::from(entry.sealed_len);
        entries.push(entry);
    }
    if next > data_len || (v1 && next != data_len) {
        return Err(malformed("entries do not cover the chunk region"));
    }
    Ok(entries)
}

/// Authenticates a whole pack object on its own (no index): the trailer
/// must open under the name in `path` and every chunk it lists must open.
/// Used before a refill puts a downloaded pack into the local cache.
pub fn check_pack_object(
    path: &str,
    object: &[u8],
    pack_key: &SecretKey,
    sealer: &super::seal::ChunkSealer,
) -> Result<(), String> {
    let name = path
        .rsplit('/')
        .next()
        .and_then(|f| PackId::from_hex(f.trim_end_matches(".pack")))
        .ok_or_else(|| format!("{path} is not a pack object name"))?;
    let entries = read_trailer(name, object, pack_key).map_err(|e| e.to_string())?;
    let bad = entries
        .par_iter()
        .filter(|e| {
            let r = e.range();
            match object.get(r.start as usize..r.end as usize) {
                Some(sealed) => sealer.open(&e.id, sealed).is_err(),
                None => true,
            }
        })
        .count();
    if bad > 0 {
        return Err(format!(
            "{bad} of {} chunk(s) fail authentication",
            entries.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::seal::ChunkSealer;
    use crate::vault::keys::MasterKey;

    struct Fixture {
        pack_key: SecretKey,
        sealer: ChunkSealer,
    }

    fn fixture() -> Fixture {
        let sk = MasterKey::for_tests(11).subkeys();
        Fixture {
            sealer: ChunkSealer::new(&sk),
            pack_key: sk.pack,
        }
    }

    /// A pack of `n` small chunks; returns the builder's entries and the object.
    fn build(f: &Fixture, id: PackId, n: usize) -> (Vec<PackEntry>, Vec<u8>, Vec<Vec<u8>>) {
        let mut b = PackBuilder::new(id);
        assert!(b.is_empty());
        let plains: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("chunk number {i}").repeat(i + 1).into_bytes())
            .collect();
        for p in &plains {
            let cid = f.sealer.chunk_id(p);
            let e = b.push(cid, &f.sealer.seal(&cid, p), p.len() as u32);
            // Serving an unfinished pack from memory works.
            assert_eq!(
                f.sealer
                    .open(
                        &cid,
                        &b.bytes()[e.offset as usize..][..e.sealed_len as usize]
                    )
                    .unwrap(),
                *p
            );
        }
        let entries = b.entries().to_vec();
        assert_eq!(b.len(), b.bytes().len());
        (entries, b.finish(&f.pack_key), plains)
    }

    #[test]
    fn pack_id_naming() {
        let id = PackId([0xab; 16]);
        assert_eq!(
            id.object_path(),
            format!("packs/ab/{}.pack", "ab".repeat(16))
        );
        assert_eq!(PackId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(PackId::from_hex("abc"), None);
        assert_ne!(PackId::random(), PackId::random());
    }

    #[test]
    fn trailer_round_trip_and_chunks_readable() {
        let f = fixture();
        let id = PackId::random();
        let (entries, object, plains) = build(&f, id, 20);
        let read = read_trailer(id, &object, &f.pack_key).unwrap();
        assert_eq!(read, entries);
        for (e, p) in read.iter().zip(&plains) {
            let r = e.range();
            assert_eq!(
                f.sealer
                    .open(&e.id, &object[r.start as usize..r.end as usize])
                    .unwrap(),
                *p
            );
            assert_eq!(e.plain_len as usize, p.len());
        }
        // Tail-only reading agrees.
        let tl = parse_footer(&object[object.len() - FOOTER_LEN..]).unwrap() as usize;
        let tail = &object[object.len() - tl - FOOTER_LEN..];
        assert_eq!(
            read_trailer_tail(id, object.len() as u64, tail, &f.pack_key).unwrap(),
            entries
        );
    }

    #[test]
    fn empty_pack_round_trips() {
        let f = fixture();
        let id = PackId::random();
        let object = PackBuilder::new(id).finish(&f.pack_key);
        assert!(read_trailer(id, &object, &f.pack_key).unwrap().is_empty());
    }

    #[test]
    fn trailer_length_hides_exact_count() {
        let f = fixture();
        let (_, a, _) = build(&f, PackId::random(), 3);
        let (_, b, _) = build(&f, PackId::random(), 4);
        let tl = |o: &[u8]| parse_footer(&o[o.len() - FOOTER_LEN..]).unwrap();
        assert_eq!(tl(&a), tl(&b), "3 and 4 entries both pad to the minimum");
    }

    #[test]
    fn truncated_pack_fails() {
        let f = fixture();
        let id = PackId::random();
        let (_, object, _) = build(&f, id, 5);
        for cut in [
            1,
            FOOTER_LEN,
            FOOTER_LEN + 1,
            100,
            object.len() - 1,
            object.len(),
        ] {
            let r = read_trailer(id, &object[..object.len() - cut], &f.pack_key);
            assert!(r.is_err(), "truncated by {cut}");
        }
        // Cut from the front (chunk region shorter, trailer intact).
        assert!(matches!(
            read_trailer(id, &object[1..], &f.pack_key),
            Err(PackError::Malformed(_))
        ));
        let mut longer = vec![0u8];
        longer.extend_from_slice(&object);
        assert!(matches!(
            read_trailer(id, &longer, &f.pack_key),
            Err(PackError::Malformed(_))
        ));
    }

    #[test]
    fn flipped_bit_in_trailer_or_footer_fails() {
        let f = fixture();
        let id = PackId::random();
        let (_, object, _) = build(&f, id, 5);
        let tl = parse_footer(&object[object.len() - FOOTER_LEN..]).unwrap() as usize;
        let trailer_start = object.len() - FOOTER_LEN - tl;
        for pos in [
            trailer_start,
            trailer_start + 30,
            object.len() - FOOTER_LEN - 1,
            object.len() - FOOTER_LEN,
        ] {
            let mut t = object.clone();
            t[pos] ^= 0x80;
            assert!(read_trailer(id, &t, &f.pack_key).is_err(), "pos {pos}");
        }
    }

    /// A damaged last byte (the footer's version) is reported as damage
    /// naming the pack, never as a format version to upgrade for; only a
    /// higher version whose trailer does not authenticate as this one asks
    /// for an upgrade.
    #[test]
    fn damaged_version_byte_is_damage_and_newer_version_asks_for_upgrade() {
        let f = fixture();
        let id = PackId::random();
        let (_, object, _) = build(&f, id, 5);
        let last = object.len() - 1;
        for version in [0u8, 3, 0xfe, PACK_FORMAT_VERSION ^ 0xff] {
            let mut t = object.clone();
            t[last] = version;
            let tail_len =
                parse_footer(&object[last + 1 - FOOTER_LEN..]).unwrap() as usize + FOOTER_LEN;
            for r in [
                read_trailer(id, &t, &f.pack_key),
                read_trailer_tail(id, t.len() as u64, &t[t.len() - tail_len..], &f.pack_key),
            ] {
                let e = r.expect_err("damaged footer accepted");
                assert!(
                    matches!(&e, PackError::Damaged { pack, .. } if *pack == id.to_hex()),
                    "version byte {version}: {e}"
                );
                let msg = e.to_string();
                assert!(
                    msg.contains("damaged") && msg.contains(&id.to_hex()),
                    "{msg}"
                );
                assert!(!msg.contains("upgrade"), "{msg}");
            }
        }
        // A genuinely newer pack: its trailer is sealed under version 3.
        let mut newer = object.clone();
        let tl = parse_footer(&object[last + 1 - FOOTER_LEN..]).unwrap() as usize;
        let start = object.len() - FOOTER_LEN - tl;
        let old_footer: [u8; FOOTER_LEN] = object[last + 1 - FOOTER_LEN..].try_into().unwrap();
        let mut plain = open_trailer(
            id,
            &object[start..last + 1 - FOOTER_LEN],
            &old_footer,
            &f.pack_key,
        )
        .unwrap();
        let mut footer = old_footer;
        footer[7] = 3;
        let nonce = &object[start..start + NONCE_LEN];
        let tag = trailer_cipher(&f.pack_key)
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad(id, &footer), &mut plain)
            .unwrap();
        newer[start + NONCE_LEN..start + NONCE_LEN + plain.len()].copy_from_slice(&plain);
        newer[start + NONCE_LEN + plain.len()..last + 1 - FOOTER_LEN].copy_from_slice(&tag);
        newer[last + 1 - FOOTER_LEN..].copy_from_slice(&footer);
        let e = read_trailer(id, &newer, &f.pack_key).expect_err("newer pack accepted");
        assert!(matches!(e, PackError::UnsupportedVersion(3)), "{e}");
        assert!(e.to_string().contains("upgrade tresor"), "{e}");
    }

    /// A pack padded to a size class reads back the same; its length is
    /// the class exactly; the padding is authenticated.
    #[test]
    fn pack_padded_to_a_size_class() {
        let f = fixture();
        let id = PackId::random();
        let mut b = PackBuilder::new(id);
        let p = b"some chunk".repeat(1000);
        let cid = f.sealer.chunk_id(&p);
        let sealed = f.sealer.seal(&cid, &p);
        assert_eq!(b.len_with(sealed.len()), object_len(sealed.len(), 1));
        b.push(cid, &sealed, p.len() as u32);
        let entries = b.entries().to_vec();
        let class = size_class_for(b.object_len() as u64).unwrap();
        assert_eq!(class, 1 << 20);
        let object = b.finish_to(&f.pack_key, class as usize);
        assert_eq!(object.len() as u64, class);
        assert!(is_size_class(object.len() as u64));
        assert_eq!(read_trailer(id, &object, &f.pack_key).unwrap(), entries);
        // The footer does not tell where the chunks end: the trailer is as
        // long as an unpadded one's; the padding is random.
        let tl = parse_footer(&object[object.len() - FOOTER_LEN..]).unwrap() as usize;
        assert_eq!(tl + FOOTER_LEN, object_len(0, 1));
        let end = entries[0].range().end as usize;
        let pad = &object[end..object.len() - tl - FOOTER_LEN];
        assert!(pad.len() > 900_000 && pad.iter().filter(|&&b| b == 0).count() < pad.len() / 128);
        // Truncated or extended: the region length is in the trailer.
        assert!(read_trailer(id, &object[1..], &f.pack_key).is_err());
        let mut longer = vec![0u8];
        longer.extend_from_slice(&object);
        assert!(read_trailer(id, &longer, &f.pack_key).is_err());
        assert_eq!(size_class_for((16 << 20) + 1), None);
    }

    /// Packs written before version 2 (trailer exactly Padmé-padded,
    /// footer version 1) still read.
    #[test]
    fn version_1_packs_still_read() {
        let f = fixture();
        let id = PackId::random();
        let (entries, mut object, _) = build(&f, id, 5);
        let last = object.len() - 1;
        let tl = parse_footer(&object[last + 1 - FOOTER_LEN..]).unwrap() as usize;
        let start = object.len() - FOOTER_LEN - tl;
        let old_footer: [u8; FOOTER_LEN] = object[last + 1 - FOOTER_LEN..].try_into().unwrap();
        let mut plain = open_trailer(
            id,
            &object[start..last + 1 - FOOTER_LEN],
            &old_footer,
            &f.pack_key,
        )
        .unwrap();
        let mut footer = old_footer;
        footer[7] = PACK_FORMAT_V1;
        let nonce = object[start..start + NONCE_LEN].to_vec();
        let tag = trailer_cipher(&f.pack_key)
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad(id, &footer), &mut plain)
            .unwrap();
        object[start + NONCE_LEN..start + NONCE_LEN + plain.len()].copy_from_slice(&plain);
        object[start + NONCE_LEN + plain.len()..last + 1 - FOOTER_LEN].copy_from_slice(&tag);
        object[last + 1 - FOOTER_LEN..].copy_from_slice(&footer);
        assert_eq!(read_trailer(id, &object, &f.pack_key).unwrap(), entries);
    }

    #[test]
    fn renamed_pack_and_wrong_key_fail() {
        let f = fixture();
        let (a, b) = (PackId::random(), PackId::random());
        let (_, object, _) = build(&f, a, 5);
        assert!(matches!(
            read_trailer(b, &object, &f.pack_key),
            Err(PackError::Authentication)
        ));
        let other = MasterKey::for_tests(12).subkeys().pack;
        assert!(matches!(
            read_trailer(a, &object, &other),
            Err(PackError::Authentication)
        ));
    }
}
