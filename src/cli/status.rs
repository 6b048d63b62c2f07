//! `tresor status [--json]`: sizes from the index, the local store's usage
//! and, per backend, what is stored and pending (from the daemon when the
//! vault is mounted).

use crate::mount::control::Request;
use anyhow::Result;
use serde_json::Value;

use crate::cli::backend::three_facts;
use crate::cli::session::{ask_daemon, Session, VaultArgs};
use crate::index::{Index, IndexStats};
use crate::maintenance::restore::vault_backend_stores;
use crate::progress::human;
use crate::remote::integrity::{self, RootReport};
use crate::remote::snapshot::SnapshotCrypto;
use crate::remote::sync;
use crate::store::Store;
use crate::vault::{self, config::VaultConfig};

/// Mounted, the daemon answers (no passphrase asked: whoever can reach its
/// socket is the vault's owner); unmounted, the vault is opened here.
pub fn run(args: &VaultArgs, json: bool) -> Result<()> {
    let paths = args.paths()?;
    vault::require_exists(&paths)?;
    let config = VaultConfig::load(&paths.root)?;
    let (s, sync_status, vault_id) = match ask_daemon(&paths, &Request::Status, &mut |_| {})? {
        Some(v) => {
            let key_file = crate::vault::keys::KeyFile::load(&paths.key_file())?;
            (
                IndexStats::from_json(&v["index"]),
                v["sync"].clone(),
                hex::encode(key_file.vault_id()),
            )
        }
        None => {
            let Session { paths, unlocked } = args.open()?;
            let index = Index::open_read_only(&paths.index(), &unlocked.subkeys.index)?;
            let mut sync_status = sync::backend_status(None, &config, &index)?;
            // Unmounted, the roots are checked here (mounted, the daemon
            // reports its last check).
            if let Some((stores, _)) = vault_backend_stores(&paths, "tresor-status")? {
                let crypto =
                    SnapshotCrypto::new(&unlocked.subkeys.snapshot, unlocked.key_file.vault_id());
                for (b, store) in &stores {
                    let report = integrity::check_root(&b.name, store, &crypto);
                    if let Some(v) = sync_status["backends"]
                        .as_array_mut()
                        .and_then(|a| a.iter_mut().find(|v| v["name"] == b.name.as_str()))
                    {
                        v["integrity"] = serde_json::to_value(report)?;
                    }
                }
            }
            (
                index.stats()?,
                sync_status,
                hex::encode(unlocked.key_file.vault_id()),
            )
        }
    };
    let store = Store::open_local(&paths.store())?;
    let (objects, stored) = store.usage("packs/")?;
    let mounted = vault::is_mounted(&paths);
    let mountpoint = crate::mount::daemon::mountpoint_of(&paths);
    let dedup_saved = s
        .referenced_plain_bytes
        .saturating_sub(s.unique_plain_bytes);
    if json {
        let mut v = s.to_json();
        v["vault_id"] = vault_id.into();
        v["vault"] = paths.root.display().to_string().into();
        v["mounted"] = mounted.into();
        v["mountpoint"] = mountpoint.as_ref().map(|m| m.display().to_string()).into();
        v["stored_bytes"] = stored.into();
        v["objects"] = objects.into();
        v["sync"] = sync_status.clone();
        println!("{v}");
    } else {
        println!("vault:          {}", paths.root.display());
        println!("vault id:       {vault_id}");
        match (&mountpoint, mounted) {
            (Some(m), _) => println!("mounted:        on {}", m.display()),
            (None, true) => println!("mounted:        yes"),
            (None, false) => println!("mounted:        no"),
        }
        println!("files & dirs:   {}", s.inodes);
        println!(
            "logical size:   {} (sum of file sizes)",
            human(s.logical_bytes)
        );
        println!(
            "data in files:  {} (holes excluded)",
            human(s.referenced_plain_bytes)
        );
        println!("unique data:    {}", human(s.unique_plain_bytes));
        println!("deduplicated:   {}", human(dedup_saved));
        println!(
            "stored:         {} in {objects} pack objects (compressed, padded, encrypted)",
            human(stored)
        );
        println!(
            "chunks:         {} ({} referenced)",
            s.chunks, s.live_chunks
        );
        println!("packs:          {}", s.packs);
        print_status_sync(&sync_status);
    }
    // A damaged or foreign root is an error, with its exit code.
    let reports: Vec<RootReport> = sync_status["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| serde_json::from_value(b["integrity"].clone()).ok())
        .collect();
    match integrity::error_of(&reports, false) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The per-backend part of `status`: location, operator, objects, bytes,
/// pending, last error; the policy and the cache.
fn print_status_sync(v: &Value) {
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    if backends.is_empty() {
        println!("backends:       none (local store only)");
    } else {
        println!("backends:");
        for b in backends {
            println!(
                "  {:<14} {:<6} {}",
                b["name"].as_str().unwrap_or(""),
                b["service"].as_str().unwrap_or(""),
                three_facts(&b),
            );
            println!(
                "                 {} objects, {} stored, {} pending ({} packs)",
                b["objects"],
                crate::progress::human(b["bytes_stored"].as_u64().unwrap_or(0)),
                crate::progress::human(b["bytes_pending"].as_u64().unwrap_or(0)),
                b["packs_pending"]
            );
            if let Some(c) = b["capabilities_summary"].as_str() {
                println!("                 {c}");
            }
            if b["lease_enforced"] == false {
                println!(
                    "                 lease NOT enforced by the provider: two mounts started within a second can both write"
                );
            }
            if let Some(g) = b["snapshot_generation"].as_u64() {
                println!("                 index snapshot: generation {g} is there");
            }
            if let Ok(r) = serde_json::from_value::<RootReport>(b["integrity"].clone()) {
                let problems = r.problems();
                if problems.is_empty() {
                    println!(
                        "                 root checked {}: newest snapshot (generation {}) whole, key file this vault's",
                        crate::remote::snapshot::ago(r.checked_s),
                        r.newest.map_or("none".into(), |g| g.to_string())
                    );
                }
                for p in problems {
                    println!("                 {p}");
                }
            }
            print_lock(&b["object_lock"], b["service"].as_str().unwrap_or(""));
            if let Some(e) = b["last_error"].as_str() {
                println!("                 last error: {e}");
            }
        }
        println!(
            "index:          generation {} (the last snapshot taken)",
            v["index_generation"]
        );
        if let Some(l) = v["lease_lost"].as_str() {
            println!("LEASE LOST:     {l}");
        }
    }
    let p = &v["policy"];
    println!(
        "policy:         {}",
        if p["compliant"].as_bool() == Some(true) {
            "satisfied by the configuration"
        } else {
            "NOT satisfied"
        }
    );
    for r in p["rules"].as_array().cloned().unwrap_or_default() {
        println!("                {}", r.as_str().unwrap_or(""));
    }
    for r in p["violations"].as_array().cloned().unwrap_or_default() {
        println!("  violation:    {}", r.as_str().unwrap_or(""));
    }
    let below = p["bytes_below_required_copies"].as_u64().unwrap_or(0);
    if below > 0 {
        println!(
            "                {} not yet on every backend (uploads pending)",
            crate::progress::human(below)
        );
    }
    let c = &v["cache"];
    println!(
        "cache:          {} local of {} budget ({} not yet uploaded)",
        crate::progress::human(c["local_bytes"].as_u64().unwrap_or(0)),
        crate::progress::human(c["budget_bytes"].as_u64().unwrap_or(0)),
        crate::progress::human(c["not_yet_uploaded_bytes"].as_u64().unwrap_or(0)),
    );
}

/// Until when each kept state on a backend is protected (S3 Object Lock),
/// or why it is not.
fn print_lock(v: &Value, service: &str) {
    let pad = "                 ";
    if v.is_null() {
        if service != "s3" {
            println!("{pad}history NOT protected: {service} cannot lock objects");
        } else {
            println!("{pad}object lock: shown while mounted");
        }
        return;
    }
    match (v["rule"].is_null(), v["note"].as_str().unwrap_or("")) {
        (true, "") if v["checked"] == false => {
            println!("{pad}object lock: not checked yet (at the first snapshot round)")
        }
        (true, note) => println!("{pad}history NOT protected: {note}"),
        (false, note) => {
            println!(
                "{pad}object lock: {} days, {} mode (every object tresor writes)",
                v["rule"]["days"],
                v["rule"]["mode"].as_str().unwrap_or("").to_lowercase()
            );
            if !note.is_empty() {
                println!("{pad}  warning: {note}");
            }
            for s in v["states"].as_array().into_iter().flatten() {
                println!(
                    "{pad}  generation {:<6} protected until {}",
                    s["generation"],
                    s["protected_until"]
                        .as_u64()
                        .map_or("unknown".into(), crate::remote::snapshot::utc)
                );
            }
        }
    }
}
