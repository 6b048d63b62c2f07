//! The single-writer lease, enforced by the provider wherever it can be.
//!
//! A lease is one sealed object, `lease`, naming the mount that may write
//! the vault (instance id, host, vault directory, a random per-mount
//! token) and its epoch. What makes it exclusive is the write, not the
//! read before it:
//! - **take** an absent lease with a conditional create (`If-None-Match:
//!   *` on S3, an exclusive create on SFTP and the local fs): of two mounts
//!   started together exactly one create succeeds; the other reads the
//!   winner's lease and is refused (exit 10);
//! - **renew** with `If-Match: <ETag of our last write>` on S3; SFTP and
//!   the fs have no conditional replace, so there the renewal reads the
//!   lease first and rewrites it only when it still carries our token;
//! - **fence**: before a manifest (the commit point of a snapshot) goes to
//!   a backend, the lease is renewed there; a mount that finds another's
//!   lease stops publishing (`lease_lost`), so a writer that lost the lease
//!   cannot publish. Manifests carry the writer's epoch.
//!
//! OpenDAL's S3 service retries a 409 by itself, and any retried
//! conditional request may meet its own first attempt: a refused condition
//! is therefore never taken as "lost" before the lease is read back — our
//! token there means the write was ours.
//!
//! Where the probe at `backend add` found no conditional create
//! (`capabilities.create_if_absent` not "yes"), the lease is written after
//! a read and read back: two mounts within a second can both win. `status`
//! says so for each such backend, and so does docs/ARCHITECTURE.md.

use anyhow::{Context, Result};

use super::snapshots::{Setup, LEASE_STALE_S};
use super::{Remote, SyncEngine};
use crate::remote::snapshot::{self, Lease};
use crate::vault::config::{BackendConfig, CapabilityState};

/// Whether the provider enforces the lease on `b` (its probe said it
/// refuses a second create).
pub fn lease_enforced(b: &BackendConfig) -> bool {
    b.capabilities.create_if_absent.state == CapabilityState::Yes
}

/// Rounds of read → conditional write before giving up (each lost round
/// means another writer changed the lease in between).
const ATTEMPTS: usize = 4;

impl SyncEngine {
    /// The lease on `remote` with its ETag (S3), or `None`.
    fn lease_tagged(
        &self,
        setup: &Setup,
        remote: &Remote,
    ) -> Result<Option<(Lease, Option<String>)>> {
        let etag = remote.store.etag_of(snapshot::LEASE_PATH)?;
        Ok(self.lease_of(setup, remote)?.map(|l| (l, etag)))
    }

    /// Takes (at mount) or renews (`refreshing`: the minute timer and the
    /// fence before a manifest) this mount's lease on `remote`. Another
    /// holder's lease refuses the mount, or, when renewing, marks the lease
    /// lost: this mount stops writing snapshots.
    pub(super) fn take_lease(
        &self,
        setup: &Setup,
        remote: &Remote,
        refreshing: bool,
    ) -> Result<()> {
        let create = lease_enforced(&remote.cfg);
        let replace = remote.cfg.capabilities.replace_if_match.state == CapabilityState::Yes;
        let dir = self.vault.display().to_string();
        for _ in 0..ATTEMPTS {
            let now = snapshot::now_s();
            let newest = self.newest_epoch();
            let held = self.snap.lock().epoch;
            let mut lease = Lease {
                holder: setup.instance.clone(),
                hostname: setup.hostname.clone(),
                vault_dir: dir.clone(),
                pid: std::process::id(),
                acquired_s: now,
                refreshed_s: now,
                token: setup.token.clone(),
                epoch: held.max(newest) + 1,
            };
            let written = match self.lease_tagged(setup, remote)? {
                Some((l, etag)) if l.token == setup.token => {
                    lease.acquired_s = l.acquired_s;
                    lease.epoch = l.epoch;
                    self.replace_lease(remote, &lease, etag.filter(|_| replace))?
                }
                Some((l, etag)) => {
                    // Our own vault directory's earlier mount, which died
                    // (the daemon lock says no mount of it runs now).
                    let ours_crashed = !refreshing
                        && l.holder == setup.instance
                        && l.hostname == setup.hostname
                        && l.vault_dir == dir;
                    if !ours_crashed {
                        return self.held_by_another(remote, &l, refreshing);
                    }
                    lease.epoch = lease.epoch.max(l.epoch + 1);
                    match etag.filter(|_| replace) {
                        Some(t) => self.replace_lease(remote, &lease, Some(t))?,
                        None if create => {
                            remote.store.delete(snapshot::LEASE_PATH)?;
                            remote.store.write_if_absent(
                                snapshot::LEASE_PATH,
                                setup.crypto.seal_lease(&lease).into(),
                            )?
                        }
                        None => self.replace_lease(remote, &lease, None)?,
                    }
                }
                None if create => remote.store.write_if_absent(
                    snapshot::LEASE_PATH,
                    setup.crypto.seal_lease(&lease).into(),
                )?,
                None => self.replace_lease(remote, &lease, None)?,
            };
            // Read back: a refused condition may have been our own retry,
            // and an unenforced write may have lost a race.
            if self.holds_lease(setup, remote)? {
                let mut st = self.snap.lock();
                st.epoch = st.epoch.max(lease.epoch);
                return Ok(());
            }
            log::info!(
                "backend {}: the lease changed while taking it ({}); looking again",
                remote.cfg.name,
                if written {
                    "written, then replaced"
                } else {
                    "condition refused"
                }
            );
        }
        anyhow::bail!(
            "backend {}: the lease kept changing while taking it; another mount is taking it",
            remote.cfg.name
        )
    }

    /// Writes `lease`, conditionally on `etag` when given.
    fn replace_lease(&self, remote: &Remote, lease: &Lease, etag: Option<String>) -> Result<bool> {
        let setup = self.setup_or_err()?;
        let obj: bytes::Bytes = setup.crypto.seal_lease(lease).into();
        Ok(match etag {
            Some(t) => remote.store.write_if_match(snapshot::LEASE_PATH, obj, &t)?,
            None => {
                remote.store.write(snapshot::LEASE_PATH, obj)?;
                true
            }
        })
    }

    /// The lease on `remote` carries this mount's token.
    fn holds_lease(&self, setup: &Setup, remote: &Remote) -> Result<bool> {
        Ok(self
            .lease_of(setup, remote)?
            .is_some_and(|l| l.token == setup.token))
    }

    pub(super) fn held_by_another(
        &self,
        remote: &Remote,
        l: &Lease,
        refreshing: bool,
    ) -> Result<()> {
        let now = snapshot::now_s();
        let stale = now.saturating_sub(l.refreshed_s) > LEASE_STALE_S;
        let msg = format!(
            "the vault is in use on host {} (vault directory {}, pid {}) since {}; its lease on backend {} was last refreshed {}{}",
            l.hostname,
            l.vault_dir,
            l.pid,
            snapshot::utc(l.acquired_s),
            remote.cfg.name,
            snapshot::ago(l.refreshed_s),
            if stale {
                ". That machine looks crashed or gone: if it is, run `tresor lease break` and mount again"
            } else {
                ". Unmount it there first (a vault has one writer)"
            }
        );
        if refreshing {
            log::error!("lease lost: {msg}; this mount stops writing snapshots");
            self.snap.lock().lease_lost = Some(msg);
            return Ok(());
        }
        Err(crate::error::in_use(msg))
    }

    /// Renews the lease on `remote` right before a manifest goes there;
    /// fails when this mount no longer holds it.
    pub(super) fn fence(&self, setup: &Setup, remote: &Remote) -> Result<()> {
        self.take_lease(setup, remote, true)
            .with_context(|| format!("renewing the lease on backend {}", remote.cfg.name))?;
        if let Some(lost) = self.snap.lock().lease_lost.clone() {
            anyhow::bail!("not publishing the snapshot: {lost}");
        }
        Ok(())
    }

    fn setup_or_err(&self) -> Result<std::sync::Arc<Setup>> {
        self.snap
            .lock()
            .setup
            .clone()
            .context("snapshots are not enabled")
    }
}
