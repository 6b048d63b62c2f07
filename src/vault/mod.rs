//! The vault directory: where the key file, the encrypted index, the local
//! store and the daemon's log live, and how a vault is created and unlocked.
//!
//! Layout (`tresor init` makes it 0700):
//! ```text
//! VAULT/tresor.key      key file: wrapped master key slots (docs/FORMAT.md)
//! VAULT/index.sqlite    SQLCipher index (+ -wal, -shm)
//! VAULT/store/          the embedded store: OpenDAL fs root, packs under packs/
//! VAULT/tresor.log      the daemon's log
//! VAULT/daemon.lock     flock held by the mounted daemon; holds its pid
//! ```
//! The vault never lives in the mountpoint, so any directory can be mounted over.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub mod config;
pub mod index_copies;
pub mod keys;

use crate::index::Index;
use crate::vault::keys::{KdfParams, KeyError, KeyFile, MasterKey, RecoveryKey, Subkeys};

pub struct VaultPaths {
    pub root: PathBuf,
}

impl VaultPaths {
    pub fn new(root: PathBuf) -> VaultPaths {
        VaultPaths { root }
    }
    pub fn key_file(&self) -> PathBuf {
        self.root.join("tresor.key")
    }
    pub fn index(&self) -> PathBuf {
        self.root.join("index.sqlite")
    }
    /// The index and SQLite's companions (`-wal`, `-shm`).
    pub fn index_files(&self) -> Vec<PathBuf> {
        let index = self.index();
        let with = |suffix: &str| {
            let mut name = index.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        vec![index.clone(), with("-wal"), with("-shm")]
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("tresor.log")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    /// Written by the daemon as it exits: `ok`, or `failed: WHY` when the
    /// final flush or commit failed (`tresor unmount` reports it).
    /// Local copies of the index (`index_copies.rs`).
    pub fn index_copies(&self) -> PathBuf {
        self.root.join("index-copies")
    }
    pub fn unmount_status(&self) -> PathBuf {
        self.root.join("unmount-status")
    }
}

/// Replaces `path` atomically with `bytes`, readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    config::write_atomic(path, bytes, 0o600)
}

/// `$XDG_DATA_HOME/tresor/default`, else `~/.local/share/tresor/default`.
pub fn default_vault_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("tresor/default"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set; pass --vault DIR")?;
    Ok(PathBuf::from(home).join(".local/share/tresor/default"))
}

/// Creates a new vault; refuses if one (or anything else) is already there.
pub fn init(paths: &VaultPaths, passphrase: &[u8], kdf: &KdfParams) -> Result<RecoveryKey> {
    if paths.key_file().exists() {
        bail!(
            "a vault already exists at {}; refusing to overwrite it",
            paths.root.display()
        );
    }
    if paths.root.exists() {
        let non_empty = std::fs::read_dir(&paths.root)
            .with_context(|| format!("cannot read {}", paths.root.display()))?
            .next()
            .is_some();
        if non_empty {
            bail!(
                "{} exists and is not empty; choose an empty or new directory for the vault",
                paths.root.display()
            );
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.root)
        .with_context(|| format!("cannot create vault directory {}", paths.root.display()))?;
    let (kf, master, recovery) = KeyFile::create(passphrase, kdf)?;
    let subkeys = master.subkeys();
    let index = Index::open(&paths.index(), &subkeys.index, true)?;
    index.close()?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(paths.store())
        .context("cannot create the store directory")?;
    // The key file last: its presence marks a complete vault.
    kf.save_new(&paths.key_file())?;
    Ok(recovery)
}

pub struct UnlockedVault {
    pub key_file: KeyFile,
    /// For key-slot changes (`passwd`, `key`); mounting needs only subkeys.
    #[allow(dead_code)]
    pub master: MasterKey,
    pub subkeys: Subkeys,
}

/// Fails with what to do unless a vault exists at `paths` (checked before
/// asking for a passphrase that could not be used).
pub fn require_exists(paths: &VaultPaths) -> Result<()> {
    if !paths.key_file().exists() {
        bail!(
            "no vault at {} (no tresor.key); create one with `tresor init --vault {}`",
            paths.root.display(),
            paths.root.display()
        );
    }
    Ok(())
}

pub fn unlock(paths: &VaultPaths, passphrase: &[u8]) -> Result<UnlockedVault> {
    require_exists(paths)?;
    let key_file = KeyFile::load(&paths.key_file()).map_err(key_error)?;
    let master = match key_file.unlock(passphrase) {
        Ok(m) => m,
        Err(KeyError::WrongPassphrase) => {
            return Err(crate::error::wrong_passphrase(format!(
                "wrong passphrase for the vault at {}: no key slot opens with it",
                paths.root.display()
            )))
        }
        Err(e) => return Err(key_error(e)),
    };
    let damaged = key_file.damaged_slots();
    if !damaged.is_empty() {
        log::warn!(
            "key slot(s) {damaged:?} of {} are damaged (checksum mismatch); remove them with \
             `tresor key remove` and add new ones",
            paths.key_file().display()
        );
    } else if key_file.is_legacy() {
        // Version 1 has no slot checksums; the slot that just opened is
        // known good, so this is the moment to add them.
        if let Err(e) = key_file.save_replace(&paths.key_file()) {
            log::warn!(
                "cannot add slot checksums to {}: {e}",
                paths.key_file().display()
            );
        }
    }
    let subkeys = master.subkeys();
    Ok(UnlockedVault {
        key_file,
        master,
        subkeys,
    })
}

/// A key-file error as the user sees it: a damaged file or slot is
/// `Error::Damaged` (exit 4), since the secret may well be right.
pub fn key_error(e: KeyError) -> anyhow::Error {
    match e {
        e @ (KeyError::DamagedSlots { .. } | KeyError::Corrupt(_)) => {
            crate::error::Error::Damaged(e.to_string()).into()
        }
        e => e.into(),
    }
}

/// The daemon's exclusive lock on the vault; released when dropped (or when
/// the process dies, so a killed daemon never leaves a stale lock).
pub struct VaultLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

pub fn lock_vault(paths: &VaultPaths) -> Result<VaultLock> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(paths.lock())
        .context("cannot open the vault lock file")?;
    let Ok(mut f) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) else {
        let holder = std::fs::read_to_string(paths.lock()).unwrap_or_default();
        bail!(
            "the vault {} is already mounted by another tresor process ({})",
            paths.root.display(),
            holder.trim()
        );
    };
    f.set_len(0)?;
    writeln!(f, "pid {}", std::process::id())?;
    Ok(VaultLock { _file: f })
}

/// Whether a daemon holds the vault's lock right now (a shared probe: it
/// neither takes the lock from a daemon nor rewrites the lock file).
pub fn is_mounted(paths: &VaultPaths) -> bool {
    let Ok(f) = std::fs::File::open(paths.lock()) else {
        return false;
    };
    // A shared lock we get is released when the guard is dropped at once.
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
}

/// Pid of the daemon holding the vault, if any.
pub fn daemon_pid(paths: &VaultPaths) -> Option<i32> {
    let s = std::fs::read_to_string(paths.lock()).ok()?;
    let pid: i32 = s.trim().strip_prefix("pid ")?.parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Opens the vault's index for writing. A missing or damaged index is
/// `Error::Damaged` (exit 4) with the next step: `tresor fsck --repair`
/// puts back the newest intact local copy (`index_copies.rs`).
pub fn open_index(paths: &VaultPaths, key: &keys::SecretKey) -> Result<Index> {
    let next_step = || {
        let copies = index_copies::list(paths).len();
        format!(
            "run `tresor fsck --repair --vault {}` to put back the newest intact copy \
             ({copies} local cop{} in {})",
            paths.root.display(),
            if copies == 1 { "y" } else { "ies" },
            paths.index_copies().display()
        )
    };
    if !paths.index().exists() {
        return Err(crate::error::Error::Damaged(format!(
            "the index {} is missing; {}",
            paths.index().display(),
            next_step()
        ))
        .into());
    }
    Index::open(&paths.index(), key, false).map_err(|e| match e {
        crate::index::IndexError::NotAnIndex(why) => crate::error::Error::Damaged(format!(
            "the index {} is damaged or not this vault's ({why}); {}",
            paths.index().display(),
            next_step()
        ))
        .into(),
        other => anyhow::Error::new(other).context("cannot open the index"),
    })
}
