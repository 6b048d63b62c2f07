//! Sovereignty facts against a real S3 server on loopback (moto): presets
//! carry three separate facts (data location, operator's seat, ultimate
//! parent's seat) with a source and a date each, and the two law rules of
//! the placement policy decide differently for an operator seated in the EU
//! whose parent is not — and say which rule and which company decided.

mod common;

use std::time::Duration;

use common::servers::{S3Server, SftpServer, WebdavServer};
use common::*;

fn add_esc(v: &TestVault, s3: &S3Server, name: &str) -> Run {
    let keyfile = v.scratch.join(format!("{name}.secret"));
    std::fs::write(&keyfile, format!("{}\n", s3.secret_access_key)).unwrap();
    v.tresor_cmd(
        &["backend", "add", name],
        &[
            "--preset",
            "aws-eusc-de-east-1",
            "--endpoint",
            &s3.endpoint,
            "--region",
            &s3.region,
            "--bucket",
            &s3.bucket,
            "--access-key-id",
            &s3.access_key_id,
            "--secret-access-key-file",
            keyfile.to_str().unwrap(),
        ],
        false,
    )
}

#[test]
fn parent_law_refuses_what_operator_law_accepts_and_both_say_why() {
    let Some(v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("sovereign");

    // The strict rule: the operator's or its ultimate parent's seat.
    v.tresor_cmd(&["policy", "set"], &["--deny-parent-law", "US"], false)
        .ok();
    let run = add_esc(&v, &s3, "esc").failed();
    for needle in [
        "deny_parent_law = [US]",
        "AWS European Sovereign Cloud GmbH",
        "Amazon.com, Inc.",
    ] {
        assert!(run.stderr.contains(needle), "missing {needle:?}: {run}");
    }

    // The old flag is the strict rule, and `policy show` says so in words.
    v.tresor_cmd(
        &["policy", "set"],
        &["--reset", "--deny-operator-country", "US"],
        false,
    )
    .ok();
    let show = v.tresor_cmd(&["policy", "show"], &[], false).ok();
    assert!(
        show.stdout.contains("deny parent law: US")
            && show.stdout.contains("deny operator law: (none)"),
        "{show}"
    );
    add_esc(&v, &s3, "esc").failed();

    // The operator rule looks only at the contracting company's seat.
    v.tresor_cmd(
        &["policy", "set"],
        &["--reset", "--deny-operator-law", "US"],
        false,
    )
    .ok();
    let run = add_esc(&v, &s3, "esc").ok();
    for needle in [
        "meets the rule deny_operator_law = [US]",
        "AWS European Sovereign Cloud GmbH",
        "Amazon.com, Inc.",
        "does not look at owners",
    ] {
        assert!(run.stdout.contains(needle), "missing {needle:?}: {run}");
    }
    // Now that a backend with a US parent is configured, the strict rule
    // cannot be switched on.
    let run = v
        .tresor_cmd(&["policy", "set"], &["--deny-parent-law", "US"], false)
        .failed();
    assert!(run.stderr.contains("Amazon.com, Inc."), "{run}");

    // status shows all three facts on the backend's line.
    let st = v.tresor_cmd(&["status"], &[], true).ok();
    let line = st
        .stdout
        .lines()
        .find(|l| l.contains("esc"))
        .unwrap_or_else(|| panic!("no esc line: {st}"));
    assert!(
        line.contains("data in DE")
            && line.contains("operator AWS European Sovereign Cloud GmbH, Potsdam (DE)")
            && line.contains("parent Amazon.com, Inc., Seattle (US)"),
        "{line}"
    );
    let js = v.tresor_cmd(&["status"], &["--json"], true).ok();
    let js: serde_json::Value = serde_json::from_str(js.stdout.trim()).unwrap();
    let b = &js["sync"]["backends"][0];
    assert_eq!(b["parent_country"], "US", "{js}");
    assert_eq!(b["operator_country"], "DE", "{js}");
}

#[test]
fn every_preset_names_source_and_date_of_each_fact() {
    let v = TestVault::new_unchecked();
    let run = v
        .tresor(&["backend".as_ref(), "presets".as_ref(), "--json".as_ref()])
        .ok();
    let presets: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    for p in &presets {
        for fact in ["location", "operator", "parent"] {
            let f = &p["sources"][fact];
            assert!(
                !f["source"].as_str().unwrap_or("").is_empty(),
                "{}: {fact} has no source",
                p["name"]
            );
            if p["name"] != "nextcloud" {
                assert_eq!(f["checked"].as_str().unwrap_or("").len(), 10, "{p}");
            }
        }
    }
    for name in [
        "aws-eusc-de-east-1",
        "tcloud-eu-de",
        "infomaniak-swiss-backup",
        "impossible-cloud-eu-central-2",
        "cubbit-eu-west-1",
        "storj-gateway",
    ] {
        assert!(presets.iter().any(|p| p["name"] == name), "missing {name}");
    }
    let verbose = v
        .tresor(&["backend".as_ref(), "presets".as_ref(), "--verbose".as_ref()])
        .ok();
    let checked_lines = verbose.stdout.matches(" checked 20").count();
    assert_eq!(checked_lines, 3 * (presets.len() - 1), "{verbose}");
    assert!(verbose.stdout.contains("computerweekly.de 2026-01-22"));
}

fn add_s3_bucket(v: &TestVault, s3: &S3Server, name: &str, bucket: &str) -> Run {
    let keyfile = v.scratch.join(format!("{name}.secret"));
    std::fs::write(&keyfile, format!("{}\n", s3.secret_access_key)).unwrap();
    v.tresor_cmd(
        &["backend", "add", name],
        &[
            "--s3",
            "--endpoint",
            &s3.endpoint,
            "--region",
            &s3.region,
            "--bucket",
            bucket,
            "--access-key-id",
            &s3.access_key_id,
            "--secret-access-key-file",
            keyfile.to_str().unwrap(),
            "--location",
            "DE",
            "--operator",
            "Loopback Storage GmbH",
            "--operator-country",
            "DE",
        ],
        false,
    )
}

/// The capability probe at `backend add` against real servers: moto honours
/// conditional writes and has Object Lock on a bucket created with it;
/// wsgidav has neither; `status` shows the difference, and `backend test`
/// probes again.
#[test]
fn capabilities_are_probed_per_backend_and_shown_in_status() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("plain");
    s3.create_bucket_with_object_lock("locked");
    add_s3_bucket(&v, &s3, "s3plain", "plain").ok();
    let run = add_s3_bucket(&v, &s3, "s3locked", "locked").ok();
    assert!(
        run.stdout.contains("capabilities: create-if-absent yes"),
        "{run}"
    );

    let dav = WebdavServer::start();
    let pw = v.scratch.join("dav.pw");
    std::fs::write(&pw, format!("{}\n", dav.password)).unwrap();
    v.tresor_cmd(
        &["backend", "add", "dav"],
        &[
            "--webdav",
            &dav.endpoint,
            "--username",
            &dav.username,
            "--password-file",
            pw.to_str().unwrap(),
            "--location",
            "DE",
            "--operator",
            "Example GmbH",
            "--operator-country",
            "DE",
        ],
        false,
    )
    .ok();

    let sftp = SftpServer::start();
    v.add_sftp_box(&sftp).ok();

    let js = v.tresor_cmd(&["status"], &["--json"], true).ok();
    let js: serde_json::Value = serde_json::from_str(js.stdout.trim()).unwrap();
    let caps = |name: &str| {
        js["sync"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {js}"))["capabilities"]
            .clone()
    };
    let state = |c: &serde_json::Value, k: &str| c[k]["state"].as_str().unwrap_or("").to_string();
    let (plain, locked, dav_caps, sftp_caps) =
        (caps("s3plain"), caps("s3locked"), caps("dav"), caps("box"));
    for c in [&plain, &locked] {
        assert_eq!(state(c, "create_if_absent"), "yes", "{c}");
        assert_eq!(state(c, "replace_if_match"), "yes", "{c}");
        assert_eq!(state(c, "ranged_read"), "yes", "{c}");
    }
    assert_eq!(state(&locked, "object_lock"), "yes", "{locked}");
    assert_eq!(state(&plain, "object_lock"), "no", "{plain}");
    assert_eq!(state(&dav_caps, "create_if_absent"), "no", "{dav_caps}");
    assert_eq!(state(&dav_caps, "object_lock"), "no", "{dav_caps}");
    assert_eq!(state(&sftp_caps, "object_lock"), "no", "{sftp_caps}");
    assert_eq!(state(&sftp_caps, "replace_if_match"), "no", "{sftp_caps}");
    assert_eq!(state(&dav_caps, "ranged_read"), "yes", "{dav_caps}");
    // The human form shows it per backend.
    let st = v.tresor_cmd(&["status"], &[], true).ok();
    assert!(
        st.stdout.contains("object lock yes") && st.stdout.contains("create-if-absent no"),
        "{st}"
    );
    // backend test probes again and prints each verdict.
    let t = v
        .tresor_cmd(&["backend", "test", "s3locked"], &[], false)
        .ok();
    assert!(
        t.stdout.contains("object lock") && t.stdout.contains("yes"),
        "{t}"
    );
    // No probe object is left behind.
    assert!(
        !s3.list_keys().iter().any(|k| k.contains("probe/")),
        "{:?}",
        s3.list_keys()
    );
    v.env.clear();
}

/// `where --report` renders in a real headless browser (Debian's chromium):
/// the DOM names every backend, the policy verdicts and what is pending, and
/// the screenshot shows the diagram's bars (green: held, amber: pending).
#[test]
fn report_renders_in_headless_chromium_and_names_every_backend() {
    require_tool("chromium", "chromium");
    require_tool("convert", "imagemagick");
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("report");
    v.add_s3(&s3, "frankfurt", "DE", "DE").ok();
    add_esc(&v, &s3, "sovereign").ok();
    v.mount();
    write_random_file(&v.path("akte.bin"), 7, 3 * MIB);
    std::fs::write(v.path("note.txt"), b"hello").unwrap();
    let html = v.scratch.join("report.html");
    let run = v
        .tresor_cmd(&["where"], &["--report", html.to_str().unwrap()], false)
        .ok();
    assert!(run.stdout.contains("2 backends"), "{run}");
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in [
        "frankfurt",
        "sovereign",
        "AWS European Sovereign Cloud GmbH",
        "Amazon.com, Inc.",
        "CLOUD Act",
        "pending",
        "<svg",
    ] {
        assert!(page.contains(needle), "report lacks {needle:?}");
    }

    let profile = v.scratch.join("chromium-profile");
    let url = format!("file://{}", html.display());
    let chromium = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url);
        run_bounded(&mut cmd, Duration::from_secs(120))
    };
    let dom = chromium(&["--dump-dom"]).ok();
    for name in ["frankfurt", "sovereign", "local store"] {
        assert!(dom.stdout.contains(name), "rendered DOM lacks {name:?}");
    }
    let shot = v.scratch.join("report.png");
    chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(shot.is_file(), "chromium wrote no screenshot");
    let info = run_tool(
        "convert",
        &[
            shot.as_os_str(),
            "-format".as_ref(),
            "%w %h %k".as_ref(),
            "info:".as_ref(),
        ],
    )
    .ok();
    let dims: Vec<u64> = info
        .stdout
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(&dims[..2], &[1200, 900], "{info}");
    assert!(
        dims[2] > 50,
        "a near-blank screenshot ({} colours)",
        dims[2]
    );
    let hist = run_tool(
        "convert",
        &[
            shot.as_os_str(),
            "-format".as_ref(),
            "%c".as_ref(),
            "histogram:info:-".as_ref(),
        ],
    )
    .ok();
    let hist = hist.stdout.to_ascii_uppercase();
    assert!(
        hist.contains("#F5D99A"),
        "the pending (amber) bar is not on screen"
    );
    v.unmount();
}
