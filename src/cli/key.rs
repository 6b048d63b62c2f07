//! `tresor passwd` and `tresor key`: change the slots of the vault's key
//! file. The master key never changes, so no data, index or pack is
//! touched: only `VAULT/tresor.key` is rewritten, atomically
//! ([`KeyFile::save_replace`]: temp file, fsync, rename, fsync dir), and
//! then copied to `keys/tresor.key` on every configured backend so a
//! restore on a new machine uses the new slots. A mounted daemon is told
//! to reload its backends, which makes its sync engine check the remote
//! copy again.
//!
//! The last slot that can open the vault is never removed ([`KeyFile::remove_slot`]
//! refuses); removing the slot the command was unlocked with is allowed
//! only while another slot remains.

use crate::mount::control::Request;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::session::NewSlotArgs;
use crate::cli::VaultArgs;
use crate::remote::backend::{self, Credentials, VaultConfig};
use crate::store::Store;
use crate::vault::keys::{KeyError, KeyFile, MasterKey, SlotKind};
use crate::vault::VaultPaths;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// List the key slots: number and kind (passphrase, recovery key, key file)
    List {
        #[command(flatten)]
        vault: VaultArgs,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Add a recovery-key slot and print the new recovery key (once: write it down)
    AddRecovery {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Add a slot opened by the exact contents of FILE (at least 32 bytes;
    /// its key comes from Argon2id, like a passphrase's)
    AddKeyfile {
        #[command(flatten)]
        vault: VaultArgs,
        #[command(flatten)]
        slot: NewSlotArgs,
        /// The key file whose contents open the new slot
        file: PathBuf,
    },
    /// Keep passphrase slots on this machine (--local): the key file on the
    /// backends then holds only recovery-key and key-file slots, so nobody
    /// can guess the passphrase from a provider's copy; a restore on a new
    /// machine needs the recovery key or a key file. --uploaded undoes it.
    PassphraseSlots {
        #[command(flatten)]
        vault: VaultArgs,
        /// Keep passphrase slots local
        #[arg(
            long,
            conflicts_with = "uploaded",
            required_unless_present = "uploaded"
        )]
        local: bool,
        /// Upload passphrase slots with the rest (the default)
        #[arg(long)]
        uploaded: bool,
    },
    /// Remove key slot SLOT (numbered as in `tresor key list`); the last slot is never removed
    Remove {
        #[command(flatten)]
        vault: VaultArgs,
        /// Slot number from `tresor key list`
        slot: usize,
    },
}

fn kind_name(k: SlotKind) -> &'static str {
    match k {
        SlotKind::Passphrase => "passphrase",
        SlotKind::RecoveryKey => "recovery-key",
        SlotKind::KeyFile => "key-file",
    }
}

/// The key file opened with the secret from `args` (passphrase, recovery
/// key or key-file contents): (paths, key file, slot that opened, master).
fn open(args: &VaultArgs) -> Result<(VaultPaths, KeyFile, usize, MasterKey)> {
    let paths = args.paths()?;
    crate::vault::require_exists(&paths)?;
    let secret = args.secret(false)?;
    let kf = KeyFile::load(&paths.key_file()).map_err(crate::vault::key_error)?;
    match kf.unlock_slot(&secret) {
        Ok((slot, master)) => Ok((paths, kf, slot, master)),
        Err(KeyError::WrongPassphrase) => Err(crate::error::wrong_passphrase(format!(
            "wrong passphrase for the vault at {}: no key slot opens with it; nothing was changed",
            paths.root.display()
        ))),
        Err(e) => Err(crate::vault::key_error(e)),
    }
}

/// Writes the key file atomically, then copies it to every backend.
fn save(paths: &VaultPaths, kf: &KeyFile) -> Result<()> {
    kf.save_replace(&paths.key_file())
        .with_context(|| format!("cannot write {}", paths.key_file().display()))?;
    upload(paths)
}

/// Copies `VAULT/tresor.key` to `keys/tresor.key` on every backend; a
/// mounted daemon reloads its backends so its engine sees the new file.
fn upload(paths: &VaultPaths) -> Result<()> {
    let config = VaultConfig::load(&paths.root)?;
    if config.backends.is_empty() {
        return Ok(());
    }
    let creds = Credentials::load(&paths.root)?;
    let runtime = Arc::new(crate::store::new_runtime("tresor-keys")?);
    let bytes = bytes::Bytes::from(crate::vault::config::key_file_for_backends(
        &paths.root,
        &paths.key_file(),
    )?);
    let mut failed = Vec::new();
    for b in &config.backends {
        let r = backend::build_operator(b, &creds.for_backend(&b.name)).and_then(|op| {
            Store::remote(op, runtime.clone())
                .write(crate::remote::sync::REMOTE_KEY_PATH, bytes.clone())
                .map_err(anyhow::Error::from)
        });
        match r {
            Ok(()) => println!("key file uploaded to backend {}", b.name),
            Err(e) => failed.push(format!("{}: {e:#}", b.name)),
        }
    }
    let _ = crate::mount::control::request(&paths.root, &Request::Reload, &mut |_| {});
    if !failed.is_empty() {
        bail!(
            "the key file was changed here, but uploading it failed for: {}; \
             run `tresor sync` to upload it (until then a restore from that backend needs the old secret)",
            failed.join("; ")
        );
    }
    Ok(())
}

/// The new passphrase: first line of `file`, else asked twice on a terminal.
fn new_passphrase(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    let p = if let Some(f) = file {
        let all = std::fs::File::open(f)
            .and_then(|mut file| {
                crate::mount::secret::read_secret(&mut file, crate::mount::secret::MAX_SECRET_LEN)
            })
            .with_context(|| format!("cannot read new passphrase file {}", f.display()))?;
        crate::mount::secret::first_line(&all)
            .map_err(|_| anyhow::anyhow!("the new passphrase is empty; nothing was changed"))?
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no new passphrase: pass --new-passphrase-file FILE or run on a terminal");
        }
        let first = Zeroizing::new(rpassword::prompt_password("New passphrase: ")?);
        let second = Zeroizing::new(rpassword::prompt_password("Repeat new passphrase: ")?);
        if *first != *second {
            bail!("the new passphrases do not match; nothing was changed");
        }
        Zeroizing::new(first.as_bytes().to_vec())
    };
    if p.is_empty() {
        bail!("the new passphrase is empty; nothing was changed");
    }
    Ok(p)
}

/// `tresor passwd`: replaces the passphrase slot that the old passphrase
/// opens; unlocked with a recovery key or key file, replaces the vault's
/// only passphrase slot (or adds one if there is none).
pub fn passwd(args: &VaultArgs, new_file: Option<&Path>, slot: &NewSlotArgs) -> Result<()> {
    let (paths, mut kf, opened, master) = open(args)?;
    let kinds = kf.slots();
    let replace = if kinds[opened] == SlotKind::Passphrase {
        Some(opened)
    } else {
        let pass: Vec<usize> = (0..kinds.len())
            .filter(|&i| kinds[i] == SlotKind::Passphrase)
            .collect();
        match pass.as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => bail!(
                "the vault has {} passphrase slots and you unlocked with a {}; \
                 unlock with the passphrase to change, or remove the others with `tresor key remove SLOT`",
                pass.len(),
                kind_name(kinds[opened])
            ),
        }
    };
    let new = new_passphrase(new_file)?;
    slot.check(&new)?;
    kf.add_passphrase_slot(&master, &new, &slot.params())?;
    if let Some(old) = replace {
        kf.remove_slot(old)?;
    }
    save(&paths, &kf)?;
    match replace {
        Some(i) => println!("passphrase changed (slot {i} replaced); the data was not touched"),
        None => println!("passphrase slot added; the data was not touched"),
    }
    Ok(())
}

pub fn key(cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::List { vault, json } => {
            let paths = vault.paths()?;
            crate::vault::require_exists(&paths)?;
            // Listing needs no secret: the slot kinds are not secret.
            let kf = KeyFile::load(&paths.key_file())?;
            let kinds = kf.slots();
            let kdf = kf.slot_kdf();
            let local = VaultConfig::load(&paths.root)?.keys.local_passphrase_slots;
            if json {
                let slots: Vec<_> = kinds
                    .iter()
                    .zip(&kdf)
                    .enumerate()
                    .map(|(i, (k, p))| {
                        json!({
                            "slot": i,
                            "kind": kind_name(*k),
                            "argon2id": p.map(|p| json!({"m_kib": p.m_cost_kib, "t": p.t_cost, "p": p.p_cost})),
                            "uploaded": !(local && *k == SlotKind::Passphrase),
                        })
                    })
                    .collect();
                println!("{}", json!({ "slots": slots }));
            } else {
                for (i, (k, p)) in kinds.iter().zip(&kdf).enumerate() {
                    let cost = p.map_or(String::new(), |p| {
                        format!(
                            "  Argon2id {} MiB, {} passes",
                            p.m_cost_kib / 1024,
                            p.t_cost
                        )
                    });
                    let here = if local && *k == SlotKind::Passphrase {
                        "  (this machine only)"
                    } else {
                        ""
                    };
                    println!("{i}  {}{cost}{here}", kind_name(*k));
                }
            }
            Ok(())
        }
        KeyCmd::AddRecovery { vault } => {
            let (paths, mut kf, _, master) = open(&vault)?;
            let rk = kf.add_recovery_slot(&master)?;
            save(&paths, &kf)?;
            println!("Recovery key (shown once; it opens the vault if the passphrase is lost):");
            println!();
            println!("    {}", rk.to_display_string().as_str());
            println!();
            Ok(())
        }
        KeyCmd::AddKeyfile { vault, slot, file } => {
            let contents = crate::cli::session::read_key_file(&file)?;
            let (paths, mut kf, _, master) = open(&vault)?;
            kf.add_keyfile_slot(&master, &contents, &slot.params())?;
            save(&paths, &kf)?;
            println!(
                "key-file slot {} added: unlock with --key-file {}",
                kf.slots().len() - 1,
                file.display()
            );
            Ok(())
        }
        KeyCmd::PassphraseSlots {
            vault,
            local,
            uploaded: _,
        } => {
            let paths = vault.paths()?;
            crate::vault::require_exists(&paths)?;
            let kf = KeyFile::load(&paths.key_file())?;
            if local && kf.bytes_for_backend(false).is_none() {
                bail!(
                    "the key file has only passphrase slots: add a recovery key \
                     (`tresor key add-recovery`) or a key file first, or a backend's copy could not open the vault"
                );
            }
            let mut config = VaultConfig::load(&paths.root)?;
            config.keys.local_passphrase_slots = local;
            config.save(&paths.root)?;
            upload(&paths)?;
            if local {
                println!("passphrase slots are kept on this machine; the backends' key file holds only recovery-key and key-file slots");
            } else {
                println!("passphrase slots are uploaded with the key file again");
            }
            Ok(())
        }
        KeyCmd::Remove { vault, slot } => {
            let (paths, mut kf, _, _) = open(&vault)?;
            let kind = kf.slots().get(slot).copied();
            kf.remove_slot(slot)?;
            save(&paths, &kf)?;
            println!(
                "removed slot {slot} ({}); {} slot(s) left",
                kind.map_or("?", kind_name),
                kf.slots().len()
            );
            Ok(())
        }
    }
}
