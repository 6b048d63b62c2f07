//! `tresor overlay FOLDER`: a folder encrypted in place through real mounts,
//! and interrupted overlays rolled back and resumed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Unmounts the folder and the temporary mountpoint even when a test panics
/// (the vault's own Drop only knows its `mnt`).
struct MountGuard(Vec<PathBuf>);

impl Drop for MountGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            if is_fuse_mounted(p) {
                let _ = run_bounded(
                    Command::new(tresor_bin()).arg("unmount").arg(p),
                    Duration::from_secs(60),
                );
            }
            if is_fuse_mounted(p) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(p)
                    .stdin(Stdio::null())
                    .status();
            }
        }
    }
}

/// Relative path → (kind, mode, size, content hash or symlink target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {} {} {}",
                    m.mode() & 0o7777,
                    m.len(),
                    m.mtime(),
                    file_hash(&p)
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn make_tree(folder: &Path) {
    fs::create_dir_all(folder.join("a/b/c")).unwrap();
    fs::create_dir(folder.join("Bücher – Ärger")).unwrap();
    write_random_file(&folder.join("big.bin"), 1, 20 * MIB);
    write_random_file(&folder.join("a/b/c/deep.dat"), 2, 100 * KIB);
    fs::write(
        folder.join("Bücher – Ärger/Übersicht 日本.txt"),
        "grüß gott\n",
    )
    .unwrap();
    fs::write(folder.join("a/empty"), "").unwrap();
    fs::write(folder.join("a/secret"), "only me\n").unwrap();
    fs::set_permissions(folder.join("a/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(folder.join("a/tool.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(folder.join("a/tool.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(folder.join("a/b/readonly"), "ro").unwrap();
    fs::set_permissions(
        folder.join("a/b/readonly"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    fs::set_permissions(folder.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.dat", folder.join("link-to-deep")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", folder.join("dangling")).unwrap();
}

fn overlay(v: &TestVault, folder: &Path, extra: &[&str], env: Option<(&str, &str)>) -> Run {
    let mut c = v.cmd();
    c.arg("overlay")
        .arg("--vault")
        .arg(&v.vault)
        .arg("--passphrase-file")
        .arg(&v.passfile)
        .args(extra)
        .arg(folder);
    if let Some((k, val)) = env {
        c.env(k, val);
    }
    run_bounded(&mut c, Duration::from_secs(300))
}

fn originals_dirs(folder: &Path) -> Vec<PathBuf> {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    fs::read_dir(folder.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.tresor-originals-"))
        })
        .collect()
}

fn tmp_mnt(v: &TestVault) -> PathBuf {
    PathBuf::from(format!("{}.overlay-mnt", v.vault.display()))
}

#[test]
fn overlay_encrypts_in_place_and_remounts() {
    let Some(v) = TestVault::new() else {
        return;
    };
    let folder = v.scratch.join("Dokumente ä");
    let _guard = MountGuard(vec![folder.clone(), tmp_mnt(&v)]);
    make_tree(&folder);
    let before = snapshot(&folder);
    let hashes = tree_hashes(&folder);

    let r = overlay(&v, &folder, &["--json"], None).ok();
    let result: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
        panic!("--json output is one JSON line ({e}): {r}");
    });
    assert_eq!(result["state"], "done", "{r}");
    assert_eq!(result["files"], 9, "{r}");
    assert!(is_fuse_mounted(&folder), "folder is a tresor mount: {r}");
    assert_eq!(snapshot(&folder), before, "contents after overlay");
    assert_eq!(tree_hashes(&folder), hashes);
    assert!(originals_dirs(&folder).is_empty(), "originals deleted");
    assert!(!tmp_mnt(&v).exists(), "temporary mountpoint removed");

    // A second overlay of the same vault is refused.
    overlay(&v, &folder, &[], None).failed();

    v.tresor(&["unmount".as_ref(), folder.as_os_str()]).ok();
    assert!(!is_fuse_mounted(&folder));
    assert_eq!(fs::read_dir(&folder).unwrap().count(), 0, "folder empty");
    v.tresor(&[
        "mount".as_ref(),
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--passphrase-file".as_ref(),
        v.passfile.as_os_str(),
        folder.as_os_str(),
    ])
    .ok();
    assert_eq!(snapshot(&folder), before, "contents after remount");

    // Undo after completion: the files are copied back out of the vault.
    let r = overlay(&v, &folder, &["--rollback"], None).ok();
    assert!(!is_fuse_mounted(&folder), "{r}");
    assert_eq!(snapshot(&folder), before, "contents after rollback: {r}");
}

#[test]
fn interrupted_overlay_rolls_back_or_resumes() {
    let Some(v) = TestVault::new() else {
        return;
    };
    let folder = v.scratch.join("Projekte");
    let _guard = MountGuard(vec![folder.clone(), tmp_mnt(&v)]);
    make_tree(&folder);
    let before = snapshot(&folder);

    // Stopped after the copy (the temporary mount is left behind, as after
    // kill -9), then rolled back: the folder is untouched.
    let r = overlay(
        &v,
        &folder,
        &[],
        Some(("TRESOR_OVERLAY_STOP_AFTER", "copy")),
    );
    assert_eq!(r.status.code(), Some(75), "{r}");
    assert_eq!(snapshot(&folder), before);
    overlay(&v, &folder, &[], None).failed();
    overlay(&v, &folder, &["--rollback"], None).ok();
    assert!(!is_fuse_mounted(&folder) && !is_fuse_mounted(&tmp_mnt(&v)));
    assert_eq!(snapshot(&folder), before, "after rollback from copy");
    assert!(!v.vault.join("overlay.json").exists(), "journal removed");

    // Stopped with the originals moved aside, then rolled back.
    let r = overlay(
        &v,
        &folder,
        &[],
        Some(("TRESOR_OVERLAY_STOP_AFTER", "originals-moved")),
    );
    assert_eq!(r.status.code(), Some(75), "{r}");
    assert_eq!(originals_dirs(&folder).len(), 1, "{r}");
    overlay(&v, &folder, &["--rollback"], None).ok();
    assert!(originals_dirs(&folder).is_empty());
    assert_eq!(snapshot(&folder), before, "after rollback from move");

    // Stopped after the mount, then resumed: completes.
    let r = overlay(
        &v,
        &folder,
        &[],
        Some(("TRESOR_OVERLAY_STOP_AFTER", "mounted")),
    );
    assert_eq!(r.status.code(), Some(75), "{r}");
    assert!(is_fuse_mounted(&folder));
    let r = overlay(&v, &folder, &["--resume"], None).ok();
    assert!(r.stdout.contains("is now encrypted"), "{r}");
    assert!(is_fuse_mounted(&folder));
    assert!(originals_dirs(&folder).is_empty(), "{r}");
    assert_eq!(snapshot(&folder), before, "after resume");
}

/// With a cloud backend, the originals go only after every pack is uploaded.
#[test]
fn overlay_with_a_backend_uploads_before_removing_originals() {
    let Some(v) = TestVault::new() else {
        return;
    };
    let s3 = common::servers::S3Server::start("overlay");
    let secret = v.scratch.join("s3.secret");
    fs::write(&secret, format!("{}\n", s3.secret_access_key)).unwrap();
    v.tresor(&[
        "backend".as_ref(),
        "add".as_ref(),
        "s3".as_ref(),
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--s3".as_ref(),
        "--endpoint".as_ref(),
        s3.endpoint.as_ref(),
        "--region".as_ref(),
        s3.region.as_ref(),
        "--bucket".as_ref(),
        s3.bucket.as_ref(),
        "--access-key-id".as_ref(),
        s3.access_key_id.as_ref(),
        "--secret-access-key-file".as_ref(),
        secret.as_os_str(),
        "--location".as_ref(),
        "DE".as_ref(),
        "--operator".as_ref(),
        "Loopback GmbH".as_ref(),
        "--operator-country".as_ref(),
        "DE".as_ref(),
    ])
    .ok();
    let folder = v.scratch.join("Akten");
    let _guard = MountGuard(vec![folder.clone(), tmp_mnt(&v)]);
    make_tree(&folder);
    let hashes = tree_hashes(&folder);
    let r = overlay(&v, &folder, &["--json"], None).ok();
    let result: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(result["state"], "done", "{r}");
    assert_eq!(tree_hashes(&folder), hashes);
    let packs = s3
        .list_keys()
        .iter()
        .filter(|k| k.ends_with(".pack"))
        .count();
    assert!(packs >= 1, "packs uploaded before the originals went: {r}");
    v.tresor(&["unmount".as_ref(), folder.as_os_str()]).ok();
}
