//! The one way every command opens a vault.
//!
//! A command gets its secret from [`VaultArgs::secret`] (a `--key-file`, a
//! `--passphrase-file`, standard input, `--keyring`, `TRESOR_PASSPHRASE` or a
//! prompt, in that order; the recovery key is typed where a passphrase is
//! asked) and unlocks with [`VaultArgs::open`]. Commands that a mounted
//! vault answers itself go through [`ask_daemon`] first and open the vault
//! only when no daemon runs. Before this module existed, "open the vault"
//! was written eight times and five commands ignored `--key-file`
//! (tests/keys.rs `every_unlocking_command_takes_every_kind_of_secret`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::mount::control::{self, Request};
use crate::mount::secret::{self, PassphraseSource};
use crate::vault::keys::KdfParams;
use crate::vault::{self, UnlockedVault, VaultPaths};

#[derive(Args, Clone)]
pub struct VaultArgs {
    /// Vault directory [default: $XDG_DATA_HOME/tresor/default]
    #[arg(long, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Read the passphrase from the first line of FILE (else TRESOR_PASSPHRASE, else a prompt)
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Read the passphrase from the first line of standard input
    #[arg(long, hide = true)]
    passphrase_stdin: bool,
    /// Read the secret (passphrase or key-file contents) as raw bytes from
    /// standard input up to its end: how a mount hands it to its daemon
    #[arg(long, hide = true, conflicts_with_all = ["passphrase_file", "passphrase_stdin", "keyring", "key_file"])]
    secret_stdin: bool,
    /// Read the passphrase from the desktop keyring (Secret Service, via secret-tool)
    #[arg(long, conflicts_with = "passphrase_file")]
    keyring: bool,
    /// Unlock with the whole contents of FILE: a key-file slot (see `tresor key add-keyfile`)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["passphrase_file", "keyring"])]
    key_file: Option<PathBuf>,
}

impl VaultArgs {
    pub fn paths(&self) -> Result<VaultPaths> {
        Ok(VaultPaths::new(match &self.vault {
            Some(v) => std::path::absolute(v).context("invalid --vault path")?,
            None => vault::default_vault_dir()?,
        }))
    }
    /// The unlock secret: the whole `--key-file`, else the passphrase.
    pub fn secret(&self, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
        if self.secret_stdin {
            // Raw bytes up to EOF (a key file may hold newlines and NULs),
            // into zeroizing memory only.
            return secret::read_secret(&mut secret::raw_stdin()?, secret::MAX_SECRET_LEN)
                .context("cannot read the secret from standard input");
        }
        if let Some(f) = &self.key_file {
            if confirm {
                return Err(crate::error::usage(
                    "--key-file unlocks an existing vault; create the vault with a passphrase, \
                     then add a key-file slot with `tresor key add-keyfile FILE`",
                ));
            }
            return read_key_file(f);
        }
        self.passphrase()?.read(confirm)
    }
    fn passphrase(&self) -> Result<PassphraseSource> {
        Ok(PassphraseSource {
            file: self.passphrase_file.clone(),
            from_stdin: self.passphrase_stdin,
            keyring: self
                .keyring
                .then(|| self.paths().map(|p| p.root))
                .transpose()?,
        })
    }
}

/// How a new passphrase or key-file slot is made (`init`, `mount --init`,
/// `passwd`, `key add-keyfile`).
#[derive(Args, Clone, Default)]
pub struct NewSlotArgs {
    /// Argon2id cost of the new slot, recorded in it: interactive (64 MiB,
    /// 3 passes) or strong (256 MiB, 4 passes: each offline guess costs
    /// five times as much, and so does every unlock)
    #[arg(long, value_enum, default_value_t = Kdf::Interactive)]
    pub kdf: Kdf,
    /// Accept a new passphrase that the strength estimate calls weak
    /// (warns instead of refusing)
    #[arg(long)]
    pub weak_passphrase: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kdf {
    #[default]
    Interactive,
    Strong,
}

impl NewSlotArgs {
    pub fn params(&self) -> KdfParams {
        match self.kdf {
            Kdf::Interactive => KdfParams::interactive(),
            Kdf::Strong => KdfParams::strong(),
        }
    }

    /// Refuses a weak new passphrase unless `--weak-passphrase`.
    pub fn check(&self, passphrase: &[u8]) -> Result<()> {
        secret::check_strength(passphrase, self.weak_passphrase)
    }
}

/// An unlocked vault: its paths and keys. What a command does with it
/// (open the index read-only, lock it for writing, reach its backends) is
/// the command's business.
pub struct Session {
    pub paths: VaultPaths,
    pub unlocked: UnlockedVault,
}

impl VaultArgs {
    /// Unlock the existing vault with the secret these arguments name.
    pub fn open(&self) -> Result<Session> {
        let paths = self.paths()?;
        vault::require_exists(&paths)?;
        let secret = self.secret(false)?;
        let unlocked = vault::unlock(&paths, &secret)?;
        Ok(Session { paths, unlocked })
    }
}

/// Sends `request` to the vault's mount daemon, if one runs: `Ok(None)`
/// when the vault is not mounted (the caller opens it itself). Errors the
/// daemon raises keep their class (`crate::error::Kind`), and so their
/// exit code.
pub fn ask_daemon(
    paths: &VaultPaths,
    request: &Request,
    progress: &mut dyn FnMut(&Value),
) -> Result<Option<Value>> {
    control::request(&paths.root, request, progress)
}

/// Reads a whole key file (a key-file slot's secret).
pub fn read_key_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::File::open(path)
        .and_then(|mut f| secret::read_secret(&mut f, secret::MAX_SECRET_LEN))
        .with_context(|| format!("cannot read key file {}", path.display()))
}
