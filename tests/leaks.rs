//! Nothing the user wrote may appear in plaintext anywhere in the vault
//! directory: not file names, directory names, symlink targets, xattr names
//! or values, contents, nor the passphrase. Every byte of every file below
//! the vault directory is searched after unmount.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Distinctive markers; none is a substring of another.
const NAME_MARKER: &str = "QzxFileNameMarker7731";
const DIR_MARKER: &str = "QzxDirectoryMarker4402";
const CONTENT_MARKER: &str = "QzxContentMarker9154";
const LINK_MARKER: &str = "QzxSymlinkTargetMarker2268";
const XNAME_MARKER: &str = "QzxXattrNameMarker5519";
const XVALUE_MARKER: &str = "QzxXattrValueMarker8086";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn no_plaintext_in_vault_dir() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let dir = v.path(format!("{DIR_MARKER}-dir"));
    fs::create_dir_all(dir.join(format!("{DIR_MARKER}-nested"))).unwrap();
    // small, compressible and chunk-sized contents, all full of the marker
    let small = format!("{CONTENT_MARKER}\n");
    let text = CONTENT_MARKER.repeat(200_000); // ~4 MiB, highly compressible
    let mut mixed = random_bytes(7, 3 * MIB as usize);
    for i in (0..mixed.len() - 64).step_by(100_000) {
        mixed[i..i + CONTENT_MARKER.len()].copy_from_slice(CONTENT_MARKER.as_bytes());
    }
    fs::write(dir.join(format!("{NAME_MARKER}-small.txt")), &small).unwrap();
    fs::write(
        dir.join(format!("{DIR_MARKER}-nested/{NAME_MARKER}-text.txt")),
        &text,
    )
    .unwrap();
    fs::write(v.path(format!("{NAME_MARKER}-mixed.bin")), &mixed).unwrap();
    std::os::unix::fs::symlink(format!("../{LINK_MARKER}/target"), dir.join("link")).unwrap();
    setxattr(
        &dir.join(format!("{NAME_MARKER}-small.txt")),
        &format!("user.{XNAME_MARKER}"),
        XVALUE_MARKER.as_bytes(),
        0,
    )
    .unwrap();
    // a renamed-away name and a deleted file must not linger either
    fs::write(v.path(format!("{NAME_MARKER}-renamed-from")), &small).unwrap();
    fs::rename(
        v.path(format!("{NAME_MARKER}-renamed-from")),
        v.path("plain-name"),
    )
    .unwrap();
    fs::write(v.path(format!("{NAME_MARKER}-deleted")), &text).unwrap();
    fs::remove_file(v.path(format!("{NAME_MARKER}-deleted"))).unwrap();
    v.remount(); // exercise the daemon's read path too, then close everything
    assert_content(
        &dir.join(format!("{DIR_MARKER}-nested/{NAME_MARKER}-text.txt")),
        text.as_bytes(),
    );
    v.unmount();

    let markers = [
        NAME_MARKER,
        DIR_MARKER,
        CONTENT_MARKER,
        LINK_MARKER,
        XNAME_MARKER,
        XVALUE_MARKER,
        PASSPHRASE,
    ];
    let files = all_files(&v.vault);
    assert!(
        files.len() >= 3,
        "suspiciously few files in the vault: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let mut total = 0u64;
    let mut hits = Vec::new();
    for (f, bytes) in &files {
        total += bytes.len() as u64;
        for m in markers {
            if find(f.as_os_str().as_encoded_bytes(), m.as_bytes()).is_some() {
                hits.push(format!("{m:?} in the path name {}", f.display()));
            }
            if let Some(off) = find(bytes, m.as_bytes()) {
                hits.push(format!("{m:?} in {} at offset {off}", f.display()));
            }
        }
    }
    eprintln!(
        "searched {} files, {total} bytes of {} for {} markers",
        files.len(),
        v.vault.display(),
        markers.len()
    );
    assert!(
        hits.is_empty(),
        "plaintext found in the vault:\n{}",
        hits.join("\n")
    );
}

/// Every non-directory below `dir`, recursively, with the bytes to search:
/// a file's content, or a symlink's target (not followed).
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("readdir {}: {e}", d.display())) {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let p = e.path();
            if !ft.is_symlink() {
                // extended attributes of vault files are vault bytes too
                let mut xattrs = Vec::new();
                for name in listxattr(&p).unwrap_or_default() {
                    xattrs.extend_from_slice(name.as_bytes());
                    xattrs.push(0);
                    xattrs.extend(getxattr(&p, &name).unwrap_or_default());
                    xattrs.push(0);
                }
                if !xattrs.is_empty() {
                    out.push((p.join("(xattrs)"), xattrs));
                }
            }
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((p, t.into_os_string().into_encoded_bytes()));
            } else if ft.is_file() {
                let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                out.push((p, bytes));
            } else {
                out.push((p, Vec::new())); // sockets, FIFOs: only the name counts
            }
        }
    }
    out
}
