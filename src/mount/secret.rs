//! Where the secret that unlocks a vault comes from: a passphrase (file,
//! standard input, `TRESOR_PASSPHRASE`, the desktop keyring, a prompt) and
//! the check that a secret kept on disk for unattended mounts is private.
//! The CLI's `--key-file` reads a whole file instead (`cli::session`).

use std::io::{BufRead, IsTerminal};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::mount::keyring;
use crate::vault::VaultPaths;

/// Where the passphrase comes from, in order of precedence: the desktop
/// keyring (`--keyring`), an explicit `--passphrase-file`, `TRESOR_PASSPHRASE`,
/// a prompt on the terminal.
pub struct PassphraseSource {
    pub file: Option<PathBuf>,
    pub from_stdin: bool,
    /// Look the passphrase up in the desktop keyring for this vault (`--keyring`).
    pub keyring: Option<PathBuf>,
}

impl PassphraseSource {
    pub fn read(&self, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(vault) = &self.keyring {
            if confirm {
                return Err(crate::error::usage(
                    "--keyring reads the passphrase of an existing vault; create the vault first, \
                     then `tresor systemd install --keyring` stores its passphrase in the keyring",
                ));
            }
            return keyring::lookup(&VaultPaths::new(vault.clone()));
        }
        if let Some(f) = &self.file {
            let file = std::fs::File::open(f)
                .with_context(|| format!("cannot read passphrase file {}", f.display()))?;
            let mut line = Zeroizing::new(String::new());
            std::io::BufReader::new(file)
                .read_line(&mut line)
                .with_context(|| format!("cannot read passphrase file {}", f.display()))?;
            return non_empty(strip_newline(&line));
        }
        if self.from_stdin {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin().lock().read_line(&mut line)?;
            return non_empty(strip_newline(&line));
        }
        if let Ok(p) = std::env::var("TRESOR_PASSPHRASE") {
            let p = Zeroizing::new(p);
            return non_empty(&p);
        }
        if !std::io::stdin().is_terminal() {
            bail!("no passphrase: pass --passphrase-file FILE or --keyring, set TRESOR_PASSPHRASE, or run on a terminal");
        }
        let first = Zeroizing::new(rpassword::prompt_password("Passphrase: ")?);
        if confirm {
            let second = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ")?);
            if *first != *second {
                bail!("the passphrases do not match; nothing was created");
            }
        }
        non_empty(&first)
    }
}

fn strip_newline(s: &str) -> &str {
    s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(s)
}

fn non_empty(s: &str) -> Result<Zeroizing<Vec<u8>>> {
    if s.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Zeroizing::new(s.as_bytes().to_vec()))
}

/// A passphrase file that lives on disk for unattended mounts must be
/// private: a regular file, mode 0600 or stricter, owned by the mounting
/// user or root.
pub fn check_key_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    if !meta.is_file() {
        bail!("passphrase file {} is not a regular file", path.display());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "passphrase file {} is open to other users (mode {mode:04o}); make it private with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        bail!(
            "passphrase file {} belongs to uid {}, not to you (uid {euid}) or root; use a file of your own with mode 0600",
            path.display(),
            meta.uid()
        );
    }
    Ok(())
}
