//! `tresor fsck` from the command line: refuses a mounted vault, exit codes
//! (0 clean, 4 inconsistent, 5 lost data), `--repair` output. The checks
//! themselves are unit-tested in `src/fsck/tests.rs` (damage injected with
//! raw SQL into the encrypted index, which tests here cannot open).

mod common;

use std::ffi::OsStr;

use common::*;

fn fsck(v: &TestVault, extra: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![
        "fsck".as_ref(),
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--passphrase-file".as_ref(),
        v.passfile.as_os_str(),
    ];
    a.extend(extra.iter().map(OsStr::new));
    v.tresor(&a)
}

#[test]
fn fsck_cli_refuses_mounted_reports_and_repairs() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(5, 2 * MIB as usize);
    std::fs::write(v.path("file.bin"), &data).unwrap();
    let r = fsck(&v, &[]);
    assert_eq!(r.status.code(), Some(1), "{r}");
    assert!(
        r.stderr.contains("is mounted") && r.stderr.contains("tresor unmount"),
        "{r}"
    );
    v.unmount();

    let r = fsck(&v, &[]).ok();
    assert!(r.stdout.contains("clean: no inconsistencies"), "{r}");

    // a pack written but never committed (crash): reclaimable, still clean
    let leftover = v
        .vault
        .join("store/packs/ee/ee00112233445566778899aabbccddee.pack");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"never committed").unwrap();
    let r = fsck(&v, &[]).ok();
    assert!(
        r.stdout.contains("leftover_pack_file [reclaimable] x1"),
        "{r}"
    );
    let r = fsck(&v, &["--repair"]).ok();
    assert!(
        r.stdout.contains("repaired: deleted 1 leftover file"),
        "{r}"
    );
    assert!(!leftover.exists());

    // a pack lost everywhere: exit 4 (damage), the file is named, repair cannot help
    let packs = v.pack_files();
    assert!(!packs.is_empty());
    for p in &packs {
        std::fs::remove_file(p).unwrap();
    }
    let r = fsck(&v, &["--json"]);
    assert_eq!(r.status.code(), Some(4), "{r}");
    let j: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(j["remaining"]["damaged_files"][0], "/file.bin", "{j}");
    assert!(r.stderr.contains("lost data in 1 file"), "{r}");
    let r = fsck(&v, &["--repair"]);
    assert_eq!(r.status.code(), Some(4), "{r}");
    assert!(r.stdout.contains("/file.bin"), "{r}");
}
