//! Cloud sync against real servers on loopback: S3 (moto), WebDAV (wsgidav),
//! SFTP (OpenSSH). Covers presets, the placement policy, write-back upload,
//! outages and resumption after a crash, back-pressure, the read-through
//! cache, `where`, and that credentials never leak.
//!
//! Servers come from `scripts/ci-servers-deps.sh`; a missing server fails the
//! test (never skips it silently).

mod common;

use std::time::{Duration, Instant};

use common::servers::{free_port, http_request, S3Server, SftpServer, WebdavServer};
use common::*;

const SECRET: &str = "s3cr3t-never-printed-7f3a";

fn add_webdav(
    v: &TestVault,
    dav: &WebdavServer,
    name: &str,
    pw: &std::path::Path,
    location: &str,
) -> Run {
    v.tresor_cmd(
        &["backend", "add", name],
        &[
            "--webdav",
            &dav.endpoint,
            "--username",
            &dav.username,
            "--password-file",
            pw.to_str().unwrap(),
            "--location",
            location,
            "--operator",
            "Example GmbH",
            "--operator-country",
            location,
        ],
        false,
    )
}

fn sync(v: &TestVault, timeout_s: u32) -> Run {
    v.tresor_cmd(&["sync"], &["--timeout", &timeout_s.to_string()], true)
}

fn status(v: &TestVault) -> serde_json::Value {
    let run = v.tresor_cmd(&["status"], &["--json"], true).ok();
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("status --json: {e}: {run}"))
}

fn backend_status<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["sync"]["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in status: {s}"))
}

/// Writes a small tree plus one larger file; returns its hashes.
fn write_tree(
    v: &TestVault,
    seed: u64,
    big: u64,
) -> std::collections::BTreeMap<std::path::PathBuf, blake3::Hash> {
    let d = v.path("docs/sub");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..20 {
        write_random_file(&d.join(format!("note-{i}.txt")), seed + i, 3000 + i * 100);
    }
    write_random_file(&v.path("big.bin"), seed + 100, big);
    tree_hashes(&v.mnt)
}

#[test]
fn presets_record_location_and_operator_law_separately() {
    let v = TestVault::new_unchecked();
    let run = v
        .tresor(&["backend".as_ref(), "presets".as_ref(), "--json".as_ref()])
        .ok();
    let presets: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert!(presets.len() >= 20, "only {} presets", presets.len());
    let find = |n: &str| {
        presets
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("preset {n} missing"))
    };
    let aws = find("aws-eu-central-1");
    assert_eq!(aws["location"], "DE");
    assert!(aws["jurisdictions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j == "US"));
    assert_eq!(find("hetzner-hel1")["location"], "FI");
    assert_eq!(find("hetzner-fsn1")["operator_country"], "DE");
    assert!(!find("wasabi-eu-central-2")["warning"]
        .as_str()
        .unwrap()
        .is_empty());
    for p in [
        "ionos-de",
        "stackit-eu01",
        "tcloud-eu-de",
        "strato-hidrive",
        "ovh-gra",
        "scaleway-fr-par",
        "upcloud-europe-1",
        "exoscale-de-fra-1",
        "koofr",
        "backblaze-eu-central-003",
        "cloudflare-r2-eu",
        "gcs-europe-west3",
        "hetzner-storagebox-sftp",
    ] {
        find(p);
    }
    // The table form names the same facts.
    let table = v.tresor(&["backend".as_ref(), "presets".as_ref()]).ok();
    assert!(table.stdout.contains("aws-eu-central-1") && table.stdout.contains("CLOUD Act"));
}

#[test]
fn policy_refuses_violations_naming_backend_and_rule() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("policy");
    // The default policy holds for a local vault.
    let show = v.tresor_cmd(&["policy", "show"], &[], false).ok();
    assert!(show.stdout.contains("satisfied"), "{show}");
    v.tresor_cmd(
        &["policy", "set"],
        &["--deny-operator-country", "US"],
        false,
    )
    .ok();
    // A backend operated from the US is refused at add time.
    let run = v.add_s3(&s3, "usa", "DE", "US").failed();
    assert!(
        run.stderr.contains("usa") && run.stderr.contains("US"),
        "{run}"
    );
    v.add_s3(&s3, "frankfurt", "DE", "DE").ok();
    // More copies than conforming backends: refused, naming the rule.
    let run = v
        .tresor_cmd(&["policy", "set"], &["--copies", "2"], false)
        .failed();
    assert!(
        run.stderr.contains("2 copies") && run.stderr.contains("frankfurt"),
        "{run}"
    );
    // Only Finland allowed: the DE backend breaks it.
    let run = v
        .tresor_cmd(&["policy", "set"], &["--allow-location", "FI"], false)
        .failed();
    assert!(
        run.stderr.contains("frankfurt") && run.stderr.contains("FI"),
        "{run}"
    );
    v.tresor_cmd(
        &["policy", "set"],
        &["--require-location", "DE", "--allow-location", "EU"],
        false,
    )
    .ok();
    // A config edited by hand to break the policy: mount refuses.
    let cfg_path = v.vault.join("config.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, cfg.replace("copies = 1", "copies = 3")).unwrap();
    let run = v.try_mount_at(&v.mnt.clone());
    assert!(!run.success(), "mount must refuse: {run}");
    assert!(
        run.stderr.contains("3 copies") && run.stderr.contains("frankfurt"),
        "{run}"
    );
    std::fs::write(&cfg_path, cfg).unwrap();
    v.mount();
    std::fs::write(v.path("x"), b"hello").unwrap();
    v.unmount();
}

#[test]
fn s3_write_back_sync_where_and_read_through_cache() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("vault");
    v.add_s3(&s3, "s3de", "DE", "DE").ok();
    let list = v.tresor_cmd(&["backend", "list"], &[], false).ok();
    assert!(
        list.stdout.contains("s3de") && list.stdout.contains("DE"),
        "{list}"
    );
    v.tresor_cmd(&["backend", "test", "s3de"], &[], false).ok();
    v.mount();
    let hashes = write_tree(&v, 1, 48 * MIB);
    let run = sync(&v, 120).ok();
    assert!(run.stdout.contains("synced"), "{run}");
    let st = status(&v);
    let b = backend_status(&st, "s3de");
    assert_eq!(b["bytes_pending"], 0, "{st}");
    assert_eq!(b["location"], "DE");
    assert!(b["last_error"].is_null(), "{st}");
    assert_eq!(st["sync"]["policy"]["compliant"], true);
    let packs = st["packs"].as_u64().unwrap() as usize;
    let keys = s3.list_keys();
    let pack_keys = keys.iter().filter(|k| k.contains("/packs/")).count();
    assert_eq!(pack_keys, packs, "bucket keys: {keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with("keys/tresor.key")),
        "{keys:?}"
    );
    // No file name reaches the provider.
    assert!(
        !keys.iter().any(|k| k.contains("note") || k.contains("big")),
        "{keys:?}"
    );
    // where: a file and a directory are fully on the backend.
    let w = v
        .tresor_cmd(
            &["where"],
            &["--json", v.path("big.bin").to_str().unwrap()],
            true,
        )
        .ok();
    let w: serde_json::Value = serde_json::from_str(w.stdout.trim()).unwrap();
    assert_eq!(w["data_bytes"], 48 * MIB);
    assert_eq!(w["backends"][0]["pending_percent"], 0.0, "{w}");
    assert_eq!(w["backends"][0]["location"], "DE");
    let w = v.tresor_cmd(&["where"], &["--json", "docs"], true).ok();
    let w: serde_json::Value = serde_json::from_str(w.stdout.trim()).unwrap();
    assert!(w["data_bytes"].as_u64().unwrap() > 60_000, "{w}");
    // Evict everything, remount with a cold cache: every byte comes back
    // from S3 and is authenticated.
    let run = v.tresor_cmd(&["cache", "clear"], &[], true).ok();
    assert!(run.stdout.contains("in the local store:  0 B"), "{run}");
    v.unmount();
    assert_eq!(
        std::fs::read_dir(v.vault.join("store/packs"))
            .map(|d| d
                .flat_map(|e| std::fs::read_dir(e.unwrap().path()).unwrap())
                .count())
            .unwrap_or(0),
        0,
        "cache clear must leave no pack in the local store"
    );
    v.mount();
    assert_eq!(tree_hashes(&v.mnt), hashes);
    // Cold reads were ranged GETs; the packs come back into the cache in
    // the background.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = v.tresor_cmd(&["cache", "show"], &["--json"], true).ok();
        let c: serde_json::Value = serde_json::from_str(c.stdout.trim()).unwrap();
        if c["local_bytes"].as_u64().unwrap() >= 48 * MIB {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read-through never refilled the cache: {c}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    v.unmount();
}

/// What the provider sees of 5,000 small files and a few large ones:
/// no names, no object with a file's size, few objects.
#[test]
fn provider_sees_no_names_no_file_sizes_and_few_objects() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("leak");
    v.add_s3(&s3, "leak", "DE", "DE").ok();
    v.mount();
    let mut sizes = std::collections::HashSet::new();
    let mut names = Vec::new();
    for d in 0..50 {
        let dir_name = format!("dossier-{d:02}");
        let dir = v.path(&dir_name);
        std::fs::create_dir(&dir).unwrap();
        names.push(dir_name);
        for f in 0..100 {
            let len = 200 + ((d * 100 + f) * 37 % 15000) as u64;
            let name = format!("bericht-{d:02}-{f:03}.txt");
            write_random_file(&dir.join(&name), (d * 1000 + f) as u64, len);
            sizes.insert(len);
            names.push(name);
        }
    }
    for (i, len) in [3 * MIB + 17, 9 * MIB + 5, 20 * MIB].iter().enumerate() {
        let name = format!("video-{i}.mp4");
        write_random_file(&v.path(&name), 90_000 + i as u64, *len);
        sizes.insert(*len);
        names.push(name);
    }
    sync(&v, 300).ok();
    let keys = s3.list_keys();
    let files = 5003;
    // Index snapshot blocks scale with the index (16 KiB each), not with
    // the data; they are counted separately.
    let data_objects = keys.iter().filter(|k| !k.contains("/index/")).count();
    eprintln!(
        "provider view: {data_objects} data objects for {files} files ({:.2} %), plus {} index snapshot objects",
        100.0 * data_objects as f64 / files as f64,
        keys.len() - data_objects
    );
    assert!(
        data_objects * 100 < files,
        "{data_objects} objects for {files} files",
    );
    for k in &keys {
        for n in &names {
            assert!(
                !k.contains(n.as_str()),
                "object key {k} contains the name {n}"
            );
        }
        let body = s3.get_object(k).expect("listed object readable");
        // The key file (a few hundred bytes of wrapped keys, the same for
        // any content) may coincide with some small file's size; data
        // objects may not.
        if k.ends_with(".pack") {
            assert!(
                !sizes.contains(&(body.len() as u64)),
                "object {k} has the size of a written file"
            );
        }
        for n in names.iter().take(20) {
            assert!(
                !body.windows(n.len()).any(|w| w == n.as_bytes()),
                "object {k} contains the name {n}"
            );
        }
    }
    v.unmount();
}

/// `--copies 2` over two backends: both hold every pack.
#[test]
fn two_backends_with_two_copies_both_hold_every_pack() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let a = S3Server::start("copy-a");
    let dav = WebdavServer::start();
    v.add_s3(&a, "a", "DE", "DE").ok();
    let pw = v.scratch.join("dav.pw");
    std::fs::write(&pw, format!("{}\n", dav.password)).unwrap();
    add_webdav(&v, &dav, "b", &pw, "FI").ok();
    v.tresor_cmd(
        &["policy", "set"],
        &[
            "--copies",
            "2",
            "--require-location",
            "DE",
            "--allow-location",
            "EU",
        ],
        false,
    )
    .ok();
    v.mount();
    let hashes = write_tree(&v, 11, 40 * MIB);
    sync(&v, 300).ok();
    let st = status(&v);
    let packs = st["packs"].as_u64().unwrap() as usize;
    assert!(packs >= 3, "{st}");
    assert_eq!(
        a.list_keys()
            .iter()
            .filter(|k| k.ends_with(".pack"))
            .count(),
        packs
    );
    let on_dav = files_under(&dav.root_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".pack"))
        .count();
    assert_eq!(on_dav, packs);
    for name in ["a", "b"] {
        assert_eq!(backend_status(&st, name)["bytes_pending"], 0, "{st}");
    }
    v.tresor_cmd(&["cache", "clear"], &[], true).ok();
    v.unmount();
    v.mount();
    assert_eq!(tree_hashes(&v.mnt), hashes);
    v.unmount();
}

/// Wrong credentials: `backend add` says so and saves nothing; credentials
/// that go bad later leave writes local (nothing lost) and show in status.
#[test]
fn wrong_credentials_give_a_clear_error_and_lose_nothing() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let dav = WebdavServer::start();
    let bad = v.scratch.join("bad.pw");
    std::fs::write(&bad, "not-the-password\n").unwrap();
    let good = v.scratch.join("good.pw");
    std::fs::write(&good, format!("{}\n", dav.password)).unwrap();
    let add = |pw: &std::path::Path| add_webdav(&v, &dav, "dav", pw, "DE");
    let run = add(&bad).failed();
    assert!(
        run.stderr.contains("dav") && run.stderr.contains("connection test"),
        "{run}"
    );
    assert!(
        run.stderr.contains("wrong credentials") && run.stderr.contains("401"),
        "{run}"
    );
    assert!(
        !v.vault.join("config.toml").exists(),
        "nothing saved after a failed add"
    );
    add(&good).ok();
    // The password goes bad (rotated on the server side, say).
    let creds = v.vault.join("credentials.toml");
    let text = std::fs::read_to_string(&creds).unwrap();
    std::fs::write(&creds, text.replace(&dav.password, "rotated-away")).unwrap();
    v.mount();
    let hashes = write_tree(&v, 21, 8 * MIB);
    let run = sync(&v, 5).failed();
    assert!(
        run.stderr.contains("dav") && run.stderr.contains("pending"),
        "{run}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(&v);
        if let Some(e) = backend_status(&st, "dav")["last_error"].as_str() {
            assert!(e.contains("wrong credentials") && e.contains("401"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no error in status: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }
    v.unmount();
    // Fixed credentials: everything uploads, nothing was lost.
    std::fs::write(&creds, text).unwrap();
    v.mount();
    sync(&v, 120).ok();
    v.tresor_cmd(&["cache", "clear"], &[], true).ok();
    v.unmount();
    v.mount();
    assert_eq!(tree_hashes(&v.mnt), hashes);
    v.unmount();
}

#[test]
fn outage_keeps_writes_local_and_uploads_resume_after_crash() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let mut s3 = S3Server::start("outage");
    v.add_s3(&s3, "flaky", "DE", "DE").ok();
    s3.stop(); // connections refused from now on
    v.mount();
    let start = Instant::now();
    let hashes = write_tree(&v, 7, 24 * MIB);
    let run = Command::new("sync").status().unwrap();
    assert!(run.success());
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "writes must not wait for the network"
    );
    // sync gives up after its timeout, naming the backend and what is pending.
    let run = sync(&v, 3).failed();
    assert!(
        run.stderr.contains("flaky") && run.stderr.contains("pending"),
        "{run}"
    );
    // status shows what is pending and, once the per-request retries are
    // exhausted (a few seconds), the last error.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = status(&v);
        let b = backend_status(&st, "flaky");
        assert!(b["bytes_pending"].as_u64().unwrap() > 24 * MIB, "{st}");
        if let Some(e) = b["last_error"].as_str() {
            assert!(e.contains("connection refused to 127.0.0.1:"), "{e}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the error: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The daemon dies with everything pending; the queue is in the index.
    v.kill9();
    s3.restart();
    v.mount();
    sync(&v, 120).ok();
    let st = status(&v);
    assert_eq!(backend_status(&st, "flaky")["bytes_pending"], 0, "{st}");
    let packs = st["packs"].as_u64().unwrap() as usize;
    assert_eq!(
        s3.list_keys()
            .iter()
            .filter(|k| k.contains("/packs/"))
            .count(),
        packs
    );
    assert_eq!(tree_hashes(&v.mnt), hashes);
    v.unmount();
}

use std::process::Command;

#[test]
fn backlog_over_cache_budget_slows_writers_without_errors() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let mut s3 = S3Server::start("pressure");
    v.add_s3(&s3, "slow", "DE", "DE").ok();
    v.tresor_cmd(&["cache", "set-size"], &["4M"], false).ok();
    s3.stop();
    v.mount();
    let target = v.path("stream.bin");
    let total = 96 * MIB;
    let writer = std::thread::spawn(move || {
        write_random_file(&target, 42, total);
    });
    // The writer is held back while the backend is down (bounded wait for
    // it to get stuck: the file stops growing well short of its size).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    let mut stable_since = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "writer never slowed down");
        std::thread::sleep(Duration::from_millis(500));
        let size = std::fs::metadata(v.path("stream.bin"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            size < total,
            "the whole file went through with the backend down and a 4 MiB budget"
        );
        if size != last {
            last = size;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(!writer.is_finished());
    // Backend back: the writer finishes, nothing was lost.
    s3.restart();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !writer.is_finished() {
        assert!(
            Instant::now() < deadline,
            "writer did not finish after the backend came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.join().expect("the writer got no error");
    sync(&v, 120).ok();
    assert_content(&v.path("stream.bin"), &random_bytes(42, total as usize));
    v.unmount();
}

/// More writers wait for back-pressure than the old four FUSE request
/// threads: `ls -l` and `stat` of the mount still answer.
#[test]
fn ls_answers_while_writers_wait_for_back_pressure() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let mut s3 = S3Server::start("blocked");
    v.add_s3(&s3, "down", "DE", "DE").ok();
    v.tresor_cmd(&["cache", "set-size"], &["4M"], false).ok();
    s3.stop();
    v.mount();
    const WRITERS: u64 = 8;
    let total = 32 * MIB;
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let target = v.path(format!("w{i}.bin"));
            std::thread::spawn(move || write_random_file(&target, 100 + i, total))
        })
        .collect();
    // Bounded wait until every writer is stuck (no file grows for 4 s).
    // Sizes come from a bounded `stat` (run_bounded panics on timeout): with
    // the old 4 request threads even that hung, which must fail, not hang.
    let deadline = Instant::now() + Duration::from_secs(90);
    let sizes = || -> String {
        let mut cmd = Command::new("stat");
        cmd.args(["-c", "%s"]);
        for i in 0..WRITERS {
            cmd.arg(v.path(format!("w{i}.bin")));
        }
        run_bounded(&mut cmd, Duration::from_secs(30)).stdout
    };
    let mut last = sizes();
    let mut stable_since = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "writers never got stuck");
        std::thread::sleep(Duration::from_millis(500));
        let now = sizes();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(writers.iter().all(|w| !w.is_finished()), "sizes {last:?}");
    let ls = run_bounded(
        Command::new("ls").arg("-l").arg(&v.mnt),
        Duration::from_secs(30),
    );
    assert!(ls.success(), "ls hung or failed while writers wait: {ls}");
    assert!(ls.stdout.contains("w7.bin"), "{ls}");
    let stat = run_bounded(
        Command::new("stat").arg(v.path("w0.bin")),
        Duration::from_secs(30),
    );
    assert!(stat.success(), "{stat}");
    s3.restart();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !writers.iter().all(|w| w.is_finished()) {
        assert!(Instant::now() < deadline, "writers did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    for w in writers {
        w.join().expect("a writer got an error");
    }
    v.unmount();
}

fn round_trip_via(v: &mut TestVault, name: &str) {
    v.mount();
    let hashes = write_tree(v, 99, 20 * MIB);
    sync(v, 120).ok();
    let st = status(v);
    assert_eq!(backend_status(&st, name)["bytes_pending"], 0, "{st}");
    v.tresor_cmd(&["cache", "clear"], &[], true).ok();
    v.unmount();
    v.mount();
    assert_eq!(tree_hashes(&v.mnt), hashes);
    v.unmount();
}

#[test]
fn webdav_backend_round_trip() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let dav = WebdavServer::start();
    let pw = v.scratch.join("dav.pw");
    std::fs::write(&pw, format!("{}\n", dav.password)).unwrap();
    add_webdav(&v, &dav, "dav", &pw, "DE").ok();
    round_trip_via(&mut v, "dav");
    let on_server = files_under(&dav.root_dir);
    assert!(
        on_server
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".pack")),
        "{on_server:?}"
    );
}

#[test]
fn sftp_backend_round_trip() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let sftp = SftpServer::start();
    v.add_sftp_box(&sftp).ok();
    let root = sftp.root_dir.join("tresor");
    round_trip_via(&mut v, "box");
    assert!(files_under(&root)
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".pack")));
}

#[test]
fn credentials_stay_in_a_private_file_and_out_of_output_and_logs() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("creds");
    let keyfile = v.scratch.join("secret");
    std::fs::write(&keyfile, format!("{SECRET}\n")).unwrap();
    // moto accepts any key pair.
    let run = v
        .tresor_cmd(
            &["backend", "add", "c"],
            &[
                "--s3",
                "--endpoint",
                &s3.endpoint,
                "--region",
                &s3.region,
                "--bucket",
                &s3.bucket,
                "--access-key-id",
                "AKIDEXAMPLE",
                "--secret-access-key-file",
                keyfile.to_str().unwrap(),
                "--location",
                "DE",
                "--operator",
                "X",
                "--operator-country",
                "DE",
            ],
            false,
        )
        .ok();
    let creds = v.vault.join("credentials.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&creds).unwrap().contains(SECRET));
    assert!(!std::fs::read_to_string(v.vault.join("config.toml"))
        .unwrap()
        .contains(SECRET));
    v.mount();
    write_tree(&v, 5, MIB);
    let mut outputs = vec![run.stdout, run.stderr];
    for cmd in [
        &["backend", "list"][..],
        &["status"],
        &["sync"],
        &["cache", "show"],
        &["policy", "show"],
    ] {
        let r = v.tresor_cmd(cmd, &[], true);
        outputs.push(r.stdout);
        outputs.push(r.stderr);
    }
    v.unmount();
    outputs.push(std::fs::read_to_string(v.log_path()).unwrap());
    for o in outputs {
        assert!(!o.contains(SECRET), "secret leaked: {o}");
    }
    // A world-readable credentials file is refused with advice.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = v.tresor_cmd(&["backend", "test", "c"], &[], false).failed();
    assert!(run.stderr.contains("chmod 600"), "{run}");
}

/// The only stderr line of a failed command: short, containing `must`, and
/// without the library's context dump, HTML page or log record.
fn assert_one_short_line(run: &Run, must: &[&str]) {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one line: {run}");
    assert!(
        lines[0].len() <= 300,
        "{} characters: {run}",
        lines[0].len()
    );
    for m in must {
        assert!(lines[0].contains(m), "no {m:?} in: {run}");
    }
    for bad in [
        "<html", "<title", "Context", "context:", "Parts {", "ERROR", "opendal",
    ] {
        assert!(!run.stderr.contains(bad), "{bad:?} in: {run}");
    }
}

/// Wrong S3 credentials, a wrong WebDAV password and a closed port each
/// give one short line naming the backend and the endpoint and saying what
/// is wrong, from `backend add` and from `backend test`.
#[test]
fn backend_errors_are_one_short_line_that_says_what_is_wrong() {
    let Some(v) = TestVault::new() else {
        return;
    };
    // moto checks credentials once its auth is switched on; it knows none.
    let s3 = S3Server::start("auth");
    let r = http_request(
        s3.port,
        "POST",
        "/moto-api/reset-auth",
        &[("Content-Type", "text/plain")],
        b"0",
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s3_at = s3.endpoint.trim_start_matches("http://").to_string();
    let run = v.add_s3(&s3, "s3x", "DE", "DE").failed();
    assert_one_short_line(&run, &["backend s3x", "wrong credentials", &s3_at, "403"]);

    let dav = WebdavServer::start();
    let bad = v.scratch.join("bad.pw");
    std::fs::write(&bad, "not-the-password\n").unwrap();
    let dav_at = dav.endpoint.trim_start_matches("http://").to_string();
    let run = add_webdav(&v, &dav, "dav", &bad, "DE").failed();
    assert_one_short_line(&run, &["backend dav", "wrong credentials", &dav_at, "401"]);

    // Nothing listens on `port`: saved untested, then `backend test`.
    let port = free_port();
    let key = v.scratch.join("closed.secret");
    std::fs::write(&key, "whatever\n").unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    v.tresor_cmd(
        &["backend", "add", "closed"],
        &[
            "--s3",
            "--endpoint",
            &endpoint,
            "--bucket",
            "b",
            "--access-key-id",
            "AKIAEXAMPLE",
            "--secret-access-key-file",
            key.to_str().unwrap(),
            "--location",
            "DE",
            "--operator",
            "Nobody",
            "--operator-country",
            "DE",
            "--no-test",
        ],
        false,
    )
    .ok();
    let run = v
        .tresor_cmd(&["backend", "test", "closed"], &[], false)
        .failed();
    assert_one_short_line(
        &run,
        &["closed", &format!("connection refused to 127.0.0.1:{port}")],
    );
}

/// After an outage the retry wait never exceeds the documented 60 s, and
/// an explicit `tresor sync` says that a backend waits for a retry (once
/// per wait, not a repeated "0 of N uploaded") and retries it at once.
#[test]
fn sync_during_a_retry_wait_says_so_and_retries_now() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let mut s3 = S3Server::start("retry");
    v.add_s3(&s3, "flaky", "DE", "DE").ok();
    v.mount();
    s3.stop();
    write_tree(&v, 31, 2 * MIB);
    // Wait until the backoff has grown to a wait of at least 4 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(&v);
        let b = backend_status(&st, "flaky");
        if let Some(wait) = b["retry_in_s"].as_f64() {
            assert!(wait <= 60.0, "retry wait of {wait} s: {st}");
            if wait >= 4.0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the retry wait never grew: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still down: sync retries now, fails again, and says that it waits.
    let run = sync(&v, 6).failed();
    assert!(
        run.stderr.contains("backend flaky waits for a retry in")
            && run.stderr.contains("connection refused"),
        "{run}"
    );
    let repeats = run.stderr.matches("0 of ").count();
    assert!(
        repeats <= 1,
        "a line without news repeated {repeats} times: {run}"
    );
    assert!(
        v.log_tail().contains("retrying now for `tresor sync`"),
        "{}",
        v.log_tail()
    );
    // Let the wait grow to at least 15 s, then bring the server back: a
    // sync with an 8 s timeout only succeeds if it retries at once.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = status(&v);
        if let Some(w) = backend_status(&st, "flaky")["retry_in_s"].as_f64() {
            assert!(w <= 60.0, "retry wait of {w} s: {st}");
            if w >= 15.0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no long retry wait: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    s3.restart();
    let run = sync(&v, 8).ok();
    assert!(run.stdout.contains("synced"), "{run}");
    v.unmount();
}
