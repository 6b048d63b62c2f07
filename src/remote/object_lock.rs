//! S3 Object Lock: kept snapshots and the packs they need made immutable
//! for `[snapshot] lock_days`, so that even a machine holding the
//! credentials cannot delete history (ransomware, a stolen laptop).
//!
//! # How
//! - A bucket has Object Lock only if it was created with it (it implies
//!   versioning). Where it has, and `lock_days > 0`, the engine sets the
//!   bucket's *default retention* to `lock_mode` for `lock_days` days
//!   (`PUT ?object-lock`): every object version tresor writes from then on
//!   (packs, index blocks, manifests, the lease, the key file) is immutable
//!   for that long after its upload. OpenDAL 0.59's s3 service cannot send
//!   per-object retention headers, so the default rule does it. A provider
//!   that refuses the rule (moto does on a bucket that holds objects) is
//!   still used: each snapshot then locks its manifest and the objects it
//!   needs one by one (below); packs uploaded between two snapshots are
//!   unlocked until the next one, and `status` says so.
//! - A new snapshot needs packs and blocks uploaded long ago, whose lock
//!   may end before the new manifest's. After each manifest upload the
//!   engine extends (`PUT ?retention`, never shortening) every pack and
//!   block of that backend whose known lock ends before the manifest's, to
//!   the manifest's end plus [`RENEW_SLACK_S`]; so an object is extended at
//!   most once a day, and once after each mount (what this process knows
//!   is kept in memory only). A state is thus protected at least until its
//!   manifest's lock ends, which `status` shows.
//! - Deleting (gc, `forget`, unused index blocks) on such a bucket deletes
//!   every *version* of the object: a plain DELETE only adds a delete marker
//!   and the bytes stay billed. The provider refuses a locked version
//!   (403); tresor then keeps its bookkeeping (the pack stays queued, the
//!   generation stays kept) and reports the object as protected until the
//!   date the provider gives (`HEAD`, `x-amz-object-lock-retain-until-date`).
//!
//! OpenDAL has no call for a bucket's lock configuration, an object's
//! retention or its retain-until header, so these are SigV4-signed requests
//! through reqsign (already in the tree through OpenDAL), as the probe in
//! `capabilities.rs` does.
//!
//! WebDAV, SFTP and local directories have no such thing: `status` says so.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::vault::config::{BackendConfig, Secret, ServiceName};

/// An object whose lock ends within a day of what a new state needs is
/// extended to that plus a day: at most one extension per object per day.
pub const RENEW_SLACK_S: u64 = 86_400;

/// The bucket's default retention rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LockRule {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    pub days: u64,
}

/// What the bucket's lock configuration says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketLockConfig {
    pub enabled: bool,
    pub rule: Option<LockRule>,
}

/// Signed requests to one S3 bucket for what OpenDAL cannot ask.
pub struct BucketLock {
    endpoint: String,
    bucket: String,
    region: String,
    root: String,
    virtual_host: bool,
    secret: Secret,
    client: reqwest::Client,
}

/// One signed request's answer.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl BucketLock {
    /// `None` for services other than S3.
    pub fn new(cfg: &BackendConfig, secret: &Secret) -> Option<BucketLock> {
        if cfg.service != ServiceName::S3 {
            return None;
        }
        let endpoint = cfg.endpoint.trim_end_matches('/');
        let endpoint = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("https://{endpoint}")
        };
        Some(BucketLock {
            endpoint,
            bucket: cfg.bucket.clone(),
            region: if cfg.region.is_empty() {
                "us-east-1".into()
            } else {
                cfg.region.clone()
            },
            root: cfg.root.trim_matches('/').to_string(),
            virtual_host: cfg
                .options
                .get("enable_virtual_host_style")
                .map(String::as_str)
                == Some("true"),
            secret: secret.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .ok()?,
        })
    }

    /// The object key of a vault path (the backend's root in front, as
    /// OpenDAL builds it).
    fn key(&self, path: &str) -> String {
        if self.root.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.root)
        }
    }

    /// `METHOD /BUCKET[/KEY]?QUERY`, signed with SigV4. A body is sent with
    /// its SHA-256 as `x-amz-checksum-sha256` (AWS wants a checksum on the
    /// lock and retention PUTs).
    pub async fn request(
        &self,
        method: http::Method,
        path: Option<&str>,
        query: &str,
        body: Vec<u8>,
    ) -> Result<Answer> {
        let object = path
            .map(|p| format!("/{}", self.key(p)))
            .unwrap_or_default();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let url = if self.virtual_host {
            let (scheme, host) = self
                .endpoint
                .split_once("://")
                .unwrap_or(("https", &self.endpoint));
            format!(
                "{scheme}://{}.{host}{}{query}",
                self.bucket,
                object_or_root(&object)
            )
        } else {
            format!("{}/{}{object}{query}", self.endpoint, self.bucket)
        };
        let mut builder = http::Request::builder().method(method.clone()).uri(&url);
        if !body.is_empty() {
            use base64::Engine;
            let sum = ring::digest::digest(&ring::digest::SHA256, &body);
            builder = builder
                .header(
                    "x-amz-checksum-sha256",
                    base64::engine::general_purpose::STANDARD.encode(sum.as_ref()),
                )
                .header("x-amz-sdk-checksum-algorithm", "SHA256");
        }
        let (mut parts, ()) = builder.body(())?.into_parts();
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            reqsign_aws_v4::StaticCredentialProvider::new(
                &self.secret.access_key_id,
                &self.secret.secret_access_key,
            ),
            reqsign_aws_v4::RequestSigner::new("s3", &self.region),
        );
        signer.sign(&mut parts, None).await?;
        let mut req = self.client.request(method, parts.uri.to_string());
        for (k, v) in &parts.headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// `GET ?object-lock`.
    pub async fn configuration(&self) -> Result<BucketLockConfig> {
        let a = self
            .request(http::Method::GET, None, "object-lock", Vec::new())
            .await?;
        match a.status {
            200 => Ok(parse_configuration(&a.body)),
            404 => Ok(BucketLockConfig {
                enabled: false,
                rule: None,
            }),
            s => bail!("reading the bucket's Object Lock configuration: HTTP {s}"),
        }
    }

    /// `PUT ?object-lock` with a default retention rule.
    pub async fn set_default(&self, rule: &LockRule) -> Result<()> {
        let body = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
             <Mode>{}</Mode><Days>{}</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
            rule.mode, rule.days
        );
        let a = self
            .request(http::Method::PUT, None, "object-lock", body.into_bytes())
            .await?;
        if a.status != 200 {
            bail!(
                "setting the bucket's default retention: HTTP {} {}",
                a.status,
                s3_code(&a.body)
            );
        }
        Ok(())
    }

    /// When the lock of `path` (its current version, or `version`) ends,
    /// in Unix seconds; `None`: not locked (or not found).
    pub async fn retain_until(&self, path: &str, version: Option<&str>) -> Result<Option<u64>> {
        let query = version
            .map(|v| format!("versionId={v}"))
            .unwrap_or_default();
        let a = self
            .request(http::Method::HEAD, Some(path), &query, Vec::new())
            .await?;
        match a.status {
            200 => Ok(a
                .headers
                .get("x-amz-object-lock-retain-until-date")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_iso8601)),
            404 | 405 => Ok(None),
            s => bail!("HEAD {path}: HTTP {s}"),
        }
    }

    /// Extends the lock of `path`'s current version to `until` (`PUT
    /// ?retention`; the provider refuses shortening it).
    pub async fn extend(&self, path: &str, mode: &str, until: u64) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            iso8601(until)
        );
        let a = self
            .request(
                http::Method::PUT,
                Some(path),
                "retention",
                body.into_bytes(),
            )
            .await?;
        if a.status != 200 {
            bail!(
                "extending the lock of {path}: HTTP {} {}",
                a.status,
                s3_code(&a.body)
            );
        }
        Ok(())
    }
}

fn object_or_root(object: &str) -> &str {
    if object.is_empty() {
        "/"
    } else {
        object
    }
}

/// The `<Code>` of an S3 error body.
fn s3_code(body: &str) -> String {
    tag(body, "Code").unwrap_or_default().to_string()
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + len].trim())
}

/// Reads `<ObjectLockEnabled>` and the default rule (`Days`, or `Years` as
/// 365 days each).
pub fn parse_configuration(xml: &str) -> BucketLockConfig {
    let enabled = tag(xml, "ObjectLockEnabled") == Some("Enabled");
    let rule = tag(xml, "DefaultRetention").and_then(|r| {
        let mode = tag(r, "Mode")?.to_string();
        let days = tag(r, "Days")
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(0)
            + 365
                * tag(r, "Years")
                    .and_then(|y| y.parse::<u64>().ok())
                    .unwrap_or(0);
        (days > 0).then_some(LockRule { mode, days })
    });
    BucketLockConfig { enabled, rule }
}

/// `2026-12-08T20:48:43Z` (fractions allowed) as Unix seconds.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let time = time.trim_end_matches('Z');
    let time = time.split('.').next()?;
    let mut t = time.split(':');
    let hh: u64 = t.next()?.parse().ok()?;
    let mm: u64 = t.next()?.parse().ok()?;
    let ss: u64 = t.next()?.parse().ok()?;
    // Howard Hinnant's days_from_civil (the inverse of `snapshot::utc`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Unix seconds as `2026-12-08T20:48:43Z`.
pub fn iso8601(t: u64) -> String {
    let u = super::snapshot::utc(t);
    format!("{}T{}Z", &u[..10], &u[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for t in [0, 86_399, 951_782_400, 1_796_758_123, 4_102_444_800] {
            assert_eq!(parse_iso8601(&iso8601(t)), Some(t), "{}", iso8601(t));
        }
        assert_eq!(
            parse_iso8601("2026-12-08T20:48:43.000Z"),
            Some(1_796_762_923)
        );
    }

    #[test]
    fn configuration_is_read() {
        let xml = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
                   <Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>7</Days>\
                   </DefaultRetention></Rule></ObjectLockConfiguration>";
        assert_eq!(
            parse_configuration(xml),
            BucketLockConfig {
                enabled: true,
                rule: Some(LockRule {
                    mode: "GOVERNANCE".into(),
                    days: 7
                })
            }
        );
        let plain = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
                     </ObjectLockConfiguration>";
        assert_eq!(parse_configuration(plain).rule, None);
    }
}
