//! Sovereignty facts against a real S3 server on loopback (moto): presets
//! carry three separate facts (data location, operator's seat, ultimate
//! parent's seat) with a source and a date each, and the two law rules of
//! the placement policy decide differently for an operator seated in the EU
//! whose parent is not — and say which rule and which company decided.

mod common;

use common::servers::S3Server;
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
