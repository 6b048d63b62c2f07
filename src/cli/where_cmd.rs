//! `tresor where PATH [--json]`: which backends (locations, operators, legal
//! seats) hold a file's or directory's data, and how much of it is still
//! pending. Answered by the daemon when the vault is mounted, else by
//! opening the vault here; PATH may be inside the mountpoint or relative to
//! the vault's root.

use std::path::Path;

use anyhow::Result;

use crate::cli::backend::{daemon_or_offline, three_facts};
use crate::cli::VaultArgs;

use crate::mount::control::Request;
use crate::remote::sync;

pub fn where_cmd(vault: &VaultArgs, path: &Path, json_out: bool) -> Result<()> {
    let rel = vault_relative(path)?;
    let v = daemon_or_offline(vault, Request::Where { path: rel.clone() }, |off, cfg| {
        let idx = off.index();
        sync::where_status(cfg, &idx, rel.as_bytes())
    })?;
    if json_out {
        println!("{v}");
        return Ok(());
    }
    let total = v["data_bytes"].as_u64().unwrap_or(0);
    println!(
        "{}: {} of data in {} packs; {} in the local cache",
        v["path"].as_str().unwrap_or(""),
        crate::progress::human(total),
        v["packs"],
        crate::progress::human(v["local_cache_bytes"].as_u64().unwrap_or(0))
    );
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    if backends.is_empty() {
        println!("  no remote backends: the data is only in the local store");
    }
    for b in backends {
        println!(
            "  {:<14} holds {:>5.1} %  pending {:>5.1} %  {}",
            b["name"].as_str().unwrap_or(""),
            100.0 - b["pending_percent"].as_f64().unwrap_or(0.0),
            b["pending_percent"].as_f64().unwrap_or(0.0),
            three_facts(&b),
        );
    }
    Ok(())
}

/// A path inside a mounted vault, or already vault-relative, as `/a/b`.
pub(super) fn vault_relative(path: &Path) -> Result<String> {
    if let Ok(abs) = std::path::absolute(path) {
        if let Some(mp) = crate::mount::daemon::mountpoint_containing(&abs) {
            let rel = abs.strip_prefix(&mp).unwrap_or(Path::new(""));
            return Ok(format!("/{}", rel.to_string_lossy()));
        }
    }
    let s = path.to_string_lossy();
    Ok(if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    })
}
