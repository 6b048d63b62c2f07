//! `tresor backend presets [--json]`: the provider presets as a table —
//! service, where the data is stored and, kept apart from it, the operator
//! and its legal seat (a US operator is subject to the US CLOUD Act wherever
//! the data is stored). Needs no vault.

use anyhow::Result;
use serde_json::{json, Value};

use crate::remote::presets;

pub(super) fn presets_table(json: bool) -> Result<()> {
    if json {
        let v: Vec<Value> = presets::all()
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "provider": p.provider, "service": p.service.as_str(),
                    "endpoint": p.endpoint, "region": p.region, "location": p.location,
                    "operator": p.operator, "operator_country": p.operator_country,
                    "parent_country": p.parent_country, "jurisdictions": p.jurisdictions(),
                    "notes": p.notes, "warning": p.warning,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<26} {:<7} {:<4} {:<44} {:<5} NOTES",
        "PRESET", "SERVICE", "LOC", "OPERATOR", "LAW"
    );
    for p in presets::all() {
        let law = p.jurisdictions().join("+");
        let loc = if p.location.is_empty() {
            "?"
        } else {
            p.location
        };
        let mut op = p.operator.to_string();
        if op.len() > 43 {
            op.truncate(
                op.char_indices()
                    .nth(42)
                    .map(|(i, _)| i)
                    .unwrap_or(op.len()),
            );
            op.push('…');
        }
        println!(
            "{:<26} {:<7} {:<4} {:<44} {:<5} {}",
            p.name,
            p.service.as_str(),
            loc,
            op,
            if law.is_empty() { "?" } else { &law },
            p.notes
        );
    }
    println!();
    println!("LOC: where the data is stored (? = you give --location). LAW: the operator's and its parent's legal seats;");
    println!("a US operator is subject to the US CLOUD Act wherever the data is stored.");
    Ok(())
}
