//! `tresor passwd` and `tresor key`: slots change, the data does not; the
//! old passphrase stops working, the new one and the recovery key printed
//! by `init` open the vault; the last slot is never removed; backends get
//! the new key file.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::servers::S3Server;
use common::*;

const NEW_PASSPHRASE: &str = "a brand new passphrase for the test";

fn run(v: &TestVault, args: &[&str], secret: &[&OsStr]) -> Run {
    let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    a.push("--vault".as_ref());
    a.push(v.vault.as_os_str());
    a.extend_from_slice(secret);
    v.tresor(&a)
}

fn with_file<'a>(flag: &'a str, f: &'a Path) -> [&'a OsStr; 2] {
    [flag.as_ref(), f.as_os_str()]
}

/// The recovery key `init` printed (the indented line after the heading).
fn recovery_key(init_output: &str) -> String {
    let mut lines = init_output.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("Recovery key"))
        .expect("init prints a recovery key heading");
    lines
        .map(str::trim)
        .find(|l| !l.is_empty())
        .expect("a recovery key line")
        .to_string()
}

fn slots(v: &TestVault) -> Vec<String> {
    let r = run(v, &["key", "list", "--json"], &[]).ok();
    let j: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    j["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect()
}

fn status_with(v: &TestVault, secret: &[&OsStr]) -> Run {
    run(v, &["status", "--json"], secret)
}

#[test]
fn passwd_and_key_slots() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(9, 3 * MIB as usize);
    std::fs::write(v.path("kept.bin"), &data).unwrap();
    v.unmount();
    let rk = recovery_key(&v.init_output);
    let rk_file = v.scratch.join("recovery");
    std::fs::write(&rk_file, format!("{rk}\n")).unwrap();
    let old_pass = v.scratch.join("old-pass");
    std::fs::copy(&v.passfile, &old_pass).unwrap();
    let new_pass = v.scratch.join("new-pass");
    std::fs::write(&new_pass, format!("{NEW_PASSPHRASE}\n")).unwrap();
    assert_eq!(slots(&v), ["passphrase", "recovery-key"]);
    let key_before = std::fs::read(v.vault.join("tresor.key")).unwrap();
    let index_before = std::fs::read(v.vault.join("index.sqlite")).unwrap();

    // a wrong old passphrase changes nothing
    let bad = v.scratch.join("bad-pass");
    std::fs::write(&bad, "not it\n").unwrap();
    let r = run(
        &v,
        &["passwd"],
        &[
            "--passphrase-file".as_ref(),
            bad.as_os_str(),
            "--new-passphrase-file".as_ref(),
            new_pass.as_os_str(),
        ],
    );
    assert_eq!(r.status.code(), Some(3), "{r}");
    assert_eq!(
        std::fs::read(v.vault.join("tresor.key")).unwrap(),
        key_before
    );

    let r = run(
        &v,
        &["passwd"],
        &[
            "--passphrase-file".as_ref(),
            old_pass.as_os_str(),
            "--new-passphrase-file".as_ref(),
            new_pass.as_os_str(),
        ],
    )
    .ok();
    assert!(r.stdout.contains("passphrase changed"), "{r}");
    assert!(
        !r.stdout.contains(NEW_PASSPHRASE),
        "passwd printed the passphrase: {r}"
    );
    assert_eq!(slots(&v), ["recovery-key", "passphrase"]);
    assert_ne!(
        std::fs::read(v.vault.join("tresor.key")).unwrap(),
        key_before
    );
    assert_eq!(
        std::fs::read(v.vault.join("index.sqlite")).unwrap(),
        index_before,
        "passwd touched the index"
    );

    // the old passphrase fails as any wrong passphrase does
    let r = status_with(&v, &with_file("--passphrase-file", &old_pass));
    assert_eq!(r.status.code(), Some(3), "{r}");
    assert!(r.stderr.contains("wrong passphrase"), "{r}");
    // the new one and the recovery key from init open it; the data is intact
    status_with(&v, &with_file("--passphrase-file", &new_pass)).ok();
    status_with(&v, &with_file("--passphrase-file", &rk_file)).ok();
    std::fs::copy(&new_pass, &v.passfile).unwrap();
    v.mount();
    assert_content(&v.path("kept.bin"), &data);
    v.unmount();
    std::fs::copy(&rk_file, &v.passfile).unwrap();
    v.mount();
    assert_content(&v.path("kept.bin"), &data);
    v.unmount();

    // passwd unlocked by the recovery key replaces the only passphrase slot
    let newer = v.scratch.join("newer-pass");
    std::fs::write(&newer, "third passphrase\n").unwrap();
    run(
        &v,
        &["passwd"],
        &[
            "--passphrase-file".as_ref(),
            rk_file.as_os_str(),
            "--new-passphrase-file".as_ref(),
            newer.as_os_str(),
        ],
    )
    .ok();
    assert_eq!(slots(&v), ["recovery-key", "passphrase"]);
    assert_eq!(
        status_with(&v, &with_file("--passphrase-file", &new_pass))
            .status
            .code(),
        Some(3)
    );
    status_with(&v, &with_file("--passphrase-file", &newer)).ok();

    // a key-file slot: whole file contents, binary
    let kf = v.scratch.join("keyfile.bin");
    std::fs::write(&kf, random_bytes(77, 64)).unwrap();
    let r = run(
        &v,
        &["key", "add-keyfile", kf.to_str().unwrap()],
        &with_file("--passphrase-file", &newer),
    )
    .ok();
    assert!(r.stdout.contains("key-file slot 2 added"), "{r}");
    assert_eq!(slots(&v), ["recovery-key", "passphrase", "key-file"]);
    status_with(&v, &with_file("--key-file", &kf)).ok();
    // too short a key file is refused
    let short = v.scratch.join("short.bin");
    std::fs::write(&short, b"tiny").unwrap();
    let r = run(
        &v,
        &["key", "add-keyfile", short.to_str().unwrap()],
        &with_file("--key-file", &kf),
    )
    .failed();
    assert!(r.stderr.contains("too short"), "{r}");

    // a second recovery key, printed once
    let r = run(&v, &["key", "add-recovery"], &with_file("--key-file", &kf)).ok();
    let rk2 = recovery_key(&r.stdout);
    assert_ne!(rk2, rk);
    let rk2_file = v.scratch.join("recovery2");
    std::fs::write(&rk2_file, &rk2).unwrap();
    status_with(&v, &with_file("--passphrase-file", &rk2_file)).ok();

    // remove the first recovery key: it stops working, the rest still do
    let r = run(&v, &["key", "remove", "0"], &with_file("--key-file", &kf)).ok();
    assert!(r.stdout.contains("removed slot 0 (recovery-key)"), "{r}");
    assert_eq!(slots(&v), ["passphrase", "key-file", "recovery-key"]);
    assert_eq!(
        status_with(&v, &with_file("--passphrase-file", &rk_file))
            .status
            .code(),
        Some(3)
    );
    status_with(&v, &with_file("--passphrase-file", &rk2_file)).ok();

    // down to one slot; the last one is never removed
    run(&v, &["key", "remove", "2"], &with_file("--key-file", &kf)).ok();
    run(
        &v,
        &["key", "remove", "1"],
        &with_file("--passphrase-file", &newer),
    )
    .ok();
    assert_eq!(slots(&v), ["passphrase"]);
    let before = std::fs::read(v.vault.join("tresor.key")).unwrap();
    let r = run(
        &v,
        &["key", "remove", "0"],
        &with_file("--passphrase-file", &newer),
    )
    .failed();
    assert!(r.stderr.contains("last key slot"), "{r}");
    assert_eq!(std::fs::read(v.vault.join("tresor.key")).unwrap(), before);
    let r = run(
        &v,
        &["key", "remove", "5"],
        &with_file("--passphrase-file", &newer),
    )
    .failed();
    assert!(r.stderr.contains("no key slot 5"), "{r}");

    std::fs::copy(&newer, &v.passfile).unwrap();
    v.mount();
    assert_content(&v.path("kept.bin"), &data);
}

#[test]
fn passwd_uploads_the_key_file_to_backends() {
    let Some(v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("keys");
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    let new_pass = v.scratch.join("new-pass");
    std::fs::write(&new_pass, format!("{NEW_PASSPHRASE}\n")).unwrap();
    let r = run(
        &v,
        &["passwd"],
        &[
            "--passphrase-file".as_ref(),
            v.passfile.as_os_str(),
            "--new-passphrase-file".as_ref(),
            new_pass.as_os_str(),
        ],
    )
    .ok();
    assert!(r.stdout.contains("key file uploaded to backend s3"), "{r}");
    let key = s3
        .list_keys()
        .into_iter()
        .find(|k| k.ends_with("keys/tresor.key"))
        .expect("keys/tresor.key in the bucket");
    assert_eq!(
        s3.get_object(&key).unwrap(),
        std::fs::read(v.vault.join("tresor.key")).unwrap(),
        "the bucket holds an old key file"
    );
}

/// One kind of secret, as flags plus environment for the command.
struct Secret {
    name: &'static str,
    flags: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
}

fn args_of(a: &[std::ffi::OsString]) -> Vec<&OsStr> {
    a.iter().map(|s| s.as_os_str()).collect()
}

fn run_with(v: &TestVault, args: &[&OsStr], secret: &Secret) -> Run {
    let mut c = v.cmd();
    c.args(args).args(&secret.flags);
    for (k, val) in &secret.env {
        c.env(k, val);
    }
    run_bounded(&mut c, std::time::Duration::from_secs(120))
}

/// Regression (issue "One house"): `verify`, `gc`, `restore`, `backend
/// export` and `overlay` read only a passphrase and silently ignored
/// `--key-file`, and `key add-keyfile` advised `--passphrase-file`. Every
/// command that unlocks the vault now goes through one opener; here each
/// runs with a passphrase file, the recovery key, a key file, the desktop
/// keyring and `TRESOR_PASSPHRASE`, unmounted and (for the commands the
/// daemon answers) mounted. The overlay at the end also mounts with a
/// binary key file, which failed before: the daemon read its secret as one
/// line of UTF-8 from the pipe.
#[test]
fn every_unlocking_command_takes_every_kind_of_secret() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("secrets");
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    v.mount();
    let data = random_bytes(21, 2 * MIB as usize);
    std::fs::write(v.path("kept.bin"), &data).unwrap();
    v.unmount();

    // The secrets.
    let rk_file = v.scratch.join("recovery");
    std::fs::write(&rk_file, format!("{}\n", recovery_key(&v.init_output))).unwrap();
    let key_file = v.scratch.join("key.bin");
    std::fs::write(&key_file, random_bytes(22, 256)).unwrap();
    let r = run(
        &v,
        &["key", "add-keyfile", key_file.to_str().unwrap()],
        &with_file("--passphrase-file", &v.passfile),
    )
    .ok();
    assert!(
        r.stdout.contains("unlock with --key-file"),
        "add-keyfile must advise the flag that works: {r}"
    );
    let vault_id = v.status_json()["vault_id"].as_str().unwrap().to_string();
    let fakebin = fake_secret_tool(&v.root_path);
    std::fs::write(
        fakebin
            .join("secrets")
            .join(format!("service_tresor_vault_{vault_id}")),
        PASSPHRASE,
    )
    .unwrap();
    let path_with_fake = format!("{}:{}", fakebin.display(), std::env::var("PATH").unwrap());
    let secrets = [
        Secret {
            name: "passphrase file",
            flags: vec!["--passphrase-file".into(), v.passfile.clone().into()],
            env: vec![],
        },
        Secret {
            name: "recovery key",
            flags: vec!["--passphrase-file".into(), rk_file.clone().into()],
            env: vec![],
        },
        Secret {
            name: "key file",
            flags: vec!["--key-file".into(), key_file.clone().into()],
            env: vec![],
        },
        Secret {
            name: "keyring",
            flags: vec!["--keyring".into()],
            env: vec![
                ("PATH".into(), path_with_fake.clone()),
                (
                    "DBUS_SESSION_BUS_ADDRESS".into(),
                    "unix:path=/nonexistent/fake-bus".into(),
                ),
            ],
        },
        Secret {
            name: "TRESOR_PASSPHRASE",
            flags: vec![],
            env: vec![("TRESOR_PASSPHRASE".into(), PASSPHRASE.into())],
        },
    ];
    let wrong = Secret {
        name: "a wrong key file",
        flags: vec!["--key-file".into(), v.passfile.clone().into()],
        env: vec![],
    };
    let export = v.scratch.join("restore.toml");
    let vault = v.vault.clone();
    let vault_cmd = |cmd: &[&str], extra: &[&OsStr]| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = cmd.iter().map(|s| s.into()).collect();
        a.push("--vault".into());
        a.push(vault.clone().into());
        a.extend(extra.iter().map(|s| s.to_os_string()));
        a
    };
    let unmounted: Vec<Vec<std::ffi::OsString>> = vec![
        vault_cmd(&["status", "--json"], &[]),
        vault_cmd(&["verify", "--quiet"], &[]),
        vault_cmd(&["gc", "--quiet"], &[]),
        vault_cmd(&["fsck"], &[]),
        vault_cmd(&["sync", "--quiet"], &[]),
        vault_cmd(&["where", "kept.bin"], &[]),
        vault_cmd(&["cache", "show"], &[]),
        vault_cmd(&["snapshots"], &[]),
        vault_cmd(&["lease", "show"], &[]),
        vault_cmd(&["key", "list"], &[]),
        vault_cmd(&["backend", "export"], &["-o".as_ref(), export.as_os_str()]),
    ];
    let mounted_cmds: Vec<Vec<std::ffi::OsString>> = vec![
        vault_cmd(&["status", "--json"], &[]),
        vault_cmd(&["sync", "--quiet"], &[]),
        vault_cmd(&["gc", "--quiet"], &[]),
        vault_cmd(&["where", "kept.bin"], &[]),
        vault_cmd(&["verify", "--quiet"], &[]),
    ];
    // `backend export` refuses to overwrite its output.
    let fresh_export = || {
        let _ = std::fs::remove_file(&export);
    };
    for s in &secrets {
        for cmd in &unmounted {
            fresh_export();
            let r = run_with(&v, &args_of(cmd), s);
            assert!(r.success(), "{:?} with {}: {r}", cmd, s.name);
        }
    }
    let restore_file = v.scratch.join("restore-kept.toml");
    std::fs::copy(&export, &restore_file).unwrap();
    // A wrong secret is refused by every one that unlocks, with exit code 3
    // (`key list` and `backend export` read no secret: slot kinds and the
    // backends' credentials are not protected by the vault key).
    for cmd in unmounted
        .iter()
        .filter(|c| c[0] != "key" && c[0] != "backend")
    {
        fresh_export();
        let r = run_with(&v, &args_of(cmd), &wrong);
        assert_eq!(
            r.status.code(),
            Some(3),
            "{:?} with {}: {r}",
            cmd,
            wrong.name
        );
    }
    // Restore on a new machine: the key file came from the backend, the
    // secret from the user. (The keyring holds secrets by vault id, for a
    // vault this machine has; a restore has none yet.)
    for (i, s) in secrets.iter().filter(|s| s.name != "keyring").enumerate() {
        let target = v.root_path.join(format!("restored-{i}"));
        let cmd: Vec<std::ffi::OsString> = vec![
            "restore".into(),
            "--quiet".into(),
            "--vault".into(),
            target.clone().into(),
            "--backend-config".into(),
            restore_file.clone().into(),
        ];
        let r = run_with(&v, &args_of(&cmd), s);
        assert!(r.success(), "restore with {}: {r}", s.name);
        assert!(target.join("tresor.key").exists());
    }

    // Mounted: the daemon answers, the secret still has to open the vault.
    v.mount();
    for s in &secrets {
        for cmd in &mounted_cmds {
            let r = run_with(&v, &args_of(cmd), s);
            assert!(r.success(), "mounted {:?} with {}: {r}", cmd, s.name);
        }
    }
    v.unmount();

    // overlay: a new, empty vault with a key-file slot, opened by the key file.
    let folder = v.root_path.join("to-encrypt");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("letter.txt"), b"dear tax office").unwrap();
    let empty = TestVault::new_unchecked();
    let r = run(
        &empty,
        &["key", "add-keyfile", key_file.to_str().unwrap()],
        &with_file("--passphrase-file", &empty.passfile),
    );
    assert!(r.success(), "{r}");
    let r = run_with(
        &empty,
        &[
            "overlay".as_ref(),
            "--quiet".as_ref(),
            "--vault".as_ref(),
            empty.vault.as_os_str(),
            folder.as_os_str(),
        ],
        &secrets[2],
    );
    assert!(r.success(), "overlay with a key file: {r}");
    assert_eq!(
        std::fs::read(folder.join("letter.txt")).unwrap(),
        b"dear tax office"
    );
    assert!(
        is_fuse_mounted(&folder),
        "the vault is mounted over the folder"
    );
    let r = empty.tresor(&["unmount".as_ref(), folder.as_os_str()]);
    assert!(r.success(), "{r}");
}

/// A damaged key slot or a truncated key file is reported as damage
/// (exit 4, naming the slot and the file), never as a wrong passphrase; a
/// wrong passphrase on an intact file still says so (exit 3).
#[test]
fn damaged_key_slot_is_damage_not_a_wrong_passphrase() {
    let v = TestVault::new_unchecked();
    let key = v.vault.join("tresor.key");
    let intact = std::fs::read(&key).unwrap();
    let wrong = v.scratch.join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let code = |r: &Run| r.status.code();

    let r = status_with(&v, &with_file("--passphrase-file", &wrong)).failed();
    assert_eq!(code(&r), Some(3), "{r}");
    assert!(
        r.stderr.contains("wrong passphrase") && !r.stderr.contains("damaged"),
        "{r}"
    );

    // Slot 0 (the passphrase slot) starts at byte 26; flip a byte of its
    // wrapped key, then of its salt.
    for pos in [26 + 100, 26 + 20] {
        let mut b = intact.clone();
        b[pos] ^= 0x01;
        std::fs::write(&key, &b).unwrap();
        for secret in [&v.passfile, &wrong] {
            let r = status_with(&v, &with_file("--passphrase-file", secret)).failed();
            assert_eq!(code(&r), Some(4), "byte {pos}: {r}");
            let expected = format!("key slot 0 of {} is damaged", key.display());
            assert!(
                r.stderr.contains(&expected),
                "byte {pos}: expected {expected:?}: {r}"
            );
            assert!(!r.stderr.contains("wrong passphrase"), "byte {pos}: {r}");
        }
    }
    // The recovery slot is intact and still opens the vault.
    let rk = v.scratch.join("recovery");
    std::fs::write(&rk, format!("{}\n", recovery_key(&v.init_output))).unwrap();
    status_with(&v, &with_file("--passphrase-file", &rk)).ok();

    std::fs::write(&key, &intact[..intact.len() - 7]).unwrap();
    let r = status_with(&v, &with_file("--passphrase-file", &v.passfile)).failed();
    assert_eq!(code(&r), Some(4), "{r}");
    assert!(
        r.stderr.contains("damaged") && r.stderr.contains(&key.display().to_string()),
        "{r}"
    );
    assert!(!r.stderr.contains("wrong passphrase"), "{r}");
}

/// Issue 11, "Offline passphrase guessing": a weak new passphrase is
/// refused (exit 2, with what to do) unless --weak-passphrase; --kdf strong
/// is recorded in the slot; with passphrase slots kept local, the key file
/// on a backend has no passphrase slot (nothing to guess offline) and a
/// restore from it opens with the recovery key but not the passphrase.
#[test]
fn weak_passphrases_strong_kdf_and_local_passphrase_slots() {
    let v = TestVault::uninitialised();
    let weak = v.scratch.join("weak");
    std::fs::write(&weak, "password123\n").unwrap();
    let init = |extra: &[&str]| {
        let mut a: Vec<&OsStr> = vec!["init".as_ref(), "--vault".as_ref(), v.vault.as_os_str()];
        a.push("--passphrase-file".as_ref());
        a.push(weak.as_os_str());
        a.extend(extra.iter().map(OsStr::new));
        v.tresor(&a)
    };
    let r = init(&[]);
    assert_eq!(
        r.status.code(),
        Some(2),
        "a weak passphrase was accepted: {r}"
    );
    assert!(r.stderr.contains("--weak-passphrase"), "{r}");
    assert!(!v.vault.join("tresor.key").exists(), "refused, yet created");
    let r = init(&["--weak-passphrase", "--kdf", "strong"]).ok();
    assert!(r.stderr.contains("weak"), "no warning: {r}");
    let rk = recovery_key(&r.stdout);
    let list = v.tresor_cmd(&["key", "list"], &["--json"], false).ok();
    let j: serde_json::Value = serde_json::from_str(list.stdout.trim()).unwrap();
    assert_eq!(j["slots"][0]["argon2id"]["m_kib"], 256 * 1024, "{j}");
    assert_eq!(j["slots"][0]["argon2id"]["t"], 4, "{j}");

    // passwd checks the new passphrase too.
    let r = v.tresor_cmd(
        &["passwd"],
        &[
            "--passphrase-file",
            weak.to_str().unwrap(),
            "--new-passphrase-file",
            weak.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(
        r.status.code(),
        Some(2),
        "passwd took a weak passphrase: {r}"
    );

    // Passphrase slots kept local: the backend's copy has none.
    let disk = v.scratch.join("disk");
    v.tresor_cmd(
        &["backend", "add", "disk"],
        &[
            "--passphrase-file",
            weak.to_str().unwrap(),
            "--dir",
            disk.to_str().unwrap(),
            "--root",
            "r",
            "--location",
            "DE",
            "--operator",
            "Own disk",
            "--operator-country",
            "DE",
        ],
        false,
    )
    .ok();
    v.tresor_cmd(
        &["key", "passphrase-slots", "--local"],
        &["--passphrase-file", weak.to_str().unwrap()],
        false,
    )
    .ok();
    // (and a sync, which uploads the key file again, keeps it so)
    v.tresor_cmd(
        &["sync"],
        &[
            "--timeout",
            "60",
            "--passphrase-file",
            weak.to_str().unwrap(),
        ],
        false,
    )
    .ok();
    let remote = std::fs::read(disk.join("r/keys/tresor.key")).unwrap();
    let local = std::fs::read(v.vault.join("tresor.key")).unwrap();
    assert_eq!(local[25], 2, "the local key file keeps both slots");
    assert_eq!(remote[25], 1, "the backend's copy must hold one slot");
    assert_eq!(remote[26], 2, "and it is the recovery-key slot");
    let export = v.scratch.join("restore.toml");
    v.tresor_cmd(
        &["backend", "export"],
        &[
            "--passphrase-file",
            weak.to_str().unwrap(),
            "-o",
            export.to_str().unwrap(),
        ],
        false,
    )
    .ok();
    let w = TestVault::uninitialised();
    let r = w.tresor_cmd(
        &["restore"],
        &[
            "--backend-config",
            export.to_str().unwrap(),
            "--passphrase-file",
            weak.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(
        r.status.code(),
        Some(3),
        "the passphrase opened the backend copy: {r}"
    );
    let rk_file = w.scratch.join("rk");
    std::fs::write(&rk_file, format!("{rk}\n")).unwrap();
    w.tresor_cmd(
        &["restore"],
        &[
            "--backend-config",
            export.to_str().unwrap(),
            "--passphrase-file",
            rk_file.to_str().unwrap(),
        ],
        false,
    )
    .ok();
}
