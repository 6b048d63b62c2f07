//! Key store: the vault's master key, the per-purpose subkeys derived from it,
//! and the key file whose slots wrap the master key under a passphrase, a
//! recovery key, or the contents of a user-chosen key file.
//!
//! Why this shape:
//! - One random 32-byte master key per vault; every purpose (chunk ids, chunk
//!   sealing, chunker keying, index, snapshots, packs) gets its own subkey via
//!   `blake3::derive_key` with a distinct, hard-coded context string, so no key
//!   is ever used by two primitives (the gocryptfs 2017 audit finding).
//! - The master key never changes; passphrases live in slots that each wrap it
//!   with XChaCha20-Poly1305 under a key-encryption key (KEK). Changing a
//!   passphrase rewrites one slot, never the data.
//! - Passphrase KEKs come from Argon2id. Recovery-key and key-file KEKs come
//!   from BLAKE3 key derivation, because those secrets already carry >= 256
//!   bits of entropy and a slow KDF would add nothing.
//! - Each slot's AEAD binds (AAD) the file magic, format version, vault id and
//!   the slot's own kind, KDF parameters and salt, so a slot cannot be moved
//!   to another vault or have its parameters downgraded without failing.
//! - Secrets live in heap boxes that are zeroized on drop (moves do not leave
//!   copies on the stack) and implement neither `Debug` nor `Display`.
//!
//! The byte layout is in `docs/FORMAT.md` ("Key file"); the reasoning about
//! attackers is in `docs/SECURITY.md`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub const KEY_LEN: usize = 32;

/// 32 secret bytes, zeroized on drop. Boxed so that moving the key moves a
/// pointer, not the bytes. Deliberately no `Debug`/`Display`.
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Lower-case hex of the key in a zeroizing string, e.g. for SQLCipher's
    /// raw-key form `PRAGMA key = "x'<64 hex>'"`.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    fn zeroed() -> SecretKey {
        SecretKey(Box::new([0u8; KEY_LEN]))
    }

    fn random() -> SecretKey {
        let mut k = SecretKey::zeroed();
        OsRng.fill_bytes(&mut k.0[..]);
        k
    }

    /// `blake3::derive_key(context, material)` written straight into the box.
    fn derive(context: &str, material: &[&[u8]]) -> SecretKey {
        let mut hasher = blake3::Hasher::new_derive_key(context);
        for m in material {
            hasher.update(m);
        }
        let mut k = SecretKey::zeroed();
        hasher.finalize_xof().fill(&mut k.0[..]);
        // The hasher's buffer holds (part of) the secret material.
        hasher.zeroize();
        k
    }
}

// Cloning allocates a new box that is itself zeroized on drop.
impl Clone for SecretKey {
    fn clone(&self) -> Self {
        let mut k = SecretKey::zeroed();
        k.0.copy_from_slice(&self.0[..]);
        k
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

/// Subkey derivation contexts. Changing any string changes every derived key
/// and therefore breaks every existing vault: they are part of the format.
pub mod context {
    pub const CHUNK_ID: &str = "tresor v1 subkey chunk-id";
    pub const CHUNK_SEAL: &str = "tresor v1 subkey chunk-seal";
    pub const CHUNKER: &str = "tresor v1 subkey chunker";
    pub const INDEX: &str = "tresor v1 subkey index";
    pub const SNAPSHOT: &str = "tresor v1 subkey snapshot";
    pub const PACK: &str = "tresor v1 subkey pack";
    /// KEK of a recovery-key slot: material = salt ‖ 32 recovery-key bytes.
    pub const SLOT_RECOVERY: &str = "tresor v1 key-slot recovery-key kek";
    /// KEK of a key-file slot: material = salt ‖ key-file contents.
    pub const SLOT_KEYFILE: &str = "tresor v1 key-slot key-file kek";
    /// Checksum of a recovery key's display form.
    pub const RECOVERY_CHECKSUM: &str = "tresor v1 recovery-key checksum";
}

/// The vault's root secret. Never stored in the clear; only its subkeys are
/// handed to the rest of the crate.
pub struct MasterKey(SecretKey);

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey(SecretKey::random())
    }

    /// A fixed master key so tests in other modules are deterministic.
    #[cfg(test)]
    pub(crate) fn for_tests(fill: u8) -> MasterKey {
        MasterKey(SecretKey(Box::new([fill; KEY_LEN])))
    }

    pub fn subkeys(&self) -> Subkeys {
        let m: &[u8] = &self.0 .0[..];
        Subkeys {
            chunk_id: SecretKey::derive(context::CHUNK_ID, &[m]),
            chunk_seal: SecretKey::derive(context::CHUNK_SEAL, &[m]),
            chunker: SecretKey::derive(context::CHUNKER, &[m]),
            index: SecretKey::derive(context::INDEX, &[m]),
            snapshot: SecretKey::derive(context::SNAPSHOT, &[m]),
            pack: SecretKey::derive(context::PACK, &[m]),
        }
    }
}

/// One key per purpose; see `context` for the derivation strings.
pub struct Subkeys {
    /// Keyed BLAKE3 of chunk plaintext.
    pub chunk_id: SecretKey,
    /// XChaCha20-Poly1305 for chunks.
    pub chunk_seal: SecretKey,
    /// Derives the FastCDC gear table.
    pub chunker: SecretKey,
    /// SQLCipher key of the local index, used raw (`SecretKey::to_hex`).
    pub index: SecretKey,
    /// Index snapshots and the lease (further derived in `snapshot`).
    pub snapshot: SecretKey,
    /// Pack trailer sealing (further derived in `chunk::pack`).
    pub pack: SecretKey,
}

/// Argon2id cost parameters of a passphrase slot. Not secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// Upper bounds accepted from a key file. The key file is also stored at the
/// provider, so a hostile copy must not be able to make `unlock` (or a
/// `restore` on a new machine) allocate unbounded memory or spin for long:
/// per slot m ≤ 1 GiB, t ≤ 16, p ≤ 8 and m·t ≤ 4 GiB-passes, and all
/// Argon2id slots of one key file together ≤ 8 GiB-passes (about 40
/// interactive derivations; the old bounds allowed about an hour).
const MAX_M_COST_KIB: u32 = 1024 * 1024; // 1 GiB
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 8;
/// m·t of one slot, in KiB-passes.
pub const MAX_SLOT_WORK_KIB: u64 = 4 * 1024 * 1024;
/// Σ m·t over the Argon2id slots of one key file, in KiB-passes.
pub const MAX_TOTAL_WORK_KIB: u64 = 8 * 1024 * 1024;

impl KdfParams {
    /// 64 MiB, t = 3, p = 1. Measured on the 2-core dev box (release build,
    /// `argon2` 0.5.3, machine busy: load ≈ 5): 0.27–0.30 s per derivation
    /// (`tests::time_interactive_kdf`). argon2 0.5 computes lanes one after
    /// another, so p > 1 would cost time without adding memory hardness.
    pub fn interactive() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }

    /// 256 MiB, t = 4, p = 1 (`--kdf strong`): 5.3× the memory-time of
    /// `interactive`; every offline guess costs an attacker the same.
    pub fn strong() -> Self {
        KdfParams {
            m_cost_kib: 256 * 1024,
            t_cost: 4,
            p_cost: 1,
        }
    }

    /// The work one derivation costs, m·t in KiB-passes (what the limits cap).
    pub fn work_kib(&self) -> u64 {
        u64::from(self.m_cost_kib) * u64::from(self.t_cost)
    }

    fn argon2(&self) -> Result<Argon2<'static>, KeyError> {
        if self.m_cost_kib > MAX_M_COST_KIB
            || self.t_cost > MAX_T_COST
            || self.p_cost > MAX_P_COST
            || self.work_kib() > MAX_SLOT_WORK_KIB
        {
            return Err(KeyError::InvalidKdfParams(format!(
                "{self:?} exceeds the limits m ≤ {MAX_M_COST_KIB} KiB, t ≤ {MAX_T_COST}, \
                 p ≤ {MAX_P_COST}, m·t ≤ {MAX_SLOT_WORK_KIB} KiB"
            )));
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| KeyError::InvalidKdfParams(format!("{self:?}: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8; SALT_LEN]) -> Result<SecretKey, KeyError> {
        let mut kek = SecretKey::zeroed();
        self.argon2()?
            .hash_password_into(passphrase, salt, &mut kek.0[..])
            .map_err(|e| KeyError::InvalidKdfParams(format!("{self:?}: {e}")))?;
        Ok(kek)
    }
}

/// 32 random bytes the user writes down at `init`. Shown as 56 Crockford
/// base32 characters (key ‖ 3-byte checksum) in 14 groups of 4, so a typo is
/// caught before any slot is tried (undetected with probability 2^-24).
pub struct RecoveryKey(SecretKey);

const RECOVERY_CHECKSUM_LEN: usize = 3;
const RECOVERY_CHARS: usize = (KEY_LEN + RECOVERY_CHECKSUM_LEN) * 8 / 5; // 280 bits / 5 = 56
const RECOVERY_GROUP: usize = 4;
/// Crockford base32: no I, L, O, U, so the readable look-alikes can be mapped.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl RecoveryKey {
    fn generate() -> RecoveryKey {
        RecoveryKey(SecretKey::random())
    }

    fn checksum(key: &[u8; KEY_LEN]) -> [u8; RECOVERY_CHECKSUM_LEN] {
        let full = blake3::derive_key(context::RECOVERY_CHECKSUM, key);
        let mut c = [0u8; RECOVERY_CHECKSUM_LEN];
        c.copy_from_slice(&full[..RECOVERY_CHECKSUM_LEN]);
        c
    }

    /// The display form, in a string that is zeroized on drop (its
    /// capacity is reserved up front, so no reallocation leaves a copy).
    pub fn to_display_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN + RECOVERY_CHECKSUM_LEN]);
        raw[..KEY_LEN].copy_from_slice(self.0.as_bytes());
        raw[KEY_LEN..].copy_from_slice(&Self::checksum(self.0.as_bytes()));
        // 35 bytes = 280 bits = exactly 56 five-bit symbols, most significant first.
        let mut out = Zeroizing::new(String::with_capacity(
            RECOVERY_CHARS + RECOVERY_CHARS / RECOVERY_GROUP,
        ));
        let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
        for &b in raw.iter() {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                if n > 0 && n % RECOVERY_GROUP == 0 {
                    out.push('-');
                }
                out.push(CROCKFORD[((acc >> bits) & 31) as usize] as char);
                n += 1;
            }
        }
        acc.zeroize();
        out
    }

    /// Accepts any case, any mix of `-` and whitespace between characters, and
    /// the Crockford look-alikes (I, L → 1; O → 0).
    pub fn parse(s: &str) -> Result<RecoveryKey, KeyError> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN + RECOVERY_CHECKSUM_LEN]);
        let (mut acc, mut bits, mut n, mut out) = (0u32, 0u32, 0usize, 0usize);
        for c in s.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let c = match c.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            let v = CROCKFORD
                .iter()
                .position(|&a| a as char == c)
                .ok_or_else(|| {
                    KeyError::RecoveryKeyMalformed(format!(
                        "character {c:?} is not used in recovery keys"
                    ))
                })?;
            n += 1;
            if n > RECOVERY_CHARS {
                break;
            }
            acc = (acc << 5) | v as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                raw[out] = (acc >> bits) as u8;
                out += 1;
            }
        }
        acc.zeroize();
        if n != RECOVERY_CHARS {
            return Err(KeyError::RecoveryKeyMalformed(format!(
                "it has {n} characters, a recovery key has {RECOVERY_CHARS}"
            )));
        }
        let mut key = SecretKey::zeroed();
        key.0.copy_from_slice(&raw[..KEY_LEN]);
        if Self::checksum(key.as_bytes()) != raw[KEY_LEN..] {
            return Err(KeyError::RecoveryKeyChecksum);
        }
        Ok(RecoveryKey(key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong passphrase or recovery key: no key slot opens with it; check caps lock and typos, or unlock with your recovery key")]
    WrongPassphrase,
    #[error("the key file is damaged ({0}); restore it from a backend copy or a backup")]
    Corrupt(String),
    #[error("the key file has format version {0}, which this tresor does not understand; upgrade tresor")]
    UnsupportedVersion(u8),
    /// No intact slot opens with the secret, and these slots fail their
    /// checksum: the secret may well be right.
    #[error("key slot {} of {file} {} damaged (checksum mismatch), and no intact slot opens with this secret; \
             if the secret is right, restore the key file from a backend copy (`keys/tresor.key`) or a backup, \
             or unlock with another slot's secret and remove the damaged slot with `tresor key remove`",
            list_slots(slots), if slots.len() == 1 { "is" } else { "are" })]
    DamagedSlots { slots: Vec<usize>, file: String },
    #[error("key file I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a key file already exists at {0}; refusing to overwrite it because it may protect an existing vault")]
    AlreadyExists(PathBuf),
    #[error("refusing to remove the last key slot that is intact: the vault could never be unlocked again; add another slot first")]
    LastSlot,
    #[error("there is no key slot {index}: the key file has {count} slots")]
    NoSuchSlot { index: usize, count: usize },
    #[error("the key file already has the maximum of {0} slots; remove one first")]
    TooManySlots(usize),
    #[error("this is not a well-formed recovery key: {0}; a recovery key is 56 letters and digits in groups of 4")]
    RecoveryKeyMalformed(String),
    #[error("recovery key checksum mismatch: a character is mistyped; compare it with your written copy")]
    RecoveryKeyChecksum,
    #[error("invalid Argon2id parameters: {0}")]
    InvalidKdfParams(String),
    #[error(
        "key material too short: {0} bytes, at least 32 are needed; use a file of random bytes"
    )]
    KeyMaterialTooShort(usize),
}

fn list_slots(slots: &[usize]) -> String {
    let s: Vec<String> = slots.iter().map(usize::to_string).collect();
    s.join(", ")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Passphrase,
    RecoveryKey,
    KeyFile,
}

impl SlotKind {
    fn to_byte(self) -> u8 {
        match self {
            SlotKind::Passphrase => 1,
            SlotKind::RecoveryKey => 2,
            SlotKind::KeyFile => 3,
        }
    }

    fn from_byte(b: u8) -> Option<SlotKind> {
        match b {
            1 => Some(SlotKind::Passphrase),
            2 => Some(SlotKind::RecoveryKey),
            3 => Some(SlotKind::KeyFile),
            _ => None,
        }
    }
}

const MAGIC: &[u8; 8] = b"TRESORKF";
/// Version 2 = version 1 followed by one checksum per slot. Version 1 files
/// are read (without damage detection) and written back as version 2.
pub const KEYFILE_VERSION: u8 = 2;
const KEYFILE_VERSION_V1: u8 = 1;
/// The version byte inside every slot's AAD: the slot format is still the
/// one of version 1, so slots move between v1 and v2 files unchanged.
const SLOT_AAD_VERSION: u8 = 1;
/// Unkeyed BLAKE3 of header ‖ slot, truncated: tells accidental damage from
/// a wrong secret (the AEAD alone cannot). Not a defence against an
/// attacker, who can recompute it; the AEAD is.
const CHECKSUM_LEN: usize = 16;
const CHECKSUM_CONTEXT: &str = "tresor v2 key-slot checksum";
const VAULT_ID_LEN: usize = 16;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;
/// magic ‖ version ‖ vault id ‖ slot count
const HEADER_LEN: usize = 8 + 1 + VAULT_ID_LEN + 1;
/// Bytes of a slot covered by its AAD: kind ‖ m ‖ t ‖ p ‖ salt.
const SLOT_AAD_LEN: usize = 1 + 4 + 4 + 4 + SALT_LEN;
const SLOT_LEN: usize = SLOT_AAD_LEN + NONCE_LEN + WRAPPED_LEN; // 101
pub const MAX_SLOTS: usize = 32;
/// The longest key file there can be (a copy read from a backend is capped
/// at this, see `Store::read_all`).
pub const MAX_KEYFILE_LEN: usize = HEADER_LEN + MAX_SLOTS * SLOT_LEN;

#[derive(Clone)]
struct Slot {
    /// Set when the slot failed its checksum: its bytes as read and the
    /// stored checksum, written back unchanged so the damage stays visible
    /// until the slot is removed. A damaged slot is never tried.
    damaged: Option<Box<([u8; SLOT_LEN], [u8; CHECKSUM_LEN])>>,
    kind: SlotKind,
    /// All zero for recovery-key and key-file slots.
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    wrapped: [u8; WRAPPED_LEN],
}

/// Kind byte of a key-file slot whose KEK comes from Argon2id (written since
/// 2026-12); kind 3 is the older key-file slot with a BLAKE3 KEK, still
/// opened. See `docs/FORMAT.md` §1.
const KIND_KEYFILE_ARGON2: u8 = 4;

impl Slot {
    /// The kind byte on disk: a key-file slot with Argon2id parameters is
    /// kind 4, one without (BLAKE3 KEK) kind 3.
    fn kind_byte(&self) -> u8 {
        match self.kind {
            SlotKind::KeyFile if self.params != NO_KDF => KIND_KEYFILE_ARGON2,
            k => k.to_byte(),
        }
    }

    /// Whether the KEK comes from Argon2id (slow: tried after the others).
    fn slow(&self) -> bool {
        self.params != NO_KDF
    }

    fn aad_prefix(&self) -> [u8; SLOT_AAD_LEN] {
        let mut a = [0u8; SLOT_AAD_LEN];
        a[0] = self.kind_byte();
        a[1..5].copy_from_slice(&self.params.m_cost_kib.to_le_bytes());
        a[5..9].copy_from_slice(&self.params.t_cost.to_le_bytes());
        a[9..13].copy_from_slice(&self.params.p_cost.to_le_bytes());
        a[13..].copy_from_slice(&self.salt);
        a
    }

    fn aad(&self, vault_id: &[u8; VAULT_ID_LEN]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(8 + 1 + VAULT_ID_LEN + SLOT_AAD_LEN);
        aad.extend_from_slice(MAGIC);
        aad.push(SLOT_AAD_VERSION);
        aad.extend_from_slice(vault_id);
        aad.extend_from_slice(&self.aad_prefix());
        aad
    }

    /// Wraps `master` under `kek` into a fresh slot (fresh nonce).
    fn wrap(
        kind: SlotKind,
        params: KdfParams,
        salt: [u8; SALT_LEN],
        kek: &SecretKey,
        master: &MasterKey,
        vault_id: &[u8; VAULT_ID_LEN],
    ) -> Slot {
        let mut slot = Slot {
            damaged: None,
            kind,
            params,
            salt,
            nonce: [0u8; NONCE_LEN],
            wrapped: [0u8; WRAPPED_LEN],
        };
        OsRng.fill_bytes(&mut slot.nonce);
        let cipher = XChaCha20Poly1305::new(kek.as_bytes().into());
        let mut buf = Zeroizing::new(*master.0.as_bytes());
        let tag = cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&slot.nonce),
                &slot.aad(vault_id),
                &mut buf[..],
            )
            .expect("XChaCha20-Poly1305 encrypts 32 bytes without error");
        slot.wrapped[..KEY_LEN].copy_from_slice(&buf[..]);
        slot.wrapped[KEY_LEN..].copy_from_slice(&tag);
        slot
    }

    fn unwrap(&self, kek: &SecretKey, vault_id: &[u8; VAULT_ID_LEN]) -> Option<MasterKey> {
        let cipher = XChaCha20Poly1305::new(kek.as_bytes().into());
        let mut master = SecretKey::zeroed();
        master.0.copy_from_slice(&self.wrapped[..KEY_LEN]);
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&self.nonce),
                &self.aad(vault_id),
                &mut master.0[..],
                self.wrapped[KEY_LEN..].into(),
            )
            .ok()?;
        Some(MasterKey(master))
    }

    fn kek_from_material(context: &str, salt: &[u8; SALT_LEN], secret: &[u8]) -> SecretKey {
        SecretKey::derive(context, &[salt, secret])
    }

    fn to_bytes(&self) -> [u8; SLOT_LEN] {
        if let Some(d) = &self.damaged {
            return d.0;
        }
        let mut b = [0u8; SLOT_LEN];
        b[..SLOT_AAD_LEN].copy_from_slice(&self.aad_prefix());
        b[SLOT_AAD_LEN..SLOT_AAD_LEN + NONCE_LEN].copy_from_slice(&self.nonce);
        b[SLOT_AAD_LEN + NONCE_LEN..].copy_from_slice(&self.wrapped);
        b
    }
}

/// `blake3::derive_key(CHECKSUM_CONTEXT, header ‖ slot)[..16]`.
fn slot_checksum(header: &[u8], slot: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(header);
    h.update(slot);
    let mut c = [0u8; CHECKSUM_LEN];
    c.copy_from_slice(&h.finalize().as_bytes()[..CHECKSUM_LEN]);
    c
}

fn random_salt() -> [u8; SALT_LEN] {
    let mut s = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut s);
    s
}

const NO_KDF: KdfParams = KdfParams {
    m_cost_kib: 0,
    t_cost: 0,
    p_cost: 0,
};

/// The vault's key file: vault id (16 random bytes), format version, and slots
/// each wrapping the master key. Holds no plaintext secret, so it may be
/// stored next to the data at every backend.
#[derive(Clone)]
pub struct KeyFile {
    vault_id: [u8; VAULT_ID_LEN],
    slots: Vec<Slot>,
    /// Read from a version 1 file (no checksums).
    legacy: bool,
    /// The file it was loaded from, for error messages.
    origin: Option<PathBuf>,
}

impl KeyFile {
    /// New vault: random master key, a passphrase slot (Argon2id with
    /// `params`) and a recovery-key slot.
    pub fn create(
        passphrase: &[u8],
        params: &KdfParams,
    ) -> Result<(KeyFile, MasterKey, RecoveryKey), KeyError> {
        let mut vault_id = [0u8; VAULT_ID_LEN];
        OsRng.fill_bytes(&mut vault_id);
        let mut kf = KeyFile {
            vault_id,
            slots: Vec::new(),
            legacy: false,
            origin: None,
        };
        let master = MasterKey::generate();
        kf.add_passphrase_slot(&master, passphrase, params)?;
        let recovery = kf.add_recovery_slot(&master)?;
        Ok((kf, master, recovery))
    }

    pub fn vault_id(&self) -> [u8; 16] {
        self.vault_id
    }

    /// Tries every slot: recovery-key slots if `secret` parses as a recovery
    /// key, key-file slots with `secret` as the file contents, then the
    /// (slow) passphrase slots. If nothing opens and `secret` looked like a
    /// recovery key with a bad checksum, that error is returned instead of
    /// `WrongPassphrase` so the user learns it is a typo.
    pub fn unlock(&self, secret: &[u8]) -> Result<MasterKey, KeyError> {
        self.unlock_slot(secret).map(|(_, m)| m)
    }

    /// Like [`KeyFile::unlock`], also returning the index of the slot that
    /// opened (`passwd` replaces exactly that passphrase slot).
    pub fn unlock_slot(&self, secret: &[u8]) -> Result<(usize, MasterKey), KeyError> {
        let recovery = std::str::from_utf8(secret).map(RecoveryKey::parse);
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.damaged.is_some() {
                continue;
            }
            let kek = match (slot.kind, &recovery) {
                (SlotKind::RecoveryKey, Ok(Ok(rk))) => {
                    Slot::kek_from_material(context::SLOT_RECOVERY, &slot.salt, rk.0.as_bytes())
                }
                (SlotKind::KeyFile, _) if !slot.slow() => {
                    Slot::kek_from_material(context::SLOT_KEYFILE, &slot.salt, secret)
                }
                _ => continue,
            };
            if let Some(m) = slot.unwrap(&kek, &self.vault_id) {
                return Ok((i, m));
            }
        }
        for (i, slot) in self.slow_slots_for(secret) {
            let kek = slot.params.derive(secret, &slot.salt)?;
            if let Some(m) = slot.unwrap(&kek, &self.vault_id) {
                return Ok((i, m));
            }
        }
        match recovery {
            Ok(Err(KeyError::RecoveryKeyChecksum)) => Err(KeyError::RecoveryKeyChecksum),
            _ if !self.damaged_slots().is_empty() => Err(KeyError::DamagedSlots {
                slots: self.damaged_slots(),
                file: match &self.origin {
                    Some(p) => p.display().to_string(),
                    None => "the key file".into(),
                },
            }),
            _ => Err(KeyError::WrongPassphrase),
        }
    }

    /// Slots that failed their checksum when the file was read.
    pub fn damaged_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].damaged.is_some())
            .collect()
    }

    /// Read from a version 1 file, which has no slot checksums; saving it
    /// writes version 2.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The Argon2id slots `secret` could open, in the order worth trying:
    /// key-file slots only for secrets of key-file length (≥ 32 bytes),
    /// and first when the secret is not a line of text (a binary key file).
    fn slow_slots_for<'a>(&'a self, secret: &[u8]) -> Vec<(usize, &'a Slot)> {
        let binary = std::str::from_utf8(secret).map_or(true, |s| s.contains(['\n', '\0']));
        let mut v: Vec<(usize, &Slot)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.damaged.is_none())
            .filter(|(_, s)| match s.kind {
                SlotKind::Passphrase => true,
                SlotKind::KeyFile => s.slow() && secret.len() >= KEY_LEN,
                SlotKind::RecoveryKey => false,
            })
            .collect();
        v.sort_by_key(|(_, s)| (s.kind == SlotKind::KeyFile) != binary);
        v
    }

    /// The bytes to store at a backend: all slots, or (`keep_passphrase` =
    /// false, `tresor key passphrase-slots --local`) only the recovery-key
    /// and key-file slots, so the provider's copy cannot be attacked by
    /// guessing passphrases offline. `None` if no slot would be left.
    pub fn bytes_for_backend(&self, keep_passphrase: bool) -> Option<Vec<u8>> {
        if keep_passphrase {
            return Some(self.to_bytes());
        }
        let kept = KeyFile {
            vault_id: self.vault_id,
            legacy: false,
            origin: None,
            slots: self
                .slots
                .iter()
                .filter(|s| s.kind != SlotKind::Passphrase)
                .cloned()
                .collect(),
        };
        (!kept.slots.is_empty()).then(|| kept.to_bytes())
    }

    /// Argon2id parameters of each slot (`None` for slots without), for
    /// `tresor key list`.
    pub fn slot_kdf(&self) -> Vec<Option<KdfParams>> {
        self.slots
            .iter()
            .map(|s| s.slow().then_some(s.params))
            .collect()
    }

    fn push_slot(&mut self, slot: Slot) -> Result<(), KeyError> {
        if self.slots.len() >= MAX_SLOTS {
            return Err(KeyError::TooManySlots(MAX_SLOTS));
        }
        self.slots.push(slot);
        Ok(())
    }

    pub fn add_passphrase_slot(
        &mut self,
        master: &MasterKey,
        passphrase: &[u8],
        params: &KdfParams,
    ) -> Result<(), KeyError> {
        let salt = random_salt();
        let kek = params.derive(passphrase, &salt)?;
        let slot = Slot::wrap(
            SlotKind::Passphrase,
            *params,
            salt,
            &kek,
            master,
            &self.vault_id,
        );
        self.push_slot(slot)
    }

    /// Adds a slot for a freshly generated recovery key and returns the key;
    /// the caller must show it to the user once.
    pub fn add_recovery_slot(&mut self, master: &MasterKey) -> Result<RecoveryKey, KeyError> {
        let rk = RecoveryKey::generate();
        let salt = random_salt();
        let kek = Slot::kek_from_material(context::SLOT_RECOVERY, &salt, rk.0.as_bytes());
        let slot = Slot::wrap(
            SlotKind::RecoveryKey,
            NO_KDF,
            salt,
            &kek,
            master,
            &self.vault_id,
        );
        self.push_slot(slot)?;
        Ok(rk)
    }

    /// Adds a slot opened by the exact contents of a key file (≥ 32 bytes).
    /// Its KEK comes from Argon2id with `params`, like a passphrase's: a key
    /// file may be a file the user chose (a photo, a document) rather than
    /// random bytes, and every provider holds the slot to guess against.
    pub fn add_keyfile_slot(
        &mut self,
        master: &MasterKey,
        contents: &[u8],
        params: &KdfParams,
    ) -> Result<(), KeyError> {
        if contents.len() < KEY_LEN {
            return Err(KeyError::KeyMaterialTooShort(contents.len()));
        }
        let salt = random_salt();
        let kek = params.derive(contents, &salt)?;
        let slot = Slot::wrap(
            SlotKind::KeyFile,
            *params,
            salt,
            &kek,
            master,
            &self.vault_id,
        );
        self.push_slot(slot)
    }

    pub fn remove_slot(&mut self, index: usize) -> Result<(), KeyError> {
        if index >= self.slots.len() {
            return Err(KeyError::NoSuchSlot {
                index,
                count: self.slots.len(),
            });
        }
        // Damaged slots open nothing: at least one intact slot must remain.
        let intact_left = self
            .slots
            .iter()
            .enumerate()
            .any(|(i, s)| i != index && s.damaged.is_none());
        if !intact_left {
            return Err(KeyError::LastSlot);
        }
        self.slots.remove(index);
        Ok(())
    }

    pub fn slots(&self) -> Vec<SlotKind> {
        self.slots.iter().map(|s| s.kind).collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.slots.len();
        let mut b = Vec::with_capacity(HEADER_LEN + n * (SLOT_LEN + CHECKSUM_LEN));
        b.extend_from_slice(MAGIC);
        b.push(KEYFILE_VERSION);
        b.extend_from_slice(&self.vault_id);
        b.push(n as u8); // ≤ MAX_SLOTS, enforced by push_slot
        let slots: Vec<[u8; SLOT_LEN]> = self.slots.iter().map(Slot::to_bytes).collect();
        for s in &slots {
            b.extend_from_slice(s);
        }
        let header: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().expect("header");
        for (slot, bytes) in self.slots.iter().zip(&slots) {
            match &slot.damaged {
                Some(d) => b.extend_from_slice(&d.1),
                None => b.extend_from_slice(&slot_checksum(&header, bytes)),
            }
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<KeyFile, KeyError> {
        if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
            return Err(KeyError::Corrupt(
                "not a tresor key file: bad magic bytes".into(),
            ));
        }
        if b.len() < HEADER_LEN {
            return Err(KeyError::Corrupt(format!(
                "truncated header: {} bytes",
                b.len()
            )));
        }
        let legacy = b[8] == KEYFILE_VERSION_V1;
        if b[8] != KEYFILE_VERSION && !legacy {
            return Err(KeyError::UnsupportedVersion(b[8]));
        }
        let mut vault_id = [0u8; VAULT_ID_LEN];
        vault_id.copy_from_slice(&b[9..9 + VAULT_ID_LEN]);
        let count = b[HEADER_LEN - 1] as usize;
        if count == 0 || count > MAX_SLOTS {
            return Err(KeyError::Corrupt(format!(
                "{count} key slots (expected 1..={MAX_SLOTS})"
            )));
        }
        let per_slot = if legacy {
            SLOT_LEN
        } else {
            SLOT_LEN + CHECKSUM_LEN
        };
        let expected = HEADER_LEN + count * per_slot;
        if b.len() != expected {
            return Err(KeyError::Corrupt(format!(
                "{} bytes for {count} slots, expected {expected} (truncated or trailing garbage)",
                b.len()
            )));
        }
        let le = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4-byte slice"));
        let mut slots = Vec::with_capacity(count);
        let sums_at = HEADER_LEN + count * SLOT_LEN;
        let mut total_work = 0u64;
        for (i, s) in b[HEADER_LEN..sums_at].chunks_exact(SLOT_LEN).enumerate() {
            if !legacy {
                let stored: [u8; CHECKSUM_LEN] = b[sums_at + i * CHECKSUM_LEN..][..CHECKSUM_LEN]
                    .try_into()
                    .expect("checksum");
                if slot_checksum(&b[..HEADER_LEN], s) != stored {
                    // Not interpreted: its kind or parameters may be the damage.
                    slots.push(Slot {
                        damaged: Some(Box::new((s.try_into().expect("slot"), stored))),
                        kind: SlotKind::from_byte(s[0]).unwrap_or(SlotKind::Passphrase),
                        params: NO_KDF,
                        salt: [0u8; SALT_LEN],
                        nonce: [0u8; NONCE_LEN],
                        wrapped: [0u8; WRAPPED_LEN],
                    });
                    continue;
                }
            }
            let (kind, argon2) = match s[0] {
                KIND_KEYFILE_ARGON2 => (SlotKind::KeyFile, true),
                k => {
                    let kind = SlotKind::from_byte(k).ok_or_else(|| {
                        KeyError::Corrupt(format!("slot {i} has unknown kind {k}"))
                    })?;
                    (kind, kind == SlotKind::Passphrase)
                }
            };
            let params = KdfParams {
                m_cost_kib: le(&s[1..5]),
                t_cost: le(&s[5..9]),
                p_cost: le(&s[9..13]),
            };
            if argon2 {
                // Validate bounds now so a hostile file fails here, not in unlock.
                params
                    .argon2()
                    .map_err(|e| KeyError::Corrupt(format!("slot {i}: {e}")))?;
                total_work += params.work_kib();
                if total_work > MAX_TOTAL_WORK_KIB {
                    return Err(KeyError::Corrupt(format!(
                        "its Argon2id slots ask for more than {} GiB-passes of work in all \
                         (the limit, so that a hostile copy cannot stall an unlock)",
                        MAX_TOTAL_WORK_KIB / (1024 * 1024)
                    )));
                }
            } else if params != NO_KDF {
                return Err(KeyError::Corrupt(format!(
                    "slot {i}: KDF parameters on a {kind:?} slot"
                )));
            }
            let mut slot = Slot {
                damaged: None,
                kind,
                params,
                salt: [0u8; SALT_LEN],
                nonce: [0u8; NONCE_LEN],
                wrapped: [0u8; WRAPPED_LEN],
            };
            slot.salt.copy_from_slice(&s[13..SLOT_AAD_LEN]);
            slot.nonce
                .copy_from_slice(&s[SLOT_AAD_LEN..SLOT_AAD_LEN + NONCE_LEN]);
            slot.wrapped.copy_from_slice(&s[SLOT_AAD_LEN + NONCE_LEN..]);
            slots.push(slot);
        }
        Ok(KeyFile {
            vault_id,
            slots,
            legacy,
            origin: None,
        })
    }

    /// Creates `path`, never overwriting: the bytes go to a 0600 temp file in
    /// the same directory, are fsynced, then hard-linked to `path` (which
    /// fails if `path` exists, atomically) and the directory is fsynced.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        let tmp = write_temp(path, &self.to_bytes())?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(KeyError::AlreadyExists(path.to_path_buf()))
            }
            r => r?,
        }
        sync_parent(path)
    }

    /// Atomically replaces `path`: 0600 temp file, fsync, rename, fsync dir.
    /// A crash leaves either the old or the new key file, never a mix.
    pub fn save_replace(&self, path: &Path) -> Result<(), KeyError> {
        let tmp = write_temp(path, &self.to_bytes())?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        sync_parent(path)
    }

    /// Reads and parses `path`; a damaged file's error names it.
    pub fn load(path: &Path) -> Result<KeyFile, KeyError> {
        let mut kf = KeyFile::from_bytes(&fs::read(path)?).map_err(|e| match e {
            KeyError::Corrupt(why) => KeyError::Corrupt(format!("{why}, in {}", path.display())),
            e => e,
        })?;
        kf.origin = Some(path.to_path_buf());
        Ok(kf)
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, KeyError> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let tmp = parent_dir(path).join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(tmp)
}

fn sync_parent(path: &Path) -> Result<(), KeyError> {
    File::open(parent_dir(path))?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argon2 at its minimum so the suite stays fast; the format is the same.
    const FAST: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    fn same(a: &MasterKey, b: &MasterKey) -> bool {
        a.0.as_bytes() == b.0.as_bytes()
    }

    #[test]
    fn subkeys_are_distinct_and_deterministic() {
        let m = MasterKey::generate();
        let (a, b) = (m.subkeys(), m.subkeys());
        let all = [
            &a.chunk_id,
            &a.chunk_seal,
            &a.chunker,
            &a.index,
            &a.snapshot,
            &a.pack,
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x.as_bytes(), y.as_bytes());
            }
            assert_ne!(x.as_bytes(), m.0.as_bytes());
        }
        assert_eq!(a.chunk_seal.as_bytes(), b.chunk_seal.as_bytes());
        assert_eq!(a.index.to_hex().len(), 64);
    }

    /// Pins the derivation so an accidental change of a context string fails.
    #[test]
    fn subkey_derivation_is_pinned() {
        let m = MasterKey(SecretKey(Box::new([7u8; 32])));
        let expected = blake3::derive_key("tresor v1 subkey chunk-seal", &[7u8; 32]);
        assert_eq!(m.subkeys().chunk_seal.as_bytes(), &expected);
    }

    #[test]
    fn key_file_round_trip_and_unlock() {
        let (kf, master, _rk) = KeyFile::create(b"correct horse", &FAST).unwrap();
        assert_eq!(
            kf.slots(),
            vec![SlotKind::Passphrase, SlotKind::RecoveryKey]
        );
        let bytes = kf.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * (SLOT_LEN + CHECKSUM_LEN));
        let back = KeyFile::from_bytes(&bytes).unwrap();
        assert_eq!(back.vault_id(), kf.vault_id());
        assert_eq!(back.to_bytes(), bytes);
        assert!(same(&back.unlock(b"correct horse").unwrap(), &master));
    }

    #[test]
    fn wrong_passphrase_fails() {
        let (kf, _, _) = KeyFile::create(b"correct horse", &FAST).unwrap();
        assert!(matches!(
            kf.unlock(b"correct horsf"),
            Err(KeyError::WrongPassphrase)
        ));
        assert!(matches!(kf.unlock(b""), Err(KeyError::WrongPassphrase)));
    }

    #[test]
    fn recovery_key_opens_and_survives_formatting() {
        let (kf, master, rk) = KeyFile::create(b"pw", &FAST).unwrap();
        let s = rk.to_display_string();
        assert_eq!(s.len(), 56 + 13);
        assert_eq!(s.split('-').count(), 14);
        assert!(same(&kf.unlock(s.as_bytes()).unwrap(), &master));
        let sloppy = s
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        assert!(same(&kf.unlock(sloppy.as_bytes()).unwrap(), &master));
    }

    #[test]
    fn recovery_key_typo_is_detected_by_checksum() {
        // A fixed key keeps this exhaustive check deterministic.
        let rk = RecoveryKey(SecretKey(Box::new([0x5a; 32])));
        let s = rk.to_display_string();
        // Substitute every position with every other symbol: all must be caught.
        for (i, c) in s.char_indices().filter(|(_, c)| *c != '-') {
            for &other in CROCKFORD.iter().filter(|&&o| o as char != c) {
                let mut typo = s.clone();
                typo.replace_range(i..i + 1, &(other as char).to_string());
                assert!(
                    matches!(
                        RecoveryKey::parse(&typo),
                        Err(KeyError::RecoveryKeyChecksum)
                    ),
                    "typo at {i} ({c} -> {}) not detected",
                    other as char
                );
            }
        }
        assert!(matches!(
            RecoveryKey::parse(&s[..s.len() - 1]),
            Err(KeyError::RecoveryKeyMalformed(_))
        ));
        assert!(matches!(
            RecoveryKey::parse(&format!("{}A", s.as_str())),
            Err(KeyError::RecoveryKeyMalformed(_))
        ));
        assert!(matches!(
            RecoveryKey::parse("U"),
            Err(KeyError::RecoveryKeyMalformed(_))
        ));
        // Through unlock the user gets the typo error, not "wrong passphrase".
        let (kf, _, rk) = KeyFile::create(b"pw", &FAST).unwrap();
        let s = rk.to_display_string();
        let bad = if s.starts_with('A') {
            s.replacen('A', "B", 1)
        } else {
            format!("A{}", &s[1..])
        };
        assert!(matches!(
            kf.unlock(bad.as_bytes()),
            Err(KeyError::RecoveryKeyChecksum)
        ));
    }

    #[test]
    fn slots_add_remove_and_last_slot_refused() {
        let (mut kf, master, _) = KeyFile::create(b"old", &FAST).unwrap();
        kf.add_passphrase_slot(&master, b"new", &FAST).unwrap();
        kf.remove_slot(0).unwrap();
        assert!(matches!(kf.unlock(b"old"), Err(KeyError::WrongPassphrase)));
        assert!(same(&kf.unlock(b"new").unwrap(), &master));
        kf.remove_slot(0).unwrap(); // the recovery slot
        assert_eq!(kf.slots(), vec![SlotKind::Passphrase]);
        assert!(matches!(kf.remove_slot(0), Err(KeyError::LastSlot)));
        assert!(matches!(
            kf.remove_slot(5),
            Err(KeyError::NoSuchSlot { index: 5, count: 1 })
        ));
        assert!(same(&kf.unlock(b"new").unwrap(), &master));
    }

    #[test]
    fn keyfile_slot() {
        let (mut kf, master, _) = KeyFile::create(b"pw", &FAST).unwrap();
        assert!(matches!(
            kf.add_keyfile_slot(&master, &[1; 31], &FAST),
            Err(KeyError::KeyMaterialTooShort(31))
        ));
        // Binary contents with newlines and NULs open intact.
        let mut contents = vec![9u8; 64];
        contents[3] = b'\n';
        contents[10] = 0;
        kf.add_keyfile_slot(&master, &contents, &FAST).unwrap();
        let bytes = kf.to_bytes();
        // New key-file slots are kind 4 (Argon2id KEK) with their parameters.
        let slot = &bytes[HEADER_LEN + 2 * SLOT_LEN..];
        assert_eq!(slot[0], 4);
        assert_eq!(&slot[1..5], &FAST.m_cost_kib.to_le_bytes());
        let kf = KeyFile::from_bytes(&bytes).unwrap();
        assert!(same(&kf.unlock(&contents).unwrap(), &master));
        assert!(matches!(
            kf.unlock(&contents[..63]),
            Err(KeyError::WrongPassphrase)
        ));
    }

    /// Key files written before key-file slots used Argon2id (kind 3, BLAKE3
    /// KEK, zero parameters) still open.
    #[test]
    fn legacy_blake3_keyfile_slot_still_opens() {
        let (mut kf, master, _) = KeyFile::create(b"pw", &FAST).unwrap();
        let contents = [7u8; 40];
        let salt = random_salt();
        let kek = Slot::kek_from_material(context::SLOT_KEYFILE, &salt, &contents);
        let slot = Slot::wrap(SlotKind::KeyFile, NO_KDF, salt, &kek, &master, &kf.vault_id);
        kf.push_slot(slot).unwrap();
        let bytes = kf.to_bytes();
        let legacy = &bytes[HEADER_LEN + 2 * SLOT_LEN..];
        assert_eq!(legacy[0], 3);
        assert_eq!(&legacy[1..13], &[0u8; 12]);
        let kf = KeyFile::from_bytes(&bytes).unwrap();
        assert!(same(&kf.unlock(&contents).unwrap(), &master));
        assert_eq!(kf.slot_kdf()[2], None);
        // Turning it into a kind-4 slot (or back) breaks its AAD.
        let mut v = bytes.clone();
        v[HEADER_LEN + 2 * SLOT_LEN] = 4;
        reseal_checksums(&mut v);
        assert!(KeyFile::from_bytes(&v).is_err());
    }

    /// Recomputes every slot checksum of a v2 key file, so a test's edit is
    /// judged by the parser, not caught as damage.
    fn reseal_checksums(b: &mut [u8]) {
        let count = (b.len() - HEADER_LEN) / (SLOT_LEN + CHECKSUM_LEN);
        let sums_at = HEADER_LEN + count * SLOT_LEN;
        for i in 0..count {
            let at = HEADER_LEN + i * SLOT_LEN;
            let sum = slot_checksum(&b[..HEADER_LEN], &b[at..at + SLOT_LEN]);
            b[sums_at + i * CHECKSUM_LEN..][..CHECKSUM_LEN].copy_from_slice(&sum);
        }
    }

    /// A hostile key file cannot demand unbounded Argon2id work: each slot
    /// is bounded, and so is the sum over all slots (before: up to 32 slots
    /// of 4 GiB × 64 passes, about an hour).
    #[test]
    fn total_kdf_work_is_capped() {
        let (mut kf, master, _) = KeyFile::create(b"pw", &FAST).unwrap();
        kf.add_passphrase_slot(&master, b"pw2", &FAST).unwrap();
        kf.add_passphrase_slot(&master, b"pw3", &FAST).unwrap();
        let mut b = kf.to_bytes();
        let set = |b: &mut Vec<u8>, slot: usize, m: u32, t: u32| {
            let at = HEADER_LEN + slot * SLOT_LEN;
            b[at + 1..at + 5].copy_from_slice(&m.to_le_bytes());
            b[at + 5..at + 9].copy_from_slice(&t.to_le_bytes());
            reseal_checksums(b);
        };
        // One slot at the per-slot limit is fine to parse ...
        set(&mut b, 0, 1024 * 1024, 4);
        assert!(KeyFile::from_bytes(&b).is_ok());
        // ... over it is not ...
        set(&mut b, 0, 1024 * 1024, 5);
        assert!(matches!(KeyFile::from_bytes(&b), Err(KeyError::Corrupt(_))));
        // ... and three slots at it together exceed the total.
        for slot in [0, 2, 3] {
            set(&mut b, slot, 1024 * 1024, 4);
        }
        match KeyFile::from_bytes(&b) {
            Err(KeyError::Corrupt(why)) => assert!(why.contains("GiB-passes"), "{why}"),
            other => panic!("expected the total-work limit, got {:?}", other.err()),
        }
        assert!(KdfParams::strong().argon2().is_ok());
        assert!(KdfParams::strong().work_kib() <= MAX_SLOT_WORK_KIB);
    }

    /// With passphrase slots kept local, the backend's copy holds only the
    /// recovery-key and key-file slots.
    #[test]
    fn backend_copy_without_passphrase_slots() {
        let (kf, master, rk) = KeyFile::create(b"pw", &FAST).unwrap();
        assert_eq!(kf.bytes_for_backend(true).unwrap(), kf.to_bytes());
        let remote = KeyFile::from_bytes(&kf.bytes_for_backend(false).unwrap()).unwrap();
        assert_eq!(remote.slots(), vec![SlotKind::RecoveryKey]);
        assert_eq!(remote.vault_id(), kf.vault_id());
        assert!(matches!(
            remote.unlock(b"pw"),
            Err(KeyError::WrongPassphrase)
        ));
        let display: Zeroizing<String> = rk.to_display_string();
        assert!(same(&remote.unlock(display.as_bytes()).unwrap(), &master));
        let mut only_pass = kf.clone();
        only_pass.remove_slot(1).unwrap();
        assert!(only_pass.bytes_for_backend(false).is_none());
    }

    #[test]
    fn bad_files_are_rejected_clearly() {
        let (kf, _, _) = KeyFile::create(b"pw", &FAST).unwrap();
        let b = kf.to_bytes();
        assert!(matches!(
            KeyFile::from_bytes(b"NOTAKEYFILE-----"),
            Err(KeyError::Corrupt(_))
        ));
        assert!(matches!(
            KeyFile::from_bytes(&b[..b.len() - 1]),
            Err(KeyError::Corrupt(_))
        ));
        assert!(matches!(
            KeyFile::from_bytes(&b[..10]),
            Err(KeyError::Corrupt(_))
        ));
        let mut v = b.clone();
        v[8] = 3;
        assert!(matches!(
            KeyFile::from_bytes(&v),
            Err(KeyError::UnsupportedVersion(3))
        ));
        // A hostile copy asking for 1 TiB of Argon2 memory is refused at parse time.
        // (The checksum is unkeyed: a hostile copy recomputes it.)
        let mut v = b.clone();
        v[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        let sum = slot_checksum(&v[..HEADER_LEN], &v[HEADER_LEN..HEADER_LEN + SLOT_LEN]);
        let at = HEADER_LEN + 2 * SLOT_LEN;
        v[at..at + CHECKSUM_LEN].copy_from_slice(&sum);
        assert!(matches!(KeyFile::from_bytes(&v), Err(KeyError::Corrupt(_))));
    }

    /// A flipped byte anywhere in a slot is reported as that slot's damage,
    /// not as a wrong passphrase; the intact slots still open, and a wrong
    /// passphrase on an intact file is still a wrong passphrase.
    #[test]
    fn damaged_slot_is_damage_not_a_wrong_passphrase() {
        let (kf, master, rk) = KeyFile::create(b"pw", &FAST).unwrap();
        let b = kf.to_bytes();
        assert_eq!(b.len(), HEADER_LEN + 2 * (SLOT_LEN + CHECKSUM_LEN));
        assert!(matches!(
            kf.unlock(b"wrong"),
            Err(KeyError::WrongPassphrase)
        ));
        // Every byte of slot 0 (kind, parameters, salt, nonce, wrapped key)
        // and of its checksum.
        let sums = HEADER_LEN + 2 * SLOT_LEN;
        for pos in (HEADER_LEN..HEADER_LEN + SLOT_LEN).chain(sums..sums + CHECKSUM_LEN) {
            let mut v = b.clone();
            v[pos] ^= 0x01;
            let t = KeyFile::from_bytes(&v).unwrap_or_else(|e| panic!("pos {pos}: {e}"));
            assert_eq!(t.damaged_slots(), vec![0], "pos {pos}");
            let e = t.unlock(b"pw").err().expect("a damaged slot opened");
            assert!(
                matches!(&e, KeyError::DamagedSlots { slots, .. } if slots == &vec![0]),
                "pos {pos}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with("key slot 0 of the key file is damaged"),
                "{e}"
            );
            // The recovery slot is intact and still opens.
            let rks = rk.to_display_string();
            assert!(
                same(&t.unlock(rks.as_bytes()).unwrap(), &master),
                "pos {pos}"
            );
            // Saving keeps the damage visible; removing the slot clears it.
            let mut again = KeyFile::from_bytes(&t.to_bytes()).unwrap();
            assert_eq!(again.damaged_slots(), vec![0]);
            assert!(matches!(again.remove_slot(1), Err(KeyError::LastSlot)));
            again.remove_slot(0).unwrap();
            assert!(again.damaged_slots().is_empty());
        }
        // A damaged vault id fails every slot's checksum.
        let mut v = b.clone();
        v[12] ^= 1;
        let t = KeyFile::from_bytes(&v).unwrap();
        assert!(matches!(
            t.unlock(b"pw"),
            Err(KeyError::DamagedSlots { slots, .. }) if slots == vec![0, 1]
        ));
        // Truncated: damaged, whatever the passphrase.
        for cut in [1, CHECKSUM_LEN, SLOT_LEN] {
            assert!(matches!(
                KeyFile::from_bytes(&b[..b.len() - cut]),
                Err(KeyError::Corrupt(_))
            ));
        }
    }

    /// A version 1 file (no checksums) still opens and is written back as
    /// version 2; damage in it cannot be told from a wrong passphrase.
    #[test]
    fn version_1_key_files_open_and_upgrade() {
        let (kf, master, _) = KeyFile::create(b"pw", &FAST).unwrap();
        let mut v1 = kf.to_bytes();
        v1.truncate(HEADER_LEN + 2 * SLOT_LEN);
        v1[8] = KEYFILE_VERSION_V1;
        let old = KeyFile::from_bytes(&v1).unwrap();
        assert!(old.is_legacy());
        assert!(same(&old.unlock(b"pw").unwrap(), &master));
        let up = KeyFile::from_bytes(&old.to_bytes()).unwrap();
        assert!(!up.is_legacy());
        assert_eq!(up.to_bytes(), kf.to_bytes());
        let mut bad = v1.clone();
        bad[HEADER_LEN + SLOT_LEN - 1] ^= 1;
        assert!(matches!(
            KeyFile::from_bytes(&bad).unwrap().unlock(b"pw"),
            Err(KeyError::WrongPassphrase)
        ));
    }

    #[test]
    fn save_new_never_overwrites_and_replace_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.key");
        let (kf, master, _) = KeyFile::create(b"pw", &FAST).unwrap();
        kf.save_new(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (other, _, _) = KeyFile::create(b"pw2", &FAST).unwrap();
        assert!(matches!(
            other.save_new(&path),
            Err(KeyError::AlreadyExists(_))
        ));
        assert!(same(
            &KeyFile::load(&path).unwrap().unlock(b"pw").unwrap(),
            &master
        ));
        other.save_replace(&path).unwrap();
        assert_eq!(KeyFile::load(&path).unwrap().vault_id(), other.vault_id());
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// `cargo test --release -- --ignored --nocapture time_interactive_kdf`
    #[test]
    #[ignore]
    fn time_interactive_kdf() {
        let p = KdfParams::interactive();
        let salt = [0u8; SALT_LEN];
        p.derive(b"warm-up", &salt).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..5 {
            p.derive(b"passphrase", &salt).unwrap();
        }
        println!("Argon2id {p:?}: {:?} per derivation", t.elapsed() / 5);
    }
}
