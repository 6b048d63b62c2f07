//! mount(8), /etc/fstab and umount(8).
//!
//! `mount -t fuse.tresor VAULT MNT -o OPTS`, or an fstab line of type
//! `fuse.tresor`, makes mount(8) run `mount.fuse3 VAULT MNT -o OPTS -t
//! fuse.tresor` (there is no `mount.fuse.tresor`). mount.fuse3 consumes
//! `setuid=USER` and `drop_privileges`, drops `user`, `users`, `nouser`,
//! `auto`, `noauto`, `nofail` and `_netdev`, appends `dev,suid` unless
//! `nodev`/`nosuid` were given, and runs
//! `/bin/sh -c "tresor 'VAULT' 'MNT' -o 'OPTS'"` (for type `fuse` with source
//! `tresor#VAULT` it splits the `tresor#` off the same way). mount(8) already
//! removed `defaults`, `noauto` and `x-*`, added `noexec,nosuid,nodev` for
//! `user`, and reset PATH to `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
//! /sbin:/bin`: `tresor` must be installed in one of those.
//!
//! So `main` asks [`dispatch`] first: a first argument that is not a
//! subcommand but names a path is this form. The options are checked here
//! (an unknown one is a usage error, not a kernel EINVAL), mount-level ones
//! dropped, tresor's own (`passphrase_file=`, `keyring`) consumed, and the
//! vault is mounted like `tresor mount` does: daemonised, returning once ready.
//!
//! `mount -o remount,ro MNT` (or `remount,rw`) runs the helper form again
//! with `remount` among the mount's options: no new daemon, just mount(2)
//! with MS_REMOUNT and the mount's flags; the kernel then answers writes
//! with EROFS itself.
//!
//! `umount MNT` detaches the kernel mount and returns; the daemon then
//! flushes and commits everything before it exits (FUSE `destroy`). To make
//! `umount` itself wait for that, link tresor as `/sbin/umount.fuse.tresor`:
//! umount(8) runs `umount.fuse.tresor MNT [-nlfvr] [-N NS]` for mounts of
//! type `fuse.tresor`, and invoked under that name tresor does what
//! `tresor unmount` does.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::mount::daemon;
use crate::mount::secret::PassphraseSource;
use crate::vault::VaultPaths;

/// The fstab line the README and the man page show.
pub const FSTAB_EXAMPLE: &str = "/home/alice/.local/share/tresor/default  /home/alice/Tresor  fuse.tresor  noauto,user,nodev,nosuid,passphrase_file=/home/alice/.config/tresor/passphrase  0  0";

/// Options of mount(8), fstab or systemd that mean nothing to the mount itself.
const IGNORED: &[&str] = &[
    "", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "nofail",
    "_netdev",
];
/// Prefixes of such options (`user=NAME` is how libmount records `user`).
const IGNORED_PREFIXES: &[&str] = &["x-", "comment=", "user=", "helper="];
/// Options passed on to the FUSE mount (see `daemon::fuse_config`).
const FUSE_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "allow_other",
    "allow_root",
    "default_permissions",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    // tresor's opt-ins to device nodes and setuid bits: mount(8) drops a
    // plain `dev`/`suid` (they are the kernel's default), so through fstab
    // only these names reach tresor, which mounts nodev,nosuid otherwise.
    "allow_dev",
    "allow_suid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "sync",
    "async",
    "dirsync",
];

const OPPOSITES: &[(&str, &str)] = &[
    ("rw", "ro"),
    ("dev", "nodev"),
    ("suid", "nosuid"),
    ("exec", "noexec"),
    ("atime", "noatime"),
    ("sync", "async"),
    ("allow_other", "allow_root"),
];

/// Called by `main` before clap parses anything: runs the mount-helper or
/// umount-helper form if argv is one, and returns its result (the CLI maps
/// it to an exit code).
pub fn dispatch(cli: &clap::Command) -> Option<Result<()>> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    // Only under tresor's own helper names: a link named umount.fuse would
    // otherwise take over every FUSE filesystem's unmount.
    let result = if name == "umount.fuse.tresor" || name == "umount.tresor" {
        init_logging();
        umount_helper(rest)
    } else if name == "mount.fuse.tresor" || name == "mount.tresor" || is_mount_form(cli, rest) {
        init_logging();
        mount_helper(rest)
    } else {
        return None;
    };
    Some(result)
}

fn init_logging() {
    crate::logging::init("warn,opendal=off", crate::logging::Target::Stderr);
}

/// `tresor VAULT MOUNTPOINT ...`: the first argument is no subcommand and
/// names a path (so a mistyped subcommand still gets clap's error).
fn is_mount_form(cli: &clap::Command, args: &[OsString]) -> bool {
    let (Some(first), Some(second)) = (args.first(), args.get(1)) else {
        return false;
    };
    let s = first.to_string_lossy();
    if s.starts_with('-') || second.to_string_lossy().starts_with('-') {
        return false;
    }
    if s == "help" || cli.find_subcommand(first).is_some() {
        return false;
    }
    s.contains('/') || Path::new(first).exists()
}

#[derive(Debug, PartialEq)]
struct HelperArgs {
    source: PathBuf,
    mountpoint: PathBuf,
    options: Vec<String>,
    /// mount(8)'s `-f`: check everything, mount nothing.
    fake: bool,
}

fn parse_helper_args(args: &[OsString]) -> Result<HelperArgs> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let v = it.next().ok_or_else(|| {
                    crate::error::usage("-o needs a value (comma-separated mount options)")
                })?;
                options.push(v.to_string_lossy().into_owned());
            }
            "-t" => {
                it.next();
            }
            "-n" | "-s" | "-v" | "-i" => {}
            "-f" => fake = true,
            "-N" => {
                return Err(crate::error::usage(
                    "mounting into another mount namespace (-N) is not supported",
                ))
            }
            o if o.starts_with("-o") => options.push(o[2..].to_string()),
            o if o.starts_with('-') => {
                return Err(crate::error::usage(format!(
                    "unknown argument `{o}` in the mount-helper form \
                     (`tresor VAULT MOUNTPOINT [-o OPTIONS]`, as mount(8) runs it)"
                )))
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [source, mountpoint]: [PathBuf; 2] = positional.try_into().map_err(|p: Vec<PathBuf>| {
        crate::error::usage(format!(
            "the mount-helper form takes a vault and a mountpoint (`tresor VAULT MOUNTPOINT -o OPTIONS`), got {} path argument(s)",
            p.len()
        ))
    })?;
    Ok(HelperArgs {
        source,
        mountpoint,
        options: options
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::to_string)
            .collect(),
        fake,
    })
}

/// Mount options after sorting out what is whose.
#[derive(Debug, Default, PartialEq)]
pub struct MountOptions {
    /// For the FUSE mount (`tresor mount -o`).
    pub fuse: Vec<String>,
    pub passphrase_file: Option<PathBuf>,
    pub keyring: bool,
}

/// Splits fstab/mount(8) options into FUSE options and tresor's own; an
/// unknown option is a usage error. `root`: the mount is done as root (a
/// user's mount goes through fusermount3, which forbids `dev` and `suid`;
/// mount.fuse3 adds them unless `nodev`/`nosuid` were given).
pub fn parse_options(raw: &[String], root: bool) -> Result<MountOptions> {
    let mut out = MountOptions::default();
    for o in raw.iter().map(|o| o.trim()) {
        if IGNORED.contains(&o) || IGNORED_PREFIXES.iter().any(|p| o.starts_with(p)) {
            continue;
        }
        if FUSE_OPTIONS.contains(&o) {
            if !root && matches!(o, "dev" | "suid" | "allow_dev" | "allow_suid") {
                continue;
            }
            // The later of two opposites wins, as in mount(8).
            let opposites: Vec<&str> = OPPOSITES
                .iter()
                .filter_map(|&(a, b)| (a == o).then_some(b).or((b == o).then_some(a)))
                .collect();
            out.fuse
                .retain(|x| x != o && !opposites.contains(&x.as_str()));
            out.fuse.push(o.to_string());
            continue;
        }
        if let Some(path) = o.strip_prefix("passphrase_file=") {
            if path.is_empty() || !path.starts_with('/') {
                return Err(crate::error::usage(format!(
                    "passphrase_file needs an absolute path, got `{path}`"
                )));
            }
            out.passphrase_file = Some(PathBuf::from(path));
            continue;
        }
        if o == "keyring" {
            out.keyring = true;
            continue;
        }
        let hint = match o {
            "setuid" | "drop_privileges" => " (mount.fuse3 handles it; is tresor run directly?)",
            _ if o.starts_with("setuid=") => " (mount.fuse3 handles it; is tresor run directly?)",
            _ if o.starts_with("passphrase") => {
                " (the passphrase itself never goes in the options: use passphrase_file=FILE)"
            }
            _ => "",
        };
        return Err(crate::error::usage(format!(
            "unknown mount option `{o}`{hint}; tresor takes passphrase_file=FILE or keyring, \
             the FUSE options {}, and mount(8)'s noauto, user, users, nofail, _netdev, x-*",
            FUSE_OPTIONS.join(", ")
        )));
    }
    if out.keyring && out.passphrase_file.is_some() {
        return Err(crate::error::usage(
            "give either passphrase_file=FILE or keyring, not both",
        ));
    }
    // An explicit nosuid/nodev beats tresor's opt-in, whatever the order:
    // libmount does not keep the order of kernel flags and helper options.
    for (restrictive, opt_in) in [("nosuid", "allow_suid"), ("nodev", "allow_dev")] {
        if out.fuse.iter().any(|o| o == restrictive) {
            out.fuse.retain(|o| o != opt_in);
        }
    }
    Ok(out)
}

fn mount_helper(args: &[OsString]) -> Result<()> {
    let a = parse_helper_args(args)?;
    if a.options.iter().any(|o| o == "remount") {
        return remount(&a.mountpoint, &a.options, a.fake);
    }
    if a.mountpoint.starts_with("/dev/fd") {
        return Err(crate::error::usage(
            "mount.fuse3's drop_privileges option passes a pre-opened /dev/fuse, which tresor does not support; remove drop_privileges from the mount options",
        ));
    }
    let root = nix::unistd::geteuid().is_root();
    let opts = parse_options(&a.options, root)?;
    let vault = VaultPaths::new(
        std::path::absolute(&a.source)
            .with_context(|| format!("invalid vault path {}", a.source.display()))?,
    );
    crate::vault::require_exists(&vault)?;
    if let Some(f) = &opts.passphrase_file {
        crate::mount::secret::check_key_file(f)?;
    } else if !opts.keyring
        && std::env::var_os("TRESOR_PASSPHRASE").is_none()
        && !std::io::stdin().is_terminal()
    {
        bail!(
            "no passphrase for {}: add passphrase_file=/path/to/file (mode 0600) or keyring to the mount options",
            vault.root.display()
        );
    }
    let pass = PassphraseSource {
        file: opts.passphrase_file.clone(),
        from_stdin: false,
        keyring: opts.keyring.then(|| vault.root.clone()),
    }
    .read(false)?;
    if a.fake {
        crate::vault::unlock(&vault, &pass)?;
        return Ok(());
    }
    daemon::mount(
        daemon::MountRequest {
            vault,
            mountpoint: a.mountpoint,
            options: opts.fuse,
            foreground: false,
        },
        pass,
    )
}

/// The mount(2) flags of a remount's options; `None` for an option a remount
/// cannot change (mount(8) passes the mount's whole option string: the FUSE
/// ones such as `user_id=0` were fixed at mount time and the kernel ignores
/// them on a remount), an error for one that means nothing here.
fn remount_flag(o: &str) -> Result<Option<nix::mount::MsFlags>> {
    use nix::mount::MsFlags as F;
    Ok(Some(match o {
        "ro" => F::MS_RDONLY,
        "nosuid" => F::MS_NOSUID,
        "nodev" => F::MS_NODEV,
        "noexec" => F::MS_NOEXEC,
        "sync" => F::MS_SYNCHRONOUS,
        "dirsync" => F::MS_DIRSYNC,
        "noatime" => F::MS_NOATIME,
        "nodiratime" => F::MS_NODIRATIME,
        "relatime" => F::MS_RELATIME,
        "strictatime" => F::MS_STRICTATIME,
        "lazytime" => F::MS_LAZYTIME,
        "remount"
        | "rw"
        | "suid"
        | "dev"
        | "exec"
        | "async"
        | "atime"
        | "diratime"
        | "norelatime"
        | "nostrictatime"
        | "nolazytime"
        | "default_permissions"
        | "allow_other"
        | "allow_root"
        | "allow_dev"
        | "allow_suid"
        | "keyring" => return Ok(None),
        _ if IGNORED.contains(&o) || IGNORED_PREFIXES.iter().any(|p| o.starts_with(p)) => {
            return Ok(None)
        }
        _ if [
            "user_id=",
            "group_id=",
            "max_read=",
            "blksize=",
            "passphrase_file=",
        ]
        .iter()
        .any(|p| o.starts_with(p)) =>
        {
            return Ok(None)
        }
        _ => {
            return Err(crate::error::usage(format!(
                "mount option `{o}` cannot be changed by a remount of a tresor mount; \
                 a remount changes ro/rw and the mount flags (nosuid, nodev, noexec, sync, \
                 dirsync, noatime, nodiratime, relatime, strictatime, lazytime)"
            )))
        }
    }))
}

/// `mount -o remount,ro MNT` (or `remount,rw`): mount(8) runs the helper
/// again with `remount` among the options. No new daemon: the running one
/// keeps serving, and the kernel changes the mount in place (FUSE accepts a
/// reconfiguration of its flags) and from then on answers every write to a
/// read-only mount with EROFS itself. The flags replace the mount's, so
/// mount(8)'s list (the mount's current flags plus the new ones) is kept.
fn remount(mountpoint: &Path, options: &[String], fake: bool) -> Result<()> {
    let mp = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("remount: {}", mountpoint.display()))?;
    if daemon::mountpoint_containing(&mp).as_deref() != Some(mp.as_path()) {
        bail!("remount: {} is not a tresor mount", mp.display());
    }
    let mut flags = nix::mount::MsFlags::MS_REMOUNT;
    // The later of two opposites wins, as in mount(8).
    for o in options.iter().map(|o| o.trim()) {
        match o {
            "rw" => flags.remove(nix::mount::MsFlags::MS_RDONLY),
            "suid" | "allow_suid" => flags.remove(nix::mount::MsFlags::MS_NOSUID),
            "dev" | "allow_dev" => flags.remove(nix::mount::MsFlags::MS_NODEV),
            "exec" => flags.remove(nix::mount::MsFlags::MS_NOEXEC),
            _ => flags |= remount_flag(o)?.unwrap_or(nix::mount::MsFlags::empty()),
        }
    }
    if fake {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("remount: only root can remount a FUSE filesystem (fusermount3 cannot)");
    }
    nix::mount::mount(None::<&str>, &mp, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("remount of {} ({flags:?})", mp.display()))?;
    Ok(())
}

/// `umount.fuse.tresor MOUNTPOINT [-n] [-l] [-f] [-v] [-r] [-t TYPE]`.
fn umount_helper(args: &[OsString]) -> Result<()> {
    let mut target = None;
    let mut lazy = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_string_lossy().as_ref() {
            "-l" => lazy = true,
            "-n" | "-f" | "-v" | "-r" => {}
            "-t" => {
                it.next();
            }
            "-N" => {
                return Err(crate::error::usage(
                    "unmounting in another mount namespace (-N) is not supported",
                ))
            }
            o if o.starts_with('-') => {
                return Err(crate::error::usage(format!(
                    "unknown umount helper argument `{o}`"
                )))
            }
            _ => target = Some(PathBuf::from(a)),
        }
    }
    let target =
        target.ok_or_else(|| crate::error::usage("usage: umount.fuse.tresor MOUNTPOINT"))?;
    if lazy {
        let st = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&target)
            .status()
            .context("cannot run fusermount3 (install the fuse3 package)")?;
        if !st.success() {
            bail!("fusermount3 -u -z {} failed", target.display());
        }
        return Ok(());
    }
    daemon::unmount(&target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn options_as_mount_fuse3_passes_them() {
        // what mount(8) + mount.fuse3 hand over for the README's fstab line
        let o = parse_options(
            &strings(
                "rw,noexec,nosuid,nodev,passphrase_file=/home/a/.config/tresor/p,user,dev,suid",
            ),
            false,
        )
        .unwrap();
        assert_eq!(o.fuse, ["rw", "noexec", "nosuid", "nodev"]);
        assert_eq!(
            o.passphrase_file.as_deref(),
            Some(Path::new("/home/a/.config/tresor/p"))
        );
        assert!(!o.keyring);
        // as root, dev/suid are kept (mount(8)'s defaults for root)
        let o = parse_options(
            &strings("allow_other,dev,suid,keyring,x-systemd.automount,_netdev,nofail,user=alice"),
            true,
        )
        .unwrap();
        assert_eq!(o.fuse, ["allow_other", "dev", "suid"]);
        assert!(o.keyring);
        // the later of two opposites wins
        let o = parse_options(&strings("rw,noexec,exec,ro,noatime"), true).unwrap();
        assert_eq!(o.fuse, ["exec", "ro", "noatime"]);
        // nosuid/nodev beat the opt-ins in any order (xfstests' generic/128
        // adds -o nosuid to options that hold allow_suid)
        let o = parse_options(&strings("allow_suid,allow_dev,nosuid"), true).unwrap();
        assert_eq!(o.fuse, ["allow_dev", "nosuid"]);
        let o = parse_options(&strings("nodev,allow_dev"), true).unwrap();
        assert_eq!(o.fuse, ["nodev"]);
        // a user's mount cannot opt in (fusermount3 forbids it)
        let o = parse_options(&strings("allow_suid,allow_dev"), false).unwrap();
        assert!(o.fuse.is_empty(), "{:?}", o.fuse);
    }

    #[test]
    fn bad_options_are_usage_errors() {
        for bad in [
            "uid=1000",
            "passphrase=secret",
            "keyring,passphrase_file=/x",
            "passphrase_file=rel/p",
            "fsname=x",
        ] {
            let e = parse_options(&strings(bad), true).unwrap_err();
            assert_eq!(
                crate::error::kind_of(&e),
                Some(crate::error::Kind::Usage),
                "{bad}: {e:#}"
            );
        }
        let e = parse_options(&strings("passphrase=secret"), true).unwrap_err();
        assert!(format!("{e}").contains("use passphrase_file=FILE"), "{e}");
    }

    #[test]
    fn helper_argv() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let a = parse_helper_args(&os(&[
            "/v",
            "/m",
            "-o",
            "rw,keyring",
            "-t",
            "fuse.tresor",
            "-oro",
        ]))
        .unwrap();
        assert_eq!(
            a,
            HelperArgs {
                source: "/v".into(),
                mountpoint: "/m".into(),
                options: strings("rw,keyring,ro"),
                fake: false
            }
        );
        assert!(parse_helper_args(&os(&["/v"])).is_err());
        assert!(parse_helper_args(&os(&["/v", "/m", "-x"])).is_err());
        assert!(parse_helper_args(&os(&["/v", "/m", "-N", "/proc/1/ns/mnt"])).is_err());
    }

    #[test]
    fn mount_form_detection() {
        let cli = clap::Command::new("tresor")
            .subcommand(clap::Command::new("mount"))
            .subcommand(clap::Command::new("status"));
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_mount_form(
            &cli,
            &os(&["/srv/vault", "/mnt", "-o", "ro"])
        ));
        assert!(is_mount_form(&cli, &os(&["./vault", "mnt"])));
        assert!(!is_mount_form(&cli, &os(&["mount", "/mnt"])));
        assert!(!is_mount_form(&cli, &os(&["help", "mount"])));
        assert!(
            !is_mount_form(&cli, &os(&["mout", "x"])),
            "a typo stays a clap error"
        );
        assert!(!is_mount_form(&cli, &os(&["/srv/vault"])));
        assert!(!is_mount_form(&cli, &os(&["--help"])));
    }
}
