//! `tresor status [--json]`: sizes from the index, the local store's usage
//! and, per backend, what is stored and pending (from the daemon when the
//! vault is mounted).

use crate::mount::control::Request;
use anyhow::Result;

use crate::cli::backend;
use crate::cli::session::{ask_daemon, Session, VaultArgs};
use crate::index::Index;
use crate::progress::human;
use crate::remote::sync;
use crate::store::Store;
use crate::vault::{self, config::VaultConfig};

pub fn run(args: &VaultArgs, json: bool) -> Result<()> {
    let Session { paths, unlocked } = args.open()?;
    let index = Index::open_read_only(&paths.index(), &unlocked.subkeys.index)?;
    let s = index.stats()?;
    let store = Store::open_local(&paths.store())?;
    let (objects, stored) = store.usage("packs/")?;
    let vault_id = hex::encode(unlocked.key_file.vault_id());
    let mounted = vault::is_mounted(&paths);
    let dedup_saved = s
        .referenced_plain_bytes
        .saturating_sub(s.unique_plain_bytes);
    let config = VaultConfig::load(&paths.root)?;
    let sync_status = match ask_daemon(&paths, &Request::Status, &mut |_| {})? {
        Some(v) => v["sync"].clone(),
        None => sync::backend_status(None, &config, &index)?,
    };
    if json {
        let mut v = s.to_json();
        v["vault_id"] = vault_id.into();
        v["vault"] = paths.root.display().to_string().into();
        v["mounted"] = mounted.into();
        v["stored_bytes"] = stored.into();
        v["objects"] = objects.into();
        v["sync"] = sync_status;
        println!("{v}");
    } else {
        println!("vault:          {}", paths.root.display());
        println!("vault id:       {vault_id}");
        println!("mounted:        {}", if mounted { "yes" } else { "no" });
        println!("files & dirs:   {}", s.inodes);
        println!(
            "logical size:   {} (sum of file sizes)",
            human(s.logical_bytes)
        );
        println!(
            "data in files:  {} (holes excluded)",
            human(s.referenced_plain_bytes)
        );
        println!("unique data:    {}", human(s.unique_plain_bytes));
        println!("deduplicated:   {}", human(dedup_saved));
        println!(
            "stored:         {} in {objects} pack objects (compressed, padded, encrypted)",
            human(stored)
        );
        println!(
            "chunks:         {} ({} referenced)",
            s.chunks, s.live_chunks
        );
        println!("packs:          {}", s.packs);
        backend::print_status_sync(&sync_status);
    }
    Ok(())
}
