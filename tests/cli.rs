//! CLI behaviour around mounting: foreground mode (`-f`) and `-o` options.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn foreground_mount_serves_until_unmount() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    fs::create_dir_all(v.root_path.join("logs")).unwrap();
    let mut child = v
        .cmd()
        .arg("mount")
        .arg("--vault")
        .arg(&v.vault)
        .arg("--passphrase-file")
        .arg(&v.passfile)
        .arg("-f")
        .arg(&v.mnt)
        .stdin(Stdio::null())
        .stdout(fs::File::create(v.root_path.join("logs/fg.out")).unwrap())
        .stderr(fs::File::create(v.root_path.join("logs/fg.err")).unwrap())
        .spawn()
        .expect("start tresor mount -f");
    let stderr = || fs::read_to_string(v.root_path.join("logs/fg.err")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_fuse_mounted(&v.mnt) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "tresor mount -f exited ({st}) before mounting; stderr:\n{}",
                stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 60 s waiting for `tresor mount -f` to mount {}",
            v.mnt.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(v.path("f"), b"foreground").unwrap();
    assert_content(&v.path("f"), b"foreground");
    assert!(
        child.try_wait().unwrap().is_none(),
        "tresor mount -f must stay in the foreground while mounted"
    );
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tresor mount -f still running 60 s after tresor unmount returned");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "tresor mount -f exited with {status}; stderr:\n{}",
        stderr()
    );
    assert!(!is_fuse_mounted(&v.mnt));
    // what it wrote is there on the next (daemonised) mount
    v.mount();
    assert_content(&v.path("f"), b"foreground");
}

#[test]
fn read_only_mount_option() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), b"written before ro").unwrap();
    v.unmount();
    v.mount_opts = vec!["ro".into()];
    v.mount();
    assert_content(&v.path("f"), b"written before ro");
    assert_eq!(
        errno(fs::write(v.path("g"), b"x")),
        libc::EROFS,
        "create on a ro mount"
    );
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(v.path("f"))),
        libc::EROFS,
        "open for writing on a ro mount"
    );
    assert_eq!(
        errno(fs::remove_file(v.path("f"))),
        libc::EROFS,
        "unlink on a ro mount"
    );
    v.unmount();
    v.mount_opts.clear();
    v.mount();
    assert_content(&v.path("f"), b"written before ro");
}

/// The README's main command: `tresor mount --init MNT` creates the default
/// vault (under `$XDG_DATA_HOME`) on first use and just mounts it later.
#[test]
fn mount_init_creates_default_vault_then_remounts() {
    if skip_mount_tests() {
        return;
    }
    let v = TestVault::uninitialised();
    let default_vault = v.root_path.join("xdg/tresor/default");
    let mount_init = || {
        run_bounded(
            v.cmd()
                .arg("mount")
                .arg("--init")
                .arg("--passphrase-file")
                .arg(&v.passfile)
                .arg(&v.mnt),
            Duration::from_secs(120),
        )
    };
    let first = mount_init().ok();
    assert!(
        first.stdout.contains("Recovery key"),
        "first `mount --init` must print the recovery key, got:\n{}",
        first.stdout
    );
    assert!(
        default_vault.join("tresor.key").is_file(),
        "no vault created at {}",
        default_vault.display()
    );
    assert!(is_fuse_mounted(&v.mnt), "not mounted after `mount --init`");
    fs::write(v.path("kept"), b"still here").unwrap();
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();
    let second = mount_init().ok();
    assert!(
        !second.stdout.contains("Recovery key"),
        "second `mount --init` must not create a new vault:\n{}",
        second.stdout
    );
    assert_content(&v.path("kept"), b"still here");
    v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]).ok();
}
