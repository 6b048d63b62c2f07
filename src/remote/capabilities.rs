//! What a backend can do, probed rather than assumed: conditional creates
//! (`If-None-Match: *` or an exclusive create), conditional replaces
//! (`If-Match: ETAG`), ranged reads, and S3 Object Lock.
//!
//! # Why probe
//!
//! OpenDAL's s3 service advertises conditional writes for *every* endpoint,
//! and a provider that silently ignores the header turns a lease into a race
//! (`../shared/providers.md`, Q5). So `backend add` and `backend test` try
//! each one on a fresh object, ZeroFS-style: create it; creating it again
//! must fail; a write with a wrong ETag must fail; one with the right ETag
//! must succeed; a ranged read must return exactly the range. Object Lock is
//! a bucket setting, read with one signed `GET ?object-lock`. The result is
//! stored in `config.toml` (`[backend.capabilities]`) and shown by `status`.
//!
//! The largest single PUT is the protocol's documented limit (S3: 5 GiB),
//! not probed: probing it would mean uploading it. tresor's packs are far
//! below it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use opendal::{ErrorKind, Operator};

use crate::vault::config::{BackendConfig, Capabilities, Capability, Secret, ServiceName};

/// S3's documented largest single PUT (5 GiB).
pub const S3_MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// Probes `cfg` with the given credentials, on `runtime`.
pub fn probe(
    cfg: &BackendConfig,
    secret: &Secret,
    runtime: &tokio::runtime::Runtime,
) -> Result<Capabilities> {
    let op = super::backend::build_operator(cfg, secret)?;
    Ok(runtime.block_on(probe_with(cfg, secret, &op)))
}

async fn probe_with(cfg: &BackendConfig, secret: &Secret, op: &Operator) -> Capabilities {
    let mut caps = Capabilities {
        probed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        max_single_put: match cfg.service {
            ServiceName::S3 => S3_MAX_SINGLE_PUT,
            _ => 0,
        },
        ..Default::default()
    };
    let mut nonce = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let path = format!("probe/cap-{}", hex::encode(nonce));
    let service = cfg.service.as_str();

    caps.create_if_absent = create_if_absent(op, &path, service).await;
    caps.replace_if_match = replace_if_match(op, &path, service).await;
    caps.ranged_read = ranged_read(op, &path).await;
    caps.object_lock = match cfg.service {
        ServiceName::S3 => s3_object_lock(cfg, secret)
            .await
            .unwrap_or_else(|e| Capability::unknown(format!("the lock query failed: {e}"))),
        _ => Capability::no(format!("{service} has no object lock")),
    };
    let _ = op.delete(&path).await;
    // WebDAV and file servers keep the emptied folder.
    let _ = op.delete("probe/").await;
    caps
}

/// Creates `path`, then creates it again with `if_not_exists`.
async fn create_if_absent(op: &Operator, path: &str, service: &str) -> Capability {
    if let Err(e) = op.write(path, b"first".to_vec()).await {
        return Capability::unknown(format!("the probe object could not be written: {e}"));
    }
    match op
        .write_with(path, b"second".to_vec())
        .if_not_exists(true)
        .await
    {
        Err(e) if crate::store::refused_condition(&e) => {
            Capability::yes("a second create of the same object was refused")
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            Capability::no(format!("OpenDAL's {service} service cannot send it"))
        }
        Ok(_) => Capability::no("the provider ignored it: a second create overwrote the object"),
        Err(e) => Capability::unknown(format!("unexpected answer: {}", e.kind())),
    }
}

/// Writes with a wrong ETag (must fail), then with the right one.
async fn replace_if_match(op: &Operator, path: &str, service: &str) -> Capability {
    let etag = match op.stat(path).await {
        Ok(m) => match m.etag() {
            Some(t) => t.to_string(),
            None => return Capability::no("objects have no ETag"),
        },
        Err(e) => return Capability::unknown(format!("stat failed: {e}")),
    };
    match op
        .write_with(path, b"wrong".to_vec())
        .if_match("\"00000000000000000000000000000000\"")
        .await
    {
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {}
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            return Capability::no(format!("OpenDAL's {service} service cannot send it"))
        }
        Ok(_) => return Capability::no("the provider ignored it: a wrong ETag was accepted"),
        Err(e) => return Capability::unknown(format!("unexpected answer: {}", e.kind())),
    }
    match op.write_with(path, b"right".to_vec()).if_match(&etag).await {
        Ok(_) => Capability::yes("a wrong ETag was refused, the right one accepted"),
        Err(e) => Capability::no(format!(
            "a wrong ETag was refused, but so was the right one ({})",
            e.kind()
        )),
    }
}

/// Writes 4 KiB and reads bytes 1000..1064 back.
async fn ranged_read(op: &Operator, path: &str) -> Capability {
    let mut body = vec![0u8; 4096];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut body);
    if let Err(e) = op.write(path, body.clone()).await {
        return Capability::unknown(format!("the probe object could not be written: {e}"));
    }
    match op.read_with(path).range(1000..1064).await {
        Ok(b) if b.to_vec() == body[1000..1064] => {
            Capability::yes("a 64-byte range came back exactly")
        }
        Ok(b) => Capability::no(format!("asked for 64 bytes, got {} other bytes", b.len())),
        Err(e) => Capability::unknown(format!("the ranged read failed: {}", e.kind())),
    }
}

/// `GET /BUCKET?object-lock`, signed with SigV4: 200 with
/// `<ObjectLockEnabled>Enabled` means yes; 404
/// (`ObjectLockConfigurationNotFoundError`) means no.
async fn s3_object_lock(cfg: &BackendConfig, secret: &Secret) -> Result<Capability> {
    let endpoint = cfg.endpoint.trim_end_matches('/');
    let endpoint = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    };
    let url = if cfg
        .options
        .get("enable_virtual_host_style")
        .map(String::as_str)
        == Some("true")
    {
        let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", &endpoint));
        format!("{scheme}://{}.{host}/?object-lock", cfg.bucket)
    } else {
        format!("{endpoint}/{}?object-lock", cfg.bucket)
    };
    let (mut parts, ()) = http::Request::get(&url).body(())?.into_parts();
    let signer = reqsign_core::Signer::new(
        reqsign_core::Context::new(),
        reqsign_aws_v4::StaticCredentialProvider::new(
            &secret.access_key_id,
            &secret.secret_access_key,
        ),
        reqsign_aws_v4::RequestSigner::new("s3", &cfg.region),
    );
    signer.sign(&mut parts, None).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut req = client.get(parts.uri.to_string());
    for (k, v) in &parts.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok(match status {
        200 if body.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>") => {
            Capability::yes("the bucket has Object Lock enabled")
        }
        200 => Capability::no("the bucket's lock configuration does not enable it"),
        404 => Capability::no("the bucket has no Object Lock configuration"),
        403 => Capability::unknown("not allowed to read the bucket's lock configuration (403)"),
        s => Capability::unknown(format!("the lock query answered HTTP {s}")),
    })
}

/// One line for `status`: "create-if-absent yes · replace-if-match yes ·
/// ranged read yes · object lock no (probed 2026-12-07 …)".
pub fn summary(caps: &Capabilities) -> String {
    if caps.never_probed() {
        return "not probed yet (`tresor backend test NAME` probes them)".to_string();
    }
    format!(
        "create-if-absent {} · replace-if-match {} · ranged read {} · object lock {} (probed {})",
        caps.create_if_absent.word(),
        caps.replace_if_match.word(),
        caps.ranged_read.word(),
        caps.object_lock.word(),
        super::snapshot::utc(caps.probed_at)
    )
}
