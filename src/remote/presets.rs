//! Storage-provider presets: endpoint, region and extra OpenDAL options for
//! known providers, together with where the data is stored and whose law
//! governs the company that stores it.
//!
//! # Why presets exist
//!
//! Picking a provider is a legal decision as much as a technical one, so every
//! preset records the data *location* (country of the data centre) separately
//! from the operator's *jurisdiction* (legal seat of the operating entity and
//! of its ultimate parent). The two often differ: AWS `eu-central-1` is located
//! in DE but operated by a US company that is subject to the US CLOUD Act
//! whatever the region, while Hetzner `hel1` is run by a German company but
//! stores the data in FI. [`Preset::jurisdictions`] lists the countries whose
//! law applies to the operator.
//!
//! Conventions:
//! * S3 presets are path-style (OpenDAL's default; never set
//!   `enable_virtual_host_style`) and set `disable_config_load` and
//!   `disable_ec2_metadata`, so no ambient `AWS_*` variables or profiles leak in.
//! * `{account}` in an endpoint is a per-customer part (instance id, account
//!   id, Storage Box user, Nextcloud host...) supplied with `--account`.
//! * An empty `location` means it depends on the user's setup (self-hosted
//!   server, Storage Box site): `backend add` then requires `--location`.
//! * `"EU"` as location is used only when the sources give no single country.
//!
//! # Adding a preset
//!
//! Append a [`Preset`] to `PRESETS` using sourced facts only: a kebab-case
//! name `<provider>-<region>`, ISO 3166-1 alpha-2 country codes, and
//! "unverified" in `notes` for anything the sources do not confirm. Set
//! `warning` for anything the user must know before choosing it (US operator,
//! minimum billing, bandwidth caps). Then run the tests standalone:
//! `cargo test --profile ci --lib presets`.
//!
//! # Sources
//!
//! `../shared/providers.md` (research of Nov 2026 against `opendal 0.59.5`,
//! provider docs and rclone provider profiles). Prices change often; re-check
//! them before quoting any to users.

/// The OpenDAL service a preset is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    S3,
    Webdav,
    Sftp,
}

impl Service {
    /// The OpenDAL scheme name.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Webdav => "webdav",
            Service::Sftp => "sftp",
        }
    }
}

/// One storage-provider preset. See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Kebab-case id, e.g. `hetzner-fsn1`.
    pub name: &'static str,
    /// Human-readable provider/product name.
    pub provider: &'static str,
    pub service: Service,
    /// Full URL; may contain `{account}`.
    pub endpoint: &'static str,
    /// OpenDAL region; `""` for webdav/sftp.
    pub region: &'static str,
    /// ISO 3166-1 alpha-2 country of the data; `"EU"` if no single country is
    /// given; `""` if it depends on the user's setup (`--location` required).
    pub location: &'static str,
    /// Operating legal entity.
    pub operator: &'static str,
    /// ISO alpha-2 legal seat of the operator.
    pub operator_country: &'static str,
    /// ISO alpha-2 seat of the ultimate parent (`operator_country` if none known).
    pub parent_country: &'static str,
    /// The ultimate parent company: the top of the ownership chain, whose
    /// law can compel the operator (the CLOUD Act reaches data in the
    /// "possession, custody, or control" of a US company, subsidiaries
    /// included). The operator itself when nobody owns it.
    pub parent: &'static str,
    /// Where each of the three facts (location, operator, parent) comes
    /// from, and when it was last checked.
    pub sources: Sources,
    /// Where the provider documents S3 conditional writes (`If-None-Match`,
    /// `If-Match`); `""` when it does not or it is unverified. A document is
    /// not proof: `backend add` and `backend test` probe the real behaviour.
    pub conditional_writes_doc: &'static str,
    /// Extra OpenDAL config keys.
    pub options: &'static [(&'static str, &'static str)],
    /// 0 = tresor's default.
    pub max_concurrency: usize,
    /// Quirks, pricing facts, what is unverified.
    pub notes: &'static str,
    /// `""` or a one-line warning shown when the preset is chosen.
    pub warning: &'static str,
}

/// The sources of a preset's three facts.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    pub location: Fact,
    pub operator: Fact,
    pub parent: Fact,
}

/// Where a fact comes from (a document, a page, a filing) and the ISO date
/// it was last checked.
#[derive(Clone, Copy, Debug)]
pub struct Fact {
    pub source: &'static str,
    pub checked: &'static str,
}

impl Fact {
    const fn new(source: &'static str, checked: &'static str) -> Fact {
        Fact { source, checked }
    }
}

/// Presets that were renamed: a vault configured with the old name still
/// finds its preset.
const RENAMED: &[(&str, &str)] = &[("otc-eu-de", "tcloud-eu-de"), ("otc-eu-nl", "tcloud-eu-nl")];

const ACCOUNT: &str = "{account}";

impl Preset {
    /// True when the endpoint contains "{account}" and the user must supply --account.
    pub fn needs_account(&self) -> bool {
        self.endpoint.contains(ACCOUNT)
    }

    /// The endpoint with "{account}" replaced.
    ///
    /// An account given to a preset that does not need one is ignored.
    pub fn endpoint_for(&self, account: Option<&str>) -> Result<String, String> {
        if !self.needs_account() {
            return Ok(self.endpoint.to_string());
        }
        let account = account.map(str::trim).unwrap_or("");
        if account.is_empty() {
            return Err(format!(
                "preset '{}' needs --account: its endpoint is {}",
                self.name, self.endpoint
            ));
        }
        if account.contains("://") {
            return Err(format!(
                "--account for preset '{}' must be the bare value that replaces {{account}} in {}, not a URL",
                self.name, self.endpoint
            ));
        }
        if account
            .chars()
            .any(|c| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(format!(
                "--account '{}' for preset '{}' contains whitespace or braces",
                account, self.name
            ));
        }
        Ok(self.endpoint.replace(ACCOUNT, account))
    }

    /// Distinct countries whose law applies to the operator: operator_country and parent_country.
    ///
    /// Empty for a self-hosted preset whose operator is unknown.
    pub fn jurisdictions(&self) -> Vec<&'static str> {
        let mut out = Vec::with_capacity(2);
        for c in [self.operator_country, self.parent_country] {
            if !c.is_empty() && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// All presets, in display order.
pub fn all() -> &'static [Preset] {
    PRESETS
}

/// The preset with this exact name (or the name it had before a rename).
pub fn find(name: &str) -> Option<&'static Preset> {
    let name = RENAMED
        .iter()
        .find(|(old, _)| *old == name)
        .map_or(name, |(_, new)| new);
    PRESETS.iter().find(|p| p.name == name)
}

/// Options every S3 preset sets.
const S3_BASE: &[(&str, &str)] = &[
    ("disable_config_load", "true"),
    ("disable_ec2_metadata", "true"),
];

/// Cloudflare R2: batch delete > 700 keys errors; stat with overrides unsupported.
const S3_R2: &[(&str, &str)] = &[
    ("disable_config_load", "true"),
    ("disable_ec2_metadata", "true"),
    ("delete_max_size", "700"),
    ("disable_stat_with_override", "true"),
];

const NONE: &[(&str, &str)] = &[];

const CLOUD_ACT: &str = "US operator: the US CLOUD Act applies whatever the region.";

static PRESETS: &[Preset] = &[
    // ---------------------------------------------------------------- DE operators
    Preset {
        name: "hetzner-fsn1",
        provider: "Hetzner Object Storage",
        service: Service::S3,
        endpoint: "https://fsn1.your-objectstorage.com",
        region: "fsn1",
        location: "DE",
        operator: "Hetzner Online GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Hetzner Online GmbH (privately held)",
        sources: Sources {
            location: Fact::new("docs.hetzner.com/storage/object-storage/overview", "2026-11-20"),
            operator: Fact::new("hetzner.com/privacy-policy-notice", "2026-11-20"),
            parent: Fact::new("hetzner.com/privacy-policy-notice (no parent company)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Falkenstein. Ceph; about €5/month base incl. 1 TB storage + 1 TB egress; about 750 req/s per bucket (third-party); conditional writes undocumented (probed at backend add).",
        warning: "",
    },
    Preset {
        name: "hetzner-nbg1",
        provider: "Hetzner Object Storage",
        service: Service::S3,
        endpoint: "https://nbg1.your-objectstorage.com",
        region: "nbg1",
        location: "DE",
        operator: "Hetzner Online GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Hetzner Online GmbH (privately held)",
        sources: Sources {
            location: Fact::new("docs.hetzner.com/storage/object-storage/overview", "2026-11-20"),
            operator: Fact::new("hetzner.com/privacy-policy-notice", "2026-11-20"),
            parent: Fact::new("hetzner.com/privacy-policy-notice (no parent company)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Nuremberg. Ceph; about €5/month base incl. 1 TB storage + 1 TB egress; about 750 req/s per bucket (third-party); conditional writes undocumented (probed at backend add).",
        warning: "",
    },
    Preset {
        name: "hetzner-hel1",
        provider: "Hetzner Object Storage",
        service: Service::S3,
        endpoint: "https://hel1.your-objectstorage.com",
        region: "hel1",
        location: "FI",
        operator: "Hetzner Online GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Hetzner Online GmbH (privately held)",
        sources: Sources {
            location: Fact::new("docs.hetzner.com/storage/object-storage/overview", "2026-11-20"),
            operator: Fact::new("hetzner.com/privacy-policy-notice", "2026-11-20"),
            parent: Fact::new("hetzner.com/privacy-policy-notice (no parent company)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Helsinki: German operator, data in Finland. About 750 req/s per bucket (third-party); conditional writes undocumented (probed at backend add).",
        warning: "Data is stored in Finland (Helsinki), not Germany.",
    },
    Preset {
        name: "hetzner-storagebox-webdav",
        provider: "Hetzner Storage Box",
        service: Service::Webdav,
        endpoint: "https://{account}.your-storagebox.de",
        region: "",
        location: "",
        operator: "Hetzner Online GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Hetzner Online GmbH (privately held)",
        sources: Sources {
            location: Fact::new("docs.hetzner.com/robot/storage-box/general (site chosen at order)", "2026-11-20"),
            operator: Fact::new("hetzner.com/privacy-policy-notice", "2026-11-20"),
            parent: Fact::new("hetzner.com/privacy-policy-notice (no parent company)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: NONE,
        max_concurrency: 8,
        notes: "account = Storage Box user uNNNNN; password login; exact WebDAV URL form unverified. Site varies per box (fsn1 DE, hel1 FI; full list unverified), so --location is required; 10 connections per account.",
        warning: "",
    },
    Preset {
        name: "hetzner-storagebox-sftp",
        provider: "Hetzner Storage Box",
        service: Service::Sftp,
        endpoint: "ssh://{account}@{account}.your-storagebox.de:23",
        region: "",
        location: "",
        operator: "Hetzner Online GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Hetzner Online GmbH (privately held)",
        sources: Sources {
            location: Fact::new("docs.hetzner.com/robot/storage-box/general (site chosen at order)", "2026-11-20"),
            operator: Fact::new("hetzner.com/privacy-policy-notice", "2026-11-20"),
            parent: Fact::new("hetzner.com/privacy-policy-notice (no parent company)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: NONE,
        max_concurrency: 8,
        notes: "account = uNNNNN; SSH key only, Unix only (runs ssh); pin the host key. Port 23 per community notes; site varies per box, so --location is required; 10 connections per account.",
        warning: "",
    },
    Preset {
        name: "ionos-de",
        provider: "IONOS Object Storage",
        service: Service::S3,
        endpoint: "https://s3.eu-central-1.ionoscloud.com",
        region: "de",
        location: "DE",
        operator: "IONOS (United Internet)",
        operator_country: "DE",
        parent_country: "DE",
        parent: "United Internet AG, Montabaur (unverified)",
        sources: Sources {
            location: Fact::new("docs.ionos.com object storage regions; rclone IONOS.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: IONOS, exact entity unverified", "2026-12-01"),
            parent: Fact::new("providers.md addendum: United Internet AG (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Frankfurt. API requests free, storage per GB-hour, tiered egress; bucket names unique across IONOS; exact entity and seat unverified.",
        warning: "",
    },
    Preset {
        name: "ionos-eu-central-2",
        provider: "IONOS Object Storage",
        service: Service::S3,
        endpoint: "https://s3.eu-central-2.ionoscloud.com",
        region: "eu-central-2",
        location: "DE",
        operator: "IONOS (United Internet)",
        operator_country: "DE",
        parent_country: "DE",
        parent: "United Internet AG, Montabaur (unverified)",
        sources: Sources {
            location: Fact::new("docs.ionos.com object storage regions; rclone IONOS.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: IONOS, exact entity unverified", "2026-12-01"),
            parent: Fact::new("providers.md addendum: United Internet AG (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Berlin. API requests free; regions launched after 30 May 2024 use contract-owned buckets; exact entity and seat unverified.",
        warning: "",
    },
    Preset {
        name: "ionos-eu-central-3",
        provider: "IONOS Object Storage",
        service: Service::S3,
        endpoint: "https://s3.eu-central-3.ionoscloud.com",
        region: "eu-central-3",
        location: "DE",
        operator: "IONOS (United Internet)",
        operator_country: "DE",
        parent_country: "DE",
        parent: "United Internet AG, Montabaur (unverified)",
        sources: Sources {
            location: Fact::new("docs.ionos.com object storage regions; rclone IONOS.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: IONOS, exact entity unverified", "2026-12-01"),
            parent: Fact::new("providers.md addendum: United Internet AG (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Berlin. API requests free; regions launched after 30 May 2024 use contract-owned buckets; exact entity and seat unverified.",
        warning: "",
    },
    Preset {
        name: "ionos-eu-south-2",
        provider: "IONOS Object Storage",
        service: Service::S3,
        endpoint: "https://s3.eu-south-2.ionoscloud.com",
        region: "eu-south-2",
        location: "ES",
        operator: "IONOS (United Internet)",
        operator_country: "DE",
        parent_country: "DE",
        parent: "United Internet AG, Montabaur (unverified)",
        sources: Sources {
            location: Fact::new("docs.ionos.com object storage regions; rclone IONOS.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: IONOS, exact entity unverified", "2026-12-01"),
            parent: Fact::new("providers.md addendum: United Internet AG (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Logroño: German operator, data in Spain. API requests free; exact entity and seat unverified.",
        warning: "Data is stored in Spain (Logroño), not Germany.",
    },
    Preset {
        name: "stackit-eu01",
        provider: "STACKIT Object Storage",
        service: Service::S3,
        endpoint: "https://object.storage.eu01.onstackit.cloud",
        region: "eu01",
        location: "DE",
        operator: "Schwarz Digits Cloud GmbH & Co. KG",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Schwarz Gruppe (Schwarz Unternehmenstreuhand KG), Neckarsulm",
        sources: Sources {
            location: Fact::new("docs.stackit.cloud object storage concepts", "2026-12-01"),
            operator: Fact::new("stackit.com/en/data-protection-notice", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Schwarz Gruppe", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Read-after-new-write, but overwrites are eventually consistent. Which DCs (SW Germany/Austria) back eu01 and pricing are unverified.",
        warning: "",
    },
    Preset {
        name: "tcloud-eu-de",
        provider: "T Cloud Public OBS (formerly Open Telekom Cloud)",
        service: Service::S3,
        endpoint: "https://obs.eu-de.otc.t-systems.com",
        region: "eu-de",
        location: "DE",
        operator: "T-Systems International GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Deutsche Telekom AG, Bonn",
        sources: Sources {
            location: Fact::new("cloud.telekom.de OBS product page; crn.de (Biere/Magdeburg)", "2026-12-01"),
            operator: Fact::new("providers.md addendum: T-Systems International GmbH (unverified); brand T Cloud Public (CCS Insight, teknexus)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Deutsche Telekom AG", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Huawei OBS stack; if listing fails set disable_list_objects_v2=true. First 5 GB Standard free; exact entity and seat unverified.",
        warning: "",
    },
    Preset {
        name: "tcloud-eu-nl",
        provider: "T Cloud Public OBS (formerly Open Telekom Cloud)",
        service: Service::S3,
        endpoint: "https://obs.eu-nl.otc.t-systems.com",
        region: "eu-nl",
        location: "NL",
        operator: "T-Systems International GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Deutsche Telekom AG, Bonn",
        sources: Sources {
            location: Fact::new("cloud.telekom.de OBS product page; crn.de (Biere/Magdeburg)", "2026-12-01"),
            operator: Fact::new("providers.md addendum: T-Systems International GmbH (unverified); brand T Cloud Public (CCS Insight, teknexus)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Deutsche Telekom AG", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Huawei OBS stack; if listing fails set disable_list_objects_v2=true. German operator, data in NL; exact entity and seat unverified.",
        warning: "Data is stored in the Netherlands, not Germany.",
    },
    Preset {
        name: "strato-hidrive",
        provider: "Strato HiDrive",
        service: Service::Webdav,
        endpoint: "https://webdav.hidrive.strato.com/users/{account}",
        region: "",
        location: "DE",
        operator: "STRATO AG",
        operator_country: "DE",
        parent_country: "DE",
        parent: "United Internet AG, Montabaur (via IONOS)",
        sources: Sources {
            location: Fact::new("e-recht24.de/dsg/12734-hosting-strato", "2026-11-20"),
            operator: Fact::new("e-recht24.de/dsg/12734-hosting-strato", "2026-11-20"),
            parent: Fact::new("providers.md: STRATO is in the IONOS group", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: NONE,
        max_concurrency: 0,
        notes: "account = HiDrive user (root /users/<user>/); Berlin and Karlsruhe DCs. Enable \"only encrypted connections\" in the account.",
        warning: "",
    },
    Preset {
        name: "contabo-eu2",
        provider: "Contabo Object Storage",
        service: Service::S3,
        endpoint: "https://eu2.contabostorage.com",
        region: "us-east-1",
        location: "EU",
        operator: "Contabo GmbH",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Contabo GmbH (reported private-equity owner unverified)",
        sources: Sources {
            location: Fact::new("docs.contabo.com object storage technical description", "2026-11-20"),
            operator: Fact::new("providers.md: Contabo GmbH, Munich (unverified)", "2026-11-20"),
            parent: Fact::new("providers.md: PE ownership unverified", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Ceph, path-style only; 250 req/s, 3 M objects, 100 buckets, no SSE. Country of eu2, signing region, seat (Munich) and PE ownership unverified.",
        warning: "Default bandwidth limit is 10 MB/s.",
    },
    // ---------------------------------------------------------------- other EU / CH operators
    Preset {
        name: "ovh-gra",
        provider: "OVHcloud Object Storage",
        service: Service::S3,
        endpoint: "https://s3.gra.io.cloud.ovh.net",
        region: "gra",
        location: "FR",
        operator: "OVH SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "OVH Groupe SA, Roubaix (unverified)",
        sources: Sources {
            location: Fact::new("rclone OVHcloud.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: OVH SAS, Roubaix (seat unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: OVH Groupe SA (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "S3 .io endpoint (lifecycle support); Swift is legacy. Infrequent Access has a 730 h minimum; seat (Roubaix) and prices unverified.",
        warning: "",
    },
    Preset {
        name: "ovh-de",
        provider: "OVHcloud Object Storage",
        service: Service::S3,
        endpoint: "https://s3.de.io.cloud.ovh.net",
        region: "de",
        location: "DE",
        operator: "OVH SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "OVH Groupe SA, Roubaix (unverified)",
        sources: Sources {
            location: Fact::new("rclone OVHcloud.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: OVH SAS, Roubaix (seat unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: OVH Groupe SA (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Frankfurt, S3 .io endpoint; Swift is legacy. Infrequent Access has a 730 h minimum; seat (Roubaix) and prices unverified.",
        warning: "",
    },
    Preset {
        name: "ovh-waw",
        provider: "OVHcloud Object Storage",
        service: Service::S3,
        endpoint: "https://s3.waw.io.cloud.ovh.net",
        region: "waw",
        location: "PL",
        operator: "OVH SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "OVH Groupe SA, Roubaix (unverified)",
        sources: Sources {
            location: Fact::new("rclone OVHcloud.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: OVH SAS, Roubaix (seat unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: OVH Groupe SA (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "S3 .io endpoint; Swift is legacy. Infrequent Access has a 730 h minimum; seat (Roubaix) and prices unverified.",
        warning: "",
    },
    Preset {
        name: "scaleway-fr-par",
        provider: "Scaleway Object Storage",
        service: Service::S3,
        endpoint: "https://s3.fr-par.scw.cloud",
        region: "fr-par",
        location: "FR",
        operator: "Scaleway SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "Iliad SA, Paris",
        sources: Sources {
            location: Fact::new("rclone Scaleway.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: Scaleway SAS, Paris (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Iliad group (TNW)", "2026-12-01"),
        },
        conditional_writes_doc: "scaleway.com docs 2026-07-03",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Max 1000 multipart parts; GLACIER only here. Seat (Paris) and current pricing unverified.",
        warning: "",
    },
    Preset {
        name: "scaleway-nl-ams",
        provider: "Scaleway Object Storage",
        service: Service::S3,
        endpoint: "https://s3.nl-ams.scw.cloud",
        region: "nl-ams",
        location: "NL",
        operator: "Scaleway SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "Iliad SA, Paris",
        sources: Sources {
            location: Fact::new("rclone Scaleway.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: Scaleway SAS, Paris (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Iliad group (TNW)", "2026-12-01"),
        },
        conditional_writes_doc: "scaleway.com docs 2026-07-03",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Max 1000 multipart parts. Seat (Paris) and current pricing unverified.",
        warning: "",
    },
    Preset {
        name: "scaleway-pl-waw",
        provider: "Scaleway Object Storage",
        service: Service::S3,
        endpoint: "https://s3.pl-waw.scw.cloud",
        region: "pl-waw",
        location: "PL",
        operator: "Scaleway SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "Iliad SA, Paris",
        sources: Sources {
            location: Fact::new("rclone Scaleway.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: Scaleway SAS, Paris (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Iliad group (TNW)", "2026-12-01"),
        },
        conditional_writes_doc: "scaleway.com docs 2026-07-03",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Max 1000 multipart parts. Seat (Paris) and current pricing unverified.",
        warning: "",
    },
    Preset {
        name: "scaleway-it-mil",
        provider: "Scaleway Object Storage",
        service: Service::S3,
        endpoint: "https://s3.it-mil.scw.cloud",
        region: "it-mil",
        location: "IT",
        operator: "Scaleway SAS",
        operator_country: "FR",
        parent_country: "FR",
        parent: "Iliad SA, Paris",
        sources: Sources {
            location: Fact::new("rclone Scaleway.yaml", "2026-12-01"),
            operator: Fact::new("providers.md: Scaleway SAS, Paris (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: Iliad group (TNW)", "2026-12-01"),
        },
        conditional_writes_doc: "scaleway.com docs 2026-07-03",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Max 1000 multipart parts. Seat (Paris) and current pricing unverified.",
        warning: "",
    },
    Preset {
        name: "upcloud-europe-1",
        provider: "UpCloud Managed Object Storage",
        service: Service::S3,
        endpoint: "https://{account}.upcloudobjects.com",
        region: "europe-1",
        location: "FI",
        operator: "UpCloud Ltd",
        operator_country: "FI",
        parent_country: "FI",
        parent: "UpCloud Ltd (no parent known)",
        sources: Sources {
            location: Fact::new("developers.upcloud.com managed object storage", "2026-11-20"),
            operator: Fact::new("providers.md: UpCloud Ltd, Helsinki (unverified)", "2026-11-20"),
            parent: Fact::new("providers.md: none known", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "account = instance id. Billed in 250 GB increments, zero egress fees; seat (Helsinki) unverified.",
        warning: "Region europe-1 spans zones fi-hel1 (primary) and de-fra1 (Frankfurt).",
    },
    Preset {
        name: "exoscale-de-fra-1",
        provider: "Exoscale SOS",
        service: Service::S3,
        endpoint: "https://sos-de-fra-1.exo.io",
        region: "de-fra-1",
        location: "DE",
        operator: "Akenes SA",
        operator_country: "CH",
        parent_country: "MX",
        parent: "América Movil S.A.B. de C.V. (via A1 Telekom Austria; chain partly unverified)",
        sources: Sources {
            location: Fact::new("docs.rs exoscale-rs ZoneName; Exoscale SOS OpenAPI", "2026-12-01"),
            operator: Fact::new("providers.md: Akenes SA, Lausanne (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: A1 Telekom Austria majority-owned by América Movil (APA 2017, krone.at)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Swiss operator (Akenes SA, Lausanne, unverified) in the A1 Telekom Austria group, which América Movil (MX) controls. Pricing unverified.",
        warning: "Ultimate parent America Movil is seated in Mexico, outside the EU.",
    },
    Preset {
        name: "exoscale-ch-gva-2",
        provider: "Exoscale SOS",
        service: Service::S3,
        endpoint: "https://sos-ch-gva-2.exo.io",
        region: "ch-gva-2",
        location: "CH",
        operator: "Akenes SA",
        operator_country: "CH",
        parent_country: "MX",
        parent: "América Movil S.A.B. de C.V. (via A1 Telekom Austria; chain partly unverified)",
        sources: Sources {
            location: Fact::new("docs.rs exoscale-rs ZoneName; Exoscale SOS OpenAPI", "2026-12-01"),
            operator: Fact::new("providers.md: Akenes SA, Lausanne (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: A1 Telekom Austria majority-owned by América Movil (APA 2017, krone.at)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Swiss operator (Akenes SA, Lausanne, unverified) in the A1 Telekom Austria group, which América Movil (MX) controls. Pricing unverified.",
        warning: "Ultimate parent America Movil is seated in Mexico, outside the EU.",
    },
    Preset {
        name: "exoscale-at-vie-1",
        provider: "Exoscale SOS",
        service: Service::S3,
        endpoint: "https://sos-at-vie-1.exo.io",
        region: "at-vie-1",
        location: "AT",
        operator: "Akenes SA",
        operator_country: "CH",
        parent_country: "MX",
        parent: "América Movil S.A.B. de C.V. (via A1 Telekom Austria; chain partly unverified)",
        sources: Sources {
            location: Fact::new("docs.rs exoscale-rs ZoneName; Exoscale SOS OpenAPI", "2026-12-01"),
            operator: Fact::new("providers.md: Akenes SA, Lausanne (unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: A1 Telekom Austria majority-owned by América Movil (APA 2017, krone.at)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Swiss operator (Akenes SA, Lausanne, unverified) in the A1 Telekom Austria group, which América Movil (MX) controls. Pricing unverified.",
        warning: "Ultimate parent America Movil is seated in Mexico, outside the EU.",
    },
    Preset {
        name: "koofr",
        provider: "Koofr",
        service: Service::Webdav,
        endpoint: "https://app.koofr.net/dav/Koofr",
        region: "",
        location: "DE",
        operator: "Koofr",
        operator_country: "SI",
        parent_country: "SI",
        parent: "Koofr d.o.o. (no parent known; entity unverified)",
        sources: Sources {
            location: Fact::new("koofr.si/zasebnost (servers in Germany)", "2026-11-20"),
            operator: Fact::new("providers.md: Slovenian company (entity unverified)", "2026-11-20"),
            parent: Fact::new("providers.md: none known", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: NONE,
        max_concurrency: 0,
        notes: "Needs an app password (generate it in the web UI). Slovenian operator, servers in German ISO 27001 DCs; exact entity unverified.",
        warning: "",
    },
    // ---------------------------------------------------------------- US operators
    Preset {
        name: "backblaze-eu-central-003",
        provider: "Backblaze B2",
        service: Service::S3,
        endpoint: "https://s3.eu-central-003.backblazeb2.com",
        region: "eu-central-003",
        location: "NL",
        operator: "Backblaze, Inc.",
        operator_country: "US",
        parent_country: "US",
        parent: "Backblaze, Inc.",
        sources: Sources {
            location: Fact::new("Cyberduck profile B2 eu-central-003 (Amsterdam)", "2026-11-20"),
            operator: Fact::new("providers.md: Backblaze, Inc. (US)", "2026-11-20"),
            parent: Fact::new("providers.md: Backblaze, Inc. (no parent)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Amsterdam. Uploads free; Class B $0.004/10k after 2,500/day, Class C $0.004/1k; about $6/TB-month (third-party); egress terms unverified.",
        warning: CLOUD_ACT,
    },
    Preset {
        name: "wasabi-eu-central-2",
        provider: "Wasabi",
        service: Service::S3,
        endpoint: "https://s3.eu-central-2.wasabisys.com",
        region: "eu-central-2",
        location: "DE",
        operator: "Wasabi Technologies",
        operator_country: "US",
        parent_country: "US",
        parent: "Wasabi Technologies, LLC",
        sources: Sources {
            location: Fact::new("rclone Wasabi.yaml", "2026-11-20"),
            operator: Fact::new("providers.md: Wasabi Technologies (US)", "2026-11-20"),
            parent: Fact::new("providers.md: Wasabi Technologies (no parent)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Frankfurt. No egress/API fees while egress <= stored volume; a 4 KB minimum object size is unverified.",
        warning: "90-day minimum storage billing (deleted chunks still billed), 1 TB minimum monthly charge; US operator: CLOUD Act applies.",
    },
    Preset {
        name: "wasabi-eu-central-1",
        provider: "Wasabi",
        service: Service::S3,
        endpoint: "https://s3.eu-central-1.wasabisys.com",
        region: "eu-central-1",
        location: "NL",
        operator: "Wasabi Technologies",
        operator_country: "US",
        parent_country: "US",
        parent: "Wasabi Technologies, LLC",
        sources: Sources {
            location: Fact::new("rclone Wasabi.yaml", "2026-11-20"),
            operator: Fact::new("providers.md: Wasabi Technologies (US)", "2026-11-20"),
            parent: Fact::new("providers.md: Wasabi Technologies (no parent)", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Amsterdam. No egress/API fees while egress <= stored volume; a 4 KB minimum object size is unverified.",
        warning: "90-day minimum storage billing (deleted chunks still billed), 1 TB minimum monthly charge; US operator: CLOUD Act applies.",
    },
    Preset {
        name: "aws-eu-central-1",
        provider: "Amazon S3",
        service: Service::S3,
        endpoint: "https://s3.eu-central-1.amazonaws.com",
        region: "eu-central-1",
        location: "DE",
        operator: "Amazon Web Services, Inc.",
        operator_country: "US",
        parent_country: "US",
        parent: "Amazon.com, Inc., Seattle",
        sources: Sources {
            location: Fact::new("docs.aws.amazon.com regions", "2026-11-20"),
            operator: Fact::new("providers.md: Amazon Web Services, Inc. (US)", "2026-11-20"),
            parent: Fact::new("providers.md: Amazon.com, Inc.", "2026-11-20"),
        },
        conditional_writes_doc: "aws.amazon.com what's-new 2024-08 and 2024-11",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Frankfurt: about €21/TB-month, PUT €4.40/M, GET €0.35/M, egress €0.08/GB (third-party, Apr 2026). Object Lock needs checksum_algorithm=crc32c.",
        warning: CLOUD_ACT,
    },
    Preset {
        name: "aws-eusc-de-east-1",
        provider: "AWS European Sovereign Cloud",
        service: Service::S3,
        endpoint: "https://s3.eusc-de-east-1.amazonaws.eu",
        region: "eusc-de-east-1",
        location: "DE",
        operator: "AWS European Sovereign Cloud GmbH, Potsdam",
        operator_country: "DE",
        parent_country: "US",
        parent: "Amazon.com, Inc., Seattle",
        sources: Sources {
            location: Fact::new("AWS whitepaper overview-aws-european-sovereign-cloud; golem.de 2026-01 (Brandenburg)", "2026-12-01"),
            operator: Fact::new("computerweekly.de 2026-01-22: GmbHs seated in Potsdam run by EU citizens", "2026-12-01"),
            parent: Fact::new("golem.de 2026-01; providers.md addendum: ultimate parent Amazon.com, Inc.", "2026-12-01"),
        },
        conditional_writes_doc: "aws.amazon.com what's-new 2024-08 and 2024-11 (AWS S3; ESC not separately documented)",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Brandenburg, GA Jan 2026, partition aws-eusc; run by German GmbHs with EU-resident staff. Whether it is outside the CLOUD Act's reach is disputed.",
        warning: "Parent is Amazon (US); whether the CLOUD Act reaches this cloud is disputed.",
    },
    Preset {
        name: "aws-us-east-1",
        provider: "Amazon S3",
        service: Service::S3,
        endpoint: "https://s3.us-east-1.amazonaws.com",
        region: "us-east-1",
        location: "US",
        operator: "Amazon Web Services, Inc.",
        operator_country: "US",
        parent_country: "US",
        parent: "Amazon.com, Inc., Seattle",
        sources: Sources {
            location: Fact::new("docs.aws.amazon.com regions", "2026-11-20"),
            operator: Fact::new("providers.md: Amazon Web Services, Inc. (US)", "2026-11-20"),
            parent: Fact::new("providers.md: Amazon.com, Inc.", "2026-11-20"),
        },
        conditional_writes_doc: "aws.amazon.com what's-new 2024-08 and 2024-11",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Limits: 3,500 write and 5,500 read req/s per prefix. Object Lock needs checksum_algorithm=crc32c.",
        warning: "Data stored in the US by a US operator: CLOUD Act applies.",
    },
    Preset {
        name: "gcs-europe-west3",
        provider: "Google Cloud Storage (S3 API)",
        service: Service::S3,
        endpoint: "https://storage.googleapis.com",
        region: "us-east-1",
        location: "DE",
        operator: "Google LLC",
        operator_country: "US",
        parent_country: "US",
        parent: "Alphabet Inc., Mountain View",
        sources: Sources {
            location: Fact::new("mariadb.com region list (europe-west3 = Frankfurt)", "2026-11-20"),
            operator: Fact::new("providers.md: Google LLC (US)", "2026-11-20"),
            parent: Fact::new("public filings: Google LLC is owned by Alphabet Inc.", "2026-11-20"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Needs HMAC keys; create the bucket in europe-west3 (Frankfurt), region here is only rclone's signing default. OpenDAL needs native-tls for GCS (rustls connections get reset).",
        warning: CLOUD_ACT,
    },
    Preset {
        name: "cloudflare-r2-eu",
        provider: "Cloudflare R2",
        service: Service::S3,
        endpoint: "https://{account}.eu.r2.cloudflarestorage.com",
        region: "auto",
        location: "EU",
        operator: "Cloudflare, Inc.",
        operator_country: "US",
        parent_country: "US",
        parent: "Cloudflare, Inc. (no parent)",
        sources: Sources {
            location: Fact::new("developers.cloudflare.com/r2/reference/data-location", "2026-11-20"),
            operator: Fact::new("providers.md: Cloudflare, Inc. (US)", "2026-11-20"),
            parent: Fact::new("providers.md: none", "2026-11-20"),
        },
        conditional_writes_doc: "developers.cloudflare.com/r2 conditional operations",
        options: S3_R2,
        max_concurrency: 0,
        notes: "account = R2 account id; EU jurisdiction: stored and processed in the EU. $0.015/GB-month, Class A $4.50/M, Class B $0.36/M, no egress fees; random multipart ETags.",
        warning: "EU-jurisdiction buckets need this .eu endpoint (global one gives 403); US operator: CLOUD Act applies.",
    },
    // ---------------------------------------------------------------- added 2026-12 (providers.md addendum)
    Preset {
        name: "infomaniak-swiss-backup",
        provider: "Infomaniak Swiss Backup (S3)",
        service: Service::S3,
        endpoint: "https://s3.{account}.infomaniak.com",
        region: "us-east-1",
        location: "CH",
        operator: "Infomaniak Network SA, Geneva",
        operator_country: "CH",
        parent_country: "CH",
        parent: "Infomaniak Network SA (employee- and founder-owned; seat unverified)",
        sources: Sources {
            location: Fact::new("rclone Infomaniak.yaml (data in CH)", "2026-12-01"),
            operator: Fact::new("providers.md addendum: Infomaniak Network SA, Geneva (seat unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: no parent", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "account = the cluster shown in the manager (swiss-backup01..04); region is a signing placeholder. S3 on OpenStack Swift.",
        warning: "",
    },
    Preset {
        name: "impossible-cloud-eu-central-2",
        provider: "Impossible Cloud",
        service: Service::S3,
        endpoint: "https://eu-central-2.storage.impossibleapi.net",
        region: "eu-central-2",
        location: "DE",
        operator: "Impossible Cloud GmbH, Hamburg",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Impossible Cloud GmbH (no parent known; unverified)",
        sources: Sources {
            location: Fact::new("rclone ImpossibleCloud.yaml (eu-central-2 = Frankfurt)", "2026-12-01"),
            operator: Fact::new("impossiblecloud.com llms.txt (Hamburg)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: DE (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Frankfurt. Same region map as JetBackup storage (likely white-label). Decentralised DCs; pricing unverified.",
        warning: "",
    },
    Preset {
        name: "impossible-cloud-eu-west-1",
        provider: "Impossible Cloud",
        service: Service::S3,
        endpoint: "https://eu-west-1.storage.impossibleapi.net",
        region: "eu-west-1",
        location: "NL",
        operator: "Impossible Cloud GmbH, Hamburg",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Impossible Cloud GmbH (no parent known; unverified)",
        sources: Sources {
            location: Fact::new("rclone ImpossibleCloud.yaml (eu-west-1 = Amsterdam)", "2026-12-01"),
            operator: Fact::new("impossiblecloud.com llms.txt (Hamburg)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: DE (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Amsterdam. Other regions: eu-west-2 London, eu-west-3 Paris, eu-east-1 Poznan, eu-north-1 Copenhagen.",
        warning: "Data is stored in the Netherlands, not Germany.",
    },
    Preset {
        name: "impossible-cloud-us-east-1",
        provider: "Impossible Cloud",
        service: Service::S3,
        endpoint: "https://us-east-1.storage.impossibleapi.net",
        region: "us-east-1",
        location: "US",
        operator: "Impossible Cloud GmbH, Hamburg",
        operator_country: "DE",
        parent_country: "DE",
        parent: "Impossible Cloud GmbH (no parent known; unverified)",
        sources: Sources {
            location: Fact::new("rclone ImpossibleCloud.yaml (us-east-1 = New York)", "2026-12-01"),
            operator: Fact::new("impossiblecloud.com llms.txt (Hamburg)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: DE (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "New York. A German operator, but the data centre is in the US and under US law where it stands.",
        warning: "Data is stored in the US: US authorities reach the site whatever the operator's seat.",
    },
    Preset {
        name: "cubbit-eu-west-1",
        provider: "Cubbit DS3",
        service: Service::S3,
        endpoint: "https://s3.cubbit.eu",
        region: "eu-west-1",
        location: "EU",
        operator: "Cubbit S.r.l., Bologna (entity unverified)",
        operator_country: "IT",
        parent_country: "IT",
        parent: "Cubbit S.r.l. (no parent known; unverified)",
        sources: Sources {
            location: Fact::new("rclone Cubbit.yaml (s3.cubbit.eu, eu-west-1); geo-distributed in the EU", "2026-12-01"),
            operator: Fact::new("providers.md addendum: Cubbit (IT)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: IT (unverified)", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Erasure-coded over nodes in several EU countries, so no single country; pricing unverified.",
        warning: "",
    },
    Preset {
        name: "storj-gateway",
        provider: "Storj (hosted S3 gateway)",
        service: Service::S3,
        endpoint: "https://gateway.storjshare.io",
        region: "us-east-1",
        location: "",
        operator: "Storj Labs, Inc.",
        operator_country: "US",
        parent_country: "US",
        parent: "Storj Labs, Inc. (unverified)",
        sources: Sources {
            location: Fact::new("rclone Storj.yaml (global gateway); pieces on independent nodes worldwide", "2026-12-01"),
            operator: Fact::new("providers.md addendum: Storj Labs (US, unverified)", "2026-12-01"),
            parent: Fact::new("providers.md addendum: US", "2026-12-01"),
        },
        conditional_writes_doc: "",
        options: S3_BASE,
        max_concurrency: 0,
        notes: "Pieces are spread over nodes worldwide unless the bucket is geofenced (EU placement unverified): --location is required. Min part 64 MiB.",
        warning: "US operator: the US CLOUD Act applies; data is global unless geofenced.",
    },
    // ---------------------------------------------------------------- self-hosted
    Preset {
        name: "nextcloud",
        provider: "Nextcloud/ownCloud (self-hosted)",
        service: Service::Webdav,
        endpoint: "https://{account}/remote.php/webdav",
        region: "",
        location: "",
        operator: "whoever runs the server",
        operator_country: "",
        parent_country: "",
        parent: "",
        sources: Sources {
            location: Fact::new("you: the server you run or rent", ""),
            operator: Fact::new("you: whoever runs the server", ""),
            parent: Fact::new("you: whoever owns that operator", ""),
        },
        conditional_writes_doc: "",
        options: NONE,
        max_concurrency: 0,
        notes: "account = host (may include a port or path prefix); use an app password. Legacy WebDAV path; /remote.php/dav/files/<user> also works. --location is required.",
        warning: "",
    },
];

impl From<Service> for crate::vault::config::ServiceName {
    fn from(s: Service) -> Self {
        match s {
            Service::S3 => crate::vault::config::ServiceName::S3,
            Service::Webdav => crate::vault::config::ServiceName::Webdav,
            Service::Sftp => crate::vault::config::ServiceName::Sftp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const S3_KEYS: &[&str] = &[
        "disable_config_load",
        "disable_ec2_metadata",
        "delete_max_size",
        "disable_stat_with_override",
        "disable_list_objects_v2",
        "checksum_algorithm",
    ];
    const WEBDAV_KEYS: &[&str] = &["root", "disable_create_dir"];
    const SFTP_KEYS: &[&str] = &["root", "known_hosts_strategy"];

    /// Presets whose location depends on the user's setup.
    const EMPTY_LOCATION: &[&str] = &[
        "nextcloud",
        "hetzner-storagebox-webdav",
        "hetzner-storagebox-sftp",
        "storj-gateway",
    ];
    /// Presets whose sources give no single country.
    const EU_LOCATION: &[&str] = &["cloudflare-r2-eu", "contabo-eu2", "cubbit-eu-west-1"];
    /// Self-hosted: operator unknown.
    const NO_OPERATOR: &[&str] = &["nextcloud"];

    fn is_cc(s: &str) -> bool {
        s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
    }

    #[test]
    fn enough_presets() {
        assert!(all().len() >= 24, "only {} presets", all().len());
    }

    #[test]
    fn names_unique_and_kebab_case() {
        let mut seen = HashSet::new();
        for p in all() {
            assert!(seen.insert(p.name), "duplicate name {}", p.name);
            assert!(!p.name.is_empty());
            assert!(
                p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{} not kebab-case",
                p.name
            );
            assert!(
                !p.name.starts_with('-') && !p.name.ends_with('-') && !p.name.contains("--"),
                "{} not kebab-case",
                p.name
            );
        }
    }

    #[test]
    fn service_names() {
        assert_eq!(Service::S3.as_str(), "s3");
        assert_eq!(Service::Webdav.as_str(), "webdav");
        assert_eq!(Service::Sftp.as_str(), "sftp");
    }

    #[test]
    fn endpoints_and_regions() {
        for p in all() {
            match p.service {
                Service::S3 => {
                    assert!(!p.region.is_empty(), "{} has no region", p.name);
                    assert!(p.endpoint.starts_with("https://"), "{}", p.name);
                    assert!(
                        !p.options.contains(&("enable_virtual_host_style", "true")),
                        "{} must be path-style",
                        p.name
                    );
                    for base in S3_BASE {
                        assert!(p.options.contains(base), "{} lacks {:?}", p.name, base);
                    }
                }
                Service::Webdav => {
                    assert!(p.region.is_empty(), "{}", p.name);
                    assert!(p.endpoint.starts_with("https://"), "{}", p.name);
                    // OpenDAL appends "/path" to the endpoint verbatim.
                    assert!(!p.endpoint.ends_with('/'), "{}", p.name);
                }
                Service::Sftp => {
                    assert!(p.region.is_empty(), "{}", p.name);
                    assert!(p.endpoint.starts_with("ssh://"), "{}", p.name);
                }
            }
            assert!(!p.endpoint.chars().any(char::is_whitespace), "{}", p.name);
            let rest = p.endpoint.replace(ACCOUNT, "");
            assert!(
                !rest.contains('{') && !rest.contains('}'),
                "{} has an unknown placeholder",
                p.name
            );
        }
    }

    #[test]
    fn option_keys_known() {
        let mut keys = HashSet::new();
        for p in all() {
            let allowed = match p.service {
                Service::S3 => S3_KEYS,
                Service::Webdav => WEBDAV_KEYS,
                Service::Sftp => SFTP_KEYS,
            };
            for (k, v) in p.options {
                assert!(allowed.contains(k), "{}: unknown key {}", p.name, k);
                assert!(!v.is_empty(), "{}: empty value for {}", p.name, k);
                assert!(keys.insert((p.name, *k)), "{}: duplicate key {}", p.name, k);
            }
        }
    }

    #[test]
    fn country_codes() {
        for p in all() {
            if EMPTY_LOCATION.contains(&p.name) {
                assert_eq!(p.location, "", "{}", p.name);
                assert!(p.notes.contains("--location"), "{}", p.name);
            } else if EU_LOCATION.contains(&p.name) {
                assert_eq!(p.location, "EU", "{}", p.name);
            } else {
                assert!(is_cc(p.location), "{}: location {:?}", p.name, p.location);
                assert_ne!(p.location, "EU", "{}", p.name);
            }
            if NO_OPERATOR.contains(&p.name) {
                assert_eq!(p.operator_country, "", "{}", p.name);
                assert_eq!(p.parent_country, "", "{}", p.name);
                assert!(p.jurisdictions().is_empty());
            } else {
                assert!(is_cc(p.operator_country), "{}", p.name);
                assert!(is_cc(p.parent_country), "{}", p.name);
                assert!(!p.operator.is_empty(), "{}", p.name);
            }
        }
    }

    #[test]
    fn texts_present_and_short() {
        for p in all() {
            assert!(!p.provider.is_empty() && !p.notes.is_empty(), "{}", p.name);
            assert!(p.notes.len() <= 240, "{}: notes too long", p.name);
            assert!(p.warning.len() <= 140, "{}: warning too long", p.name);
            assert!(!p.warning.contains('\n'), "{}", p.name);
        }
    }

    #[test]
    fn us_operators_warn_about_cloud_act() {
        for p in all() {
            if p.jurisdictions().contains(&"US") {
                assert!(p.warning.contains("CLOUD Act"), "{}", p.name);
            }
        }
    }

    #[test]
    fn aws_eu_central_1() {
        let p = find("aws-eu-central-1").unwrap();
        assert_eq!(p.location, "DE");
        assert!(p.jurisdictions().contains(&"US"));
        assert_eq!(p.service, Service::S3);
        assert_eq!(p.region, "eu-central-1");
    }

    #[test]
    fn aws_sovereign_cloud() {
        let p = find("aws-eusc-de-east-1").unwrap();
        assert_eq!(p.location, "DE");
        assert_eq!(p.jurisdictions(), vec!["DE", "US"]);
        assert!(p.notes.contains("disputed"));
    }

    #[test]
    fn hetzner_hel1() {
        let p = find("hetzner-hel1").unwrap();
        assert_eq!(p.location, "FI");
        assert_eq!(p.operator_country, "DE");
        assert_eq!(p.jurisdictions(), vec!["DE"]);
        // Deprecated since OpenDAL 0.57 and a no-op: no preset sets it.
        assert!(all().iter().all(|p| p
            .options
            .iter()
            .all(|(k, _)| *k != "disable_write_with_if_match")));
    }

    #[test]
    fn every_fact_has_a_source_and_a_date() {
        for p in all() {
            for (what, f) in [
                ("location", p.sources.location),
                ("operator", p.sources.operator),
                ("parent", p.sources.parent),
            ] {
                assert!(!f.source.is_empty(), "{}: {what} has no source", p.name);
                if NO_OPERATOR.contains(&p.name) {
                    continue;
                }
                let d = f.checked.as_bytes();
                assert!(
                    d.len() == 10 && d[4] == b'-' && d[7] == b'-' && f.checked.starts_with("20"),
                    "{}: {what} checked {:?} is not an ISO date",
                    p.name,
                    f.checked
                );
            }
            if !NO_OPERATOR.contains(&p.name) {
                assert!(!p.parent.is_empty(), "{}: no parent", p.name);
            }
        }
    }

    #[test]
    fn renamed_presets_are_found_by_their_old_names() {
        assert_eq!(find("otc-eu-de").unwrap().name, "tcloud-eu-de");
        assert!(find("otc-eu-de")
            .unwrap()
            .provider
            .contains("T Cloud Public"));
        for (old, new) in RENAMED {
            assert!(find(new).is_some(), "{old} -> {new}");
            assert!(all().iter().all(|p| p.name != *old));
        }
    }

    #[test]
    fn ownership_chains_of_2026() {
        let esc = find("aws-eusc-de-east-1").unwrap();
        assert_eq!((esc.operator_country, esc.parent_country), ("DE", "US"));
        assert!(esc.parent.contains("Amazon.com"));
        let exo = find("exoscale-de-fra-1").unwrap();
        assert_eq!(exo.parent_country, "MX");
        for name in [
            "infomaniak-swiss-backup",
            "impossible-cloud-eu-central-2",
            "cubbit-eu-west-1",
            "storj-gateway",
        ] {
            assert!(find(name).is_some(), "missing {name}");
        }
        assert_eq!(find("storj-gateway").unwrap().operator_country, "US");
    }

    #[test]
    fn storage_box_limits_concurrency() {
        for name in ["hetzner-storagebox-webdav", "hetzner-storagebox-sftp"] {
            let p = find(name).unwrap();
            assert!(p.max_concurrency > 0 && p.max_concurrency <= 10, "{}", name);
        }
        assert_eq!(
            find("hetzner-storagebox-sftp").unwrap().service,
            Service::Sftp
        );
    }

    #[test]
    fn r2_eu() {
        let p = find("cloudflare-r2-eu").unwrap();
        assert_eq!(p.region, "auto");
        assert_eq!(p.location, "EU");
        assert!(p.options.contains(&("delete_max_size", "700")));
        assert!(p.options.contains(&("disable_stat_with_override", "true")));
        assert_eq!(
            p.endpoint_for(Some("abc123")).unwrap(),
            "https://abc123.eu.r2.cloudflarestorage.com"
        );
    }

    #[test]
    fn endpoint_for_substitutes() {
        let p = find("upcloud-europe-1").unwrap();
        assert!(p.needs_account());
        assert_eq!(
            p.endpoint_for(Some("7f3a")).unwrap(),
            "https://7f3a.upcloudobjects.com"
        );
        let sb = find("hetzner-storagebox-sftp").unwrap();
        assert_eq!(
            sb.endpoint_for(Some("u12345")).unwrap(),
            "ssh://u12345@u12345.your-storagebox.de:23"
        );
        let nc = find("nextcloud").unwrap();
        assert_eq!(
            nc.endpoint_for(Some("cloud.example.org:8443")).unwrap(),
            "https://cloud.example.org:8443/remote.php/webdav"
        );
    }

    #[test]
    fn endpoint_for_errors() {
        let p = find("upcloud-europe-1").unwrap();
        for bad in [None, Some(""), Some("  ")] {
            let e = p.endpoint_for(bad).unwrap_err();
            assert!(e.contains("--account") && e.contains(p.name), "{}", e);
        }
        assert!(p
            .endpoint_for(Some("https://x.upcloudobjects.com"))
            .is_err());
        assert!(p.endpoint_for(Some("a b")).is_err());
        assert!(p.endpoint_for(Some("{account}")).is_err());
    }

    #[test]
    fn endpoint_for_without_account() {
        let p = find("hetzner-fsn1").unwrap();
        assert!(!p.needs_account());
        assert_eq!(
            p.endpoint_for(None).unwrap(),
            "https://fsn1.your-objectstorage.com"
        );
        assert_eq!(
            p.endpoint_for(Some("ignored")).unwrap(),
            "https://fsn1.your-objectstorage.com"
        );
        for p in all() {
            if !p.needs_account() {
                assert_eq!(p.endpoint_for(None).unwrap(), p.endpoint);
            } else {
                assert!(p.endpoint_for(None).is_err());
                assert!(!p.endpoint_for(Some("x1")).unwrap().contains('{'));
            }
        }
    }

    #[test]
    fn find_works() {
        assert_eq!(find("hetzner-fsn1").unwrap().region, "fsn1");
        assert_eq!(find("wasabi-eu-central-2").unwrap().location, "DE");
        assert!(find("nope").is_none());
        assert!(find("").is_none());
        for p in all() {
            assert!(std::ptr::eq(find(p.name).unwrap(), p));
        }
    }

    #[test]
    fn required_coverage() {
        for name in [
            "hetzner-fsn1",
            "hetzner-nbg1",
            "hetzner-hel1",
            "hetzner-storagebox-webdav",
            "hetzner-storagebox-sftp",
            "ionos-de",
            "ionos-eu-central-2",
            "ionos-eu-south-2",
            "stackit-eu01",
            "otc-eu-de",
            "otc-eu-nl",
            "strato-hidrive",
            "nextcloud",
            "ovh-gra",
            "ovh-de",
            "ovh-waw",
            "scaleway-fr-par",
            "scaleway-nl-ams",
            "scaleway-pl-waw",
            "upcloud-europe-1",
            "exoscale-de-fra-1",
            "exoscale-ch-gva-2",
            "exoscale-at-vie-1",
            "contabo-eu2",
            "koofr",
            "backblaze-eu-central-003",
            "wasabi-eu-central-2",
            "wasabi-eu-central-1",
            "aws-eu-central-1",
            "aws-eusc-de-east-1",
            "aws-us-east-1",
            "gcs-europe-west3",
            "cloudflare-r2-eu",
        ] {
            assert!(find(name).is_some(), "missing {}", name);
        }
        assert_eq!(find("otc-eu-nl").unwrap().location, "NL");
        assert_eq!(find("ionos-eu-south-2").unwrap().location, "ES");
        assert_eq!(find("koofr").unwrap().operator_country, "SI");
        assert_eq!(find("koofr").unwrap().location, "DE");
    }
}
