//! tresor: an encrypted, deduplicating FUSE filesystem that keeps only
//! ciphertext in the stores you choose. See README.md and docs/.

// The format modules expose the whole format (trailer parsing to rebuild an
// index from packs, key-slot management) which their unit tests exercise and
// the recovery commands (fsck, verify, passwd) will call.
mod backend;
#[cfg_attr(not(test), allow(dead_code))]
mod chunk;
mod cli_docs;
mod cloud_cli;
mod control;
mod daemon;
mod exit;
mod fs;
mod fsck;
mod fstab;
mod fuse;
mod gc;
mod gc_cli;
mod index;
mod key_cli;
mod keyring;
#[cfg_attr(not(test), allow(dead_code))]
mod keys;
mod overlay;
mod packstore;
mod progress;
mod recovery_cli;
mod snapshot;
mod store;
mod sync;
mod systemd;
mod vault;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::vault::{PassphraseSource, VaultPaths};

/// Encrypted, deduplicating drive whose ciphertext lives where you choose.
#[derive(Parser)]
#[command(name = "tresor", version, about, long_about = cli_docs::LONG_ABOUT, after_help = cli_docs::AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct VaultArgs {
    /// Vault directory [default: $XDG_DATA_HOME/tresor/default]
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    /// Read the passphrase from the first line of FILE (else TRESOR_PASSPHRASE, else a prompt)
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Read the passphrase from the first line of standard input
    #[arg(long, hide = true)]
    passphrase_stdin: bool,
    /// Read the passphrase from the desktop keyring (Secret Service, via secret-tool)
    #[arg(long, conflicts_with = "passphrase_file")]
    keyring: bool,
    /// Unlock with the whole contents of FILE: a key-file slot (see `tresor key add-keyfile`)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["passphrase_file", "keyring"])]
    key_file: Option<PathBuf>,
}

impl VaultArgs {
    fn paths(&self) -> Result<VaultPaths> {
        Ok(VaultPaths::new(match &self.vault {
            Some(v) => std::path::absolute(v).context("invalid --vault path")?,
            None => vault::default_vault_dir()?,
        }))
    }
    /// The unlock secret: the whole `--key-file`, else the passphrase.
    fn secret(&self, confirm: bool) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.key_file {
            if confirm {
                return Err(exit::usage(
                    "--key-file unlocks an existing vault; create the vault with a passphrase, \
                     then add a key-file slot with `tresor key add-keyfile FILE`",
                ));
            }
            let bytes = std::fs::read(f)
                .with_context(|| format!("cannot read key file {}", f.display()))?;
            return Ok(zeroize::Zeroizing::new(bytes));
        }
        self.passphrase()?.read(confirm)
    }
    fn passphrase(&self) -> Result<PassphraseSource> {
        Ok(PassphraseSource {
            file: self.passphrase_file.clone(),
            from_stdin: self.passphrase_stdin,
            keyring: self
                .keyring
                .then(|| self.paths().map(|p| p.root))
                .transpose()?,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a new vault (prints a recovery key once: write it down)
    Init {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Mount a vault; returns once the mount is ready (daemonises unless -f)
    Mount {
        #[command(flatten)]
        vault: VaultArgs,
        /// Stay in the foreground and log to stderr
        #[arg(short = 'f', long)]
        foreground: bool,
        /// FUSE mount options, comma-separated (allow_other, allow_root, ro, noatime, nodev, ...)
        #[arg(short = 'o', value_name = "OPTS")]
        options: Vec<String>,
        /// Create the vault first if it does not exist yet (prints the recovery key)
        #[arg(long)]
        init: bool,
        /// Print "ready" on stdout once mounted (used when daemonising)
        #[arg(long, hide = true)]
        ready_stdout: bool,
        /// Directory to mount on
        mountpoint: PathBuf,
    },
    /// Flush everything, unmount, and wait for the daemon to finish
    Unmount {
        /// The mounted directory
        mountpoint: PathBuf,
    },
    /// Show vault id, sizes (logical / stored / deduplicated), chunk and pack
    /// counts; per backend: location, operator, objects, bytes, pending, last error
    Status {
        #[command(flatten)]
        vault: VaultArgs,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Remote backends: presets, add, list, test, remove
    #[command(subcommand)]
    Backend(cloud_cli::BackendCmd),
    /// The placement policy: copies, required/allowed locations, denied operator countries
    #[command(subcommand)]
    Policy(cloud_cli::PolicyCmd),
    /// Reclaim the space of deleted and overwritten data: delete dead packs,
    /// repack mostly dead ones (works mounted and unmounted)
    Gc {
        #[command(flatten)]
        vault: VaultArgs,
        /// Change nothing; print what would be reclaimed
        #[arg(long)]
        dry_run: bool,
        /// No progress output
        #[arg(long, short)]
        quiet: bool,
        /// Print a JSON result line
        #[arg(long)]
        json: bool,
    },
    /// Wait until every pack and the key file are on every backend
    Sync {
        #[command(flatten)]
        vault: VaultArgs,
        /// Give up after S seconds (exit status 1, naming what is pending)
        #[arg(long, value_name = "S")]
        timeout: Option<f64>,
        /// No progress output
        #[arg(long, short)]
        quiet: bool,
        /// Print a JSON result line
        #[arg(long)]
        json: bool,
    },
    /// Which backends (countries, operators) hold a file's or directory's data
    Where {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
        /// A path in the mounted vault, or a path relative to the vault's root
        path: PathBuf,
    },
    /// Restore a vault on a new machine: key file and newest index snapshot from its backends, cold cache
    Restore(Box<recovery_cli::RestoreArgs>),
    /// List the index snapshots on each backend: generation, time, size, writer
    Snapshots {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(long)]
        json: bool,
    },
    /// The single-writer lease on the backends: show, break
    #[command(subcommand)]
    Lease(recovery_cli::LeaseCmd),
    /// The local cache of remote data: show, clear, set-size
    #[command(subcommand)]
    Cache(cloud_cli::CacheCmd),
    /// Mount a vault at login with a systemd user unit (install, uninstall)
    Systemd {
        #[command(subcommand)]
        action: systemd::Action,
    },
    /// Print a shell completion script (e.g. `tresor completions bash > /etc/bash_completion.d/tresor`)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the tresor(1) man page, or write every page into a directory
    Man {
        /// Write tresor.1 and one tresor-COMMAND.1 per subcommand into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Encrypt a folder in place: copy it into a vault, verify, mount the vault over it
    Overlay {
        // --vault: created if missing (prints the recovery key); default
        // $XDG_DATA_HOME/tresor/<escaped folder path>.
        #[command(flatten)]
        vault: VaultArgs,
        /// No progress output and no summary
        #[arg(long, short)]
        quiet: bool,
        /// Print one JSON result line
        #[arg(long)]
        json: bool,
        /// Continue an interrupted overlay from its journal (VAULT/overlay.json)
        #[arg(long, conflicts_with = "rollback")]
        resume: bool,
        /// Undo an overlay (finished or not): the folder gets its files back
        #[arg(long)]
        rollback: bool,
        /// Keep the unencrypted originals in FOLDER.tresor-originals-TIME
        #[arg(long)]
        keep_originals: bool,
        /// The folder to encrypt in place
        folder: PathBuf,
    },
    /// Check every pack on the local store and every backend against the
    /// index (missing, wrong size, unreferenced); --data downloads every pack
    /// and authenticates every chunk. Names the files a damaged pack affects;
    /// exit status 4 when something is damaged
    Verify {
        #[command(flatten)]
        vault: VaultArgs,
        /// Download every pack and authenticate its trailer and every chunk
        #[arg(long)]
        data: bool,
        /// Check only this backend (`local` = the local store)
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
        /// No progress output; print only the affected files
        #[arg(long, short, conflicts_with = "json")]
        quiet: bool,
        /// Print one JSON report
        #[arg(long)]
        json: bool,
    },
    /// Check the index and the local store for inconsistencies; --repair fixes what is safe
    Fsck {
        #[command(flatten)]
        vault: VaultArgs,
        /// Fix what is safe (refcounts, link counts, dangling rows, leftovers;
        /// unreachable files go to /lost+found) and say what was done
        #[arg(long)]
        repair: bool,
        /// Print one JSON result line
        #[arg(long)]
        json: bool,
    },
    /// Change the passphrase: rewrites its key slot (never the data)
    Passwd {
        /// Old passphrase or recovery key: --passphrase-file, TRESOR_PASSPHRASE or a prompt
        #[command(flatten)]
        vault: VaultArgs,
        /// Read the new passphrase from the first line of FILE (else asked twice)
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Key slots: list, add-recovery, add-keyfile FILE, remove SLOT
    #[command(subcommand)]
    Key(key_cli::KeyCmd),
}

/// Large buffers (sealed chunks, packs) are allocated and freed at a high
/// rate by many threads. glibc's dynamic mmap threshold would move them into
/// per-thread arenas that keep freed memory; a fixed 1 MiB threshold returns
/// them to the OS at once (measured: peak RSS of a 1 GiB copy 517 MB → see
/// docs/ARCHITECTURE.md).
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // Errors from libraries (OpenDAL) would otherwise carry whole
    // backtraces into the log when RUST_BACKTRACE is set; panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // `tresor VAULT MOUNTPOINT -o OPTS` (mount(8), fstab) and umount.fuse.tresor.
    if let Some(code) = fstab::dispatch(&Cli::command()) {
        return code;
    }
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Mount { .. } => "info",
        _ => "warn",
    };
    // OpenDAL logs every retried attempt; the sync engine logs one line per
    // failed upload with its backoff, which is what a user needs.
    let default_level = format!("{default_level},opendal=error");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tresor: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { vault } => {
            let paths = vault.paths()?;
            let pass = vault.passphrase()?.read(true)?;
            let recovery = vault::init(&paths, &pass)?;
            print_created(&paths, &recovery);
            println!(
                "Mount it with: tresor mount --vault {} MOUNTPOINT",
                paths.root.display()
            );
            Ok(())
        }
        Command::Mount {
            vault,
            foreground,
            options,
            init,
            ready_stdout,
            mountpoint,
        } => {
            let paths = vault.paths()?;
            let creating = init && !paths.key_file().exists();
            if !creating {
                vault::require_exists(&paths)?;
            }
            let pass = vault.secret(creating)?;
            if creating {
                let recovery = vault::init(&paths, &pass)?;
                print_created(&paths, &recovery);
            }
            let options: Vec<String> = options
                .iter()
                .flat_map(|o| o.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if ready_stdout {
                // The daemon child: mountpoint already checked by the parent.
                daemon::block_signals();
                return daemon::run_daemon(
                    &paths,
                    &mountpoint,
                    &options,
                    &pass,
                    Some(std::io::stdout()),
                );
            }
            if foreground {
                daemon::block_signals();
            }
            daemon::mount(
                daemon::MountRequest {
                    vault: paths,
                    mountpoint,
                    options,
                    foreground,
                },
                &pass,
            )
        }
        Command::Unmount { mountpoint } => daemon::unmount(&mountpoint),
        Command::Status { vault, json } => status(&vault, json),
        Command::Backend(cmd) => cloud_cli::backend(cmd),
        Command::Policy(cmd) => cloud_cli::policy(cmd),
        Command::Restore(args) => recovery_cli::restore_cmd(*args),
        Command::Snapshots { vault, json } => recovery_cli::snapshots_cmd(&vault, json),
        Command::Lease(cmd) => recovery_cli::lease_cmd(cmd),
        Command::Sync {
            vault,
            timeout,
            quiet,
            json,
        } => cloud_cli::sync_cmd(&vault, timeout, quiet, json),
        Command::Gc {
            vault,
            dry_run,
            quiet,
            json,
        } => gc_cli::gc_cmd(&vault, dry_run, quiet, json),
        Command::Where { vault, json, path } => cloud_cli::where_cmd(&vault, &path, json),
        Command::Cache(cmd) => cloud_cli::cache(cmd),
        Command::Systemd { action } => systemd::run(action),
        Command::Completions { shell } => cli_docs::completions(shell),
        Command::Man { out } => cli_docs::man(out.as_deref()),
        Command::Overlay {
            vault,
            quiet,
            json,
            resume,
            rollback,
            keep_originals,
            folder,
        } => overlay::run(overlay::OverlayOpts {
            vault,
            folder,
            quiet,
            json,
            resume,
            rollback,
            keep_originals,
        }),
        Command::Verify {
            vault,
            data,
            backend,
            quiet,
            json,
        } => verify::run(verify::VerifyOpts {
            vault,
            data,
            backend,
            quiet,
            json,
        }),
        Command::Fsck {
            vault,
            repair,
            json,
        } => fsck::run(&vault, repair, json),
        Command::Passwd {
            vault,
            new_passphrase_file,
        } => key_cli::passwd(&vault, new_passphrase_file.as_deref()),
        Command::Key(cmd) => key_cli::key(cmd),
    }
}

fn print_created(paths: &VaultPaths, recovery: &keys::RecoveryKey) {
    println!("Created vault {}", paths.root.display());
    println!();
    println!("Recovery key (shown once; it opens the vault if the passphrase is lost):");
    println!();
    println!("    {}", recovery.to_display_string());
    println!();
}

fn status(args: &VaultArgs, json: bool) -> Result<()> {
    let paths = args.paths()?;
    vault::require_exists(&paths)?;
    let pass = args.secret(false)?;
    let unlocked = vault::unlock(&paths, &pass)?;
    let index = index::Index::open_read_only(&paths.index(), &unlocked.subkeys.index)?;
    let s = index.stats()?;
    let store = store::Store::open_local(&paths.store())?;
    let (objects, stored) = store.usage("packs/")?;
    let vault_id = hex::encode(unlocked.key_file.vault_id());
    let mounted = vault::is_mounted(&paths);
    let dedup_saved = s
        .referenced_plain_bytes
        .saturating_sub(s.unique_plain_bytes);
    let config = backend::VaultConfig::load(&paths.root)?;
    let sync_status = match control::request(
        &paths.root,
        serde_json::json!({"cmd": "status"}),
        &mut |_| {},
    )? {
        Some(v) => v["sync"].clone(),
        None => sync::backend_status(None, &config, &index)?,
    };
    if json {
        let mut v = status_json_stats(&s);
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
        cloud_cli::print_status_sync(&sync_status);
    }
    Ok(())
}

/// The index part of `status --json`.
pub fn status_json_stats(s: &index::IndexStats) -> serde_json::Value {
    serde_json::json!({
        "logical_bytes": s.logical_bytes,
        "referenced_bytes": s.referenced_plain_bytes,
        "unique_bytes": s.unique_plain_bytes,
        "dedup_saved_bytes": s.referenced_plain_bytes.saturating_sub(s.unique_plain_bytes),
        "chunks": s.chunks,
        "live_chunks": s.live_chunks,
        "packs": s.packs,
        "pack_bytes": s.pack_bytes,
        "inodes": s.inodes,
    })
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {} ({n} B)", UNITS[u])
    }
}
