//! Documentation generated from the CLI definition: shell completions
//! (clap_complete) and man pages (clap_mangen), plus the help text that
//! `tresor --help` shows beyond the per-option lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory};
use clap_mangen::roff::{bold, italic, roman, Roff};

use crate::cli::exit;
use crate::mount::fstab::FSTAB_EXAMPLE;

/// `tresor --help` (long form) description.
pub const LONG_ABOUT: &str = "\
Encrypted, deduplicating drive whose ciphertext lives where you choose.

A vault is a directory holding an encrypted key file, an encrypted index and \
the store of encrypted pack objects. `tresor mount` shows its files in a \
directory; everything written there is chunked, deduplicated and encrypted on \
this machine.";

/// Shown after the options in `tresor --help`.
pub const AFTER_HELP: &str = "\
Start with `tresor mount --init ~/Tresor`; `tresor unmount ~/Tresor` flushes \
and unmounts. `tresor help COMMAND` explains a command; `man tresor` has \
mounting from /etc/fstab, exit codes and files.";

/// `tresor completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "tresor", &mut out);
    out.flush()?;
    Ok(())
}

fn section(roff: &mut Roff, title: &str) {
    roff.control("SH", [title]);
}

/// `.TP` item with a bold tag.
fn item(roff: &mut Roff, tag: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(tag)]);
    roff.text([roman(text)]);
}

fn exit_status(roff: &mut Roff) {
    section(roff, "EXIT STATUS");
    for (code, meaning) in exit::TABLE {
        item(roff, &code.to_string(), meaning);
    }
}

fn see_also(roff: &mut Roff, pages: &[(&str, &str)]) {
    section(roff, "SEE ALSO");
    let mut inlines = Vec::new();
    for (i, (name, sect)) in pages.iter().enumerate() {
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(*name));
        inlines.push(roman(format!("({sect})")));
    }
    roff.text(inlines);
}

/// Sections only the main page has.
fn main_page_extra(roff: &mut Roff) {
    section(roff, "MOUNTING FROM /etc/fstab");
    roff.text([roman(
        "mount(8) runs tresor through mount.fuse3 for filesystems of type fuse.tresor, \
         as tresor VAULT MOUNTPOINT -o OPTIONS; tresor must be installed in /usr/local/bin or /usr/bin. \
         A line that lets its user mount the vault with mount ~/Tresor:",
    )]);
    roff.control("PP", []);
    roff.control("nf", []);
    roff.control("RS", ["4"]);
    roff.text([roman(FSTAB_EXAMPLE)]);
    roff.control("RE", []);
    roff.control("fi", []);
    roff.control("PP", []);
    roff.text([roman("Options tresor adds to the FUSE ones:")]);
    item(
        roff,
        "passphrase_file=FILE",
        "read the passphrase from the first line of FILE, which must be mode 0600 and owned by the mounting user or root",
    );
    item(
        roff,
        "keyring",
        "read the passphrase from the desktop keyring (Secret Service, via secret-tool)",
    );
    roff.control("PP", []);
    roff.text([roman(
        "Without either, tresor uses TRESOR_PASSPHRASE or asks on the terminal. \
         The FUSE options allow_other, allow_root, ro, rw, noatime, atime, nodev, nosuid, \
         noexec, sync and dirsync pass through; noauto, user, users, nofail, _netdev and x-* are for mount(8) and systemd. \
         umount MOUNTPOINT detaches the mount; the daemon then flushes and commits everything before it exits. \
         To make umount wait for that, link tresor as /sbin/umount.fuse.tresor: umount(8) runs it for users' mounts \
         and for mounts with options recorded in /run/mount/utab (such as user); \
         tresor unmount MOUNTPOINT always waits.",
    )]);
    section(roff, "ENVIRONMENT");
    item(
        roff,
        "TRESOR_PASSPHRASE",
        "the passphrase, when neither --passphrase-file nor --keyring is given",
    );
    item(
        roff,
        "XDG_DATA_HOME",
        "the default vault is $XDG_DATA_HOME/tresor/default (~/.local/share/tresor/default)",
    );
    item(
        roff,
        "XDG_CONFIG_HOME",
        "tresor systemd install writes $XDG_CONFIG_HOME/systemd/user/tresor-*.service (~/.config/systemd/user)",
    );
    item(
        roff,
        "RUST_LOG",
        "log level (error, warn, info, debug, trace); the daemon logs at info",
    );
    section(roff, "FILES");
    item(
        roff,
        "VAULT/tresor.key",
        "key file: the master key, wrapped by passphrase and recovery key",
    );
    item(
        roff,
        "VAULT/index.sqlite",
        "the encrypted index (SQLCipher)",
    );
    item(
        roff,
        "VAULT/store/",
        "the embedded store of encrypted pack objects",
    );
    item(roff, "VAULT/tresor.log", "the daemon's log");
    item(
        roff,
        "VAULT/daemon.lock",
        "held by the mounted daemon; holds its pid",
    );
}

/// SYNOPSIS with value names (clap_mangen's omits them: `[-o ]`).
fn synopsis(cmd: &clap::Command, is_main: bool) -> Roff {
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    let mut line = vec![bold(name)];
    for a in cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
    {
        let flag = match (a.get_short(), a.get_long()) {
            (Some(s), Some(l)) => format!("-{s}|--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        line.push(roman(" ["));
        line.push(bold(flag));
        if matches!(a.get_action(), ArgAction::Set | ArgAction::Append) {
            let value = a
                .get_value_names()
                .map(|v| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
            line.push(roman(" "));
            line.push(italic(value));
        }
        line.push(roman("]"));
    }
    for a in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let value = a
            .get_value_names()
            .map(|v| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
        line.push(roman(" "));
        if a.is_required_set() {
            line.push(italic(value));
        } else {
            line.push(roman("["));
            line.push(italic(value));
            line.push(roman("]"));
        }
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        line.push(roman(" "));
        line.push(italic("COMMAND"));
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
    if is_main {
        roff.control("br", []);
        roff.text([
            bold("tresor"),
            roman(" "),
            italic("VAULT MOUNTPOINT"),
            roman(" ["),
            bold("-o"),
            roman(" "),
            italic("OPTIONS"),
            roman("]"),
        ]);
    }
    roff
}

/// Renders one page: clap_mangen's sections, then ours.
fn render_page(cmd: clap::Command, is_main: bool) -> Result<(String, Vec<u8>)> {
    let has_args = cmd.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let has_version = cmd.get_version().is_some();
    let cmd_for_synopsis = cmd.clone();
    let man = clap_mangen::Man::new(cmd).source(format!("tresor {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    buf.extend_from_slice(synopsis(&cmd_for_synopsis, is_main).to_roff().as_bytes());
    man.render_description_section(&mut buf)?;
    if has_args {
        man.render_options_section(&mut buf)?;
    }
    if has_subcommands {
        man.render_subcommands_section(&mut buf)?;
    }
    let mut roff = Roff::new();
    if is_main {
        main_page_extra(&mut roff);
    }
    exit_status(&mut roff);
    if is_main {
        see_also(
            &mut roff,
            &[
                ("mount", "8"),
                ("fstab", "5"),
                ("mount.fuse3", "8"),
                ("fusermount3", "1"),
                ("systemd.service", "5"),
                ("secret-tool", "1"),
            ],
        );
    } else {
        see_also(&mut roff, &[("tresor", "1")]);
    }
    buf.extend_from_slice(roff.to_roff().as_bytes());
    if has_version {
        man.render_version_section(&mut buf)?;
    }
    Ok((man.get_filename(), buf))
}

/// Every page: tresor.1 and tresor-SUBCOMMAND.1 for each visible subcommand.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: &clap::Command, is_main: bool, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        out.push(render_page(cmd.clone(), is_main)?);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, false, out)?;
        }
        Ok(())
    }
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, true, &mut out)?;
    Ok(out)
}

/// `tresor man [--out DIR]`: tresor(1) on stdout, or every page into DIR.
pub fn man(out: Option<&Path>) -> Result<()> {
    let pages = pages()?;
    let Some(dir) = out else {
        let mut o = std::io::stdout().lock();
        o.write_all(&pages[0].1)?;
        o.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in &pages {
        let path: PathBuf = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
