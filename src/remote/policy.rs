//! The placement policy: how many copies of every pack must exist, in which
//! countries, and under whose law they may not be.
//!
//! Rules, checked against the vault's remote backends (`config.toml`):
//! - `copies = N`: every pack is on at least N remote backends. A vault
//!   without remote backends is a local vault: its one copy is the local
//!   store, so the default (`copies = 1`, no other rules) holds for it.
//! - `require_location = [DE]`: at least one copy in each listed location.
//! - `allow_location = [EU]`: copies may only be in these locations (plus the
//!   required ones). `EU` stands for the 27 member states, and a backend
//!   whose location is given as `EU` (Cloudflare R2's EU jurisdiction) counts
//!   as EU but not as any single country.
//! - `deny_operator_country = [US]`: no backend whose operator, or the
//!   operator's parent, has its legal seat there. AWS eu-central-1 is in DE
//!   but operated by a US company: it is refused by this rule and allowed by
//!   the location rules.
//!
//! tresor uploads every pack to every configured backend, and every backend
//! must satisfy the allow/deny rules to be configured at all (`backend add`
//! refuses one that does not). So a configuration that passes [`check`]
//! puts every pack on ≥ `copies` conforming backends once it is uploaded.

use crate::vault::config::BackendConfig;

/// ISO 3166-1 alpha-2 codes of the EU member states (2026).
pub const EU_COUNTRIES: [&str; 27] = [
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];

pub use crate::vault::config::Policy;

/// Does a backend location fall under a rule's location (`EU` or a country)?
fn location_matches(location: &str, rule: &str) -> bool {
    if location == rule {
        return true;
    }
    rule == "EU" && EU_COUNTRIES.contains(&location)
}

impl Policy {
    /// Why this backend may not hold any copy (empty: it may).
    pub fn backend_violations(&self, b: &BackendConfig) -> Vec<String> {
        let mut v = Vec::new();
        let allowed: Vec<&String> = self
            .require_location
            .iter()
            .chain(self.allow_location.iter())
            .collect();
        if !allowed.is_empty() && !allowed.iter().any(|r| location_matches(&b.location, r)) {
            v.push(format!(
                "backend {} stores data in {}, but the policy allows only {}",
                b.name,
                b.location,
                allowed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for j in b.jurisdictions() {
            if self.deny_operator_country.contains(&j) {
                v.push(format!(
                    "backend {} is operated by {} under {} law, and the policy denies operators from {}",
                    b.name,
                    b.describe_law(),
                    j,
                    j
                ));
            }
        }
        v
    }

    /// Every way the configuration breaks the policy (empty: it holds).
    pub fn violations(&self, backends: &[BackendConfig]) -> Vec<String> {
        let mut v = Vec::new();
        if self.copies == 0 {
            v.push("the policy must require at least 1 copy".to_string());
        }
        if backends.is_empty() {
            // A local vault: the local store is the one copy; location and
            // operator rules need a backend to hold.
            if self.copies > 1 {
                v.push(format!(
                    "the policy requires {} copies, but the vault has no remote backend \
                     (only the local store); add backends with `tresor backend add`",
                    self.copies
                ));
            }
            for r in &self.require_location {
                v.push(format!(
                    "the policy requires a copy in {r}, but the vault has no remote backend there"
                ));
            }
            return v;
        }
        let mut conforming = Vec::new();
        for b in backends {
            let bv = self.backend_violations(b);
            if bv.is_empty() {
                conforming.push(b);
            }
            v.extend(bv);
        }
        if (conforming.len() as u32) < self.copies {
            v.push(format!(
                "the policy requires {} copies, but only {} backend(s) satisfy it{}",
                self.copies,
                conforming.len(),
                if conforming.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        conforming
                            .iter()
                            .map(|b| b.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
        }
        for r in &self.require_location {
            if !conforming.iter().any(|b| location_matches(&b.location, r)) {
                v.push(format!(
                    "the policy requires a copy in {r}, but no conforming backend stores data there"
                ));
            }
        }
        v
    }

    /// One line per rule, for `policy show` and `status`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "copies: {} (every pack on at least {} remote backend(s); a vault without \
             remote backends keeps its one copy in the local store)",
            self.copies, self.copies
        )];
        let list = |v: &[String]| {
            if v.is_empty() {
                "(any)".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(format!(
            "require location: {}",
            if self.require_location.is_empty() {
                "(none)".to_string()
            } else {
                self.require_location.join(", ")
            }
        ));
        out.push(format!("allow location: {}", list(&self.allow_location)));
        out.push(format!(
            "deny operator country: {}",
            if self.deny_operator_country.is_empty() {
                "(none)".to_string()
            } else {
                self.deny_operator_country.join(", ")
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::backend::ServiceName;

    fn backend(name: &str, location: &str, op: &str, parent: &str) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            id: format!("{name}-id"),
            service: ServiceName::S3,
            preset: None,
            endpoint: "https://example".into(),
            region: "r".into(),
            bucket: "b".into(),
            root: "/".into(),
            username: String::new(),
            key_path: String::new(),
            known_hosts_strategy: String::new(),
            location: location.into(),
            operator: "Op".into(),
            operator_country: op.into(),
            parent_country: parent.into(),
            max_concurrency: 0,
            options: Default::default(),
        }
    }

    fn policy(copies: u32, req: &[&str], allow: &[&str], deny: &[&str]) -> Policy {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Policy {
            copies,
            require_location: s(req),
            allow_location: s(allow),
            deny_operator_country: s(deny),
        }
    }

    #[test]
    fn default_policy_holds_for_a_local_vault() {
        assert!(Policy::default().violations(&[]).is_empty());
        assert!(!policy(2, &[], &[], &[]).violations(&[]).is_empty());
        assert!(!policy(1, &["DE"], &[], &[]).violations(&[]).is_empty());
    }

    #[test]
    fn aws_frankfurt_is_in_de_but_under_us_law() {
        let aws = backend("aws", "DE", "US", "US");
        let p = policy(1, &["DE"], &[], &["US"]);
        let v = p.violations(std::slice::from_ref(&aws));
        assert!(
            v.iter().any(|m| m.contains("aws") && m.contains("US")),
            "{v:?}"
        );
        assert!(policy(1, &["DE"], &[], &[]).violations(&[aws]).is_empty());
    }

    #[test]
    fn parent_country_counts() {
        let esc = backend("esc", "DE", "DE", "US");
        assert!(!policy(1, &[], &[], &["US"])
            .backend_violations(&esc)
            .is_empty());
    }

    #[test]
    fn eu_allows_member_states_and_eu_locations() {
        let p = policy(2, &["DE"], &["EU"], &["US"]);
        let de = backend("hetzner", "DE", "DE", "DE");
        let fi = backend("upcloud", "FI", "FI", "FI");
        let ch = backend("exo", "CH", "CH", "CH");
        assert!(p.violations(&[de.clone(), fi.clone()]).is_empty());
        let v = p.violations(&[de.clone(), ch]);
        assert!(
            v.iter().any(|m| m.contains("exo") && m.contains("CH")),
            "{v:?}"
        );
        // copies: only one backend
        let v = p.violations(std::slice::from_ref(&de));
        assert!(v.iter().any(|m| m.contains("2 copies")), "{v:?}");
        // required location missing
        let v = p.violations(&[fi.clone(), backend("ovh", "FR", "FR", "FR")]);
        assert!(v.iter().any(|m| m.contains("copy in DE")), "{v:?}");
    }
}
