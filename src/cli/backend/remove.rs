//! `tresor backend remove NAME`: removes a backend from `config.toml` and
//! its secrets from `credentials.toml`; its remote objects are left alone.
//! Refused when the rest would break the placement policy, or when packs
//! evicted from the local cache exist only on that backend (the daemon
//! counts them when the vault is mounted, else the vault is opened here).

use anyhow::{bail, Context, Result};

use crate::cli::VaultArgs;

use crate::maintenance::offline::Backends;
use crate::mount::control::{self, Request};
use crate::remote::backend::{BackendConfig, Credentials, VaultConfig};

use super::{notify_daemon, open_offline, paths_of};

pub(super) fn remove(vault: &VaultArgs, name: &str) -> Result<()> {
    let paths = paths_of(vault)?;
    let mut config = VaultConfig::load(&paths.root)?;
    let b = config
        .backend(name)
        .with_context(|| format!("no backend named {name}"))?
        .clone();
    let rest: Vec<BackendConfig> = config
        .backends
        .iter()
        .filter(|x| x.name != name)
        .cloned()
        .collect();
    let v = config.policy.violations(&rest);
    if !v.is_empty() {
        bail!(
            "removing backend {name} would break the placement policy:\n  {}\nchange the policy first (`tresor policy set`)",
            v.join("\n  ")
        );
    }
    let others: Vec<String> = rest.iter().map(|x| x.id.clone()).collect();
    let only_there = match control::request(
        &paths.root,
        &Request::CanRemove { id: b.id.clone() },
        &mut |_| {},
    )? {
        Some(v) => v["packs_only_there"].as_u64().unwrap_or(0),
        None => {
            let off = open_offline(vault, Backends::Ignore)?;
            let idx = off.index();
            idx.packs_only_on(&b.id, &others)?
        }
    };
    if only_there > 0 {
        bail!(
            "{only_there} packs are evicted from the local cache and exist only on backend {name}; \
             removing it would lose data"
        );
    }
    config.backends = rest;
    config.save(&paths.root)?;
    let mut creds = Credentials::load(&paths.root)?;
    if creds.backends.remove(name).is_some() {
        creds.save(&paths.root)?;
    }
    println!(
        "removed backend {name} (objects under {} on it were not deleted)",
        b.root
    );
    notify_daemon(&paths)?;
    Ok(())
}
