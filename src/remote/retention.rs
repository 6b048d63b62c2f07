//! Which index snapshots to keep: a retention policy like restic's
//! `forget` (keep-last, -hourly, -daily, -weekly, -monthly), read from
//! `[snapshot]` in `config.toml`.
//!
//! Each rule walks the snapshots newest first and keeps the newest one of
//! each of its `n` most recent time buckets (UTC hours, days, ISO weeks
//! starting Monday, calendar months; `keep` keeps the `n` newest). A
//! snapshot is kept if any rule keeps it, and the newest is always kept.
//! Forgetting a snapshot deletes its manifest and the blocks no kept
//! manifest uses (`remote/sync/snapshots.rs`); the packs only it needed go
//! at the next garbage collection, which follows the kept set exactly
//! (`index::SnapshotMark`).

use std::collections::BTreeSet;

pub use crate::vault::config::SnapshotConfig;

/// A rule's time bucket of a snapshot (generation, creation time).
type Bucket = fn(u64, u64) -> i64;

/// The generations `policy` keeps of `snapshots` (generation, creation
/// time in seconds since the epoch), in any order.
pub fn kept(policy: &SnapshotConfig, snapshots: &[(u64, u64)]) -> BTreeSet<u64> {
    let mut newest_first = snapshots.to_vec();
    newest_first.sort_by(|a, b| b.cmp(a));
    let mut keep = BTreeSet::new();
    if let Some(&(g, _)) = newest_first.first() {
        keep.insert(g);
    }
    // Bucket of a (generation, time): keep-last puts each snapshot in its
    // own (several can share a second).
    let rules: [(u64, Bucket); 5] = [
        (policy.keep.max(1), |g, _| g as i64),
        (policy.keep_hourly, |_, t| (t / 3600) as i64),
        (policy.keep_daily, |_, t| (t / 86_400) as i64),
        (policy.keep_weekly, |_, t| {
            ((t / 86_400) as i64 + 3).div_euclid(7)
        }),
        (policy.keep_monthly, |_, t| month(t)),
    ];
    for (n, bucket) in rules {
        let mut left = n;
        let mut last = None;
        for &(g, t) in &newest_first {
            if left == 0 {
                break;
            }
            let b = bucket(g, t);
            if last != Some(b) {
                last = Some(b);
                keep.insert(g);
                left -= 1;
            }
        }
    }
    keep
}

/// Months since year 0 of the UTC date of `t` (Howard Hinnant's
/// civil_from_days, as `snapshot::utc`).
fn month(t: u64) -> i64 {
    let z = (t / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    y * 12 + m - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(last: u64, hourly: u64, daily: u64, weekly: u64, monthly: u64) -> SnapshotConfig {
        SnapshotConfig {
            keep: last,
            keep_hourly: hourly,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            ..SnapshotConfig::default()
        }
    }

    const H: u64 = 3600;
    const D: u64 = 86_400;

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let s: Vec<(u64, u64)> = (1..=5).map(|g| (g, 1_000_000 + g * 60)).collect();
        assert_eq!(kept(&policy(2, 0, 0, 0, 0), &s), [4, 5].into());
        // Regression: snapshots taken within one second are still distinct.
        let same: Vec<(u64, u64)> = (1..=5).map(|g| (g, 1_000_000)).collect();
        assert_eq!(kept(&policy(3, 0, 0, 0, 0), &same), [3, 4, 5].into());
        assert_eq!(
            kept(&policy(0, 0, 0, 0, 0), &s),
            [5].into(),
            "newest always"
        );
        assert!(kept(&policy(3, 0, 0, 0, 0), &[]).is_empty());
    }

    #[test]
    fn buckets_keep_the_newest_of_each() {
        // 2024-01-01 00:00 UTC is a Monday.
        let t0 = 1_704_067_200;
        let s = [
            (1, t0 + 10),          // Mon 00:00
            (2, t0 + 20 * 60),     // Mon 00:20 (same hour as 1)
            (3, t0 + H + 5),       // Mon 01:00
            (4, t0 + D + 5),       // Tue
            (5, t0 + 7 * D + 5),   // next Monday
            (6, t0 + 31 * D + 5),  // 1 February
            (7, t0 + 31 * D + 60), // 1 February, same hour
        ];
        assert_eq!(kept(&policy(1, 3, 0, 0, 0), &s), [4, 5, 7].into());
        assert_eq!(kept(&policy(1, 0, 3, 0, 0), &s), [4, 5, 7].into());
        assert_eq!(kept(&policy(1, 0, 0, 2, 0), &s), [5, 7].into());
        assert_eq!(kept(&policy(1, 0, 0, 3, 0), &s), [4, 5, 7].into());
        assert_eq!(kept(&policy(1, 0, 0, 0, 5), &s), [5, 7].into());
        assert_eq!(kept(&policy(1, 10, 0, 0, 0), &s), [2, 3, 4, 5, 7].into());
    }

    #[test]
    fn months_follow_the_calendar() {
        assert_eq!(month(1_704_067_200), 2024 * 12); // 2024-01-01
        assert_eq!(month(1_706_745_599), 2024 * 12); // 2024-01-31 23:59:59
        assert_eq!(month(1_706_745_600), 2024 * 12 + 1); // 2024-02-01
    }
}
