//! `tresor fsck [--repair] [--json]`: refuses a mounted vault, checks the
//! index and the local store (`maintenance::fsck`), repairs what is safe and
//! reports. Damage raises `Error::Damaged` (exit 4), leftovers that
//! `--repair` fixes `Error::Repairable` (exit 5).

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::{Session, VaultArgs};
use crate::index::Index;
use crate::maintenance::fsck::{check, repair};
use crate::vault::index_copies;
use crate::vault::keys::SecretKey;
use crate::vault::VaultPaths;

/// The index, if it opens and passes SQLite's quick_check.
fn open_intact(paths: &VaultPaths, key: &SecretKey) -> Result<Index> {
    let index = crate::vault::open_index(paths, key)?;
    if !index.quick_check().unwrap_or(false) {
        return Err(crate::error::Error::Damaged(format!(
            "the index {} fails SQLite's quick_check; run `tresor fsck --repair --vault {}` \
             to put back the newest intact copy",
            paths.index().display(),
            paths.root.display()
        ))
        .into());
    }
    Ok(index)
}

/// Paths of the files the set-aside damaged index shows as changed after
/// `sec` (ctime), if it can be read at all.
fn changed_after(paths: &VaultPaths, key: &SecretKey, sec: u64) -> Option<Vec<String>> {
    let damaged = std::fs::read_dir(&paths.root)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("index.sqlite.damaged-"))
        })
        .max()?;
    let index = Index::open_read_only(&damaged, key).ok()?;
    let inodes = index.inodes_changed_after(sec as i64).ok()?;
    Some(
        inodes
            .into_iter()
            .filter_map(|ino| index.path_of(ino).ok())
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .collect(),
    )
}

/// `tresor fsck`: exit 0 when clean (or everything found was repaired),
/// [`crate::cli::exit::FSCK_FOUND`] when inconsistencies remain that `--repair`
/// fixes, [`crate::cli::exit::FSCK_DAMAGE`] when data is lost.
pub fn run(args: &VaultArgs, repair_it: bool, json_out: bool) -> Result<()> {
    let paths = args.paths()?;
    crate::vault::require_exists(&paths)?;
    if crate::vault::is_mounted(&paths) {
        let pid = crate::vault::daemon_pid(&paths)
            .map(|p| format!(" (daemon pid {p})"))
            .unwrap_or_default();
        anyhow::bail!(
            "the vault {} is mounted{pid}; fsck needs it unmounted: run `tresor unmount MOUNTPOINT` first",
            paths.root.display()
        );
    }
    let Session { paths, unlocked } = args.open()?;
    // Held for the whole run: no mount can start under fsck.
    let _lock = crate::vault::lock_vault(&paths)?;
    let key = &unlocked.subkeys.index;
    let mut restored = None;
    let mut from_backend = None;
    let index = match open_intact(&paths, key) {
        Ok(index) => index,
        Err(e) if repair_it => {
            let copy = index_copies::restore_newest(&paths, key)?;
            if copy.is_none() {
                // No intact local copy: the newest snapshot on a backend,
                // through restore's own search and download.
                if let Some(found) = crate::maintenance::restore::index_from_backends(
                    &paths,
                    &unlocked.subkeys,
                    unlocked.key_file.vault_id(),
                )? {
                    eprintln!("{e:#}");
                    from_backend = Some(found);
                }
            }
            let copy = match (copy, &from_backend) {
                (Some(c), _) => Some(c),
                (None, Some(_)) => None,
                (None, None) => {
                    return Err(crate::error::Error::Damaged(format!(
                    "{e:#}; no intact copy in {} to put back{}",
                    paths.index_copies().display(),
                    if crate::remote::backend::VaultConfig::load(&paths.root)
                        .is_ok_and(|c| !c.backends.is_empty())
                    {
                        "; restore the newest snapshot from a backend into a new directory with `tresor restore`"
                    } else {
                        ""
                    }
                ))
                .into());
                }
            };
            if copy.is_some() {
                eprintln!("{e:#}");
            }
            restored = copy;
            Index::open(&paths.index(), key, false).context("cannot open the restored index")?
        }
        Err(e) => return Err(e),
    };
    let since = match (&restored, &from_backend) {
        (Some(copy), _) => {
            let when = crate::remote::snapshot::utc(copy.taken_ms / 1000);
            println!(
                "restored the index from the local copy of {when} ({}); \
                 changes made after it are lost:",
                copy.path.display()
            );
            Some(copy.taken_ms / 1000)
        }
        (None, Some((m, backend))) => {
            println!(
                "restored the index from the snapshot of {} (generation {}) on backend {backend}; \
                 changes made after it are lost:",
                crate::remote::snapshot::utc(m.created_s),
                m.generation
            );
            Some(m.created_s)
        }
        (None, None) => None,
    };
    if let Some(since) = since {
        let changed = changed_after(&paths, key, since);
        match changed {
            Some(list) if list.is_empty() => {
                println!("  (the damaged index shows no later change)")
            }
            Some(list) => {
                for p in list {
                    println!("  {p}");
                }
            }
            None => println!(
                "  (the damaged index cannot be read to say which files; \
                 pack files it alone referenced are reported below as leftovers)"
            ),
        }
    }
    let store = paths.store();
    let before = check(&index, &store)?;
    let mut actions = Vec::new();
    let after = if repair_it && !before.is_empty() {
        actions = repair(&index, &store)?;
        check(&index, &store)?
    } else {
        before.clone()
    };
    index.close().context("closing the index failed")?;
    if json_out {
        let mut v = json!({ "found": before.to_json(), "repaired": actions });
        v["remaining"] = after.to_json();
        v["clean"] = after.is_clean().into();
        println!("{v}");
    } else {
        before.print_text();
        if repair_it {
            for a in &actions {
                println!("repaired: {a}");
            }
            if !before.is_empty() {
                if after.is_empty() {
                    println!("after repair: clean");
                } else {
                    println!("after repair, still:");
                    after.print_text();
                }
            }
        }
    }
    if after.has_damage() {
        return Err(crate::error::Error::Damaged(format!(
            "fsck found lost data in {} file(s) that --repair cannot restore; restore them from a backup or a backend copy",
            after.damaged_files.len()
        ))
        .into());
    }
    if !after.is_clean() {
        return Err(crate::error::Error::Repairable(
            "fsck found inconsistencies; run `tresor fsck --repair` to fix them".into(),
        )
        .into());
    }
    Ok(())
}
