//! The engine's side of S3 Object Lock (`remote/object_lock.rs` has the
//! design): the bucket's rule checked and set once per mount, the packs and
//! blocks a new snapshot needs extended after its manifest is up, deletions
//! of every version that report a refused one as protected, and what
//! `status` shows.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{Remote, SyncEngine};
use crate::remote::object_lock::{BucketLock, LockRule, RENEW_SLACK_S};
use crate::remote::snapshot;
use crate::vault::config::{Secret, SnapshotConfig};

/// What this mount knows of one backend's locks.
#[derive(Default)]
pub struct LockState {
    checked: bool,
    /// The bucket has Object Lock (so versioning): deletions remove every
    /// version.
    versioned: bool,
    /// The default rule in force; `None`: nothing is locked.
    rule: Option<LockRule>,
    /// Why states on this backend are not protected (status).
    note: String,
    /// Known lock end (Unix s) per object path.
    until: HashMap<String, u64>,
    /// Lock end of each generation's manifest.
    generations: BTreeMap<u64, u64>,
}

/// The answer of one deletion on one backend.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Gone,
    /// The provider refused (a locked version); until when, if it said.
    Protected(Option<u64>),
    Failed(String),
}

/// Per-remote lock machinery.
pub struct RemoteLock {
    bucket: Option<BucketLock>,
    pub(super) state: Mutex<LockState>,
}

impl RemoteLock {
    pub fn new(cfg: &crate::vault::config::BackendConfig, secret: &Secret) -> RemoteLock {
        RemoteLock {
            bucket: BucketLock::new(cfg, secret),
            state: Mutex::new(LockState::default()),
        }
    }
}

fn now() -> u64 {
    snapshot::now_s()
}

impl Remote {
    /// Once per mount: reads the bucket's lock configuration and, with
    /// `lock_days > 0`, makes its default rule `lock_mode` for `lock_days`.
    pub(super) fn check_lock(&self, policy: &SnapshotConfig) {
        if self.lock.state.lock().checked {
            return;
        }
        let Some(bucket) = &self.lock.bucket else {
            let mut st = self.lock.state.lock();
            st.checked = true;
            st.note = format!(
                "{} cannot lock objects: a machine with the credentials can delete every state",
                self.cfg.service.as_str()
            );
            return;
        };
        let (versioned, rule, note) = match self.store.block_on(bucket.configuration()) {
            Err(e) => {
                // Not `checked`: asked again at the next round.
                self.lock.state.lock().note = format!("the lock configuration is unknown: {e:#}");
                return;
            }
            Ok(c) if !c.enabled => (
                false,
                None,
                "the bucket has no Object Lock (it can only be enabled when a bucket is created)"
                    .to_string(),
            ),
            Ok(c) => {
                let wanted = LockRule {
                    mode: policy.lock_mode.to_ascii_uppercase(),
                    days: policy.lock_days,
                };
                if policy.lock_days > 0 && c.rule.as_ref() != Some(&wanted) {
                    match self.store.block_on(bucket.set_default(&wanted)) {
                        Ok(()) => {
                            log::info!(
                                "backend {}: every object is now locked for {} days ({})",
                                self.cfg.name,
                                wanted.days,
                                wanted.mode
                            );
                            (true, Some(wanted), String::new())
                        }
                        // moto, for one, refuses a default rule on a bucket
                        // that holds objects: states are then locked object
                        // by object at each snapshot (`protect_generation`),
                        // objects between snapshots are not.
                        Err(e) => (
                            true,
                            Some(wanted),
                            format!(
                                "the bucket's default retention could not be set ({e:#}); \
                                 each snapshot locks its own objects, packs uploaded between \
                                 snapshots are unlocked until the next one"
                            ),
                        ),
                    }
                } else if c.rule.is_none() {
                    (
                        true,
                        None,
                        "the bucket has Object Lock but no default retention; `[snapshot] lock_days` sets one"
                            .to_string(),
                    )
                } else {
                    (true, c.rule, String::new())
                }
            }
        };
        let mut st = self.lock.state.lock();
        st.checked = true;
        st.versioned = versioned;
        st.rule = rule;
        st.note = note;
    }

    fn lock_rule(&self) -> Option<LockRule> {
        self.lock.state.lock().rule.clone()
    }

    /// Records when generation `g`'s manifest lock ends (asked from the
    /// provider).
    pub(super) fn note_generation_lock(&self, g: u64) {
        let Some(bucket) = &self.lock.bucket else {
            return;
        };
        if self.lock_rule().is_none() {
            return;
        }
        let path = snapshot::manifest_path(g);
        match self.store.block_on(bucket.retain_until(&path, None)) {
            Ok(Some(t)) => {
                let mut st = self.lock.state.lock();
                st.generations.insert(g, t);
                st.until.insert(path, t);
            }
            Ok(None) => {}
            Err(e) => log::warn!("backend {}: {e:#}", self.cfg.name),
        }
    }

    /// After generation `g`'s manifest is up: every pack on this backend
    /// and every block `g` uses stays locked at least as long as its
    /// manifest. Objects already known to be locked that long are skipped;
    /// the rest are extended to the manifest's end plus a day.
    pub(super) fn protect_generation(&self, g: u64, blocks: &[snapshot::BlockId]) {
        let Some(rule) = self.lock_rule() else {
            return;
        };
        let Some(bucket) = &self.lock.bucket else {
            return;
        };
        // The manifest itself, in case the bucket has no default rule.
        let manifest = snapshot::manifest_path(g);
        let until = snapshot::now_s() + rule.days * 86_400;
        if let Err(e) = self
            .store
            .block_on(bucket.extend(&manifest, &rule.mode, until))
        {
            log::warn!("backend {}: {e:#}", self.cfg.name);
        }
        self.note_generation_lock(g);
        let Some(target) = self.lock.state.lock().generations.get(&g).copied() else {
            return;
        };
        let mut objects: Vec<String> = blocks.iter().map(snapshot::block_path).collect();
        match self.store.list("packs/") {
            Ok(p) => objects.extend(p),
            Err(e) => {
                log::warn!(
                    "backend {}: listing packs to extend their locks: {e}",
                    self.cfg.name
                );
                return;
            }
        }
        let (mut extended, mut failed) = (0u64, 0u64);
        for path in objects {
            if self
                .lock
                .state
                .lock()
                .until
                .get(&path)
                .copied()
                .unwrap_or(0)
                >= target
            {
                continue;
            }
            let until = target + RENEW_SLACK_S;
            match self.store.block_on(bucket.extend(&path, &rule.mode, until)) {
                Ok(()) => {
                    extended += 1;
                    self.lock.state.lock().until.insert(path, until);
                }
                Err(e) => {
                    failed += 1;
                    log::warn!("backend {}: {e:#}", self.cfg.name);
                }
            }
        }
        if failed > 0 {
            self.lock.state.lock().note = format!(
                "{failed} objects generation {g} needs could not be locked as long as it (see the log)"
            );
        } else if extended > 0 {
            log::info!(
                "backend {}: {extended} objects locked until {} for generation {g}",
                self.cfg.name,
                snapshot::utc(target + RENEW_SLACK_S)
            );
        }
    }

    /// Deletes `path` here. On a bucket with Object Lock every version
    /// goes (a plain delete only hides the bytes); a locked version is
    /// refused by the provider and reported as protected.
    pub fn delete_object(&self, path: &str) -> Deleted {
        let versioned = self.lock.state.lock().versioned;
        if !versioned {
            return match self.store.delete(path) {
                Ok(()) => Deleted::Gone,
                Err(e) if e.is_not_found() => Deleted::Gone,
                Err(e) => Deleted::Failed(e.to_string()),
            };
        }
        if let Some(t) = self.lock.state.lock().until.get(path).copied() {
            if t > now() {
                return Deleted::Protected(Some(t));
            }
        }
        match self.store.delete_versions(path) {
            Ok(refused) if refused.is_empty() => {
                self.lock.state.lock().until.remove(path);
                Deleted::Gone
            }
            Ok(refused) => {
                let until = self.lock.bucket.as_ref().and_then(|b| {
                    refused
                        .iter()
                        .filter_map(|v| self.store.block_on(b.retain_until(path, Some(v))).ok()?)
                        .max()
                });
                if let Some(t) = until {
                    self.lock.state.lock().until.insert(path.to_string(), t);
                }
                Deleted::Protected(until)
            }
            Err(e) if e.is_not_found() => Deleted::Gone,
            Err(e) => Deleted::Failed(e.to_string()),
        }
    }
}

impl SyncEngine {
    /// `status`: whether states on backend `id` are protected, and until
    /// when each kept generation is.
    pub fn lock_status(&self, id: &str) -> Value {
        let Some(r) = self.remotes().into_iter().find(|r| r.cfg.id == id) else {
            return Value::Null;
        };
        let kept: Vec<u64> = {
            let st = self.snap.lock();
            st.backends
                .get(id)
                .map(|b| b.manifests.keys().copied().collect())
                .unwrap_or_default()
        };
        let st = r.lock.state.lock();
        json!({
            "checked": st.checked,
            "rule": st.rule,
            "note": st.note,
            "states": kept.iter().rev().map(|g| json!({
                "generation": g,
                "protected_until": st.generations.get(g),
            })).collect::<Vec<_>>(),
        })
    }
}
