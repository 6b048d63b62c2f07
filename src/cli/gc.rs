//! `tresor gc`: asks the daemon of a mounted vault, else opens the vault
//! itself and collects (see `maintenance/gc.rs`). Progress: a bar on a terminal,
//! plain lines otherwise, nothing with `--quiet`/`--json`.

use crate::mount::control::Request;
use anyhow::Result;
use serde_json::Value;

use crate::cli::VaultArgs;
use crate::maintenance::gc::{self, GcOptions, GcReport};
use crate::maintenance::offline::{Backends, OfflineVault};
use crate::mount::control;
use crate::progress::Progress;

pub fn gc_cmd(vault: &VaultArgs, dry_run: bool, quiet: bool, json_out: bool) -> Result<()> {
    let paths = vault.paths()?;
    crate::vault::require_exists(&paths)?;
    let bar = Progress::new(
        quiet || json_out,
        "collecting {bar:30} {pos}/{len} packs",
        |done, total, _| format!("gc: {done} of {total} packs processed"),
    );
    let answered = control::request(&paths.root, &Request::Gc { dry_run }, &mut |p| {
        bar.update(
            p["done"].as_u64().unwrap_or(0),
            p["total"].as_u64().unwrap_or(0),
        )
    });
    let result: Result<Value> = match answered {
        Ok(Some(v)) => Ok(v),
        Ok(None) => (|| {
            let session = vault.open()?;
            let off = OfflineVault::open(&session.paths, &session.unlocked, Backends::Use)?;
            let config = crate::remote::backend::VaultConfig::load(&paths.root)?;
            let opts = GcOptions {
                dry_run,
                ..GcOptions::from_config(&config.gc, off.has_backends())
            };
            let r = gc::run_pass(off.as_ref(), &opts, &mut |d, t| bar.update(d, t));
            off.close()?;
            Ok(serde_json::to_value(r?)?)
        })(),
        Err(e) => Err(e),
    };
    bar.finish();
    let v = result?;
    if json_out {
        println!("{v}");
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    let v_remote_packs = v["remote_deleted_packs"].as_u64();
    let v_remote_bytes = v["remote_deleted_bytes"].as_u64().unwrap_or(0);
    let protected = v["protected"].as_array().cloned().unwrap_or_default();
    let r: GcReport = serde_json::from_value(v)?;
    let would = if r.dry_run { "would be " } else { "" };
    println!("examined:       {} packs", r.packs_examined);
    println!("dead packs:     {} {would}deleted", r.dead_packs);
    println!("repacked packs: {} {would}rewritten", r.repacked_packs);
    if r.leftover_files > 0 {
        println!(
            "leftovers:      {} pack files without index rows {would}deleted",
            r.leftover_files
        );
    }
    println!(
        "reclaimed:      {} {would}freed in the local store",
        crate::progress::human(r.bytes_reclaimed_local)
    );
    if let Some(n) = v_remote_packs {
        println!(
            "remote:         {} in {n} packs deleted from every backend",
            crate::progress::human(v_remote_bytes)
        );
    }
    if r.packs_awaiting_remote_deletion > 0 {
        println!(
            "remote:         {} in {} packs awaiting deletion from the backends \
             (after the next snapshot that is durable on every backend)",
            crate::progress::human(r.bytes_awaiting_remote_deletion),
            r.packs_awaiting_remote_deletion
        );
    }
    for p in &protected {
        println!(
            "protected:      {} on backend {} is locked by the provider until {} (S3 Object Lock); \
             it stays queued and goes once the lock ends",
            p["object"].as_str().unwrap_or(""),
            p["backend"].as_str().unwrap_or(""),
            p["until"]
                .as_u64()
                .map_or("a date it did not give".into(), crate::remote::snapshot::utc),
        );
    }
    for c in &r.corrupt {
        eprintln!("corrupt: {c} (pack left alone; run `tresor fsck`)");
    }
    for u in &r.unreadable {
        eprintln!("unreadable: {u} (left alone; retried by the next gc)");
    }
    Ok(())
}
