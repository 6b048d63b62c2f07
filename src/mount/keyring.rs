//! The desktop keyring (Secret Service: GNOME Keyring, KWallet, KeePassXC)
//! through `secret-tool` from libsecret-tools, so tresor links no D-Bus
//! stack. A vault's passphrase is stored under the attributes
//! `service tresor vault <vault id>`: the id is in the key file's clear
//! header, so the entry follows the vault when its directory moves.
//!
//! The passphrase travels on secret-tool's stdin/stdout pipes, never in argv
//! or the environment.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::vault::keys::KeyFile;
use crate::vault::VaultPaths;

/// A locked keyring may show an unlock prompt: give the user time for it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(120);

fn secret_tool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("secret-tool"))
        .find(|p| p.is_file())
}

/// Why the keyring cannot be used here, or None if it can (secret-tool
/// installed and a session bus to reach the Secret Service on).
pub fn unavailable_reason() -> Option<String> {
    if secret_tool().is_none() {
        return Some(
            "secret-tool is not installed (Debian/Ubuntu: apt install libsecret-tools)".into(),
        );
    }
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|d| PathBuf::from(d).join("bus").exists());
    if !bus {
        return Some("there is no D-Bus session bus (not in a desktop session?)".into());
    }
    None
}

/// The vault id (hex) the keyring entry is stored under.
pub fn vault_id(paths: &VaultPaths) -> Result<String> {
    crate::vault::require_exists(paths)?;
    let kf = KeyFile::load(&paths.key_file())
        .with_context(|| format!("cannot read {}", paths.key_file().display()))?;
    Ok(hex::encode(kf.vault_id()))
}

/// The `secret-tool` attributes for a vault.
fn attributes(id: &str) -> [&str; 4] {
    ["service", "tresor", "vault", id]
}

/// Runs secret-tool with `input` on stdin; returns (success, stdout, stderr).
fn run(args: &[&str], input: &[u8]) -> Result<(bool, Zeroizing<Vec<u8>>, String)> {
    let tool = secret_tool().context(
        "secret-tool is not installed (Debian/Ubuntu: apt install libsecret-tools); \
         use a passphrase file instead",
    )?;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run secret-tool")?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input)?;
    }
    // Read both pipes on threads so a chatty child cannot block; wait bounded.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Zeroizing::new(Vec::new());
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + LOOKUP_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "secret-tool did not answer within {} s (is the keyring waiting to be unlocked?)",
                LOOKUP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    Ok((status.success(), stdout, stderr.trim().to_string()))
}

/// The vault's passphrase from the keyring, or None if no entry exists.
pub fn find(paths: &VaultPaths) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let id = vault_id(paths)?;
    let mut args = vec!["lookup"];
    args.extend(attributes(&id));
    let (ok, mut out, err) = run(&args, b"")?;
    if !ok && !err.is_empty() {
        bail!("secret-tool lookup failed: {err}");
    }
    // secret-tool adds a newline only on a terminal; strip one anyway.
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    if !ok || out.is_empty() {
        return Ok(None);
    }
    Ok(Some(Zeroizing::new(out.to_vec())))
}

/// `--keyring`: the vault's passphrase from the keyring, or an error saying
/// how to store it.
pub fn lookup(paths: &VaultPaths) -> Result<Zeroizing<Vec<u8>>> {
    match find(paths)? {
        Some(p) => Ok(p),
        None => {
            let id = vault_id(paths)?;
            bail!(
                "the desktop keyring has no passphrase for the vault {} (id {id}); store it with \
                 `tresor systemd install --keyring ...` or `secret-tool store --label=tresor service tresor vault {id}`",
                paths.root.display()
            )
        }
    }
}

/// Stores (or replaces) the vault's passphrase in the keyring.
pub fn store(paths: &VaultPaths, passphrase: &[u8]) -> Result<()> {
    let id = vault_id(paths)?;
    let label = format!("tresor vault {}", paths.root.display());
    let label_arg = format!("--label={label}");
    let mut args = vec!["store", label_arg.as_str()];
    args.extend(attributes(&id));
    let (ok, _, err) = run(&args, passphrase)?;
    if !ok {
        bail!(
            "secret-tool could not store the passphrase{}",
            if err.is_empty() {
                String::new()
            } else {
                format!(": {err}")
            }
        );
    }
    Ok(())
}
