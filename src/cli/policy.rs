//! `tresor policy set|show`: the placement policy in `config.toml` (copies,
//! required and allowed locations, and the two law rules: the operator's
//! seat, or the operator's and its ultimate parent's seats). `set` is
//! refused if the configured backends would break the new policy; the same
//! check runs in `backend add` and `mount`. Needs no passphrase.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;

use crate::cli::backend::paths_of;
use crate::cli::VaultArgs;

use crate::remote::backend::{self, VaultConfig};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Change the placement policy (refused if the backends would break it)
    Set {
        #[command(flatten)]
        vault: VaultArgs,
        /// Copies of every pack on remote backends
        #[arg(long)]
        copies: Option<u32>,
        /// At least one copy in this location (repeatable; ISO code or EU)
        #[arg(long, value_name = "CC")]
        require_location: Vec<String>,
        /// Copies may be here too (repeatable; ISO code or EU)
        #[arg(long, value_name = "CC")]
        allow_location: Vec<String>,
        /// Refuse a backend whose operator is seated here; owners are not
        /// looked at (repeatable)
        #[arg(long, value_name = "CC")]
        deny_operator_law: Vec<String>,
        /// Refuse a backend whose operator or ultimate parent is seated here
        /// (repeatable). `--deny-operator-country` is the old name of this rule
        #[arg(long, value_name = "CC", alias = "deny-operator-country")]
        deny_parent_law: Vec<String>,
        /// Start from the default policy (1 copy, no rules)
        #[arg(long)]
        reset: bool,
    },
    /// Show the policy and whether the backends satisfy it
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn policy(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Set {
            vault,
            copies,
            require_location,
            allow_location,
            deny_operator_law,
            deny_parent_law,
            reset,
        } => {
            let paths = paths_of(&vault)?;
            let mut config = VaultConfig::load(&paths.root)?;
            let mut p = if reset {
                backend::Policy::default()
            } else {
                config.policy.clone()
            };
            let norm = |what: &str, v: &[String]| -> Result<Vec<String>> {
                v.iter()
                    .flat_map(|s| s.split(','))
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| backend::normalise_country(what, s))
                    .collect()
            };
            if let Some(c) = copies {
                p.copies = c;
            }
            if !require_location.is_empty() {
                p.require_location = norm("--require-location", &require_location)?;
            }
            if !allow_location.is_empty() {
                p.allow_location = norm("--allow-location", &allow_location)?;
            }
            if !deny_operator_law.is_empty() {
                p.deny_operator_law = norm("--deny-operator-law", &deny_operator_law)?;
            }
            if !deny_parent_law.is_empty() {
                p.deny_parent_law = norm("--deny-parent-law", &deny_parent_law)?;
            }
            let v = p.violations(&config.backends);
            if !v.is_empty() {
                bail!(
                    "refused: the vault's backends would break this policy:\n  {}",
                    v.join("\n  ")
                );
            }
            config.policy = p;
            config.save(&paths.root)?;
            for l in config.policy.describe() {
                println!("{l}");
            }
            Ok(())
        }
        PolicyCmd::Show { vault, json } => {
            let paths = paths_of(&vault)?;
            let config = VaultConfig::load(&paths.root)?;
            let v = config.policy.violations(&config.backends);
            if json {
                println!(
                    "{}",
                    json!({"policy": config.policy, "violations": v, "compliant": v.is_empty()})
                );
                return Ok(());
            }
            for l in config.policy.describe() {
                println!("{l}");
            }
            if v.is_empty() {
                println!("satisfied by the configured backends");
            } else {
                println!("NOT satisfied:\n  {}", v.join("\n  "));
            }
            Ok(())
        }
    }
}
