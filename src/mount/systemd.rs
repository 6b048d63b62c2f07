//! `tresor systemd install|uninstall`: a systemd user unit that mounts a
//! vault at login and unmounts it at logout, plus the `sd_notify` readiness
//! message the unit waits for.
//!
//! The unit is `Type=notify`: `tresor mount --foreground` sends `READY=1` once
//! the kernel mount exists, so units ordered after it see a mounted
//! directory. `ExecStop` is `tresor unmount`, which flushes, unmounts and
//! waits for the daemon (the main process) to exit. If something still has a
//! file open at logout, `tresor unmount` fails and systemd sends SIGTERM; the
//! daemon then flushes and commits everything and detaches the mount lazily
//! (see `daemon::run_daemon`).
//!
//! The passphrase never appears in the unit: it comes from the desktop
//! keyring (`--keyring`, looked up at every start) or from a 0600 file the
//! user chose (`--passphrase-file`).

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::mount::keyring;
use crate::mount::secret::{self, PassphraseSource};
use crate::vault::{self, VaultPaths};

#[derive(Subcommand)]
pub enum Action {
    /// Write a systemd user unit that mounts the vault at login and unmounts it at logout
    ///
    /// The unit runs `tresor mount --foreground` (Type=notify: it is started
    /// once the mount is ready) and stops with `tresor unmount`, which flushes
    /// everything first. The passphrase comes from the desktop keyring
    /// (Secret Service, through secret-tool) or from a passphrase file with
    /// mode 0600; it is never written into the unit. Without --keyring or
    /// --passphrase-file, the keyring is used when secret-tool and a session
    /// bus are available.
    Install(InstallArgs),
    /// Stop and disable the unit written by `install`, and remove it
    Uninstall {
        /// The mountpoint the unit was installed for
        mountpoint: PathBuf,
    },
    /// Print the template unit `tresor@.service` that the Debian package
    /// installs: `systemctl --user enable --now tresor@NAME` mounts the vault
    /// ~/.local/share/tresor/NAME on ~/NAME with its passphrase from the
    /// desktop keyring
    Template {
        /// The tresor binary the unit runs [default: this one]
        #[arg(long, value_name = "PATH")]
        exe: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct InstallArgs {
    /// Vault directory [default: $XDG_DATA_HOME/tresor/default]
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    /// Read the passphrase from FILE at every login (first line; mode 0600, owned by you)
    #[arg(long, value_name = "FILE", conflicts_with = "keyring")]
    passphrase_file: Option<PathBuf>,
    /// Read the passphrase from the desktop keyring; stores it there first if it is missing
    /// (asks for it, or takes TRESOR_PASSPHRASE)
    #[arg(long)]
    keyring: bool,
    /// FUSE mount options for the unit's mount, comma-separated (as for `tresor mount -o`)
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<String>,
    /// Also reload the user manager and `systemctl --user enable --now` the unit
    #[arg(long)]
    enable: bool,
    /// Print the unit on stdout instead of writing it
    #[arg(long)]
    print: bool,
    /// Replace an existing unit for this mountpoint
    #[arg(long)]
    force: bool,
    /// Directory to mount on (created if missing)
    mountpoint: PathBuf,
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Install(a) => install(a),
        Action::Uninstall { mountpoint } => uninstall(&mountpoint),
        Action::Template { exe } => {
            let exe = match exe {
                Some(e) => e,
                None => std::env::current_exe().context("cannot find the tresor binary")?,
            };
            print!("{}", template_unit(&exe)?);
            Ok(())
        }
    }
}

/// The packaged template unit. The instance name is the vault's name under
/// `~/.local/share/tresor/` and the mountpoint's under `~`; the passphrase
/// comes from the keyring (stored there once by `tresor systemd install
/// --keyring --print MOUNTPOINT`, which stores it and writes no unit).
pub fn template_unit(exe: &Path) -> Result<String> {
    let exe = exe
        .to_str()
        .with_context(|| format!("{} is not UTF-8", exe.display()))?;
    let exe = quote_arg(exe)?;
    Ok(unit_text(
        "# tresor@NAME.service mounts the vault ~/.local/share/tresor/NAME on ~/NAME\n\
         # at login and unmounts it at logout. The passphrase comes from the desktop\n\
         # keyring; store it there once with\n\
         #   tresor systemd install --keyring --print --vault ~/.local/share/tresor/NAME ~/NAME\n\
         # then: systemctl --user enable --now tresor@NAME\n",
        "tresor vault %i on %h/%i",
        &format!(
            "ExecStartPre=/bin/mkdir -p %h/%i\n\
             ExecStart={exe} mount --foreground --vault %h/.local/share/tresor/%i --keyring %h/%i\n\
             ExecStop={exe} unmount %h/%i\n"
        ),
    ))
}

/// A user unit: `header` comments, then the settings every tresor unit
/// shares (notify readiness, restart policy, timeouts) around `exec` (the
/// `ExecStart…`/`ExecStop` lines).
fn unit_text(header: &str, description: &str, exec: &str) -> String {
    format!(
        "{header}\
         [Unit]\n\
         Description={description}\n\
         Documentation=man:tresor-systemd(1)\n\
         StartLimitIntervalSec=10min\n\
         StartLimitBurst=5\n\
         \n\
         [Service]\n\
         Type=notify\n\
         {exec}\
         # 2 = usage error, 3 = wrong passphrase: retrying cannot help.\n\
         Restart=on-failure\n\
         RestartSec=30s\n\
         RestartPreventExitStatus=2 3\n\
         # Unlocking (Argon2id, maybe a keyring prompt) and the final flush take time.\n\
         TimeoutStartSec=5min\n\
         TimeoutStopSec=10min\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// `systemd-escape --path`: `/home/a/My Tresor` → `home-a-My\x20Tresor`.
pub fn escape_path(p: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_str().with_context(|| {
                format!(
                    "the path {} is not UTF-8; systemd cannot name a unit after it",
                    p.display()
                )
            })?),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("the path {} must not contain `..`", p.display())
            }
        }
    }
    if parts.is_empty() {
        return Ok("-".into());
    }
    let joined = parts.join("/");
    let mut out = String::new();
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    Ok(out)
}

/// One argument of an `ExecStart=` line: `%` and `$` are doubled (systemd
/// expands specifiers and variables); arguments with spaces, quotes or
/// backslashes are double-quoted with C escapes.
pub fn quote_arg(s: &str) -> Result<String> {
    if s.contains(['\n', '\r', '\0']) {
        bail!("{s:?} contains a line break; a unit file cannot hold it");
    }
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if !escaped.is_empty()
        && !escaped.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        return Ok(escaped);
    }
    Ok(format!(
        "\"{}\"",
        escaped.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

fn exec_line(args: &[&Path]) -> Result<String> {
    let words: Result<Vec<String>> = args
        .iter()
        .map(|a| {
            let s = a
                .to_str()
                .with_context(|| format!("{} is not UTF-8", a.display()))?;
            quote_arg(s)
        })
        .collect();
    Ok(words?.join(" "))
}

fn user_unit_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("systemd/user"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

/// The unit name for a mountpoint: `tresor-<escaped path>.service`.
pub fn unit_name(mountpoint: &Path) -> Result<String> {
    Ok(format!("tresor-{}.service", escape_path(mountpoint)?))
}

enum Source {
    Keyring,
    File(PathBuf),
}

struct Unit<'a> {
    exe: &'a Path,
    vault: &'a Path,
    mountpoint: &'a Path,
    source: &'a Source,
    options: &'a [String],
}

fn render(u: &Unit) -> Result<String> {
    let mut start: Vec<&Path> = vec![
        u.exe,
        Path::new("mount"),
        Path::new("--foreground"),
        Path::new("--vault"),
        u.vault,
    ];
    match u.source {
        Source::Keyring => start.push(Path::new("--keyring")),
        Source::File(f) => {
            start.push(Path::new("--passphrase-file"));
            start.push(f);
        }
    }
    let opts = u.options.join(",");
    if !opts.is_empty() {
        start.push(Path::new("-o"));
        start.push(Path::new(&opts));
    }
    start.push(u.mountpoint);
    let stop = [u.exe, Path::new("unmount"), u.mountpoint];
    let mp = u.mountpoint.display().to_string().replace('%', "%%");
    let vault = u.vault.display().to_string().replace('%', "%%");
    let how = match u.source {
        Source::Keyring => "the desktop keyring".to_string(),
        Source::File(f) => f.display().to_string().replace('%', "%%"),
    };
    Ok(unit_text(
        &format!(
            "# Mounts the tresor vault {vault} on {mp} at login.\n\
             # Written by `tresor systemd install`; remove it with `tresor systemd uninstall {mp}`.\n\
             # The passphrase comes from {how}.\n"
        ),
        &format!("tresor vault on {mp}"),
        &format!(
            "ExecStart={}\nExecStop={}\n",
            exec_line(&start)?,
            exec_line(&stop)?
        ),
    ))
}

/// Whether a systemd user manager is reachable for `systemctl --user`.
fn user_manager_running() -> bool {
    std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|d| PathBuf::from(d).join("systemd/private").exists())
}

fn systemctl(args: &[&str]) -> Result<()> {
    let st = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    if !st.success() {
        bail!("`systemctl --user {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

fn install(a: InstallArgs) -> Result<()> {
    let vault = VaultPaths::new(match &a.vault {
        Some(v) => std::path::absolute(v).context("invalid --vault path")?,
        None => vault::default_vault_dir()?,
    });
    vault::require_exists(&vault)?;
    let mountpoint = std::path::absolute(&a.mountpoint).context("invalid mountpoint")?;
    if mountpoint.starts_with(&vault.root) || vault.root.starts_with(&mountpoint) {
        return Err(crate::error::usage(format!(
            "the mountpoint {} and the vault {} must not contain each other",
            mountpoint.display(),
            vault.root.display()
        )));
    }
    let source = match (&a.passphrase_file, a.keyring) {
        (Some(f), _) => Source::File(std::path::absolute(f).context("invalid --passphrase-file")?),
        (None, true) => Source::Keyring,
        (None, false) => match keyring::unavailable_reason() {
            None => Source::Keyring,
            Some(why) => {
                return Err(crate::error::usage(format!(
                    "the unit needs the passphrase at every login: pass --passphrase-file FILE \
                     (first line, mode 0600) or --keyring (the desktop keyring cannot be used here: {why})"
                )))
            }
        },
    };
    // Check the passphrase source now, so the unit does not fail at login.
    match &source {
        Source::File(f) => {
            secret::check_key_file(f)?;
            let pass = PassphraseSource {
                file: Some(f.clone()),
                from_stdin: false,
                keyring: None,
            }
            .read(false)?;
            vault::unlock(&vault, &pass)?;
        }
        Source::Keyring => {
            if let Some(why) = keyring::unavailable_reason() {
                bail!("--keyring: the desktop keyring cannot be used here: {why}");
            }
            let stored = match keyring::find(&vault)? {
                Some(p) if vault::unlock(&vault, &p).is_ok() => true,
                Some(_) => {
                    eprintln!("The keyring's passphrase for this vault is wrong; replacing it.");
                    false
                }
                None => false,
            };
            if !stored {
                let pass = PassphraseSource {
                    file: None,
                    from_stdin: false,
                    keyring: None,
                }
                .read(false)?;
                vault::unlock(&vault, &pass)?;
                keyring::store(&vault, &pass)?;
                println!("Stored the passphrase in the desktop keyring.");
            }
        }
    }
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find the tresor executable")?;
    let options: Vec<String> = a
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let text = render(&Unit {
        exe: &exe,
        vault: &vault.root,
        mountpoint: &mountpoint,
        source: &source,
        options: &options,
    })?;
    if a.print {
        print!("{text}");
        return Ok(());
    }
    let name = unit_name(&mountpoint)?;
    let dir = user_unit_dir()?;
    let path = dir.join(&name);
    if path.exists() && !a.force {
        bail!(
            "{} exists already; pass --force to replace it, or remove it with `tresor systemd uninstall {}`",
            path.display(),
            mountpoint.display()
        );
    }
    if !mountpoint.exists() {
        std::fs::create_dir_all(&mountpoint)
            .with_context(|| format!("cannot create the mountpoint {}", mountpoint.display()))?;
        println!("Created {}", mountpoint.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    println!("Wrote {}", path.display());
    println!("It runs {}", exe.display());
    if a.enable {
        if !user_manager_running() {
            bail!(
                "no systemd user manager is running here, so the unit was written but not enabled; \
                 in your desktop session run: systemctl --user daemon-reload && systemctl --user enable --now {name}"
            );
        }
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", &name])?;
        println!(
            "Enabled and started {name}: {} is mounted now and at every login.",
            mountpoint.display()
        );
    } else {
        println!("Mount now and at every login with:");
        println!("    systemctl --user daemon-reload && systemctl --user enable --now {name}");
    }
    Ok(())
}

fn uninstall(mountpoint: &Path) -> Result<()> {
    let mountpoint = std::path::absolute(mountpoint).context("invalid mountpoint")?;
    let name = unit_name(&mountpoint)?;
    let path = user_unit_dir()?.join(&name);
    if !path.exists() {
        bail!(
            "no tresor unit for {} (looked for {})",
            mountpoint.display(),
            path.display()
        );
    }
    let manager = user_manager_running();
    if manager {
        // Stops it (flushes and unmounts) before the file goes away.
        systemctl(&["disable", "--now", &name])?;
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!("Removed {}", path.display());
    if manager {
        systemctl(&["daemon-reload"])?;
    } else {
        println!(
            "No systemd user manager is running here; if the vault is still mounted, \
             unmount it with `tresor unmount {}`.",
            mountpoint.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_like_systemd_escape_path() {
        let e = |p: &str| escape_path(Path::new(p)).unwrap();
        assert_eq!(e("/home/alice/Tresor"), "home-alice-Tresor");
        assert_eq!(e("/home//alice/Tresor/"), "home-alice-Tresor");
        assert_eq!(e("/"), "-");
        assert_eq!(e("/mnt/my tresor-1"), "mnt-my\\x20tresor\\x2d1");
        assert_eq!(e("/.hidden/a.b"), "\\x2ehidden-a.b");
        assert_eq!(e("/ü"), "\\xc3\\xbc");
        assert!(escape_path(Path::new("/a/../b")).is_err());
    }

    #[test]
    fn exec_quoting() {
        assert_eq!(quote_arg("/usr/bin/tresor").unwrap(), "/usr/bin/tresor");
        assert_eq!(quote_arg("/mnt/a b").unwrap(), "\"/mnt/a b\"");
        assert_eq!(quote_arg("100%$x").unwrap(), "100%%$$x");
        assert_eq!(quote_arg("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert_eq!(quote_arg("").unwrap(), "\"\"");
        assert!(quote_arg("a\nb").is_err());
    }

    #[test]
    fn unit_never_contains_the_passphrase_source_contents() {
        let text = render(&Unit {
            exe: Path::new("/usr/bin/tresor"),
            vault: Path::new("/home/a/.local/share/tresor/default"),
            mountpoint: Path::new("/home/a/My Tresor"),
            source: &Source::Keyring,
            options: &["noatime".to_string()],
        })
        .unwrap();
        assert!(text.contains(
            "ExecStart=/usr/bin/tresor mount --foreground --vault /home/a/.local/share/tresor/default --keyring -o noatime \"/home/a/My Tresor\"\n"
        ), "{text}");
        assert!(text.contains("ExecStop=/usr/bin/tresor unmount \"/home/a/My Tresor\"\n"));
        assert!(text.contains("Type=notify\n"));
    }
}
