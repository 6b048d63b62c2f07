//! `tresor restore`, `tresor snapshots` and `tresor lease`: getting a vault
//! back from its backends (`tresor backend export`, in `backend/export.rs`,
//! writes the restore file). This file reads the arguments and the secret,
//! opens the vault's remotes, and prints; the restore itself (the restore
//! file's format, key file, generation choice, block download, cleanup of a
//! failed restore) is `maintenance/restore.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::{Session, VaultArgs};
use crate::maintenance::restore::{self, Backends};
use crate::progress::Progress;
use crate::remote::backend::VaultConfig;
use crate::remote::snapshot::{self, SnapshotCrypto};
use crate::remote::sync::SyncEngine;
use crate::store::Store;
use crate::vault;

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Backends and credentials: the file `tresor backend export` writes on the old machine
    #[arg(long, value_name = "FILE")]
    backend_config: PathBuf,
    /// Restore this generation instead of the newest (see `tresor snapshots`)
    #[arg(long, value_name = "N")]
    generation: Option<u64>,
    /// Accept a snapshot older than one this machine has already seen
    #[arg(long)]
    accept_rollback: bool,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// Print one JSON result line
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Option<SnapshotsCmd>,
}

#[derive(Subcommand)]
pub enum SnapshotsCmd {
    /// Delete the snapshots the retention policy ([snapshot] keep, keep_hourly, keep_daily, keep_weekly, keep_monthly) does not keep; `tresor gc` then frees the packs only they needed
    Forget {
        #[command(flatten)]
        vault: VaultArgs,
        /// Only list what would be forgotten
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

/// `tresor snapshots forget`: through the daemon when mounted (it holds
/// the snapshot list), else with the vault's remotes opened here.
pub fn forget_cmd(args: &VaultArgs, dry_run: bool, json_out: bool) -> Result<()> {
    let paths = args.paths()?;
    crate::vault::require_exists(&paths)?;
    let answered = crate::mount::control::request(
        &paths.root,
        &crate::mount::control::Request::Forget { dry_run },
        &mut |_| {},
    )?;
    let v = match answered {
        Some(v) => v,
        None => serde_json::to_value(open_remotes(args)?.engine.forget(dry_run)?)?,
    };
    if json_out {
        println!("{}", json!({"dry_run": dry_run, "backends": v}));
        return Ok(());
    }
    let verb = if dry_run { "would forget" } else { "forgot" };
    for b in v.as_array().into_iter().flatten() {
        let list = |k: &str| {
            b[k].as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| g.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        println!(
            "backend {}: keeps generations [{}], {verb} [{}]",
            b["backend"].as_str().unwrap_or(""),
            list("kept"),
            list("forgotten")
        );
        for p in b["protected"].as_array().into_iter().flatten() {
            println!(
                "backend {}: generation {} is locked by the provider until {} (S3 Object Lock): kept until then",
                b["backend"].as_str().unwrap_or(""),
                p["generation"],
                p["until"]
                    .as_u64()
                    .map_or("a date it did not give".into(), crate::remote::snapshot::utc),
            );
        }
    }
    if !dry_run {
        println!("run `tresor gc` to delete the packs only forgotten snapshots needed");
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// Who holds the vault's lease on each backend, since when, last refresh
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete the lease of a crashed or gone machine so this vault directory can mount
    Break {
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// A vault's remotes, opened with its keys but without its index (works
/// while the vault is mounted).
struct Remotes {
    engine: Arc<SyncEngine>,
    vault_id: [u8; 16],
    instance: String,
}

fn open_remotes(args: &VaultArgs) -> Result<Remotes> {
    let Session { paths, unlocked } = args.open()?;
    let config = VaultConfig::load(&paths.root)?;
    if config.backends.is_empty() {
        bail!(
            "the vault at {} has no remote backends: nothing is snapshotted or leased (add one with `tresor backend add`)",
            paths.root.display()
        );
    }
    let local = Arc::new(Store::open_local(&paths.store())?);
    let engine = SyncEngine::open(&paths, &config, local, &unlocked, false)?;
    let vault_id = unlocked.key_file.vault_id();
    Ok(Remotes {
        engine,
        vault_id,
        instance: snapshot::instance_id(&paths.root)?,
    })
}

pub fn snapshots_cmd(args: &VaultArgs, json_out: bool) -> Result<()> {
    let r = open_remotes(args)?;
    let listings = r.engine.list_snapshots();
    let seen = snapshot::seen_generation(&r.vault_id);
    // Whole and ours? (exit 4 for an incomplete newest snapshot or a newer
    // manifest that does not authenticate, 12 for another vault's key file)
    let roots = r.engine.check_roots();
    let verdict = || match crate::remote::integrity::error_of(&roots, false) {
        Some(e) => Err(e),
        None => Ok(()),
    };
    if json_out {
        let backends: Vec<Value> = listings
            .iter()
            .map(|l| {
                json!({
                    "backend": l.backend,
                    "error": l.error,
                    "snapshots": l.entries.iter().map(|(g, m, size)| json!({
                        "generation": g,
                        "valid": m.is_some(),
                        "created": m.as_ref().map(|m| m.created_s),
                        "object_bytes": size,
                        "index_bytes": m.as_ref().map(|m| m.db_len),
                        "host": m.as_ref().map(|m| m.hostname.clone()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"seen_generation": seen.map(|s| s.0), "backends": backends, "roots": roots})
        );
        return verdict();
    }
    if let Some((g, t)) = seen {
        println!(
            "this machine has seen generation {g} of this vault ({})",
            snapshot::utc(t)
        );
    }
    for l in listings {
        println!("backend {}:", l.backend);
        for root in roots.iter().filter(|x| x.backend == l.backend) {
            for p in root.problems() {
                println!("  {p}");
            }
        }
        if let Some(e) = l.error {
            println!("  cannot list: {e}");
            continue;
        }
        if l.entries.is_empty() {
            println!("  no snapshots yet (they are written while mounted and by `tresor sync`)");
            continue;
        }
        println!(
            "  {:>10}  {:<23}  {:>10}  {:>10}  written on",
            "generation", "created", "manifest", "index"
        );
        for (g, m, size) in l.entries {
            match m {
                Some(m) => println!(
                    "  {:>10}  {:<23}  {:>10}  {:>10}  {}",
                    g,
                    snapshot::utc(m.created_s),
                    crate::progress::human(size),
                    crate::progress::human(m.db_len),
                    m.hostname
                ),
                None => println!(
                    "  {g:>10}  INVALID: does not authenticate (tampered, truncated or renamed)"
                ),
            }
        }
    }
    verdict()
}

pub fn lease_cmd(cmd: LeaseCmd) -> Result<()> {
    match cmd {
        LeaseCmd::Show { vault, json } => {
            let r = open_remotes(&vault)?;
            let mut out = Vec::new();
            for (backend, lease) in r.engine.leases() {
                let v = match lease {
                    Ok(Some(l)) => json!({
                        "backend": backend, "held": true, "host": l.hostname,
                        "vault_dir": l.vault_dir, "pid": l.pid, "since": l.acquired_s,
                        "refreshed": l.refreshed_s, "this_vault_directory": l.holder == r.instance,
                    }),
                    Ok(None) => json!({"backend": backend, "held": false}),
                    Err(e) => json!({"backend": backend, "error": format!("{e:#}")}),
                };
                out.push(v);
            }
            if json {
                println!("{}", json!(out));
                return Ok(());
            }
            for v in out {
                let b = v["backend"].as_str().unwrap_or("");
                if let Some(e) = v["error"].as_str() {
                    println!("{b}: {e}");
                } else if v["held"] == true {
                    println!(
                        "{b}: held by host {} (vault directory {}, pid {}{}) since {}, refreshed {}",
                        v["host"].as_str().unwrap_or(""),
                        v["vault_dir"].as_str().unwrap_or(""),
                        v["pid"],
                        if v["this_vault_directory"] == true {
                            "; this vault directory"
                        } else {
                            ""
                        },
                        snapshot::utc(v["since"].as_u64().unwrap_or(0)),
                        snapshot::ago(v["refreshed"].as_u64().unwrap_or(0)),
                    );
                } else {
                    println!("{b}: free");
                }
            }
            Ok(())
        }
        LeaseCmd::Break { vault } => {
            let paths = vault.paths()?;
            if vault::is_mounted(&paths) {
                bail!(
                    "this vault directory is mounted right now and holds the lease itself; unmount it instead"
                );
            }
            let r = open_remotes(&vault)?;
            for (backend, lease) in r.engine.leases() {
                match lease {
                    Ok(Some(l)) => println!(
                        "{backend}: breaking the lease of host {} (vault directory {}) held since {}, last refreshed {}",
                        l.hostname,
                        l.vault_dir,
                        snapshot::utc(l.acquired_s),
                        snapshot::ago(l.refreshed_s)
                    ),
                    Ok(None) => println!("{backend}: no lease"),
                    Err(e) => println!("{backend}: unreadable lease ({e:#}); deleting it"),
                }
            }
            r.engine.break_leases()?;
            println!("lease broken: this vault directory can mount now. If the other machine comes back, it stops writing snapshots and must be restored afresh.");
            Ok(())
        }
    }
}

pub fn restore_cmd(args: RestoreArgs) -> Result<()> {
    let started = Instant::now();
    let paths = args.vault.paths()?;
    restore::check_target(&paths)?;
    let mut src = restore::parse_restore_file(&args.backend_config)?;
    let runtime = Arc::new(crate::store::new_runtime("tresor-restore")?);

    // 1. The backends and the key file.
    let Backends {
        stores,
        key_file,
        errors,
    } = restore::open_backends(&mut src, &runtime)?;
    for e in &errors {
        eprintln!("warning: {e}");
    }
    let vault_id = key_file.vault_id();
    let pass = args.vault.secret(false)?;
    let master = restore::unlock(&key_file, &pass)?;
    let subkeys = master.subkeys();
    let crypto = SnapshotCrypto::new(&subkeys.snapshot, vault_id);

    // 2. The newest authentic manifest across backends.
    let mut candidates = restore::find_manifests(&stores, &crypto, args.generation);
    for w in &candidates.warnings {
        eprintln!("warning: {w}");
    }
    let (manifest, from) = restore::choose(
        &mut candidates,
        &vault_id,
        args.generation,
        args.accept_rollback,
    )?;
    for (name, g) in &candidates.newest_per_backend {
        if *g < manifest.generation {
            eprintln!(
                "note: backend {name} is behind (generation {g}); it catches up at the next mount or `tresor sync`"
            );
        }
    }

    // 3. Download and authenticate the blocks into a new index file.
    let bar = Progress::new(
        args.quiet || args.json,
        "restoring index {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        |done, total, _| format!("restore: {done} of {total} index bytes downloaded"),
    );
    restore::download_index(&paths, &stores, from, &crypto, &manifest, &bar)?;

    // 4. The local vault around it: cold cache, backends with their ids.
    let holders: Vec<String> = candidates
        .newest_per_backend
        .iter()
        .filter(|(_, g)| *g == manifest.generation)
        .map(|(name, _)| name.clone())
        .collect();
    let packs = restore::finish(
        &paths,
        &mut src,
        &key_file,
        &subkeys.index,
        manifest.generation,
        &holders,
    )?;
    let from_name = &stores[from].0.name;
    if args.json {
        println!(
            "{}",
            json!({
                "vault": paths.root.display().to_string(),
                "vault_id": hex::encode(vault_id),
                "generation": manifest.generation,
                "created": manifest.created_s,
                "host": manifest.hostname,
                "backend": from_name,
                "index_bytes": manifest.db_len,
                "packs": packs,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else if !args.quiet {
        println!(
            "restored vault {} into {}\n  index snapshot generation {} of {} (written on {}), from backend {}: {}\n  {} packs stay on the backends (cold cache: data arrives on demand)\nmount it with: tresor mount --vault {} MOUNTPOINT",
            hex::encode(vault_id),
            paths.root.display(),
            manifest.generation,
            snapshot::utc(manifest.created_s),
            manifest.hostname,
            from_name,
            crate::progress::human(manifest.db_len),
            packs,
            paths.root.display()
        );
    }
    Ok(())
}
