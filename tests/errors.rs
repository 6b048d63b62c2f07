//! Failure paths: wrong passphrase, refused init, bad mountpoints, and damaged
//! pack objects (the read fails with EIO, the log names the file, the daemon
//! and every other file live on).

mod common;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn hash(p: &Path) -> blake3::Hash {
    file_hash(p)
}

/// blake3 of tresor.key and index.sqlite, and the list of store objects.
fn vault_fingerprint(v: &TestVault) -> (blake3::Hash, blake3::Hash, Vec<PathBuf>) {
    (
        hash(&v.vault.join("tresor.key")),
        hash(&v.vault.join("index.sqlite")),
        files_under(&v.vault.join("store")),
    )
}

fn wrong_passfile(v: &TestVault) -> PathBuf {
    let p = v.root_path.join("wrong-passphrase");
    fs::write(&p, "definitely not the passphrase\n").unwrap();
    p
}

fn assert_passphrase_error(run: &Run, what: &str) {
    assert!(
        !run.success(),
        "{what} with a wrong passphrase succeeded: {run}"
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.len() == 1 && lines[0].to_lowercase().contains("passphrase"),
        "{what} with a wrong passphrase: expected one stderr line mentioning \"passphrase\": {run}"
    );
}

#[test]
fn wrong_passphrase_mount_and_status_refused_vault_unchanged() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), b"content").unwrap();
    v.unmount();
    let before = vault_fingerprint(&v);
    let wrong = wrong_passfile(&v);

    let mount = run_bounded(
        v.cmd()
            .arg("mount")
            .arg("--vault")
            .arg(&v.vault)
            .arg("--passphrase-file")
            .arg(&wrong)
            .arg(&v.mnt),
        Duration::from_secs(120),
    );
    assert!(
        !is_fuse_mounted(&v.mnt),
        "a wrong passphrase mounted the vault: {mount}"
    );
    assert_passphrase_error(&mount, "mount");

    let status = run_bounded(
        v.cmd()
            .args(["status", "--json", "--vault"])
            .arg(&v.vault)
            .arg("--passphrase-file")
            .arg(&wrong),
        Duration::from_secs(120),
    );
    assert_passphrase_error(&status, "status");

    // wrong passphrase in the environment
    let env_status = run_bounded(
        v.cmd()
            .args(["status", "--vault"])
            .arg(&v.vault)
            .env("TRESOR_PASSPHRASE", "also wrong"),
        Duration::from_secs(120),
    );
    assert_passphrase_error(&env_status, "status with TRESOR_PASSPHRASE");

    assert_eq!(
        vault_fingerprint(&v),
        before,
        "the vault changed after failed attempts"
    );
    // the right passphrase still works
    v.mount();
    assert_content(&v.path("f"), b"content");
}

#[test]
fn passphrase_env_var_and_option_precedence() {
    // CLI only: no FUSE needed
    let v = TestVault::new_unchecked();
    // TRESOR_PASSPHRASE alone
    run_bounded(
        v.cmd()
            .args(["status", "--json", "--vault"])
            .arg(&v.vault)
            .env("TRESOR_PASSPHRASE", PASSPHRASE),
        Duration::from_secs(120),
    )
    .ok();
    // an explicit --passphrase-file wins over a wrong TRESOR_PASSPHRASE
    run_bounded(
        v.cmd()
            .args(["status", "--json", "--vault"])
            .arg(&v.vault)
            .arg("--passphrase-file")
            .arg(&v.passfile)
            .env("TRESOR_PASSPHRASE", "wrong"),
        Duration::from_secs(120),
    )
    .ok();
    // and a wrong file is not rescued by a right TRESOR_PASSPHRASE
    let wrong = wrong_passfile(&v);
    let run = run_bounded(
        v.cmd()
            .args(["status", "--vault"])
            .arg(&v.vault)
            .arg("--passphrase-file")
            .arg(&wrong)
            .env("TRESOR_PASSPHRASE", PASSPHRASE),
        Duration::from_secs(120),
    );
    assert_passphrase_error(
        &run,
        "status with a wrong --passphrase-file and a right TRESOR_PASSPHRASE",
    );
    // only the first line of the passphrase file counts
    let multi = v.root_path.join("multi-line");
    fs::write(&multi, format!("{PASSPHRASE}\nsecond line\n")).unwrap();
    run_bounded(
        v.cmd()
            .args(["status", "--vault"])
            .arg(&v.vault)
            .arg("--passphrase-file")
            .arg(&multi),
        Duration::from_secs(120),
    )
    .ok();
}

#[test]
fn status_json_fields() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), random_bytes(1, 3 * MIB as usize)).unwrap();
    v.unmount();
    let j = v.status_json();
    eprintln!("status --json: {j}");
    let id = j["vault_id"]
        .as_str()
        .unwrap_or_else(|| panic!("vault_id is not a string: {j}"));
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()),
        "vault_id is not hex: {id:?}"
    );
    for k in ["logical_bytes", "stored_bytes", "chunks", "packs"] {
        assert!(
            j[k].is_u64(),
            "status --json field {k} missing or not an unsigned integer: {j}"
        );
    }
    assert_eq!(
        j["logical_bytes"].as_u64(),
        Some(3 * MIB),
        "logical_bytes: {j}"
    );
    assert!(
        j["chunks"].as_u64().unwrap() >= 1 && j["packs"].as_u64().unwrap() >= 1,
        "{j}"
    );
    assert_eq!(
        j["packs"].as_u64().unwrap(),
        v.pack_files().len() as u64,
        "packs vs pack objects on disk: {j}"
    );
    v.stored_bytes(); // cross-checks stored_bytes against the store
}

#[test]
fn init_refuses_existing_vault() {
    // CLI only: no FUSE needed
    let v = TestVault::new_unchecked();
    let key = v.vault.join("tresor.key");
    let before = hash(&key);
    let run = v.init();
    assert!(!run.success(), "init on an existing vault succeeded: {run}");
    assert!(
        !run.stderr.trim().is_empty(),
        "init refused an existing vault without a message: {run}"
    );
    assert_eq!(
        hash(&key),
        before,
        "tresor.key changed after a refused init"
    );
    // with another passphrase too
    let other = wrong_passfile(&v);
    let run = run_bounded(
        v.cmd()
            .arg("init")
            .arg("--vault")
            .arg(&v.vault)
            .arg("--passphrase-file")
            .arg(&other),
        Duration::from_secs(120),
    );
    assert!(
        !run.success(),
        "init with another passphrase on an existing vault succeeded: {run}"
    );
    assert_eq!(
        hash(&key),
        before,
        "tresor.key changed after a refused init"
    );
    // init printed a recovery key once: it must be in the first init's output
    assert!(
        !v.init_output.trim().is_empty(),
        "tresor init printed nothing (no recovery key)"
    );
}

fn assert_clear_mount_error(run: &Run, mountpoint: &Path, what: &str) {
    assert_mount_error(run, what);
    assert!(
        run.stderr.contains(&*mountpoint.to_string_lossy()),
        "the error for a mount on {what} does not name the mountpoint {}: {run}",
        mountpoint.display()
    );
}

fn assert_mount_error(run: &Run, what: &str) {
    assert!(!run.success(), "mount on {what} succeeded: {run}");
    let err = run.stderr.trim();
    assert!(
        !err.is_empty(),
        "mount on {what} failed without a message: {run}"
    );
    assert!(!err.contains("panicked"), "mount on {what} panicked: {run}");
}

#[test]
fn bad_mountpoints_give_clear_errors() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let missing = v.root_path.join("no-such-dir");
    let run = v.try_mount_at(&missing);
    assert_clear_mount_error(&run, &missing, "a missing path");

    let file = v.root_path.join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let run = v.try_mount_at(&file);
    assert_clear_mount_error(&run, &file, "a regular file");
    assert!(!is_fuse_mounted(&file));

    v.mount();
    fs::write(v.path("kept"), b"first mount").unwrap();
    // a second vault on the same, already mounted mountpoint
    let other = TestVault::new_unchecked();
    let run = other.try_mount_at(&v.mnt);
    assert_clear_mount_error(&run, &v.mnt, "an already mounted mountpoint");
    // the same vault again, on the same mountpoint
    // (the error may be about the vault being in use rather than the mountpoint)
    let run = v.try_mount_at(&v.mnt);
    assert_mount_error(&run, "its own mountpoint (same vault mounted twice)");
    assert!(v.daemon_alive(), "the first daemon died");
    assert_content(&v.path("kept"), b"first mount");
    v.unmount();
    assert!(
        !is_fuse_mounted(&v.mnt),
        "something is still mounted on {} after one unmount",
        v.mnt.display()
    );
}

/// Writes `victim` in a first mount session and `other` in a second one, so
/// that they sit in different packs; returns (victim's packs, other's packs).
fn two_files_in_different_packs(
    v: &mut TestVault,
    victim: &[u8],
    other: &[u8],
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    fs::create_dir(v.path("dir")).unwrap();
    fs::write(v.path("dir/victim.bin"), victim).unwrap();
    sync_all();
    v.unmount();
    let first = v.pack_files();
    v.mount();
    fs::write(v.path("other.bin"), other).unwrap();
    sync_all();
    v.unmount();
    let second: Vec<PathBuf> = v
        .pack_files()
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    assert!(
        !first.is_empty(),
        "no pack objects under {} after the first session",
        v.vault.join("store/packs").display()
    );
    assert!(
        !second.is_empty(),
        "the second session wrote no new pack object (packs: {first:?})"
    );
    eprintln!("victim packs: {first:?}\nother packs: {second:?}");
    (first, second)
}

fn assert_victim_eio_others_fine(v: &mut TestVault, other: &[u8], damage: &str) {
    v.mount();
    let pid = v.daemon_pid();
    let mut buf = Vec::new();
    let res = File::open(v.path("dir/victim.bin")).and_then(|mut f| f.read_to_end(&mut buf));
    match res {
        Ok(n) => panic!("reading a file whose pack was {damage} succeeded ({n} bytes)"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "reading a file whose pack was {damage}: expected EIO, got {e:?}"
        ),
    }
    assert!(
        common::pid_alive(pid),
        "the daemon died after a {damage} pack\n{}",
        v.log_tail()
    );
    assert_content(&v.path("other.bin"), other);
    // the tree is still browsable and the victim still stat-able
    assert!(
        fs::metadata(v.path("dir/victim.bin")).is_ok(),
        "stat of the damaged file fails"
    );
    let names: Vec<_> = fs::read_dir(&v.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.contains(&OsStr::new("other.bin").to_owned()),
        "root listing: {names:?}"
    );
    // and it still accepts writes
    fs::write(v.path("new.bin"), b"after damage").unwrap();
    assert_content(&v.path("new.bin"), b"after damage");
    let log = v.log_path();
    let mut last = String::new();
    let found = (0..250).any(|_| {
        last = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        if last.lines().any(|l| l.contains("/dir/victim.bin")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(
        found,
        "tresor.log does not name /dir/victim.bin within 5 s after the EIO:\n{}",
        v.log_tail()
    );
    assert!(
        !last.contains("panicked"),
        "the daemon log shows a panic:\n{}",
        v.log_tail()
    );
    assert!(common::pid_alive(pid), "the daemon died");
    v.unmount();
}

#[test]
fn flipped_byte_in_pack_gives_eio() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let victim = random_bytes(10, 3 * MIB as usize);
    let other = random_bytes(11, 2 * MIB as usize);
    let (victim_packs, _) = two_files_in_different_packs(&mut v, &victim, &other);
    for p in &victim_packs {
        let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        let off = len / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], off).unwrap();
        eprintln!(
            "flipped bit 0 of byte {off} of {} ({len} bytes)",
            p.display()
        );
    }
    assert_victim_eio_others_fine(&mut v, &other, "bit-flipped");
}

#[test]
fn truncated_pack_gives_eio() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let victim = random_bytes(12, 3 * MIB as usize);
    let other = random_bytes(13, 2 * MIB as usize);
    let (victim_packs, _) = two_files_in_different_packs(&mut v, &victim, &other);
    for p in &victim_packs {
        let f = OpenOptions::new().write(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 3).unwrap();
        eprintln!("truncated {} from {len} to {} bytes", p.display(), len / 3);
    }
    assert_victim_eio_others_fine(&mut v, &other, "truncated");
}

/// A flipped last byte of a pack (its footer's version byte) is damage:
/// `verify` names the pack and says so, and never asks to upgrade tresor.
#[test]
fn flipped_last_byte_of_a_pack_is_damage_not_a_version() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f.bin"), random_bytes(14, 300 * KIB as usize)).unwrap();
    v.unmount();
    let packs = v.pack_files();
    assert!(!packs.is_empty(), "no pack written");
    for p in &packs {
        let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
        let last = f.metadata().unwrap().len() - 1;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, last).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], last).unwrap();
    }
    let run = v.tresor_cmd(&["verify"], &["--data"], true).failed();
    let out = format!("{}{}", run.stdout, run.stderr);
    for p in &packs {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            out.lines()
                .any(|l| l.contains(&name) && l.contains("is damaged")),
            "verify does not say pack {name} is damaged: {run}"
        );
    }
    assert!(
        !out.contains("upgrade"),
        "verify asks for an upgrade: {run}"
    );
}
