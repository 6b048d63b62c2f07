//! `tresor backend export [-o FILE]`: writes the backends and their
//! credentials as one file for `tresor restore --backend-config` on another
//! machine, which has no `config.toml` and no `credentials.toml`. The file
//! is the config with each backend's secrets inline (mode 0600, never
//! overwritten); its format and how `restore` reads it are described in
//! `cli/restore.rs`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::VaultArgs;

use crate::remote::backend::{Credentials, VaultConfig};
use crate::vault::{self, keys::KeyFile};

/// `tresor backend export`: the config with every backend's secrets inline.
pub(super) fn export_cmd(args: &VaultArgs, output: Option<&Path>) -> Result<()> {
    let paths = args.paths()?;
    vault::require_exists(&paths)?;
    let config = VaultConfig::load(&paths.root)?;
    let creds = Credentials::load(&paths.root)?;
    let mut doc = toml::Table::new();
    let kf = KeyFile::load(&paths.key_file())?;
    doc.insert(
        "vault_id".into(),
        toml::Value::String(hex::encode(kf.vault_id())),
    );
    let base = toml::Table::try_from(&config).context("cannot serialise the config")?;
    for (k, v) in base {
        if k != "backend" {
            doc.insert(k, v);
        }
    }
    let mut backends = Vec::new();
    for b in &config.backends {
        let mut t = toml::Table::try_from(b).context("cannot serialise a backend")?;
        let s = creds.for_backend(&b.name);
        for (k, v) in [
            ("access_key_id", &s.access_key_id),
            ("secret_access_key", &s.secret_access_key),
            ("password", &s.password),
        ] {
            if !v.is_empty() {
                t.insert(k.into(), toml::Value::String(v.clone()));
            }
        }
        backends.push(toml::Value::Table(t));
    }
    doc.insert("backend".into(), toml::Value::Array(backends));
    let text = zeroize::Zeroizing::new(format!(
        "# tresor restore file: `tresor restore --vault DIR --backend-config THIS_FILE`.\n\
         # Contains backend credentials: keep it as safe as the passphrase.\n\n{}",
        toml::to_string_pretty(&doc).context("cannot serialise")?
    ));
    match output {
        Some(p) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .with_context(|| {
                    format!("cannot create {} (it must not exist yet)", p.display())
                })?;
            f.write_all(text.as_bytes())?;
            eprintln!("wrote {} (mode 0600; it holds credentials)", p.display());
        }
        None => print!("{}", *text),
    }
    Ok(())
}
