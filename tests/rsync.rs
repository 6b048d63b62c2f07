//! rsync round trip: a source tree with every kind of metadata rsync can
//! carry (`-aHAX --sparse`) is copied into the mount; a checksumming dry run
//! must then find nothing to do, before and after a remount.

mod common;

use std::fs;

use common::tree::{build_source, rsync_dry_run_is_empty};
use common::*;

#[test]
fn rsync_round_trip() {
    require_tool("rsync", "rsync");
    require_tool("setfacl", "acl");
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let src = v.scratch.join("src");
    fs::create_dir(&src).unwrap();
    build_source(&src);
    let dst = v.path("dst");
    let run = run_tool(
        "rsync",
        &[
            "-aHAX".as_ref(),
            "--sparse".as_ref(),
            format!("{}/", src.display()).as_ref(),
            format!("{}/", dst.display()).as_ref(),
        ],
    );
    assert!(run.success(), "rsync into the mount failed: {run}");
    rsync_dry_run_is_empty(&src, &dst, "right after the copy");
    v.remount();
    rsync_dry_run_is_empty(&src, &dst, "after a remount");
    v.unmount();
    let stored = v.stored_bytes();
    eprintln!("rsync tree (6 GiB apparent, ~7 MiB of data): stored bytes {stored}");
    assert!(
        stored < 64 * MIB,
        "sparse files stored their holes? stored_bytes = {stored}"
    );
}
