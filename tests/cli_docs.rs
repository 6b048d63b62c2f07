//! The CLI's own documentation: help texts, shell completions, man pages,
//! exit codes (and that the README documents the same ones).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const STEP: Duration = Duration::from_secs(120);

fn tresor(args: &[&str]) -> Run {
    run_bounded(
        Command::new(tresor_bin())
            .args(args)
            .env_remove("TRESOR_PASSPHRASE"),
        STEP,
    )
}

/// Visible subcommands from `tresor --help`'s Commands: section.
fn subcommands() -> Vec<String> {
    let help = tresor(&["--help"]).ok().stdout;
    let section = help
        .split("Commands:")
        .nth(1)
        .expect("Commands: section")
        .split("\n\n")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_for_every_subcommand() {
    let subs = subcommands();
    for want in [
        "init",
        "mount",
        "unmount",
        "status",
        "systemd",
        "completions",
        "man",
    ] {
        assert!(
            subs.iter().any(|s| s == want),
            "`{want}` missing from --help: {subs:?}"
        );
    }
    let help = tresor(&["--help"]).ok().stdout;
    assert!(
        help.contains("man tresor"),
        "--help points to the man page:\n{help}"
    );
    for s in &subs {
        let r = tresor(&[s, "--help"]).ok();
        assert!(r.stdout.contains("Usage: tresor"), "{r}");
        // every option and argument has a help line
        for line in r
            .stdout
            .lines()
            .filter(|l| l.starts_with("  -") || l.starts_with("  <"))
        {
            assert!(
                line.trim()
                    .split("  ")
                    .filter(|p| !p.trim().is_empty())
                    .count()
                    >= 2,
                "`tresor {s} --help` has an undocumented entry: {line:?}"
            );
        }
    }
    for s in ["install", "uninstall"] {
        tresor(&["systemd", s, "--help"]).ok();
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["bogus"][..],
        &["mount"],
        &["mount", "--no-such-flag", "x"],
        &[],
    ] {
        let r = tresor(args);
        assert_eq!(r.status.code(), Some(2), "{r}");
        assert!(
            r.stderr.contains("Usage:") || r.stderr.contains("usage"),
            "{r}"
        );
    }
}

#[test]
fn wrong_passphrase_exits_3() {
    let v = TestVault::new_unchecked();
    let wrong = v.root_path.join("wrong");
    fs::write(&wrong, "definitely not it\n").unwrap();
    let r = v
        .tresor(&[
            "status".as_ref(),
            "--vault".as_ref(),
            v.vault.as_os_str(),
            "--passphrase-file".as_ref(),
            wrong.as_os_str(),
        ])
        .failed();
    assert_eq!(r.status.code(), Some(3), "{r}");
    assert!(r.stderr.contains("wrong passphrase"), "{r}");
    let r = v
        .tresor(&[
            "status".as_ref(),
            "--vault".as_ref(),
            v.root_path.join("none").as_os_str(),
        ])
        .failed();
    assert_eq!(r.status.code(), Some(1), "{r}");
    assert!(
        r.stderr.contains("tresor init --vault"),
        "says what to do: {r}"
    );
}

#[test]
fn completions_for_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = tresor(&["completions", shell]).ok();
        assert!(r.stdout.contains("tresor"), "{shell}: {r}");
        assert!(
            r.stdout.contains("unmount"),
            "{shell} completes subcommands"
        );
        let f = dir.path().join(format!("tresor.{shell}"));
        fs::write(&f, &r.stdout).unwrap();
        let syntax_check = match shell {
            "bash" => Some("bash"),
            "zsh" => which("zsh").map(|_| "zsh"),
            "fish" => which("fish").map(|_| "fish"),
            _ => None,
        };
        if let Some(sh) = syntax_check {
            let args: &[&std::ffi::OsStr] = if sh == "fish" {
                &["--no-execute".as_ref(), f.as_os_str()]
            } else {
                &["-n".as_ref(), f.as_os_str()]
            };
            let r = run_tool(sh, args);
            assert!(
                r.success() && r.stderr.is_empty(),
                "{sh} rejects the completions: {r}"
            );
        }
    }
    require_tool("bash", "bash");
}

fn groff_check(page: &Path) {
    let r = run_tool(
        "groff",
        &[
            "-man".as_ref(),
            "-Tutf8".as_ref(),
            "-ww".as_ref(),
            "-z".as_ref(),
            page.as_os_str(),
        ],
    );
    assert!(
        r.success() && r.stderr.trim().is_empty(),
        "groff warns about {}: {r}",
        page.display()
    );
}

#[test]
fn man_pages_render_without_warnings() {
    require_tool("groff", "groff-base");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let r = tresor(&["man", "--out", out.to_str().unwrap()]).ok();
    let mut expected = vec!["tresor.1".to_string()];
    for s in subcommands() {
        expected.push(format!("tresor-{s}.1"));
    }
    expected.push("tresor-systemd-install.1".into());
    expected.push("tresor-systemd-uninstall.1".into());
    for name in &expected {
        let page = out.join(name);
        assert!(
            page.is_file(),
            "no {name}; `tresor man --out` wrote:\n{}",
            r.stdout
        );
        groff_check(&page);
    }
    // tresor(1) has the fstab line, the exit codes and no hidden options
    let text = run_tool(
        "groff",
        &[
            "-man".as_ref(),
            "-Tutf8".as_ref(),
            "-P-cbou".as_ref(),
            out.join("tresor.1").as_os_str(),
        ],
    )
    .ok()
    .stdout;
    for want in [
        "EXIT STATUS",
        "fuse.tresor",
        "noauto,user,nodev,nosuid,passphrase_file=",
        "wrong passphrase",
        "umount.fuse.tresor",
        "TRESOR_PASSPHRASE",
    ] {
        assert!(text.contains(want), "tresor(1) lacks {want:?}:\n{text}");
    }
    let mount = fs::read_to_string(out.join("tresor-mount.1")).unwrap();
    assert!(
        !mount.contains("ready-stdout")
            && !mount.contains("passphrase-stdin")
            && !mount.contains("secret-stdin")
    );
    // `tresor man` alone prints tresor(1)
    let stdout = tresor(&["man"]).ok().stdout;
    assert_eq!(stdout, fs::read_to_string(out.join("tresor.1")).unwrap());
    if which("man").is_some() {
        let r = run_bounded(
            Command::new("man")
                .arg("-l")
                .arg(out.join("tresor.1"))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80"),
            STEP,
        )
        .ok();
        assert!(r.stdout.contains("EXIT STATUS"), "{r}");
    }
}

/// README's exit-code table lists exactly the codes of the man page.
#[test]
fn readme_documents_the_exit_codes() {
    let man = tresor(&["man"]).ok().stdout;
    let section = man
        .split(".SH \"EXIT STATUS\"")
        .nth(1)
        .expect("EXIT STATUS section");
    let section = section.split(".SH").next().unwrap();
    let codes: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("\\fB"))
        .map(|l| {
            l.trim_start_matches("\\fB")
                .split('\\')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        codes.len() >= 4,
        "codes in the man page: {codes:?}\n{section}"
    );
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table: Vec<String> = readme
        .split("## Exit codes")
        .nth(1)
        .expect("README has an `## Exit codes` section")
        .split("\n## ")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next())
        .filter(|c| c.parse::<u8>().is_ok())
        .map(str::to_string)
        .collect();
    assert_eq!(table, codes, "README exit codes vs. tresor(1)");
}
