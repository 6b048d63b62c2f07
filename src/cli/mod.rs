//! The command line: clap's parse tree, one file per command, the one way to
//! open a vault ([`session`]), output helpers and the exit codes ([`exit`]).
//! Nothing outside `cli/` imports from here; commands call into `mount/`,
//! `maintenance/`, `remote/` and the core.

pub mod backend;
pub mod cache;
pub mod docs;
pub mod exit;
pub mod fsck;
pub mod gc;
pub mod key;
pub mod overlay;
pub mod policy;
pub mod report;
pub mod restore;
pub mod session;
pub mod status;
pub mod sync;
pub mod verify;
pub mod where_cmd;

pub use session::{Session, VaultArgs};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use crate::mount::{daemon, fstab, systemd};
use crate::vault::{self, VaultPaths};

/// Encrypted, deduplicating drive whose ciphertext lives where you choose.
#[derive(Parser)]
#[command(name = "tresor", version, about, long_about = docs::LONG_ABOUT, after_help = docs::AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new vault (prints a recovery key once: write it down)
    Init {
        #[command(flatten)]
        vault: VaultArgs,
        #[command(flatten)]
        slot: session::NewSlotArgs,
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
        #[command(flatten)]
        slot: session::NewSlotArgs,
        /// Print "ready" on stdout once mounted (used when daemonising)
        #[arg(long, hide = true)]
        ready_stdout: bool,
        /// Where the daemon logs: file (VAULT/tresor.log, rotated), stderr,
        /// or journal (stderr with syslog priorities, no timestamps). Default:
        /// the file when daemonised; with -f the journal under systemd, else stderr
        #[arg(long, value_enum, value_name = "TARGET")]
        log: Option<LogArg>,
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
    Backend(backend::BackendCmd),
    /// The placement policy: copies, required/allowed locations, denied operator countries
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
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
        #[arg(long, value_name = "S", value_parser = parse_seconds)]
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
        /// Write a one-page sovereignty report (HTML with an inline diagram):
        /// every location, operator, parent and the law that reaches it, the
        /// policy and whether each backend meets it, what is pending
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
        /// A path in the mounted vault, or a path relative to the vault's
        /// root (with --report: the whole vault when omitted)
        #[arg(required_unless_present = "report")]
        path: Option<PathBuf>,
    },
    /// Restore a vault on a new machine: key file and newest index snapshot from its backends, cold cache
    Restore(Box<restore::RestoreArgs>),
    /// List the index snapshots on each backend: generation, time, size, writer; `forget` applies the retention policy
    Snapshots(restore::SnapshotsArgs),
    /// The single-writer lease on the backends: show, break
    #[command(subcommand)]
    Lease(restore::LeaseCmd),
    /// The local cache of remote data: show, clear, set-size
    #[command(subcommand)]
    Cache(cache::CacheCmd),
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
        #[command(flatten)]
        slot: session::NewSlotArgs,
    },
    /// Key slots: list, add-recovery, add-keyfile FILE, remove SLOT
    #[command(subcommand)]
    Key(key::KeyCmd),
}

/// Parse the command line, set up logging, run the command and map its
/// error to an exit code (see [`exit`]).
pub fn main() -> ExitCode {
    // Errors from libraries (OpenDAL) would otherwise carry whole
    // backtraces into the log when RUST_BACKTRACE is set; panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // `tresor VAULT MOUNTPOINT -o OPTS` (mount(8), fstab) and umount.fuse.tresor.
    if let Some(result) = fstab::dispatch(&Cli::command()) {
        return exit_with(result);
    }
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Mount { .. } => "info",
        _ => "warn",
    };
    // OpenDAL logs every retried attempt; the sync engine logs one line per
    // failed upload with its backoff, which is what a user needs.
    // fuser's "Failed to umount filesystem" after a clean unmount is
    // avoided where the session ends (`TresorFuse::destroy`), not filtered.
    // OpenDAL's own records (its logging layer) are multi-line and repeat
    // what tresor's error says in one line: off unless RUST_LOG asks.
    let default_level = format!("{default_level},opendal=off");
    crate::logging::init(&default_level, log_target(&cli));
    let result = run(cli);
    // Writes the pending "repeated N times" summaries.
    log::logger().flush();
    exit_with(result)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogArg {
    File,
    Stderr,
    Journal,
}

/// The daemon child (`--ready-stdout`, whose stderr is the log file) logs
/// to the rotated file; `-f` to the journal under systemd, else stderr.
fn log_target(cli: &Cli) -> crate::logging::Target {
    use crate::logging::Target;
    let Command::Mount {
        vault,
        ready_stdout,
        log,
        ..
    } = &cli.command
    else {
        return Target::Stderr;
    };
    let file = || match vault.paths() {
        Ok(p) => Target::File(p.log()),
        Err(_) => Target::Stderr,
    };
    match log {
        Some(LogArg::File) => file(),
        Some(LogArg::Stderr) => Target::Stderr,
        Some(LogArg::Journal) => Target::Journal,
        None if *ready_stdout => file(),
        None if crate::logging::stderr_is_journal() => Target::Journal,
        None => Target::Stderr,
    }
}

/// Print the error, if any, and map it to the process's exit code.
fn exit_with(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tresor: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { vault, slot } => {
            let paths = vault.paths()?;
            let pass = vault.secret(true)?;
            slot.check(&pass)?;
            let recovery = vault::init(&paths, &pass, &slot.params())?;
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
            slot,
            ready_stdout,
            mountpoint,
            log: _,
        } => {
            let paths = vault.paths()?;
            let creating = init && !paths.key_file().exists();
            if !creating {
                vault::require_exists(&paths)?;
            }
            if creating && !ready_stdout {
                // Before the vault and its one-time recovery key exist: a
                // missing mountpoint must not leave a created vault behind
                // an error exit.
                daemon::check_mountpoint(&mountpoint)?;
            }
            let pass = vault.secret(creating)?;
            if creating {
                slot.check(&pass)?;
                let recovery = vault::init(&paths, &pass, &slot.params())?;
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
                    pass,
                    Some(std::io::stdout()),
                );
            }
            if foreground {
                daemon::block_signals();
            }
            let announce = (creating && !foreground).then(|| paths.root.clone());
            daemon::mount(
                daemon::MountRequest {
                    vault: paths,
                    mountpoint: mountpoint.clone(),
                    options,
                    foreground,
                },
                pass,
            )?;
            if let Some(root) = announce {
                println!(
                    "Mounted {} on {}; unmount with `tresor unmount {}`",
                    root.display(),
                    mountpoint.display(),
                    mountpoint.display()
                );
            }
            Ok(())
        }
        Command::Unmount { mountpoint } => daemon::unmount(&mountpoint),
        Command::Status { vault, json } => status::run(&vault, json),
        Command::Backend(cmd) => backend::backend(cmd),
        Command::Policy(cmd) => policy::policy(cmd),
        Command::Restore(args) => restore::restore_cmd(*args),
        Command::Snapshots(args) => match args.cmd {
            None => restore::snapshots_cmd(&args.vault, args.json),
            Some(restore::SnapshotsCmd::Forget {
                vault,
                dry_run,
                json,
            }) => restore::forget_cmd(&vault, dry_run, json),
        },
        Command::Lease(cmd) => restore::lease_cmd(cmd),
        Command::Sync {
            vault,
            timeout,
            quiet,
            json,
        } => sync::sync_cmd(&vault, timeout, quiet, json),
        Command::Gc {
            vault,
            dry_run,
            quiet,
            json,
        } => gc::gc_cmd(&vault, dry_run, quiet, json),
        Command::Where {
            vault,
            json,
            report,
            path,
        } => match report {
            Some(out) => report::write_report(&vault, path.as_deref(), &out),
            None => where_cmd::where_cmd(&vault, path.as_deref().unwrap_or("/".as_ref()), json),
        },
        Command::Cache(cmd) => cache::cache(cmd),
        Command::Systemd { action } => systemd::run(action),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(out.as_deref()),
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
        } => verify::run(
            &vault,
            crate::maintenance::verify::VerifyOpts {
                data,
                backend,
                quiet,
                json,
            },
        ),
        Command::Fsck {
            vault,
            repair,
            json,
        } => fsck::run(&vault, repair, json),
        Command::Passwd {
            vault,
            new_passphrase_file,
            slot,
        } => key::passwd(&vault, new_passphrase_file.as_deref(), &slot),
        Command::Key(cmd) => key::key(cmd),
    }
}

fn print_created(paths: &VaultPaths, recovery: &crate::vault::keys::RecoveryKey) {
    println!("Created vault {}", paths.root.display());
    println!();
    println!("Recovery key (shown once; it opens the vault if the passphrase is lost):");
    println!();
    println!("    {}", recovery.to_display_string().as_str());
    println!();
}

/// A duration in seconds for `--timeout`: finite and not negative.
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err("must be a number of seconds ≥ 0".into());
    }
    Ok(v)
}
