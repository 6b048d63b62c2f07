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
//! - `deny_operator_law = [US]`: no backend whose *operator* (the company
//!   that runs the storage and holds the contract) has its legal seat there.
//!   Owners are not looked at. AWS eu-central-1 is in DE but operated by a
//!   US company: refused. AWS European Sovereign Cloud is operated by a
//!   German GmbH: allowed.
//! - `deny_parent_law = [US]`: no backend whose operator *or ultimate
//!   parent* has its legal seat there — the stricter rule, and the one the
//!   US CLOUD Act calls for, since it reaches data in a US company's
//!   "possession, custody, or control", subsidiaries included. AWS European
//!   Sovereign Cloud (parent Amazon.com, Inc.) is refused. The older key
//!   `deny_operator_country` and the flag `--deny-operator-country` mean
//!   this rule.
//!
//! Every refusal and every `backend add` that passes a law rule names the
//! rule and the companies it looked at, so which rule applied is never
//! ambiguous.
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
        v.extend(
            self.law_verdicts(b)
                .into_iter()
                .filter(|(refused, _)| *refused)
                .map(|(_, m)| m),
        );
        v
    }

    /// What each law rule says about this backend: `(refused, message)`,
    /// one entry per rule that is set. The messages name the rule, the
    /// operator and (where it matters) the parent, so a user can see which
    /// company's seat decided.
    pub fn law_verdicts(&self, b: &BackendConfig) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let parent = if b.parent.is_empty() {
            "its parent".to_string()
        } else {
            b.parent.clone()
        };
        let parent_differs = !b.parent_country.is_empty() && b.parent_country != b.operator_country;
        if !self.deny_operator_law.is_empty() {
            let rule = format!(
                "deny_operator_law = [{}]",
                self.deny_operator_law.join(", ")
            );
            if self.deny_operator_law.contains(&b.operator_country) {
                out.push((
                    true,
                    format!(
                        "backend {} is refused by the rule {rule}: its operator, {}, is seated in {}",
                        b.name, b.operator, b.operator_country
                    ),
                ));
            } else {
                let owners = if parent_differs {
                    format!(
                        " (this rule does not look at owners: {parent} is seated in {})",
                        b.parent_country
                    )
                } else {
                    String::new()
                };
                out.push((
                    false,
                    format!(
                        "backend {} meets the rule {rule}: its operator, {}, is seated in {}{owners}",
                        b.name, b.operator, b.operator_country
                    ),
                ));
            }
        }
        if !self.deny_parent_law.is_empty() {
            let rule = format!("deny_parent_law = [{}]", self.deny_parent_law.join(", "));
            if self.deny_parent_law.contains(&b.operator_country) {
                out.push((
                    true,
                    format!(
                        "backend {} is refused by the rule {rule}: its operator, {}, is seated in {}",
                        b.name, b.operator, b.operator_country
                    ),
                ));
            } else if parent_differs && self.deny_parent_law.contains(&b.parent_country) {
                out.push((
                    true,
                    format!(
                        "backend {} is refused by the rule {rule}: its operator, {} ({}), is owned by {parent}, \
                         seated in {}, whose law can compel it",
                        b.name, b.operator, b.operator_country, b.parent_country
                    ),
                ));
            } else {
                let chain = if parent_differs {
                    format!(", and its parent, {parent}, in {}", b.parent_country)
                } else {
                    String::new()
                };
                out.push((
                    false,
                    format!(
                        "backend {} meets the rule {rule}: its operator, {}, is seated in {}{chain}",
                        b.name, b.operator, b.operator_country
                    ),
                ));
            }
        }
        out
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
        let none_or = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(format!(
            "deny operator law: {} (refuses an operator seated there; owners are not looked at)",
            none_or(&self.deny_operator_law)
        ));
        out.push(format!(
            "deny parent law: {} (refuses an operator seated there or owned by a parent seated there)",
            none_or(&self.deny_parent_law)
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
            parent: if parent == op {
                String::new()
            } else {
                "Parent Inc.".into()
            },
            max_concurrency: 0,
            capabilities: Default::default(),
            options: Default::default(),
        }
    }

    fn policy(copies: u32, req: &[&str], allow: &[&str], deny: &[&str]) -> Policy {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Policy {
            copies,
            require_location: s(req),
            allow_location: s(allow),
            deny_operator_law: Vec::new(),
            deny_parent_law: s(deny),
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
    fn operator_law_and_parent_law_differ_and_say_so() {
        let esc = backend("esc", "DE", "DE", "US");
        let by_operator = Policy {
            deny_operator_law: vec!["US".into()],
            ..Default::default()
        };
        assert!(by_operator.backend_violations(&esc).is_empty());
        let v = by_operator.law_verdicts(&esc);
        assert_eq!(v.len(), 1);
        assert!(!v[0].0);
        assert!(v[0].1.contains("deny_operator_law = [US]") && v[0].1.contains("Op"));
        assert!(v[0].1.contains("Parent Inc.") && v[0].1.contains("does not look at owners"));

        let by_parent = Policy {
            deny_parent_law: vec!["US".into()],
            ..Default::default()
        };
        let v = by_parent.backend_violations(&esc);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("deny_parent_law = [US]") && v[0].contains("Parent Inc."));

        // A US operator fails both rules, naming the operator.
        let aws = backend("aws", "DE", "US", "US");
        assert!(by_operator.backend_violations(&aws)[0].contains("operator, Op, is seated in US"));
        assert!(by_parent.backend_violations(&aws)[0].contains("operator, Op, is seated in US"));
    }

    #[test]
    fn the_old_key_means_the_parent_rule() {
        let p: Policy = toml::from_str("copies = 1\ndeny_operator_country = [\"US\"]\n").unwrap();
        assert_eq!(p.deny_parent_law, vec!["US".to_string()]);
        assert!(p.deny_operator_law.is_empty());
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
