//! `tresor where --report FILE.html [PATH]`: the sovereignty report on one
//! page. People would rather look at this than read `where` and `status`:
//! a diagram of where every byte is (the local store and each backend, with
//! the data's country, the operator and its seat, the ultimate parent and
//! its seat), the laws that reach each location, the placement policy and
//! whether each backend meets it, and what is still pending upload.
//!
//! One self-contained HTML file with inline CSS and SVG: no scripts, no
//! fonts or images from the network, so it opens offline and can be mailed
//! to a data-protection officer. The facts come from the same JSON answer as
//! `where` (daemon or offline) and from `config.toml`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::backend::{daemon_or_offline, paths_of};
use crate::cli::VaultArgs;
use crate::mount::control::Request;
use crate::remote::backend::VaultConfig;
use crate::remote::policy::EU_COUNTRIES;
use crate::remote::sync;

pub fn write_report(vault: &VaultArgs, path: Option<&Path>, out: &Path) -> Result<()> {
    let rel = match path {
        Some(p) => super::where_cmd::vault_relative(p)?,
        None => "/".to_string(),
    };
    let v = daemon_or_offline(vault, Request::Where { path: rel.clone() }, |off, cfg| {
        let idx = off.index();
        sync::where_status(cfg, &idx, rel.as_bytes())
    })?;
    let paths = paths_of(vault)?;
    let config = VaultConfig::load(&paths.root)?;
    let html = render(&v, &config);
    let out = &std::path::absolute(out)?;
    crate::vault::config::write_atomic(out, html.as_bytes(), 0o600)
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    println!(
        "wrote the sovereignty report for {} to {} ({} backends)",
        rel,
        out.display(),
        config.backends.len()
    );
    Ok(())
}

/// The laws that reach data held at `location` by an operator seated in
/// `operator` whose ultimate parent is seated in `parent`: the law of the
/// place, of the operator's seat and of the parent's seat.
pub fn laws_reaching(location: &str, operator: &str, parent: &str) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (cc, why) in [
        (location, "where the data is"),
        (operator, "the operator's seat"),
        (parent, "the parent's seat"),
    ] {
        if cc.is_empty() || seen.contains(&cc) {
            continue;
        }
        seen.push(cc);
        let law = match cc {
            "US" => "US law: CLOUD Act (data in a US company's control, wherever stored); \
                     FISA §702 (lapsed 12 Jun 2026, certifications to about Mar 2027)"
                .to_string(),
            "EU" => "EU law (GDPR) and the law of the member state holding the data".to_string(),
            "CH" => "Swiss law (FADP)".to_string(),
            "GB" => "UK law (UK GDPR, Investigatory Powers Act)".to_string(),
            c if EU_COUNTRIES.contains(&c) => format!("{c} law and EU law (GDPR)"),
            c => format!("{c} law"),
        };
        out.push(format!("{law} — {why}"));
    }
    out
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn render(v: &Value, config: &VaultConfig) -> String {
    let total = v["data_bytes"].as_u64().unwrap_or(0);
    let local = v["local_cache_bytes"].as_u64().unwrap_or(0);
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    let policy_breaks = config.policy.violations(&config.backends);
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>tresor sovereignty report: {path}</title>
<style>
body {{ font-family: "DejaVu Sans", sans-serif; margin: 24px; color: #1d2330; max-width: 1180px; }}
h1 {{ font-size: 22px; margin: 0 0 4px 0; }} h2 {{ font-size: 17px; margin: 22px 0 8px 0; }}
.sub {{ color: #5a6275; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ border: 1px solid #c9ced8; padding: 5px 7px; text-align: left; vertical-align: top; }}
th {{ background: #eef1f6; }}
.ok {{ color: #13703a; font-weight: bold; }} .bad {{ color: #b3261e; font-weight: bold; }}
.pending {{ color: #8a5a00; }}
</style></head><body>
<h1>Where is the data of <code>{path}</code>, and under whose law?</h1>
<p class="sub">tresor vault · {total} of data · {n} backend(s) · policy {policy_state}</p>
"#,
        path = esc(v["path"].as_str().unwrap_or("/")),
        total = esc(&crate::progress::human(total)),
        n = backends.len(),
        policy_state = if policy_breaks.is_empty() {
            "<span class=\"ok\">met</span>"
        } else {
            "<span class=\"bad\">NOT met</span>"
        },
    );
    h.push_str(&diagram(&backends, config, total, local));

    h.push_str("<h2>Every location, its operator, its parent and the law that reaches it</h2>\n<table>\n<tr><th>backend</th><th>data in</th><th>operator (seat)</th><th>ultimate parent (seat)</th><th>laws that reach it</th><th>holds</th><th>pending upload</th><th>policy</th></tr>\n");
    let _ = writeln!(
        h,
        "<tr><td>local store</td><td>this machine</td><td>you</td><td>—</td><td>the law where this machine is</td><td>{}</td><td>—</td><td>—</td></tr>",
        esc(&crate::progress::human(local))
    );
    for b in &backends {
        let name = b["name"].as_str().unwrap_or("");
        let cfg = config.backend(name);
        let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
        let (oc, pc) = (s("operator_country"), s("parent_country"));
        let parent = if pc.is_empty() || pc == oc {
            "none other".to_string()
        } else if s("parent").is_empty() {
            format!("({pc})")
        } else {
            format!("{} ({pc})", s("parent"))
        };
        let laws = laws_reaching(&s("location"), &oc, &pc)
            .into_iter()
            .map(|l| esc(&l))
            .collect::<Vec<_>>()
            .join("<br>");
        let verdicts = match cfg {
            Some(c) => {
                let mut lines: Vec<String> = config
                    .policy
                    .law_verdicts(c)
                    .into_iter()
                    .map(|(refused, m)| {
                        format!(
                            "<span class=\"{}\">{}</span>",
                            if refused { "bad" } else { "ok" },
                            esc(&m)
                        )
                    })
                    .collect();
                let breaks = config.policy.backend_violations(c);
                if breaks.is_empty() && lines.is_empty() {
                    lines.push("<span class=\"ok\">meets every rule</span>".into());
                }
                for m in breaks {
                    let m = esc(&m);
                    if !lines.iter().any(|l| l.contains(&m)) {
                        lines.push(format!("<span class=\"bad\">{m}</span>"));
                    }
                }
                lines.join("<br>")
            }
            None => String::new(),
        };
        let pending = b["pending_bytes"].as_u64().unwrap_or(0);
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{} ({:.1} %)</td><td>{}</td></tr>",
            esc(name),
            esc(&s("location")),
            esc(&s("operator")),
            esc(&oc),
            esc(&parent),
            laws,
            esc(&crate::progress::human(b["bytes"].as_u64().unwrap_or(0))),
            if pending > 0 { "pending" } else { "" },
            esc(&crate::progress::human(pending)),
            b["pending_percent"].as_f64().unwrap_or(0.0),
            verdicts
        );
    }
    h.push_str("</table>\n<h2>The placement policy</h2>\n<ul>\n");
    for l in config.policy.describe() {
        let _ = writeln!(h, "<li>{}</li>", esc(&l));
    }
    h.push_str("</ul>\n");
    if policy_breaks.is_empty() {
        h.push_str("<p class=\"ok\">The configured backends meet the policy.</p>\n");
    } else {
        h.push_str("<p class=\"bad\">The policy is not met:</p>\n<ul>\n");
        for m in &policy_breaks {
            let _ = writeln!(h, "<li class=\"bad\">{}</li>", esc(m));
        }
        h.push_str("</ul>\n");
    }
    h.push_str(
        "<p class=\"sub\">Only ciphertext leaves this machine: a provider, or an authority that \
         compels it, sees opaque pack objects, never names or contents. The facts about \
         operators and parents are those of the presets (source and date: <code>tresor backend \
         presets --verbose</code>) or what was given at <code>backend add</code>.</p>\n</body></html>\n",
    );
    h
}

/// An inline SVG: the local store on the left, one box per backend on the
/// right, each with its country, operator, parent and a bar of how much of
/// the data it holds (green) and how much is pending (amber); red border
/// when the backend breaks the policy.
fn diagram(backends: &[Value], config: &VaultConfig, total: u64, local: u64) -> String {
    let row = 96;
    let height = 60 + row * backends.len().max(1);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="1170" height="{height}" role="img" aria-label="where the data is" font-family="DejaVu Sans, sans-serif" font-size="13">
<rect x="10" y="{y}" width="250" height="70" rx="8" fill="#e8eefc" stroke="#3b5bdb"/>
<text x="24" y="{t1}" font-weight="bold">this machine (local store)</text>
<text x="24" y="{t2}">{local} cached of {total}</text>
<text x="24" y="{t3}">encrypted here; keys stay here</text>"##,
        y = height / 2 - 35,
        t1 = height / 2 - 12,
        t2 = height / 2 + 6,
        t3 = height / 2 + 24,
        local = esc(&crate::progress::human(local)),
        total = esc(&crate::progress::human(total)),
    );
    if backends.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="300" y="{}" fill="#5a6275">no remote backends: the only copy is the local store</text>"##,
            height / 2
        );
    }
    for (i, b) in backends.iter().enumerate() {
        let y = 30 + i * row;
        let name = b["name"].as_str().unwrap_or("");
        let st = |k: &str| b[k].as_str().unwrap_or("").to_string();
        let breaks = config
            .backend(name)
            .map(|c| !config.policy.backend_violations(c).is_empty())
            .unwrap_or(false);
        let held = b["bytes"].as_u64().unwrap_or(0);
        let pending = b["pending_bytes"].as_u64().unwrap_or(0);
        let width = 360.0;
        let denom = (held + pending).max(1) as f64;
        let held_w = width * held as f64 / denom;
        let (oc, pc) = (st("operator_country"), st("parent_country"));
        let parent_line = if pc.is_empty() || pc == oc {
            "no parent seated elsewhere".to_string()
        } else {
            format!("parent {} ({pc})", st("parent"))
        };
        let _ = writeln!(
            s,
            r##"<line x1="260" y1="{ly}" x2="430" y2="{by}" stroke="#8b93a7" stroke-width="2"/>
<rect x="430" y="{y}" width="730" height="80" rx="8" fill="#ffffff" stroke="{stroke}" stroke-width="{sw}"/>
<text x="444" y="{t1}" font-weight="bold">{name} · data in {loc}</text>
<text x="444" y="{t2}">operator {op} ({oc}) · {parent}</text>
<rect x="444" y="{bar}" width="{width}" height="14" fill="{rest}"/>
<rect x="444" y="{bar}" width="{held_w:.1}" height="14" fill="#5cb85c"/>
<text x="{lx}" y="{t3}">{held} held · {pend} pending</text>"##,
            ly = height / 2,
            by = y + 40,
            y = y,
            stroke = if breaks { "#b3261e" } else { "#13703a" },
            // Amber: pending upload; grey: nothing to hold yet.
            rest = if pending > 0 { "#f5d99a" } else { "#d9dde5" },
            sw = if breaks { 3 } else { 2 },
            t1 = y + 20,
            t2 = y + 40,
            bar = y + 52,
            t3 = y + 64,
            lx = 444.0 + width + 12.0,
            name = esc(name),
            loc = esc(&st("location")),
            op = esc(&st("operator")),
            oc = esc(&oc),
            parent = esc(&parent_line),
            held = esc(&crate::progress::human(held)),
            pend = esc(&crate::progress::human(pending)),
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laws_name_place_seat_and_parent_once_each() {
        let l = laws_reaching("DE", "DE", "US");
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].starts_with("DE law and EU law (GDPR)"));
        assert!(l[1].contains("CLOUD Act") && l[1].contains("parent"));
        assert_eq!(laws_reaching("FI", "DE", "DE").len(), 2);
        assert_eq!(laws_reaching("CH", "CH", "CH").len(), 1);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
