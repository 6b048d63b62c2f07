//! `tresor backend presets [--verbose] [--json]`: the provider presets as a
//! table with three separate facts — where the data is stored, the
//! operator and its legal seat, and the operator's ultimate parent and its
//! seat (a German GmbH owned by a US company is within reach of the US
//! CLOUD Act). `--verbose` adds the source and date of every fact. Needs no
//! vault.

use anyhow::Result;
use serde_json::{json, Value};

use crate::remote::presets::{self, Fact};

fn fact_json(f: Fact) -> Value {
    json!({"source": f.source, "checked": f.checked})
}

pub(super) fn presets_table(json: bool, verbose: bool) -> Result<()> {
    if json {
        let v: Vec<Value> = presets::all()
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "provider": p.provider, "service": p.service.as_str(),
                    "endpoint": p.endpoint, "region": p.region, "location": p.location,
                    "operator": p.operator, "operator_country": p.operator_country,
                    "parent": p.parent, "parent_country": p.parent_country,
                    "jurisdictions": p.jurisdictions(),
                    "sources": {
                        "location": fact_json(p.sources.location),
                        "operator": fact_json(p.sources.operator),
                        "parent": fact_json(p.sources.parent),
                    },
                    "conditional_writes_documented": p.conditional_writes_doc,
                    "notes": p.notes, "warning": p.warning,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<30} {:<7} {:<4} {:<44} {:<3} {:<3}",
        "PRESET", "SERVICE", "DATA", "OPERATOR", "SEAT", "PARENT"
    );
    for p in presets::all() {
        let loc = if p.location.is_empty() {
            "?"
        } else {
            p.location
        };
        let or_q = |s: &'static str| if s.is_empty() { "?" } else { s };
        println!(
            "{:<30} {:<7} {:<4} {:<44} {:<4} {}",
            p.name,
            p.service.as_str(),
            loc,
            shorten(p.operator, 43),
            or_q(p.operator_country),
            if p.parent_country.is_empty() || p.parent_country == p.operator_country {
                "same".to_string()
            } else {
                format!("{} ({})", p.parent_country, shorten(p.parent, 40))
            }
        );
        if verbose {
            println!("    provider: {}", p.provider);
            for (what, f) in [
                ("data location", p.sources.location),
                ("operator", p.sources.operator),
                ("parent", p.sources.parent),
            ] {
                let date = if f.checked.is_empty() { "-" } else { f.checked };
                println!("    {what:<14} checked {date:<10}  {}", f.source);
            }
            if !p.parent.is_empty() {
                println!("    parent:       {}", p.parent);
            }
            println!(
                "    conditional writes: {}",
                if p.conditional_writes_doc.is_empty() {
                    "not documented (probed at `backend add`)"
                } else {
                    p.conditional_writes_doc
                }
            );
            println!("    notes: {}", p.notes);
            if !p.warning.is_empty() {
                println!("    warning: {}", p.warning);
            }
        }
    }
    println!();
    println!("DATA: where the data is stored (? = you give --location). SEAT: the operator's legal seat.");
    println!(
        "PARENT: the ultimate parent's seat where it differs; its law can compel the operator"
    );
    println!("(the US CLOUD Act reaches a US company's subsidiaries wherever they store data).");
    if !verbose {
        println!("--verbose shows the source and date of every fact.");
    }
    Ok(())
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}
