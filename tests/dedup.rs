//! Deduplication through a real mount, measured with `status --json`
//! (`stored_bytes`, cross-checked against the pack objects on disk) while the
//! vault is unmounted, so every pack is complete when it is measured.

mod common;

use std::fs;

use common::*;

#[test]
fn second_copy_of_256mib_adds_under_1_percent() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let src = v.scratch.join("random-256m");
    write_random_file(&src, 256, 256 * MIB);
    copy_file(&src, &v.path("first"));
    v.unmount();
    let after_first = v.stored_bytes();
    v.mount();
    fs::create_dir(v.path("again")).unwrap();
    copy_file(&src, &v.path("again/second"));
    v.unmount();
    let after_second = v.stored_bytes();
    let growth = after_second.saturating_sub(after_first);
    let pct = 100.0 * growth as f64 / after_first as f64;
    eprintln!(
        "dedup 256 MiB: stored after first copy {after_first} B ({:.1} MiB), after second {after_second} B; \
         growth {growth} B = {pct:.3} % (limit 1 %)",
        after_first as f64 / MIB as f64
    );
    assert!(
        after_first >= 256 * MIB,
        "stored bytes after writing 256 MiB of random data: {after_first} (< 256 MiB: was it stored?)"
    );
    assert!(
        pct < 1.0,
        "second identical copy grew stored bytes by {growth} B = {pct:.3} % (limit 1 %)"
    );
    v.mount();
    assert_same_content(&src, &v.path("first"));
    assert_same_content(&src, &v.path("again/second"));
}

#[test]
fn one_byte_insert_into_64mib_adds_at_most_8mib() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let original = random_bytes(64, 64 * MIB as usize);
    fs::write(v.path("original"), &original).unwrap();
    v.unmount();
    let before = v.stored_bytes();
    v.mount();
    let mut shifted = Vec::with_capacity(original.len() + 1);
    shifted.push(0x5a);
    shifted.extend_from_slice(&original);
    fs::write(v.path("shifted"), &shifted).unwrap();
    v.unmount();
    let after = v.stored_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "dedup 64 MiB + 1 byte inserted at the start: stored before {before} B, after {after} B; \
         growth {growth} B = {:.2} MiB (limit 8 MiB)",
        growth as f64 / MIB as f64
    );
    assert!(
        growth <= 8 * MIB,
        "a one-byte insert at the start of 64 MiB added {growth} B (> 8 MiB): content-defined chunking not effective"
    );
    v.mount();
    assert_content(&v.path("original"), &original);
    assert_content(&v.path("shifted"), &shifted);
}
