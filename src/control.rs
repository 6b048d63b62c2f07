//! The daemon's control socket: how `status`, `sync`, `where`, `cache` and
//! the `backend` commands talk to a mounted vault.
//!
//! `VAULT/control.sock` is a Unix stream socket, mode 0600 inside the 0700
//! vault directory, so only the vault's owner can connect (the kernel checks
//! the path's permissions on connect). One request per connection: a JSON
//! line `{"cmd": ...}`; the daemon answers with JSON lines — zero or more
//! `{"progress": ...}`, then exactly one `{"done": VALUE}` or
//! `{"error": "message"}`. Nothing secret crosses it: no keys, no
//! credentials, and file names only in a `where` answer to the owner.
//!
//! When no daemon answers, each command does the work itself (opening the
//! index with the passphrase); the JSON it prints is the same.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::backend::VaultConfig;
use crate::fs::{FsCore, IndexAccess};
use crate::sync::{self, SyncEngine};

pub fn socket_path(vault: &Path) -> PathBuf {
    vault.join("control.sock")
}

/// Serves the control socket in a background thread until the process ends.
pub fn serve(vault: &Path, core: Arc<FsCore>, engine: Arc<SyncEngine>) -> Result<()> {
    let path = socket_path(vault);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let vault = vault.to_path_buf();
    std::thread::Builder::new()
        .name("tresor-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (core, engine, vault) = (core.clone(), engine.clone(), vault.clone());
                let _ = std::thread::Builder::new()
                    .name("tresor-control-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle(conn, &vault, &core, &engine) {
                            log::warn!("control request failed: {e:#}");
                        }
                    });
            }
        })?;
    Ok(())
}

fn handle(
    conn: UnixStream,
    vault: &Path,
    core: &Arc<FsCore>,
    engine: &Arc<SyncEngine>,
) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let req: Value = serde_json::from_str(&line).context("bad control request")?;
    let mut out = conn;
    let mut send = |v: Value| -> std::io::Result<()> {
        let mut s = v.to_string();
        s.push('\n');
        out.write_all(s.as_bytes())
    };
    let result = run(&req, vault, core, engine, &mut |p| {
        let _ = send(json!({ "progress": p }));
    });
    match result {
        Ok(v) => send(json!({ "done": v }))?,
        Err(e) => send(json!({ "error": format!("{e:#}") }))?,
    }
    Ok(())
}

fn with_index<R>(core: &FsCore, f: impl FnOnce(&crate::index::Index) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    core.with_index(&mut |idx| {
        if let Some(f) = f.take() {
            out = Some(f(idx));
        }
    });
    out.expect("with_index runs the closure")
}

fn run(
    req: &Value,
    vault: &Path,
    core: &Arc<FsCore>,
    engine: &Arc<SyncEngine>,
    progress: &mut dyn FnMut(Value),
) -> Result<Value> {
    let cmd = req["cmd"].as_str().unwrap_or("");
    let config = VaultConfig::load(vault)?;
    if matches!(cmd, "status" | "where" | "cache-show") {
        // Applies pending bookkeeping (packs fetched back into the cache).
        core.commit(true)?;
    }
    match cmd {
        "status" => {
            let stats = with_index(core, |idx| idx.stats())?;
            let backends =
                with_index(core, |idx| sync::backend_status(Some(engine), &config, idx))?;
            Ok(json!({ "index": crate::status_json_stats(&stats), "sync": backends }))
        }
        "sync" => {
            let timeout = req["timeout"].as_f64().map(Duration::from_secs_f64);
            core.flush_all()?;
            core.commit(true)?;
            engine.wait_synced(
                timeout,
                &|| {
                    if let Err(e) = core.commit(true) {
                        log::warn!("commit during sync failed: {e}");
                    }
                },
                &mut |left, total| progress(json!({ "left": left, "total": total })),
            )?;
            let generation = engine.snapshot_and_wait(timeout)?;
            Ok(json!({ "synced": true, "generation": generation }))
        }
        "where" => {
            let path = req["path"].as_str().unwrap_or("/");
            with_index(core, |idx| {
                sync::where_status(&config, idx, path.as_bytes())
            })
        }
        "cache-show" => with_index(core, |idx| sync::cache_status(Some(engine), &config, idx)),
        "cache-clear" => {
            engine.request_clear();
            core.commit(true)?;
            with_index(core, |idx| sync::cache_status(Some(engine), &config, idx))
        }
        "reload" => {
            engine.reload()?;
            // Evict or refill per the new budget at once.
            core.commit(true)?;
            Ok(json!({ "reloaded": true }))
        }
        "can-remove" => {
            let id = req["id"].as_str().unwrap_or("");
            let others: Vec<String> = config
                .backends
                .iter()
                .filter(|b| b.id != id)
                .map(|b| b.id.clone())
                .collect();
            let n = with_index(core, |idx| idx.packs_only_on(id, &others))?;
            Ok(json!({ "packs_only_there": n }))
        }
        "gc" => {
            let dry_run = req["dry_run"].as_bool().unwrap_or(false);
            let mut report = crate::gc::control_gc(core, vault, dry_run, &mut |done, total| {
                progress(json!({ "done": done, "total": total }))
            })?;
            // With backends: a snapshot that no longer references the
            // collected packs, durable everywhere, lets them go remotely now.
            if !dry_run && !engine.remotes().is_empty() {
                core.commit(true)?;
                let pending = with_index(core, |idx| idx.gc_dead(u64::MAX))?;
                // The snapshot round deletes what the new snapshot frees.
                let durable = engine.snapshot_and_wait(Some(Duration::from_secs(120)))?;
                engine.delete_collected(durable)?;
                core.commit(true)?;
                let left = with_index(core, |idx| idx.gc_dead(u64::MAX))?;
                let gone: Vec<_> = pending
                    .iter()
                    .filter(|p| !left.iter().any(|l| l.pack == p.pack))
                    .collect();
                report["remote_deleted_packs"] = json!(gone.len());
                report["remote_deleted_bytes"] = json!(gone.iter().map(|r| r.size).sum::<u64>());
                report["packs_awaiting_remote_deletion"] = json!(left.len());
                report["bytes_awaiting_remote_deletion"] =
                    json!(left.iter().map(|r| r.size).sum::<u64>());
            }
            Ok(report)
        }
        other => bail!("unknown control command {other:?}"),
    }
}

/// Sends a request to the daemon of a mounted vault. `Ok(None)`: no daemon
/// listens (the caller does the work itself).
pub fn request(
    vault: &Path,
    req: Value,
    progress: &mut dyn FnMut(&Value),
) -> Result<Option<Value>> {
    let path = socket_path(vault);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", path.display())),
    };
    let mut w = &conn;
    w.write_all(format!("{req}\n").as_bytes())?;
    let reader = BufReader::new(&conn);
    for line in reader.lines() {
        let line = line.context("the daemon closed the control connection")?;
        let v: Value = serde_json::from_str(&line).context("bad answer from the daemon")?;
        if let Some(p) = v.get("progress") {
            progress(p);
        } else if let Some(d) = v.get("done") {
            return Ok(Some(d.clone()));
        } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            bail!("{e}");
        }
    }
    bail!("the daemon closed the control connection without an answer")
}
