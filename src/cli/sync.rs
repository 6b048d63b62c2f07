//! `tresor sync [--timeout S]`: waits until every pack, the key file and an
//! index snapshot are on every backend. A mounted daemon does the work and
//! streams progress over the control socket; otherwise the vault is opened
//! here, the sync engine started, and the index committed as uploads land.
//! `overlay` calls this before it mounts the vault over the folder.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::backend::{open_offline, paths_of};
use crate::cli::VaultArgs;

use crate::maintenance::offline::Backends;
use crate::mount::control::{self, Request};
use crate::progress::Progress;
use crate::remote::backend::VaultConfig;

pub fn sync_cmd(
    vault: &VaultArgs,
    timeout: Option<f64>,
    quiet: bool,
    json_out: bool,
) -> Result<()> {
    let paths = paths_of(vault)?;
    let bar = Progress::new(
        quiet || json_out,
        "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        |done, total, _| format!("sync: {done} of {total} uploaded"),
    );
    // The engine reports bytes left; the bar counts bytes done.
    let progress = |left: u64, total: u64| bar.update(total.saturating_sub(left), total);
    // Once per retry wait of a backend: why nothing moves, and until when.
    let waiting = |text: &str| {
        if !quiet && !json_out {
            bar.println(&format!("sync: {text}"));
        }
    };
    let req = Request::Sync { timeout };
    let started = Instant::now();
    let answered = control::request(&paths.root, &req, &mut |p| {
        if let Some(w) = p["waiting"].as_str() {
            return waiting(w);
        }
        progress(
            p["left"].as_u64().unwrap_or(0),
            p["total"].as_u64().unwrap_or(0),
        );
    });
    let result = match answered {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let off = open_offline(vault, Backends::Use)?;
            let config = VaultConfig::load(&paths.root)?;
            let v = config.policy.violations(&config.backends);
            if !v.is_empty() {
                bail!(
                    "the configuration breaks the placement policy:\n  {}",
                    v.join("\n  ")
                );
            }
            off.engine().start(off.clone());
            let r = off.engine().acquire().and_then(|_| {
                off.engine().wait_synced_saying(
                    timeout.map(Duration::from_secs_f64),
                    &|| {
                        if let Err(e) = off.commit() {
                            log::error!("index commit failed: {e}");
                        }
                    },
                    &mut |left, total| progress(left, total),
                    &mut |w| waiting(w),
                )
            });
            let r = r.and_then(|_| {
                off.engine()
                    .snapshot_and_wait(timeout.map(Duration::from_secs_f64))
                    .map(|_| ())
            });
            off.engine().release();
            let closed = off.close();
            r.and(closed)
        }
        Err(e) => Err(e),
    };
    bar.finish();
    result?;
    if json_out {
        println!(
            "{}",
            json!({"synced": true, "seconds": started.elapsed().as_secs_f64()})
        );
    } else if !quiet {
        println!("synced: every pack, the key file and an index snapshot are on every backend");
    }
    Ok(())
}
