//! The local side, as a newcomer and a security reviewer met it (issue
//! "Nothing lost, nobody in"): private files whatever the umask, safe mount
//! defaults, inputs that used to inject options or panic, a first mount
//! that says where the vault is, and a log that stays quiet.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Mount options of the mount at `mnt`, from /proc/self/mountinfo.
fn mount_options(mnt: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_string_lossy();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(&*mnt))
        .map(|l| l.split(' ').nth(5).unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn vault_files_are_private_and_mounts_are_nosuid_nodev() {
    if skip_mount_tests() {
        return;
    }
    let mut v = TestVault::uninitialised();
    // A vault directory the user made beforehand, with umask 022.
    fs::create_dir(&v.vault).unwrap();
    fs::set_permissions(&v.vault, fs::Permissions::from_mode(0o755)).unwrap();
    v.init().ok();
    v.mount();
    fs::write(v.path("f"), b"x").unwrap();
    assert_eq!(mode(&v.vault), 0o700, "vault directory");
    assert_eq!(mode(&v.vault.join("tresor.log")), 0o600, "tresor.log");
    assert_eq!(mode(&v.vault.join("index.sqlite")), 0o600, "index.sqlite");
    assert_eq!(
        mode(&v.vault.join("control.sock")) & 0o077,
        0,
        "control.sock"
    );
    // Root mounts used to keep dev,suid: a setuid file from another
    // machine's vault would take effect here.
    let opts = mount_options(&v.mnt);
    assert!(
        opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
        "mount options {opts:?} lack nosuid,nodev"
    );
    v.unmount();
    // Asked for explicitly, suid is honoured.
    v.mount_opts = vec!["suid".into()];
    v.mount();
    let opts = mount_options(&v.mnt);
    assert!(
        !opts.split(',').any(|o| o == "nosuid"),
        "-o suid ignored: {opts:?}"
    );
    v.unmount();
}

#[test]
fn a_comma_in_the_vault_path_is_refused_not_injected() {
    if skip_mount_tests() {
        return;
    }
    let mut v = TestVault::uninitialised();
    v.vault = v.root_path.join("vault,allow_other");
    v.init().ok();
    let run = v.try_mount_at(&v.mnt);
    assert_eq!(run.status.code(), Some(2), "exit code: {run}");
    assert!(run.stderr.contains("comma"), "no reason given: {run}");
    assert!(!is_fuse_mounted(&v.mnt), "mounted anyway");
}

#[test]
fn mount_init_checks_the_mountpoint_first_and_says_where_it_mounted() {
    if skip_mount_tests() {
        return;
    }
    let v = TestVault::uninitialised();
    let mount_init = |mountpoint: &Path| {
        v.tresor(&[
            "mount".as_ref(),
            "--init".as_ref(),
            "--vault".as_ref(),
            v.vault.as_os_str(),
            "--passphrase-file".as_ref(),
            v.passfile.as_os_str(),
            mountpoint.as_os_str(),
        ])
    };
    let run = mount_init(&v.root_path.join("no-such-dir"));
    assert!(!run.success(), "mounted on a missing directory: {run}");
    assert!(
        !run.stdout.contains("Recovery key"),
        "printed a one-time recovery key for a mount that failed: {run}"
    );
    assert!(
        !v.vault.join("tresor.key").exists(),
        "created a vault although the mountpoint is missing"
    );

    let run = mount_init(&v.mnt).ok();
    let mnt = v.mnt.to_string_lossy();
    assert!(
        run.stdout.contains(&format!("tresor unmount {mnt}")),
        "mount --init does not say how to unmount: {run}"
    );
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();
}

#[test]
fn a_negative_sync_timeout_is_a_usage_error() {
    let v = TestVault::new_unchecked();
    let run = v.tresor_cmd(&["sync"], &["--timeout", "-1"], true);
    assert_eq!(run.status.code(), Some(2), "{run}");
}

/// Python's open() asks isatty(), an ioctl per file: fuser logged each as a
/// multi-line "[Not Implemented]" warning (16 MB for 100,000 files), and
/// every clean unmount added "Failed to umount filesystem".
#[test]
fn opening_ten_thousand_files_and_unmounting_leaves_the_log_quiet() {
    if skip_mount_tests() {
        return;
    }
    require_tool("python3", "python3");
    let mut v = TestVault::mounted().unwrap();
    let log = v.vault.join("tresor.log");
    let before = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let script = r#"
import os, sys
d = sys.argv[1]
for i in range(10000):
    with open(os.path.join(d, "f%05d" % i), "w") as f:
        f.write("x")
for i in range(0, 10000, 7):
    with open(os.path.join(d, "f%05d" % i)) as f:
        f.read()
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&v.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "python3 failed");
    v.unmount();
    let after = fs::metadata(&log).unwrap().len();
    let grown = after - before;
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        grown < 10 * 1024,
        "the log grew by {grown} bytes for 10,000 opens:\n{}",
        &text[text.len().saturating_sub(2000)..]
    );
    assert!(
        !text.contains("Not Implemented") && !text.contains("Failed to umount"),
        "noise in the log:\n{text}"
    );
}

/// `status` of a mounted vault asked for the passphrase again and did not
/// say where the vault is mounted; the daemon answers now.
#[test]
fn status_of_a_mounted_vault_needs_no_passphrase_and_names_the_mountpoint() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), b"hello").unwrap();
    let run = v.tresor_cmd(&["status"], &[], false).ok();
    let mnt = v.mnt.to_string_lossy();
    assert!(
        run.stdout.contains(&format!("mounted:        on {mnt}")),
        "status does not name the mountpoint: {run}"
    );
    let json = v.tresor_cmd(&["status"], &["--json"], false).ok();
    let j: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        j["mountpoint"],
        serde_json::Value::from(mnt.as_ref()),
        "{j}"
    );
    assert!(j["inodes"].as_u64().unwrap() >= 2, "{j}");
    v.unmount();
    // Unmounted, it still needs the secret.
    let run = v.tresor_cmd(&["status"], &[], false);
    assert!(
        !run.success(),
        "status of an unmounted vault without a secret: {run}"
    );
}

/// Identical messages are written once, then summarised: a missing pack
/// read 100 times used to write a line per read (60 identical WARN lines
/// in 5 ms were seen).
#[test]
fn repeated_identical_log_messages_are_collapsed() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    // Debug level: the read path logs every repeated failure at debug.
    v.env.push(("RUST_LOG".into(), "info,tresor=debug".into()));
    v.mount();
    fs::write(v.path("victim.bin"), random_bytes(3, 300 * 1024)).unwrap();
    v.unmount();
    for p in v.pack_files() {
        fs::remove_file(p).unwrap();
    }
    v.mount();
    for _ in 0..100 {
        assert!(
            fs::read(v.path("victim.bin")).is_err(),
            "read of a missing pack worked"
        );
    }
    v.unmount();
    let text = fs::read_to_string(v.log_path()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("victim.bin")).collect();
    assert!(
        !lines.is_empty() && lines.len() <= 6,
        "{} log lines about victim.bin for 100 failed reads:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("[repeated ")),
        "no repeat summary:\n{}",
        lines.join("\n")
    );
}

/// Past TRESOR_LOG_MAX_BYTES the daemon's log rotates to tresor.log.1:
/// two private files, each under the cap, whatever is logged.
#[test]
fn the_daemon_log_rotates_and_stays_bounded() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    const CAP: u64 = 16 * 1024;
    v.env.push(("TRESOR_LOG_MAX_BYTES".into(), CAP.to_string()));
    // Every FUSE request is a trace line: plenty to rotate.
    v.env.push(("RUST_LOG".into(), "trace".into()));
    v.mount();
    for i in 0..300 {
        fs::write(v.path(format!("f{i}")), b"x").unwrap();
    }
    v.unmount();
    let log = v.log_path();
    let old = v.vault.join("tresor.log.1");
    for p in [&log, &old] {
        let len = fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len();
        assert!(len > 0 && len <= CAP, "{} is {len} bytes", p.display());
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    let logs = fs::read_dir(&v.vault)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("tresor.log")
        })
        .count();
    assert_eq!(logs, 2, "expected tresor.log and tresor.log.1 only");
}

/// Under systemd (JOURNAL_STREAM names stderr) `mount -f` logs to stderr
/// with `<N>` priorities and no timestamps, and not to tresor.log.
#[test]
fn foreground_mount_under_systemd_logs_for_the_journal() {
    let Some(v) = TestVault::new() else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let err_path = v.root_path.join("journal.err");
    let err = fs::File::create(&err_path).unwrap();
    let m = err.metadata().unwrap();
    let mut child = v
        .cmd()
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .arg("mount")
        .arg("--vault")
        .arg(&v.vault)
        .arg("--passphrase-file")
        .arg(&v.passfile)
        .arg("-f")
        .arg(&v.mnt)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    wait_until(
        "mount -f to mount",
        std::time::Duration::from_secs(60),
        || is_fuse_mounted(&v.mnt) || child.try_wait().unwrap().is_some(),
    );
    assert!(
        is_fuse_mounted(&v.mnt),
        "{}",
        fs::read_to_string(&err_path).unwrap()
    );
    fs::write(v.path("f"), b"journal").unwrap();
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();
    wait_until(
        "mount -f to exit",
        std::time::Duration::from_secs(60),
        || child.try_wait().unwrap().is_some(),
    );
    let text = fs::read_to_string(&err_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "nothing logged");
    for l in &lines {
        let prio = l.strip_prefix('<').and_then(|r| r.get(..2));
        assert!(
            matches!(prio, Some("3>" | "4>" | "6>" | "7>")) && !l.contains("[20"),
            "not a journal line: {l:?}\n{text}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("<6>")),
        "no info line:\n{text}"
    );
    assert!(
        fs::metadata(v.log_path()).map(|m| m.len()).unwrap_or(0) == 0,
        "tresor.log was written under systemd"
    );
}

/// Where `needle` occurs in the readable memory of process `pid` (read
/// through /proc/PID/mem, which root may do even of a non-dumpable
/// process): the names of the mappings that hold it.
fn memory_holding(pid: u32, needle: &[u8]) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let name = line
            .split_whitespace()
            .nth(5)
            .unwrap_or("[anon]")
            .to_string();
        if !perms.starts_with('r') || name == "[vvar]" || name == "[vsyscall]" {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        if b - a > 1 << 30 {
            continue; // a reservation, not memory in use
        }
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            found.push(format!("{range} {name}"));
        }
    }
    found
}

/// Issue 11, "Passphrase in memory": the daemon kept the passphrase for the
/// whole mount (and `-f` kept TRESOR_PASSPHRASE in its environment block).
/// Now it unlocks, wipes the secret and keeps only the subkeys: neither the
/// passphrase nor a binary key file's bytes are anywhere in its memory once
/// it serves, whether it got the secret over the pipe from `tresor mount`
/// or from TRESOR_PASSPHRASE in the foreground.
#[test]
fn the_mounted_daemon_holds_no_passphrase_or_key_file_bytes() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), b"data").unwrap();
    let pid = v.daemon_pid();
    let held = memory_holding(pid, PASSPHRASE.as_bytes());
    assert!(
        held.is_empty(),
        "the daemon holds the passphrase in {held:?}"
    );
    v.unmount();

    // A binary key file (newlines and NULs), over the same pipe.
    let key = v.scratch.join("key.bin");
    let mut contents = random_bytes(5, 96);
    contents[10] = b'\n';
    contents[20] = 0;
    fs::write(&key, &contents).unwrap();
    v.tresor_cmd(&["key", "add-keyfile", key.to_str().unwrap()], &[], true)
        .ok();
    let run = v
        .tresor_cmd(
            &["mount"],
            &["--key-file", key.to_str().unwrap(), v.mnt.to_str().unwrap()],
            false,
        )
        .ok();
    let pid = find_daemon(&v.mnt).unwrap_or_else(|| panic!("no daemon: {run}"));
    let held = memory_holding(pid, &contents[..48]);
    assert!(held.is_empty(), "the daemon holds the key file in {held:?}");
    assert_content(&v.path("f"), b"data");
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();

    // In the foreground with TRESOR_PASSPHRASE (how systemd units run).
    let mut child = v
        .cmd()
        .args(["mount", "-f", "--vault"])
        .arg(&v.vault)
        .arg(&v.mnt)
        .env("TRESOR_PASSPHRASE", PASSPHRASE)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the foreground mount",
        std::time::Duration::from_secs(60),
        || is_fuse_mounted(&v.mnt),
    );
    let pid = child.id();
    let held = memory_holding(pid, PASSPHRASE.as_bytes());
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();
    let _ = child.wait();
    assert!(
        held.is_empty(),
        "the -f daemon holds the passphrase in {held:?}"
    );
    assert!(
        !environ
            .windows(PASSPHRASE.len())
            .any(|w| w == PASSPHRASE.as_bytes()),
        "/proc/PID/environ still shows TRESOR_PASSPHRASE"
    );
}
