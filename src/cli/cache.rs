//! `tresor cache show|clear|set-size`: the local cache of remote data.
//! The local store is the cache; packs not yet on every backend are always
//! kept, and without remote backends nothing is ever evicted. `show` and
//! `clear` go through the daemon when the vault is mounted, else the vault
//! is opened here; `set-size` only edits `config.toml` and tells a running
//! daemon to re-read it.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;

use crate::cli::backend::{daemon_or_offline, notify_daemon, open_offline, paths_of};
use crate::cli::VaultArgs;

use crate::maintenance::offline::Backends;
use crate::mount::control::{self, Request};
use crate::remote::backend::VaultConfig;
use crate::remote::sync;

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Local cache budget and use
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// Evict every pack that all backends hold
    Clear {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Set the cache budget (bytes; K, M, G, T suffixes allowed)
    SetSize {
        #[command(flatten)]
        vault: VaultArgs,
        size: String,
    },
}

pub fn cache(cmd: CacheCmd) -> Result<()> {
    let print = |v: &Value| {
        println!(
            "cache budget:        {}\nin the local store:  {}\nnot yet uploaded:    {} (always kept)\nevictable:           {}",
            crate::progress::human(v["budget_bytes"].as_u64().unwrap_or(0)),
            crate::progress::human(v["local_bytes"].as_u64().unwrap_or(0)),
            crate::progress::human(v["not_yet_uploaded_bytes"].as_u64().unwrap_or(0)),
            crate::progress::human(v["evictable_bytes"].as_u64().unwrap_or(0)),
        );
        if v["remote_backends"].as_u64() == Some(0) {
            println!("(no remote backends: the local store is the vault's only copy and is never evicted)");
        }
    };
    match cmd {
        CacheCmd::Show { vault, json } => {
            let v = daemon_or_offline(&vault, Request::CacheShow, |off, cfg| {
                let idx = off.index();
                sync::cache_status(Some(off.engine()), cfg, &idx)
            })?;
            if json {
                println!("{v}");
            } else {
                print(&v);
            }
        }
        CacheCmd::Clear { vault } => {
            let paths = paths_of(&vault)?;
            let v = match control::request(&paths.root, &Request::CacheClear, &mut |_| {})? {
                Some(v) => v,
                None => {
                    let off = open_offline(&vault, Backends::Use)?;
                    off.engine().request_clear();
                    off.commit()?;
                    let cfg = VaultConfig::load(&paths.root)?;
                    let idx = off.index();
                    sync::cache_status(Some(off.engine()), &cfg, &idx)?
                }
            };
            print(&v);
        }
        CacheCmd::SetSize { vault, size } => {
            let bytes = parse_size(&size)?;
            let paths = paths_of(&vault)?;
            let mut cfg = VaultConfig::load(&paths.root)?;
            cfg.cache.size = bytes;
            cfg.save(&paths.root)?;
            println!("cache budget set to {}", crate::progress::human(bytes));
            notify_daemon(&paths)?;
        }
    }
    Ok(())
}

/// "10G", "512M", "1000000".
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a size (like 10G, 512M, 1000000)"))?;
    if n < 0.0 {
        bail!("a size cannot be negative");
    }
    Ok((n * mult as f64) as u64)
}
