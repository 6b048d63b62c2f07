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
