//! Several devices, one vault (issue 13): two vault directories of one
//! vault ("machines" A and B, each with its own state directory) take turns
//! on one S3 backend (moto). Each mount pulls what the other wrote since —
//! only the changed index blocks — and a fresh restore at the end holds
//! every file from both.

mod common;

use std::path::{Path, PathBuf};

use common::servers::S3Server;
use common::*;

fn s3_vault(s3: &S3Server, machine: &Path) -> Option<TestVault> {
    let mut v = TestVault::new()?;
    v.env
        .push(("TRESOR_STATE_DIR".into(), machine.display().to_string()));
    v.add_s3(s3, "s3", "DE", "DE").ok();
    Some(v)
}

fn export(v: &TestVault) -> PathBuf {
    let f = v.scratch.join("restore.toml");
    let _ = std::fs::remove_file(&f);
    v.tresor_cmd(&["backend", "export"], &["-o", f.to_str().unwrap()], false)
        .ok();
    f
}

/// Another machine: a vault directory made by `tresor restore`.
fn restored(from: &TestVault, file: &Path, machine: &Path) -> TestVault {
    let mut w = TestVault::uninitialised();
    w.env
        .push(("TRESOR_STATE_DIR".into(), machine.display().to_string()));
    std::fs::copy(&from.passfile, &w.passfile).unwrap();
    w.tresor_cmd(
        &["restore"],
        &["--backend-config", file.to_str().unwrap()],
        true,
    )
    .ok();
    w
}

fn write_turn(v: &TestVault, name: &str, seed: u64) {
    write_random_file(&v.path(name), seed, 300_000 + seed * 1000);
    // An edit of an existing file too, so both machines change old data.
    std::fs::write(v.path("shared.txt"), format!("last written by {name}\n")).unwrap();
}

fn check_files(v: &TestVault, written: &[(String, u64)], what: &str) {
    for (name, seed) in written {
        let got = std::fs::read(v.path(name))
            .unwrap_or_else(|e| panic!("{what}: {name} is missing: {e}"));
        assert_bytes_eq(
            &got,
            &random_bytes(*seed, (300_000 + seed * 1000) as usize),
            &format!("{what}: {name}"),
        );
    }
    if let Some((last, _)) = written.last() {
        let shared = std::fs::read_to_string(v.path("shared.txt")).unwrap();
        assert_eq!(
            shared,
            format!("last written by {last}\n"),
            "{what}: shared.txt"
        );
    }
}

#[test]
fn two_machines_take_turns_three_times_without_a_restore() {
    let s3 = S3Server::start("handover");
    let machine_a = tempfile::tempdir().unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let Some(mut a) = s3_vault(&s3, machine_a.path()) else {
        return;
    };
    let mut written: Vec<(String, u64)> = Vec::new();
    a.mount();
    // Enough files that one turn's change touches a minority of the index
    // blocks (a tiny index changes in every block).
    let many = a.path("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..3000 {
        std::fs::write(many.join(format!("f{i:05}")), format!("{i}")).unwrap();
    }
    write_turn(&a, "a0", 1);
    written.push(("a0".into(), 1));
    a.unmount();
    let file = export(&a);
    let mut b = restored(&a, &file, machine_b.path());

    let mut seed = 2;
    for turn in 1..=3 {
        // B's turn: the first time it was just restored; later it pulls.
        let run = b.mount_saying();
        if turn > 1 {
            assert!(
                run.stdout.contains("pulled generation"),
                "turn {turn}: B's mount did not pull A's work: {run}"
            );
        }
        check_files(&b, &written, &format!("turn {turn}, B after mount"));
        let name = format!("b{turn}");
        write_turn(&b, &name, seed);
        written.push((name, seed));
        seed += 1;
        b.unmount();

        // A's turn: pulls B's work and writes.
        let run = a.mount_saying();
        assert!(
            run.stdout.contains("pulled generation"),
            "turn {turn}: A's mount did not pull B's work: {run}\n{}",
            a.log_tail()
        );
        eprintln!("turn {turn}: {}", run.stdout.trim());
        // Only changed blocks: a pull never downloads the whole index.
        let line = run.stdout.lines().find(|l| l.contains("pulled")).unwrap();
        let (fetched, total) = blocks_in(line);
        assert!(
            fetched < total,
            "turn {turn}: the pull downloaded every index block: {line}"
        );
        check_files(&a, &written, &format!("turn {turn}, A after mount"));
        let name = format!("a{turn}");
        write_turn(&a, &name, seed);
        written.push((name, seed));
        seed += 1;
        a.unmount();
    }
    assert_fsck_clean(&a, "A after three turns");

    // A third machine restores the newest state: everything from both.
    let machine_c = tempfile::tempdir().unwrap();
    let mut c = restored(&a, &file, machine_c.path());
    c.mount();
    check_files(&c, &written, "a fresh restore");
    c.unmount();
}

/// "K of N index blocks downloaded" in the pull line.
fn blocks_in(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "of")
        .unwrap_or_else(|| panic!("no block count in {line:?}"));
    (
        words[i - 1].trim_end_matches(':').parse().unwrap(),
        words[i + 1].parse().unwrap(),
    )
}

/// Two vault directories of one vault mount at the same moment: the lease
/// is a conditional create, so exactly one mount wins; the other is
/// refused (exit 10) naming the winner.
fn exactly_one_of_two_simultaneous_mounts_wins(a: &mut TestVault, b: &mut TestVault, what: &str) {
    let (ma, mb) = (a.mnt.clone(), b.mnt.clone());
    let barrier = std::sync::Barrier::new(2);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            barrier.wait();
            a.try_mount_at(&ma)
        });
        let hb = s.spawn(|| {
            barrier.wait();
            b.try_mount_at(&mb)
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let won = [ra.success(), rb.success()];
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "{what}: exactly one of two simultaneous mounts must win:\nA: {ra}\nB: {rb}\n{}\n{}",
        a.log_tail(),
        b.log_tail()
    );
    let loser = if won[0] { &rb } else { &ra };
    assert_eq!(loser.status.code(), Some(10), "{what}: {loser}");
    assert!(loser.stderr.contains("in use on host"), "{what}: {loser}");
    for (v, m) in [(&*a, &ma), (&*b, &mb)] {
        if is_fuse_mounted(m) {
            v.tresor(&["unmount".as_ref(), m.as_os_str()]).ok();
        }
    }
}

#[test]
fn two_mounts_at_once_on_s3_exactly_one_wins() {
    let s3 = S3Server::start("leaserace");
    let machine_a = tempfile::tempdir().unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let Some(mut a) = s3_vault(&s3, machine_a.path()) else {
        return;
    };
    let status = a.tresor_cmd(&["status"], &[], true).ok();
    assert!(
        !status.stdout.contains("lease NOT enforced"),
        "moto enforces If-None-Match: {status}"
    );
    a.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
    let file = export(&a);
    let mut b = restored(&a, &file, machine_b.path());
    for round in 0..3 {
        exactly_one_of_two_simultaneous_mounts_wins(&mut a, &mut b, &format!("S3, round {round}"));
    }
}

#[test]
fn two_mounts_at_once_on_sftp_exactly_one_wins() {
    if skip_mount_tests() {
        return;
    }
    require_tool("sshd", "openssh-server");
    let sftp = common::servers::SftpServer::start();
    let machine_a = tempfile::tempdir().unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let mut a = TestVault::new_unchecked();
    a.add_sftp_box(&sftp).ok();
    a.env.push((
        "TRESOR_STATE_DIR".into(),
        machine_a.path().display().to_string(),
    ));
    let status = a.tresor_cmd(&["status"], &[], true).ok();
    assert!(
        !status.stdout.contains("lease NOT enforced"),
        "SFTP has an exclusive create: {status}"
    );
    a.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
    let file = export(&a);
    let mut b = TestVault::uninitialised();
    b.env = sftp.ssh_env();
    b.env.push((
        "TRESOR_STATE_DIR".into(),
        machine_b.path().display().to_string(),
    ));
    std::fs::copy(&a.passfile, &b.passfile).unwrap();
    b.tresor_cmd(
        &["restore"],
        &["--backend-config", file.to_str().unwrap()],
        true,
    )
    .ok();
    for round in 0..3 {
        exactly_one_of_two_simultaneous_mounts_wins(
            &mut a,
            &mut b,
            &format!("SFTP, round {round}"),
        );
    }
}

/// A fork made on purpose: B breaks A's lease while A is mounted and both
/// write. A's fence stops A from publishing (the lease is B's), so B's
/// state, the first to reach the backend, stays the newest. A's own work
/// stays intact in A's vault directory: a read-write mount is refused with
/// how to merge, a read-only mount shows it. A fresh restore gets B's.
#[test]
fn a_deliberate_fork_loses_nothing() {
    let s3 = S3Server::start("fork");
    let machine_a = tempfile::tempdir().unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let Some(mut a) = s3_vault(&s3, machine_a.path()) else {
        return;
    };
    a.mount();
    std::fs::write(a.path("common.txt"), b"before the fork").unwrap();
    a.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
    let file = export(&a);
    let mut b = restored(&a, &file, machine_b.path());
    b.tresor_cmd(&["lease", "break"], &[], true).ok();
    b.mount();
    std::fs::write(a.path("a-fork.txt"), b"written on A after the fork").unwrap();
    std::fs::write(b.path("b-fork.txt"), b"written on B after the fork").unwrap();
    // A has lost the lease: its sync must not publish, and must say so.
    let refused = a.tresor_cmd(&["sync"], &["--timeout", "30"], true);
    assert!(
        !refused.success(),
        "A published after losing the lease: {refused}"
    );
    b.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
    b.unmount();
    a.unmount();

    // A's read-write mount is refused with how to merge; nothing is pulled
    // over A's unpublished work.
    let again = a.try_mount_at(&a.mnt.clone());
    assert_eq!(again.status.code(), Some(10), "{again}");
    assert!(
        again.stderr.contains("fork") && again.stderr.contains("-o ro"),
        "the refusal must say how to merge: {again}"
    );
    a.mount_opts = vec!["ro".into()];
    a.mount();
    assert_content(&a.path("a-fork.txt"), b"written on A after the fork");
    assert_content(&a.path("common.txt"), b"before the fork");
    a.unmount();

    // The backend's newest state is B's, complete.
    let machine_c = tempfile::tempdir().unwrap();
    let mut c = restored(&b, &file, machine_c.path());
    c.mount();
    assert_content(&c.path("b-fork.txt"), b"written on B after the fork");
    assert_content(&c.path("common.txt"), b"before the fork");
    assert!(
        !c.path("a-fork.txt").exists(),
        "A's unpublished fork reached the backend"
    );
    c.unmount();
}

/// A read-only follower (issue 13): while A holds the lease and writes, a
/// second vault directory B mounted `-o ro` pulls the newest published
/// generation (through the hand-over path) and sees A's new file, without
/// taking the lease: A keeps writing and publishing.
#[test]
fn a_read_only_follower_sees_the_writers_newest_generation() {
    let s3 = S3Server::start("follower");
    let machine_a = tempfile::tempdir().unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let Some(mut a) = s3_vault(&s3, machine_a.path()) else {
        return;
    };
    a.mount();
    std::fs::write(a.path("first.txt"), b"first\n").unwrap();
    a.unmount();
    let file = export(&a);
    let mut b = restored(&a, &file, machine_b.path());

    a.mount();
    std::fs::write(a.path("second.txt"), b"written while B follows\n").unwrap();
    a.tresor_cmd(&["sync"], &["--timeout", "60"], true).ok();

    b.mount_opts.push("ro,follow".into());
    let run = b.mount_saying();
    assert!(
        run.stdout.contains("pulled generation"),
        "the follower did not pull the writer's newest state: {run}\n{}",
        b.log_tail()
    );
    assert_content(&b.path("second.txt"), b"written while B follows\n");
    assert_content(&b.path("first.txt"), b"first\n");

    // A still holds the lease: it writes and publishes on.
    std::fs::write(a.path("third.txt"), b"after\n").unwrap();
    let run = a.tresor_cmd(&["sync"], &["--timeout", "60"], true);
    assert!(
        run.success(),
        "the writer lost its lease to a follower: {run}"
    );
    b.unmount();
    a.unmount();
}
