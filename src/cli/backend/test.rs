//! `tresor backend test NAME`: writes, reads, lists and deletes a probe
//! object on one backend and prints the latencies. `backend add` runs the
//! same probe before it saves a backend. Needs no passphrase.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::VaultArgs;

use crate::remote::backend::{self, BackendConfig, Credentials, VaultConfig};
use crate::store::Store;

use super::paths_of;

pub(super) fn test(vault: &VaultArgs, name: &str) -> Result<()> {
    let paths = paths_of(vault)?;
    let cfg = VaultConfig::load(&paths.root)?;
    let b = cfg
        .backend(name)
        .with_context(|| format!("no backend named {name}; see `tresor backend list`"))?
        .clone();
    let creds = Credentials::load(&paths.root)?;
    probe(&b, &creds, true, None)
        .with_context(|| format!("backend {name} failed its connection test"))?;
    let caps = probe_capabilities(&b, &creds)?;
    for (what, c) in [
        ("create-if-absent", &caps.create_if_absent),
        ("replace-if-match", &caps.replace_if_match),
        ("ranged read", &caps.ranged_read),
        ("object lock", &caps.object_lock),
    ] {
        println!("  {what:<17} {:<7} {}", c.word(), c.detail);
    }
    // Saved for `status` (re-read: the daemon may have changed the file).
    let mut fresh = VaultConfig::load(&paths.root)?;
    if let Some(stored) = fresh.backends.iter_mut().find(|x| x.name == b.name) {
        stored.capabilities = caps;
        fresh.save(&paths.root)?;
    }
    Ok(())
}

/// Probes what the backend can do (conditional writes, ranged reads,
/// Object Lock); see `remote::capabilities`.
pub(super) fn probe_capabilities(
    cfg: &BackendConfig,
    creds: &Credentials,
) -> Result<crate::vault::config::Capabilities> {
    let runtime = crate::store::new_runtime("tresor-probe")?;
    crate::remote::capabilities::probe(cfg, &creds.for_backend(&cfg.name), &runtime)
}

/// Writes, reads, lists and deletes a probe object.
/// Writes, reads, lists and deletes a probe object; with `vault_id`, also
/// refuses a root that holds another vault.
pub(super) fn probe(
    cfg: &BackendConfig,
    creds: &Credentials,
    verbose: bool,
    vault_id: Option<&[u8; 16]>,
) -> Result<()> {
    let runtime = Arc::new(crate::store::new_runtime("tresor-probe")?);
    let op = backend::build_operator(cfg, &creds.for_backend(&cfg.name))?;
    let store = Store::remote(op, runtime);
    let mut nonce = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let path = format!("probe/{}", hex::encode(nonce));
    let mut body = vec![0u8; 64 * 1024];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut body);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    store.write(&path, body.clone().into())?;
    let w = ms(t);
    let t = Instant::now();
    let back = store.read_all(&path, body.len() as u64)?;
    let r = ms(t);
    if back.as_ref() != body.as_slice() {
        bail!("the probe object read back differs from what was written");
    }
    let t = Instant::now();
    let listed = store.list("probe/")?;
    let l = ms(t);
    if !listed.iter().any(|p| p.ends_with(&hex::encode(nonce))) {
        bail!("the probe object was written but does not show up in a listing");
    }
    let t = Instant::now();
    store.delete(&path)?;
    // WebDAV and file servers keep the emptied folder: remove it too.
    let _ = store.delete("probe/");
    let d = ms(t);
    if let Some(own) = vault_id {
        crate::remote::sync::check_key_owner(&store, own)?;
    }
    if verbose || std::io::stdout().is_terminal() {
        println!(
            "backend {}: write 64 KiB {w:.0} ms, read {r:.0} ms, list {l:.0} ms, delete {d:.0} ms: OK",
            cfg.name
        );
    }
    Ok(())
}
