//! The daemon's control socket: how `status`, `sync`, `where`, `cache` and
//! the `backend` commands talk to a mounted vault.
//!
//! `VAULT/control.sock` is a Unix stream socket, mode 0600 inside the 0700
//! vault directory, so only the vault's owner can connect (the kernel checks
//! the path's permissions on connect). One request per connection: a JSON
//! line, a [`Request`] (`{"cmd": "status"}`); the daemon answers with JSON
//! lines, each a [`Reply`] — zero or more `{"progress": ...}`, then exactly
//! one `{"done": VALUE}` or `{"error": {"message": ..., "kind": ...}}`. The
//! error's `kind` is its [`crate::error::Kind`], so a refusal raised inside
//! the daemon (a lease held elsewhere, a rollback) exits the client with the
//! same code as when the command runs unmounted. Nothing secret crosses it:
//! no keys, no credentials, and file names only in a `where` answer to the
//! owner.
//!
//! When no daemon answers, each command does the work itself (opening the
//! index with the passphrase); the JSON it prints is the same.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::Kind;

use crate::fs::{read_index, FsCore};
use crate::remote::backend::VaultConfig;
use crate::remote::sync::{self, SyncEngine};

/// What a client asks the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Index sizes and per-backend state (`tresor status`).
    Status,
    /// Flush, commit, upload everything and snapshot (`tresor sync`).
    Sync {
        timeout: Option<f64>,
    },
    /// Where a path's data lives (`tresor where`).
    Where {
        path: String,
    },
    CacheShow,
    CacheClear,
    /// Re-read config.toml and credentials (after `backend add`, `key …`).
    Reload,
    /// Packs only the backend with this id holds (`backend remove`).
    CanRemove {
        id: String,
    },
    /// A gc pass, then remote deletion of what it collected (`tresor gc`).
    Gc {
        dry_run: bool,
    },
    /// Apply the snapshot retention policy (`tresor snapshots forget`).
    Forget {
        dry_run: bool,
    },
}

/// One line of the daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Progress(Value),
    Done(Value),
    Error { message: String, kind: Option<Kind> },
}

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

/// Only the daemon's own user (or root) may talk to it: the socket is
/// 0600 already, and this holds even if its mode or directory were changed.
fn check_peer(conn: &UnixStream) -> Result<()> {
    let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .context("cannot read the control peer's credentials")?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me && cred.uid() != 0 {
        anyhow::bail!(
            "refused a control connection from uid {} (pid {}): not the vault's owner",
            cred.uid(),
            cred.pid()
        );
    }
    Ok(())
}

fn handle(
    conn: UnixStream,
    vault: &Path,
    core: &Arc<FsCore>,
    engine: &Arc<SyncEngine>,
) -> Result<()> {
    check_peer(&conn)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let mut out = conn;
    let mut send = |reply: Reply| -> std::io::Result<()> {
        let mut s = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
        s.push('\n');
        out.write_all(s.as_bytes())
    };
    let result = serde_json::from_str::<Request>(&line)
        .context("bad control request (a daemon of another tresor version?)")
        .and_then(|req| {
            run(&req, vault, core, engine, &mut |p| {
                let _ = send(Reply::Progress(p));
            })
        });
    match result {
        Ok(v) => send(Reply::Done(v))?,
        Err(e) => send(Reply::Error {
            message: format!("{e:#}"),
            kind: crate::error::kind_of(&e),
        })?,
    }
    Ok(())
}

fn run(
    req: &Request,
    vault: &Path,
    core: &Arc<FsCore>,
    engine: &Arc<SyncEngine>,
    progress: &mut dyn FnMut(Value),
) -> Result<Value> {
    let config = VaultConfig::load(vault)?;
    if matches!(
        req,
        Request::Status | Request::Where { .. } | Request::CacheShow
    ) {
        // Applies pending bookkeeping (packs fetched back into the cache).
        core.commit(true)?;
    }
    match req {
        Request::Status => {
            let stats = read_index(core.as_ref(), |idx| idx.stats())?;
            let backends = read_index(core.as_ref(), |idx| {
                sync::backend_status(Some(engine), &config, idx)
            })?;
            Ok(json!({ "index": stats.to_json(), "sync": backends }))
        }
        Request::Sync { timeout } => {
            let timeout = timeout
                .map(Duration::try_from_secs_f64)
                .transpose()
                .map_err(|_| {
                    crate::error::usage("the sync timeout must be a number of seconds ≥ 0")
                })?;
            core.flush_all()?;
            core.commit(true)?;
            let progress = std::cell::RefCell::new(progress);
            engine.wait_synced_saying(
                timeout,
                &|| {
                    if let Err(e) = core.commit(true) {
                        log::warn!("commit during sync failed: {e}");
                    }
                },
                &mut |left, total| {
                    (*progress.borrow_mut())(json!({ "left": left, "total": total }))
                },
                &mut |waiting| (*progress.borrow_mut())(json!({ "waiting": waiting })),
            )?;
            let generation = engine.snapshot_and_wait(timeout)?;
            Ok(json!({ "synced": true, "generation": generation }))
        }
        Request::Where { path } => read_index(core.as_ref(), |idx| {
            sync::where_status(&config, idx, path.as_bytes())
        }),
        Request::CacheShow => read_index(core.as_ref(), |idx| {
            sync::cache_status(Some(engine), &config, idx)
        }),
        Request::CacheClear => {
            engine.request_clear();
            core.commit(true)?;
            read_index(core.as_ref(), |idx| {
                sync::cache_status(Some(engine), &config, idx)
            })
        }
        Request::Reload => {
            engine.reload()?;
            // Evict or refill per the new budget at once.
            core.commit(true)?;
            Ok(json!({ "reloaded": true }))
        }
        Request::CanRemove { id } => {
            let others: Vec<String> = config
                .backends
                .iter()
                .filter(|b| &b.id != id)
                .map(|b| b.id.clone())
                .collect();
            let n = read_index(core.as_ref(), |idx| idx.packs_only_on(id, &others))?;
            Ok(json!({ "packs_only_there": n }))
        }
        Request::Forget { dry_run } => Ok(serde_json::to_value(engine.forget(*dry_run)?)?),
        Request::Gc { dry_run } => {
            let dry_run = *dry_run;
            let mut report =
                crate::maintenance::gc::control_gc(core, vault, dry_run, &mut |done, total| {
                    progress(json!({ "done": done, "total": total }))
                })?;
            // With backends: a snapshot that no longer references the
            // collected packs, durable everywhere, lets them go remotely now.
            if !dry_run && !engine.remotes().is_empty() {
                core.commit(true)?;
                let pending = read_index(core.as_ref(), |idx| idx.gc_dead(u64::MAX))?;
                // The snapshot round deletes what the new snapshot frees.
                engine.snapshot_and_wait(Some(Duration::from_secs(120)))?;
                let deletion = engine.delete_collected()?;
                core.commit(true)?;
                // Locked by the provider (S3 Object Lock): kept, and said.
                report["protected"] = json!(deletion.protected);
                let left = read_index(core.as_ref(), |idx| idx.gc_dead(u64::MAX))?;
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
    }
}

/// Sends a request to the daemon of a mounted vault. `Ok(None)`: no daemon
/// listens (the caller does the work itself).
pub fn request(
    vault: &Path,
    req: &Request,
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
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes())?;
    let reader = BufReader::new(&conn);
    for line in reader.lines() {
        let line = line.context("the daemon closed the control connection")?;
        let reply: Reply = serde_json::from_str(&line)
            .context("bad answer from the daemon (a daemon of another tresor version?)")?;
        match reply {
            Reply::Progress(p) => progress(&p),
            Reply::Done(v) => return Ok(Some(v)),
            Reply::Error {
                message,
                kind: Some(kind),
            } => return Err(crate::error::Error::new(kind, message).into()),
            Reply::Error {
                message,
                kind: None,
            } => return Err(anyhow::anyhow!(message)),
        }
    }
    anyhow::bail!("the daemon closed the control connection without an answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire format: the command name as `cmd`, arguments beside it.
    #[test]
    fn requests_keep_their_wire_names() {
        let r = serde_json::to_value(Request::Sync { timeout: Some(2.5) }).unwrap();
        assert_eq!(r, json!({"cmd": "sync", "timeout": 2.5}));
        let r: Request = serde_json::from_str(r#"{"cmd":"cache-show"}"#).unwrap();
        assert_eq!(r, Request::CacheShow);
        let r: Request = serde_json::from_str(r#"{"cmd":"gc","dry_run":true}"#).unwrap();
        assert_eq!(r, Request::Gc { dry_run: true });
    }

    /// Regression (issue "One house"): an error raised in the daemon kept
    /// only its message, so its exit code became 1 in the client.
    #[test]
    fn an_error_keeps_its_kind_across_the_socket() {
        let e = anyhow::Error::from(crate::error::Error::InUse("held by laptop".into()))
            .context("cannot sync");
        let reply = Reply::Error {
            message: format!("{e:#}"),
            kind: crate::error::kind_of(&e),
        };
        let line = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            line,
            r#"{"error":{"message":"cannot sync: held by laptop","kind":"in_use"}}"#
        );
        let back: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(back, reply);
    }

    /// End to end over a real socket pair: the client raises the same kind.
    #[test]
    fn the_client_raises_the_daemons_error_kind() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(socket_path(dir.path())).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(req, Request::Status);
            let mut out = &conn;
            for reply in [
                Reply::Progress(json!({"done": 1})),
                Reply::Error {
                    message: "rollback refused".into(),
                    kind: Some(Kind::Rollback),
                },
            ] {
                let s = serde_json::to_string(&reply).unwrap() + "\n";
                out.write_all(s.as_bytes()).unwrap();
            }
        });
        let mut seen = 0;
        let e = request(dir.path(), &Request::Status, &mut |_| seen += 1).unwrap_err();
        server.join().unwrap();
        assert_eq!(seen, 1);
        assert_eq!(crate::error::kind_of(&e), Some(Kind::Rollback));
        assert_eq!(e.to_string(), "rollback refused");
    }
}
