//! Two vaults on one storage root (issue "Several devices"): `backend add
//! --root` at a root where another vault lives used to be accepted, and the
//! new vault's first `sync` overwrote the other's `keys/tresor.key` and
//! collected its index-snapshot blocks as garbage (1,622 → 7). Now the add
//! is refused, and a vault that reaches such a root anyway (`--no-test`, or
//! a config edited by hand) touches nothing there.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// Every file under `dir` with its content hash.
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let h = file_hash(&p);
            (p, h)
        })
        .collect()
}

fn add_dir(v: &TestVault, dir: &Path, extra: &[&str]) -> Run {
    let d = dir.to_string_lossy();
    let mut args = vec![
        "--dir",
        d.as_ref(),
        "--root",
        "shared",
        "--location",
        "DE",
        "--operator",
        "Own disk",
        "--operator-country",
        "DE",
    ];
    args.extend_from_slice(extra);
    v.tresor_cmd(&["backend", "add", "disk"], &args, true)
}

#[test]
fn a_second_vault_on_the_same_root_is_refused_and_touches_nothing() {
    let a = TestVault::new_unchecked();
    let b = TestVault::new_unchecked();
    let shared = a.scratch.join("shared-disk");
    fs::create_dir_all(&shared).unwrap();
    add_dir(&a, &shared, &[]).ok();
    a.tresor_cmd(&["sync"], &["--timeout", "60"], true).ok();
    let before = snapshot_of(&shared);
    assert!(
        before.keys().any(|p| p.ends_with("keys/tresor.key")),
        "vault A's sync left no key file: {before:?}"
    );

    let run = add_dir(&b, &shared, &[]);
    assert!(
        !run.success(),
        "a second vault was added on A's root: {run}"
    );
    assert!(
        run.stderr.contains("another vault"),
        "the refusal does not say why: {run}"
    );

    // Forced past the test, B's sync must fail and leave A's objects alone.
    add_dir(&b, &shared, &["--no-test"]).ok();
    let run = b.tresor_cmd(&["sync"], &["--timeout", "10"], true);
    assert!(!run.success(), "B's sync to A's root succeeded: {run}");
    let after = snapshot_of(&shared);
    let removed: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, h)| after.get(*p).is_some_and(|h2| h2 != *h))
        .map(|(p, _)| p)
        .collect();
    assert!(removed.is_empty(), "B deleted A's objects: {removed:?}");
    assert!(changed.is_empty(), "B overwrote A's objects: {changed:?}");
}

/// Where a backend keeps its objects, as the test reaches them behind
/// tresor's back.
enum Root<'a> {
    S3(&'a common::servers::S3Server),
    Dir(PathBuf),
}

impl Root<'_> {
    /// Every object key (S3) or file path relative to the directory.
    fn keys(&self) -> Vec<String> {
        match self {
            Root::S3(s3) => s3.list_keys(),
            Root::Dir(d) => files_under(d)
                .into_iter()
                .map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned())
                .collect(),
        }
    }
    fn delete(&self, key: &str) {
        match self {
            Root::S3(s3) => s3.delete_object(key),
            Root::Dir(d) => fs::remove_file(d.join(key)).unwrap(),
        }
    }
    fn put(&self, key: &str, bytes: &[u8]) {
        match self {
            Root::S3(s3) => s3.put_object(key, bytes),
            Root::Dir(d) => fs::write(d.join(key), bytes).unwrap(),
        }
    }
}

fn code(run: &Run) -> Option<i32> {
    run.status.code()
}

/// The measured case of issue 13: another vault's sync deleted this
/// vault's index-snapshot blocks, and `verify` exited 0, `status` showed
/// nothing, `snapshots` printed INVALID with exit 0, and `sync` claimed
/// success while a restore failed on a 404. Now each of them says so and
/// exits 4; `sync` uploads the missing blocks again (and a restore then
/// works); another vault's key file on the root is exit 12 everywhere.
fn damage_and_a_foreign_key_file_are_reported(mut v: TestVault, root: Root) {
    let machine = tempfile::tempdir().unwrap();
    v.env.push((
        "TRESOR_STATE_DIR".into(),
        machine.path().display().to_string(),
    ));
    v.mount();
    for i in 0..50 {
        fs::write(v.path(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    v.unmount();
    for cmd in ["verify", "status", "snapshots"] {
        let run = v.tresor_cmd(&[cmd], &[], true);
        assert!(run.success(), "{cmd} on an intact root: {run}");
    }

    // Blocks of the newest snapshot go missing.
    let keys = root.keys();
    let manifests: Vec<&String> = keys.iter().filter(|k| k.ends_with(".snap")).collect();
    let blocks: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("index/blocks/"))
        .collect();
    assert!(!blocks.is_empty(), "no snapshot blocks: {keys:?}");
    // With one generation every block is the newest's; with more, take all.
    let victims = if manifests.len() == 1 {
        &blocks[..1]
    } else {
        &blocks[..]
    };
    for b in victims {
        root.delete(b);
    }
    let run = v.tresor_cmd(&["verify"], &[], true);
    assert_eq!(code(&run), Some(4), "verify with missing blocks: {run}");
    assert!(
        run.stdout.contains("INCOMPLETE"),
        "verify does not say what: {run}"
    );
    let run = v.tresor_cmd(&["status"], &[], true);
    assert_eq!(code(&run), Some(4), "status with missing blocks: {run}");
    assert!(
        run.stdout.contains("INCOMPLETE"),
        "status does not show it: {run}"
    );
    let run = v.tresor_cmd(&["snapshots"], &[], true);
    assert_eq!(code(&run), Some(4), "snapshots with missing blocks: {run}");

    // `sync` checks what it published by listing, and repairs it.
    let run = v.tresor_cmd(&["sync"], &["--timeout", "60"], true);
    assert!(run.success(), "sync did not repair the snapshot: {run}");
    let run = v.tresor_cmd(&["verify"], &[], true);
    assert!(run.success(), "verify after sync's repair: {run}");
    let file = v.scratch.join("restore.toml");
    v.tresor_cmd(
        &["backend", "export"],
        &["-o", file.to_str().unwrap()],
        false,
    )
    .ok();
    let w = TestVault::uninitialised();
    fs::copy(&v.passfile, &w.passfile).unwrap();
    let mut w = w;
    w.env.push((
        "TRESOR_STATE_DIR".into(),
        machine.path().display().to_string(),
    ));
    w.tresor_cmd(
        &["restore"],
        &["--backend-config", file.to_str().unwrap()],
        true,
    )
    .ok();

    // Another vault's key file lands on the root.
    let other = TestVault::new_unchecked();
    let key = root
        .keys()
        .into_iter()
        .find(|k| k.ends_with("keys/tresor.key"))
        .expect("a key file on the root");
    root.put(&key, &fs::read(other.vault.join("tresor.key")).unwrap());
    for cmd in ["verify", "status", "snapshots", "sync"] {
        let run = v.tresor_cmd(&[cmd], &[], true);
        assert_eq!(code(&run), Some(12), "{cmd} with a foreign key file: {run}");
        assert!(
            format!("{}{}", run.stdout, run.stderr).contains("another vault"),
            "{cmd} does not say why: {run}"
        );
    }
}

#[test]
fn a_damaged_or_foreign_root_is_an_error_on_s3() {
    let s3 = common::servers::S3Server::start("damage");
    let Some(v) = TestVault::new() else { return };
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    damage_and_a_foreign_key_file_are_reported(v, Root::S3(&s3));
}

#[test]
fn a_damaged_or_foreign_root_is_an_error_on_a_directory() {
    let Some(v) = TestVault::new() else { return };
    let dir = v.scratch.join("disk");
    fs::create_dir_all(&dir).unwrap();
    add_dir(&v, &dir, &[]).ok();
    damage_and_a_foreign_key_file_are_reported(v, Root::Dir(dir));
}
