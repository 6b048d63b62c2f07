//! `tresor backend list [--json]`: the vault's backends from `config.toml`
//! (name, service, data location, operator and its legal seat, endpoint).
//! Needs no passphrase.

use anyhow::Result;

use crate::cli::VaultArgs;

use crate::remote::backend::VaultConfig;

use super::paths_of;

pub(super) fn list(vault: &VaultArgs, json: bool) -> Result<()> {
    let paths = paths_of(vault)?;
    let cfg = VaultConfig::load(&paths.root)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&cfg.backends)?);
        return Ok(());
    }
    if cfg.backends.is_empty() {
        println!(
            "no remote backends: data stays in the local store ({})",
            paths.store().display()
        );
        return Ok(());
    }
    println!(
        "{:<14} {:<7} {:<4} {:<38} ENDPOINT",
        "NAME", "SERVICE", "LOC", "OPERATOR (SEAT)"
    );
    for b in &cfg.backends {
        println!(
            "{:<14} {:<7} {:<4} {:<38} {}{}",
            b.name,
            b.service.as_str(),
            b.location,
            b.describe_law(),
            b.endpoint,
            if b.bucket.is_empty() {
                String::new()
            } else {
                format!(" bucket {}", b.bucket)
            }
        );
    }
    Ok(())
}
