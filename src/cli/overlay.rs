//! `tresor overlay FOLDER`: encrypts a folder in place. This file parses
//! the options, runs the steps from the journal's state, mounts and
//! unmounts, and prints; the journal, the tree walks (copy, verify) and the
//! moves of the originals are `maintenance/overlay.rs`.
//!
//! The contents are copied into a vault (mounted on a temporary mountpoint
//! next to the vault directory), verified byte for byte, uploaded when the
//! vault has remote backends, and then the vault is mounted over FOLDER
//! itself. The originals are renamed aside (`FOLDER.tresor-originals-TS`, a
//! rename in the same directory) before the mount, verified once more
//! against the mounted vault, and only then deleted.
//!
//! Every step is recorded in a journal, `VAULT/overlay.json`, written
//! atomically before the step's effects become visible. Until the originals
//! are deleted they exist either at FOLDER or at the renamed directory, so a
//! crash at any point loses nothing: `--resume` continues from the journal,
//! `--rollback` puts the folder back (from the renamed originals, or copied
//! back out of the vault if they were already deleted).
//!
//! `TRESOR_OVERLAY_STOP_AFTER=copy|verified|synced|moving|originals-moved|mounted`
//! exits (status 75) right after that step, as a crash would: for tests.

use parking_lot::Mutex;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::cli::VaultArgs;
use crate::maintenance::overlay::{
    copy_mode, copy_tree, empty_dir, escape_path, journal_path, load_journal, move_originals_aside,
    move_originals_back, originals_path, remove_tree, resolve_folder, save_journal, scan,
    set_state, sync_dir, tmp_mountpoint, unix_now, verify_tree, Journal,
};
use crate::remote::backend::VaultConfig;
use crate::vault::{self, VaultPaths};

pub struct OverlayOpts {
    pub vault: VaultArgs,
    pub folder: PathBuf,
    pub quiet: bool,
    pub json: bool,
    pub resume: bool,
    pub rollback: bool,
    pub keep_originals: bool,
}

/// The test hook: exits as if killed once `point` is reached.
fn stop_point(point: &str) {
    if std::env::var("TRESOR_OVERLAY_STOP_AFTER").as_deref() == Ok(point) {
        eprintln!("tresor: overlay stopped after {point} (TRESOR_OVERLAY_STOP_AFTER)");
        std::process::exit(75);
    }
}

fn is_tresor_mount(p: &Path) -> bool {
    crate::mount::daemon::mountpoint_containing(p).as_deref() == Some(p)
}

fn mount_on(paths: &VaultPaths, mp: &Path, pass: &[u8]) -> Result<()> {
    if is_tresor_mount(mp) {
        return Ok(());
    }
    std::fs::create_dir_all(mp).with_context(|| format!("cannot create {}", mp.display()))?;
    crate::mount::daemon::mount(
        crate::mount::daemon::MountRequest {
            vault: VaultPaths::new(paths.root.clone()),
            mountpoint: mp.to_path_buf(),
            options: Vec::new(),
            foreground: false,
        },
        zeroize::Zeroizing::new(pass.to_vec()),
    )
}

fn unmount_if_mounted(mp: &Path) -> Result<()> {
    if is_tresor_mount(mp) {
        crate::mount::daemon::unmount(mp)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Progress: files and bytes, with its own plain line (`crate::progress`
// counts bytes only, and prints a plain line on every update once they are
// all done, which the files that follow the last byte would repeat).

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    what: String,
    files_total: u64,
    bytes_total: u64,
    state: Mutex<(u64, u64, Option<Instant>)>,
    started: Instant,
}

impl Progress {
    fn new(quiet: bool, what: &str, files_total: u64, bytes_total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = indicatif::ProgressBar::new(bytes_total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes}/{total_bytes} {msg} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_prefix(what.to_string());
            b
        });
        Progress {
            bar,
            plain: !quiet && !tty,
            what: what.to_string(),
            files_total,
            bytes_total,
            state: Mutex::new((0, 0, None)),
            started: Instant::now(),
        }
    }

    fn add(&self, files: u64, bytes: u64) {
        let mut s = self.state.lock();
        s.0 += files;
        s.1 += bytes;
        if let Some(b) = &self.bar {
            b.set_position(s.1);
            if files > 0 {
                b.set_message(format!("{}/{} files", s.0, self.files_total));
            }
        } else if self.plain && s.2.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            self.line(s.0, s.1);
            s.2 = Some(Instant::now());
        }
    }

    fn line(&self, files: u64, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        let eta = if rate > 0.0 {
            format!(
                "{:.0} s",
                self.bytes_total.saturating_sub(bytes) as f64 / rate
            )
        } else {
            "?".into()
        };
        eprintln!(
            "overlay: {} {files}/{} files, {bytes}/{} bytes, {:.1} MiB/s, ETA {eta}",
            self.what,
            self.files_total,
            self.bytes_total,
            rate / 1048576.0
        );
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        } else if self.plain {
            let s = self.state.lock();
            self.line(s.0, s.1);
        }
    }
}

// ---------------------------------------------------------------------------
// The command

struct Ctx {
    paths: VaultPaths,
    pass: zeroize::Zeroizing<Vec<u8>>,
    tmp: PathBuf,
    quiet: bool,
    json: bool,
    vault_args: VaultArgs,
}

impl Ctx {
    fn say(&self, msg: &str) {
        if !self.quiet && !self.json {
            eprintln!("overlay: {msg}");
        }
    }
    fn progress(&self, what: &str, j: &Journal) -> Progress {
        Progress::new(self.quiet || self.json, what, j.files, j.bytes)
    }
}

pub fn run(o: OverlayOpts) -> Result<()> {
    let started = Instant::now();
    let folder = resolve_folder(&o.folder)?;
    let root = match &o.vault.vault {
        Some(v) => std::path::absolute(v).context("invalid --vault path")?,
        None => {
            let d = vault::default_vault_dir()?;
            d.parent()
                .context("no data directory")?
                .join(escape_path(&folder))
        }
    };
    // Canonical, like the mount table and the daemon's FSName.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    if root.starts_with(&folder) || folder.starts_with(&root) {
        bail!(
            "the vault {} and the folder {} must not contain each other",
            root.display(),
            folder.display()
        );
    }
    let paths = VaultPaths::new(root.clone());
    let mut vault_args = o.vault.clone();
    vault_args.vault = Some(root.clone());
    let journal = load_journal(&root)?;
    if o.rollback || o.resume {
        let Some(j) = journal else {
            bail!(
                "no overlay in progress for the vault {} (no {})",
                root.display(),
                journal_path(&root).display()
            );
        };
        if j.folder != folder {
            bail!(
                "the overlay in progress in {} is of {}, not {}",
                root.display(),
                j.folder.display(),
                folder.display()
            );
        }
        vault::require_exists(&paths)?;
        let pass = vault_args.secret(false)?;
        let ctx = Ctx {
            tmp: tmp_mountpoint(&root),
            paths,
            pass,
            quiet: o.quiet,
            json: o.json,
            vault_args,
        };
        return if o.rollback {
            rollback(&ctx, j, started)
        } else {
            advance(&ctx, j, started)
        };
    }
    if let Some(j) = journal {
        bail!(
            "an overlay of {} into this vault is already recorded (state {}); \
             continue it with `tresor overlay --resume` or undo it with `tresor overlay --rollback`",
            j.folder.display(),
            j.state
        );
    }
    let meta = std::fs::symlink_metadata(&folder)
        .with_context(|| format!("cannot overlay {}", folder.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", folder.display());
    }
    if is_tresor_mount(&folder) {
        bail!("{} is already a tresor mount", folder.display());
    }
    let (files, bytes) = scan(&folder)?;
    let creating = !paths.key_file().exists();
    let pass = vault_args.secret(creating)?;
    if creating {
        crate::mount::secret::check_strength(&pass, false)?;
        let recovery = vault::init(&paths, &pass, &crate::vault::keys::KdfParams::interactive())?;
        let text = zeroize::Zeroizing::new(format!(
            "Created vault {}\n\nRecovery key (shown once; it opens the vault if the passphrase is lost):\n\n    {}\n",
            root.display(),
            recovery.to_display_string().as_str()
        ));
        // With --json, stdout carries exactly one JSON line.
        if o.json {
            eprintln!("{}", text.as_str());
        } else {
            println!("{}", text.as_str());
        }
    }
    let ctx = Ctx {
        tmp: tmp_mountpoint(&root),
        paths,
        pass,
        quiet: o.quiet,
        json: o.json,
        vault_args,
    };
    // A crash before the journal was written may have left the mount.
    unmount_if_mounted(&ctx.tmp)?;
    mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
    if std::fs::read_dir(&ctx.tmp)?.next().is_some() {
        let _ = crate::mount::daemon::unmount(&ctx.tmp);
        let _ = std::fs::remove_dir(&ctx.tmp);
        bail!(
            "the vault {} already holds files; overlay needs a new or empty vault",
            root.display()
        );
    }
    let j = Journal {
        folder,
        vault: root,
        state: "copying".into(),
        started: unix_now(),
        originals: None,
        files,
        bytes,
        keep_originals: o.keep_originals,
    };
    save_journal(&j)?;
    advance(&ctx, j, started)
}

/// Runs the remaining steps from the journal's state.
fn advance(ctx: &Ctx, mut j: Journal, started: Instant) -> Result<()> {
    loop {
        match j.state.as_str() {
            "copying" => {
                mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
                let (files, bytes) = scan(&j.folder)?;
                j.files = files;
                j.bytes = bytes;
                ctx.say(&format!(
                    "copying {files} files ({}) into the vault",
                    crate::progress::human(bytes)
                ));
                let p = ctx.progress("copying", &j);
                let r = copy_tree(&j.folder, &ctx.tmp, &|f, b| p.add(f, b));
                p.finish();
                r?;
                // The vault's root takes the folder's mode (best effort).
                copy_mode(&j.folder, &ctx.tmp);
                stop_point("copy");
                ctx.say("verifying the copy byte for byte");
                let p = ctx.progress("verifying", &j);
                let r = verify_tree(&j.folder, &ctx.tmp, &|f, b| p.add(f, b));
                p.finish();
                r?;
                set_state(&mut j, "verified")?;
                stop_point("verified");
            }
            "verified" => {
                if !VaultConfig::load(&ctx.paths.root)?.backends.is_empty() {
                    mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
                    ctx.say("uploading to the vault's backends");
                    crate::cli::sync::sync_cmd(&ctx.vault_args, None, ctx.quiet || ctx.json, false)
                        .context("upload to the backends failed; the originals are untouched (retry with --resume)")?;
                }
                set_state(&mut j, "synced")?;
                stop_point("synced");
            }
            "synced" => {
                unmount_if_mounted(&ctx.tmp)?;
                let _ = std::fs::remove_dir(&ctx.tmp);
                j.originals = Some(originals_path(&j.folder, unix_now()));
                set_state(&mut j, "moving")?;
                stop_point("moving");
            }
            "moving" => {
                let orig = j.originals.clone().context("journal without originals")?;
                move_originals_aside(&j.folder, &orig)?;
                set_state(&mut j, "originals-moved")?;
                stop_point("originals-moved");
            }
            "originals-moved" => {
                unmount_if_mounted(&ctx.tmp)?;
                if !j.folder.exists() {
                    std::fs::create_dir(&j.folder)?;
                }
                mount_on(&ctx.paths, &j.folder, &ctx.pass)?;
                set_state(&mut j, "mounted")?;
                stop_point("mounted");
            }
            "mounted" => {
                mount_on(&ctx.paths, &j.folder, &ctx.pass)?;
                let orig = j.originals.clone().context("journal without originals")?;
                if orig.exists() {
                    ctx.say("verifying the mounted folder against the originals");
                    let p = ctx.progress("re-verifying", &j);
                    let r = verify_tree(&orig, &j.folder, &|f, b| p.add(f, b));
                    p.finish();
                    r.with_context(|| {
                        format!(
                            "the originals are kept in {}; `tresor overlay --rollback {}` restores them",
                            orig.display(),
                            j.folder.display()
                        )
                    })?;
                    if !j.keep_originals {
                        remove_tree(&orig)?;
                        sync_dir(orig.parent().unwrap_or(Path::new("/")));
                    }
                }
                set_state(&mut j, "done")?;
            }
            "done" => {
                summary(ctx, &j, started);
                return Ok(());
            }
            other => bail!("unknown overlay state {other:?} in the journal"),
        }
    }
}

fn summary(ctx: &Ctx, j: &Journal, started: Instant) {
    let kept = j
        .originals
        .as_ref()
        .filter(|o| o.exists())
        .map(|o| o.display().to_string());
    if ctx.json {
        println!(
            "{}",
            json!({
                "folder": j.folder,
                "vault": j.vault,
                "files": j.files,
                "bytes": j.bytes,
                "seconds": started.elapsed().as_secs_f64(),
                "originals_kept": kept,
                "state": "done",
            })
        );
        return;
    }
    if ctx.quiet {
        return;
    }
    let f = j.folder.display();
    println!(
        "{f} is now encrypted: {} files, {} in the vault {} ({:.1} s).",
        j.files,
        crate::progress::human(j.bytes),
        j.vault.display(),
        started.elapsed().as_secs_f64()
    );
    match &kept {
        Some(k) => println!("The unencrypted originals are kept in {k} (delete them yourself)."),
        None => println!("The unencrypted originals were verified against the vault and deleted."),
    }
    println!("Unmount:     tresor unmount {f}   (the folder is then empty)");
    println!(
        "Mount again: tresor mount --vault {} {f}",
        j.vault.display()
    );
    println!(
        "Undo:        tresor overlay --vault {} --rollback {f}   (copies the files back)",
        j.vault.display()
    );
}

/// Puts FOLDER back as it was and empties the vault again.
fn rollback(ctx: &Ctx, j: Journal, started: Instant) -> Result<()> {
    let folder = &j.folder;
    unmount_if_mounted(&ctx.tmp)?;
    unmount_if_mounted(folder)?;
    let orig = j.originals.clone().filter(|o| o.exists());
    let how;
    if let Some(orig) = orig {
        move_originals_back(&orig, folder)?;
        how = "moved the originals back";
    } else if matches!(j.state.as_str(), "mounted" | "done") {
        // The originals were deleted: copy everything back out of the vault.
        if !folder.exists() {
            std::fs::create_dir(folder)?;
        }
        if std::fs::read_dir(folder)?.next().is_some() {
            bail!(
                "{} is not empty; cannot copy the files back into it",
                folder.display()
            );
        }
        mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
        ctx.say("copying the files back out of the vault");
        let p = ctx.progress("restoring", &j);
        let r = copy_tree(&ctx.tmp, folder, &|f, b| p.add(f, b));
        p.finish();
        r?;
        copy_mode(&ctx.tmp, folder);
        let p = ctx.progress("verifying", &j);
        let r = verify_tree(&ctx.tmp, folder, &|f, b| p.add(f, b));
        p.finish();
        r?;
        how = "copied the files back out of the vault";
    } else {
        how = "the originals were never moved";
    }
    // The folder is whole again: empty the vault (it was empty before).
    mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
    empty_dir(&ctx.tmp)?;
    crate::mount::daemon::unmount(&ctx.tmp)?;
    let _ = std::fs::remove_dir(&ctx.tmp);
    std::fs::remove_file(journal_path(&j.vault))?;
    if ctx.json {
        println!(
            "{}",
            json!({"folder": folder, "vault": j.vault, "rolled_back": true, "how": how,
                   "seconds": started.elapsed().as_secs_f64()})
        );
    } else if !ctx.quiet {
        println!(
            "Rolled back: {} is as before ({how}); the vault {} is empty again.",
            folder.display(),
            j.vault.display()
        );
    }
    Ok(())
}
