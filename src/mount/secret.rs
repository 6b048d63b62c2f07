//! Where the secret that unlocks a vault comes from: a passphrase (file,
//! standard input, `TRESOR_PASSPHRASE`, the desktop keyring, a prompt) and
//! the check that a secret kept on disk for unattended mounts is private.
//! The CLI's `--key-file` reads a whole file instead (`cli::session`).

use std::io::{IsTerminal, Read};
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
            let mut file = std::fs::File::open(f)
                .with_context(|| format!("cannot read passphrase file {}", f.display()))?;
            let all = read_secret(&mut file, MAX_SECRET_LEN)
                .with_context(|| format!("cannot read passphrase file {}", f.display()))?;
            return first_line(&all);
        }
        if self.from_stdin {
            let line = read_secret_line(&mut raw_stdin()?, MAX_SECRET_LEN)
                .context("cannot read the passphrase from standard input")?;
            return first_line(&line);
        }
        if let Some(p) = take_env_passphrase() {
            return first_line(&p);
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

fn non_empty(s: &str) -> Result<Zeroizing<Vec<u8>>> {
    if s.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Zeroizing::new(s.as_bytes().to_vec()))
}

/// The first line of `bytes` (without `\n` or `\r\n`), as a passphrase.
pub fn first_line(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s = std::str::from_utf8(line).context("the passphrase is not UTF-8 text")?;
    non_empty(s)
}

/// The most a secret (passphrase file, key file) may be: a bound for the
/// buffers that hold it, not a limit anyone meets.
pub const MAX_SECRET_LEN: usize = 16 * 1024 * 1024;

/// Reads `r` to its end into zeroizing memory. The buffer grows by copying
/// into a new zeroizing buffer (the old one is wiped), never by `Vec`'s own
/// reallocation, which would free a copy of the secret without wiping it.
pub fn read_secret(r: &mut impl Read, max: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    read_secret_until(r, max, None)
}

/// Like [`read_secret`], up to and including the first `\n`, reading one
/// byte at a time so nothing past the line is consumed or buffered.
pub fn read_secret_line(r: &mut impl Read, max: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    read_secret_until(r, max, Some(b'\n'))
}

fn read_secret_until(
    r: &mut impl Read,
    max: usize,
    end: Option<u8>,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; 256]);
    let mut n = 0;
    loop {
        if n == buf.len() {
            if n > max {
                return Err(std::io::Error::other(format!(
                    "the secret is longer than {max} bytes"
                )));
            }
            let mut bigger = Zeroizing::new(vec![0u8; buf.len() * 2]);
            bigger[..n].copy_from_slice(&buf[..n]);
            buf = bigger;
        }
        let want = if end.is_some() { n + 1 } else { buf.len() };
        match r.read(&mut buf[n..want]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if end.is_some_and(|e| buf[n - 1] == e) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n > max {
        return Err(std::io::Error::other(format!(
            "the secret is longer than {max} bytes"
        )));
    }
    buf.truncate(n);
    Ok(buf)
}

/// Standard input without std's process-wide buffer (which would keep a
/// copy of whatever passed through it for the life of the process).
pub fn raw_stdin() -> Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot read standard input")?;
    Ok(std::fs::File::from(fd))
}

/// `TRESOR_PASSPHRASE`, copied into zeroizing memory; the variable's bytes
/// in the process's environment block are then overwritten with zeros and
/// the variable removed, so neither the process's memory nor
/// `/proc/PID/environ` keeps the passphrase.
fn take_env_passphrase() -> Option<Zeroizing<Vec<u8>>> {
    const NAME: &std::ffi::CStr = c"TRESOR_PASSPHRASE";
    // SAFETY: getenv returns a pointer into the environment block (or
    // null); it is read and overwritten before any other thread of this
    // process exists (passphrases are read by the command's main thread
    // before the daemon starts threads), and its length is its C string
    // length, which we do not exceed.
    unsafe {
        let p = libc::getenv(NAME.as_ptr());
        if p.is_null() {
            return None;
        }
        let len = libc::strlen(p);
        let bytes = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        let copy = Zeroizing::new(bytes.to_vec());
        zeroize::Zeroize::zeroize(bytes);
        std::env::remove_var("TRESOR_PASSPHRASE");
        Some(copy)
    }
}

/// zxcvbn's score a new passphrase must reach: 4 = more than 10^10 guesses
/// ("strong protection from an offline slow-hash attack"). Every provider
/// holds the key file, so the passphrase's only protection against offline
/// guessing is Argon2id's cost per guess times the number of guesses.
pub const MIN_SCORE: u8 = 4;

/// Refuses a new passphrase that zxcvbn estimates below [`MIN_SCORE`],
/// unless `allow_weak` (`--weak-passphrase`), which only warns.
pub fn check_strength(passphrase: &[u8], allow_weak: bool) -> Result<()> {
    let Ok(text) = std::str::from_utf8(passphrase) else {
        return Ok(()); // not text: not a human-chosen passphrase
    };
    let estimate = zxcvbn::zxcvbn(text, &["tresor"]);
    let score = u8::from(estimate.score());
    if score >= MIN_SCORE {
        return Ok(());
    }
    let mut why = format!(
        "the passphrase is weak: about 10^{:.0} guesses would find it (strength {score} of 4, {MIN_SCORE} is needed)",
        estimate.guesses_log10()
    );
    if let Some(f) = estimate.feedback() {
        if let Some(w) = f.warning() {
            why.push_str(&format!("; {w}"));
        }
        for s in f.suggestions() {
            why.push_str(&format!("; {s}"));
        }
    }
    if allow_weak {
        eprintln!("warning: {why}; accepted because of --weak-passphrase");
        return Ok(());
    }
    Err(crate::error::usage(format!(
        "{why}. Every storage provider holds the key file and can guess offline: \
         choose a longer passphrase (several random words), or pass --weak-passphrase to use it anyway"
    )))
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
