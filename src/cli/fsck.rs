//! `tresor fsck [--repair] [--json]`: refuses a mounted vault, checks the
//! index and the local store (`maintenance::fsck`), repairs what is safe and
//! reports. Damage raises `Error::Damaged` (exit 4), leftovers that
//! `--repair` fixes `Error::Repairable` (exit 5).

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::{Session, VaultArgs};
use crate::index::Index;
use crate::maintenance::fsck::{check, repair};

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
    let index = Index::open(&paths.index(), &unlocked.subkeys.index, false)
        .context("cannot open the index")?;
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
