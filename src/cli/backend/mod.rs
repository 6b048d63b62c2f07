//! `tresor backend`: the remote backends of a vault. This file holds the
//! subcommands' parse tree and dispatch (one file per subcommand beside it)
//! and the helpers the cloud commands share (`backend`, `policy`, `sync`,
//! `where`, `cache`, and the per-backend part of `status`).
//!
//! Commands that only read or change `config.toml` / `credentials.toml`
//! (`backend presets|add|list|test`, `policy`) need no passphrase. Commands
//! that read the index ask the mounted daemon over the control socket, or —
//! when the vault is not mounted — unlock the vault and do the work
//! themselves, printing the same output ([`daemon_or_offline`]).

mod add;
mod export;
mod list;
mod presets;
mod remove;
mod test;

use crate::maintenance::offline::{Backends, OfflineVault};
use crate::mount::control::Request;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::Value;

use crate::cli::VaultArgs;

use crate::mount::control;
use crate::remote::backend::VaultConfig;
use crate::vault::VaultPaths;

pub use add::AddArgs;

#[derive(Subcommand)]
pub enum BackendCmd {
    /// List the provider presets: service, data location, operator and legal seat, notes
    Presets {
        #[arg(long)]
        json: bool,
        /// Also show where each fact comes from and when it was checked
        #[arg(long, short)]
        verbose: bool,
    },
    /// Add a remote backend (checked against the placement policy, then tested)
    Add(Box<AddArgs>),
    /// List the vault's backends
    List {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// Write, read, list and delete a probe object; print latencies
    Test {
        #[command(flatten)]
        vault: VaultArgs,
        name: String,
    },
    /// Remove a backend from the vault (its remote objects are left alone)
    Remove {
        #[command(flatten)]
        vault: VaultArgs,
        name: String,
    },
    /// Write the backends and their credentials as one file for `tresor restore` on another machine
    Export {
        #[command(flatten)]
        vault: VaultArgs,
        /// Write to FILE (created with mode 0600; must not exist) instead of standard output
        #[arg(long, short, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

pub fn backend(cmd: BackendCmd) -> Result<()> {
    match cmd {
        BackendCmd::Presets { json, verbose } => presets::presets_table(json, verbose),
        BackendCmd::Add(a) => add::add(*a),
        BackendCmd::List { vault, json } => list::list(&vault, json),
        BackendCmd::Test { vault, name } => test::test(&vault, &name),
        BackendCmd::Remove { vault, name } => remove::remove(&vault, &name),
        BackendCmd::Export { vault, output } => export::export_cmd(&vault, output.as_deref()),
    }
}

/// The vault's paths; an error if there is no vault (no `tresor.key`).
pub(super) fn paths_of(v: &VaultArgs) -> Result<VaultPaths> {
    let p = v.paths()?;
    if !p.key_file().exists() {
        bail!(
            "no vault at {} (no tresor.key); create one with `tresor init`",
            p.root.display()
        );
    }
    Ok(p)
}

/// Tells a running daemon to re-read the configuration.
pub(super) fn notify_daemon(paths: &VaultPaths) -> Result<()> {
    if control::request(&paths.root, &Request::Reload, &mut |_| {})?.is_some() {
        println!("the mounted vault now uses the new configuration");
    }
    Ok(())
}

/// Opens the vault here (it is not mounted).
pub(super) fn open_offline(args: &VaultArgs, backends: Backends) -> Result<Arc<OfflineVault>> {
    let session = args.open()?;
    OfflineVault::open(&session.paths, &session.unlocked, backends)
}

/// Asks the daemon, else runs `offline` on a vault opened here.
pub(super) fn daemon_or_offline(
    vault: &VaultArgs,
    req: Request,
    offline: impl FnOnce(&OfflineVault, &VaultConfig) -> Result<Value>,
) -> Result<Value> {
    let paths = paths_of(vault)?;
    if let Some(v) = control::request(&paths.root, &req, &mut |_| {})? {
        return Ok(v);
    }
    let off = open_offline(vault, Backends::Ignore)?;
    let config = VaultConfig::load(&paths.root)?;
    let v = offline(&off, &config)?;
    off.close()?;
    Ok(v)
}

/// The three sovereignty facts of a backend in a JSON answer, on one line:
/// "data in DE · operator Hetzner Online GmbH (DE)", plus "· parent
/// Amazon.com, Inc. (US)" when the ultimate parent is seated elsewhere.
pub(super) fn three_facts(b: &Value) -> String {
    let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "data in {} · operator {} ({})",
        s("location"),
        s("operator"),
        s("operator_country")
    );
    let (parent, pc) = (s("parent"), s("parent_country"));
    if !pc.is_empty() && pc != s("operator_country") {
        let name = if parent.is_empty() {
            "seated in".to_string()
        } else {
            parent
        };
        out.push_str(&format!(" · parent {name} ({pc})"));
    }
    out
}
