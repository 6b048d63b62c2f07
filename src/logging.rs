//! The process's logger: env_logger's filter (`RUST_LOG`) and formatting,
//! plus what a daemon that runs for weeks needs:
//!
//! - **Repeats are collapsed.** A message identical to one logged less than
//!   [`REPEAT_WINDOW`] ago (same level, target and text) is counted, not
//!   written; when the window ends (checked at the next record, and at
//!   exit) one line says how often it repeated. One missing pack used to
//!   log 60 identical WARN lines in 5 ms.
//! - **The log file is bounded.** The daemon's `VAULT/tresor.log` is
//!   rotated to `tresor.log.1` (the one older file kept) once it would pass
//!   [`DEFAULT_MAX_BYTES`] (or `TRESOR_LOG_MAX_BYTES`), so both together
//!   stay under twice that. The new file is created 0600, and fd 2 is
//!   pointed at it, so a panic message lands in the current file too.
//! - **Under systemd** (`JOURNAL_STREAM` names our stderr, or `--log
//!   journal`), records go to stderr with a `<N>` priority prefix and
//!   without a timestamp: the journal adds its own and reads the level
//!   (sd-daemon(3)); a record's newlines are folded so it stays one entry.
//!
//! Hand-written rather than a rotation crate: rotation here is one rename
//! and one `dup2` (file-rotate and similar crates would keep fd 2, and so
//! panics, on the old file), and collapsing repeats needs a wrapper around
//! env_logger's `Log` anyway.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::Log;
use parking_lot::Mutex;

/// Identical messages within this window are counted instead of written.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// Distinct recent messages remembered for collapsing (oldest dropped).
const RECENT: usize = 256;
/// `tresor.log` is rotated before it grows past this (10 MiB: about a
/// week of a busy daemon's INFO lines; two files stay under 20 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Overrides [`DEFAULT_MAX_BYTES`] (bytes, at least 4096).
pub const MAX_BYTES_ENV: &str = "TRESOR_LOG_MAX_BYTES";

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// stderr with timestamps (a terminal, or a caller's redirect).
    Stderr,
    /// The daemon's log file, rotated; fd 2 follows the current file.
    File(PathBuf),
    /// stderr in the journal's form: `<N>target: message`, no timestamp.
    Journal,
}

/// Whether stderr is the journal's stream (`JOURNAL_STREAM=dev:inode`, as
/// systemd sets it for services whose stderr goes to the journal).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Installs the logger. `default_filter` applies unless `RUST_LOG` is set.
/// A log file that cannot be opened falls back to stderr (with a warning).
pub fn init(default_filter: &str, target: Target) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    let mut fallback = None;
    match &target {
        Target::Stderr => {
            b.format_timestamp_millis();
        }
        Target::Journal => {
            b.format(|buf, record| {
                let prio = match record.level() {
                    log::Level::Error => 3,
                    log::Level::Warn => 4,
                    log::Level::Info => 6,
                    log::Level::Debug | log::Level::Trace => 7,
                };
                let text = record.args().to_string().replace('\n', " / ");
                writeln!(buf, "<{prio}>{}: {text}", record.target())
            });
        }
        Target::File(path) => match RotatingFile::open(path, max_bytes(), true) {
            Ok(f) => {
                b.format_timestamp_millis()
                    .target(env_logger::Target::Pipe(Box::new(f)));
            }
            Err(e) => {
                b.format_timestamp_millis();
                fallback = Some(format!("cannot open the log {}: {e}", path.display()));
            }
        },
    }
    let inner = b.build();
    log::set_max_level(inner.filter());
    let logger = Collapsing {
        inner,
        recent: Mutex::new(Recent::default()),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        if let Some(w) = fallback {
            log::warn!("{w}; logging to stderr");
        }
    }
}

fn max_bytes() -> u64 {
    std::env::var(MAX_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| n.max(4096))
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// One remembered message: when it was first written in this window and
/// how many identical ones were dropped since.
struct Seen {
    level: log::Level,
    target: String,
    text: String,
    since: Instant,
    suppressed: u64,
}

#[derive(Default)]
struct Recent {
    by_key: HashMap<u64, Seen>,
    last_sweep: Option<Instant>,
}

impl Recent {
    /// Removes entries whose window has ended (all of them if `all`) and
    /// returns those that dropped repeats, for their summary lines.
    fn take_expired(&mut self, now: Instant, all: bool) -> Vec<Seen> {
        let expired: Vec<u64> = self
            .by_key
            .iter()
            .filter(|(_, s)| all || now.duration_since(s.since) >= REPEAT_WINDOW)
            .map(|(k, _)| *k)
            .collect();
        let mut out: Vec<Seen> = expired
            .into_iter()
            .filter_map(|k| self.by_key.remove(&k))
            .filter(|s| s.suppressed > 0)
            .collect();
        out.sort_by_key(|s| s.since);
        out
    }
}

/// env_logger's logger, with identical messages collapsed.
struct Collapsing {
    inner: env_logger::Logger,
    recent: Mutex<Recent>,
}

impl Collapsing {
    fn summarise(&self, seen: Vec<Seen>) {
        for s in seen {
            let secs = s.since.elapsed().as_secs();
            self.inner.log(
                &log::Record::builder()
                    .level(s.level)
                    .target(&s.target)
                    .args(format_args!(
                        "{} [repeated {} more time(s) in {secs} s]",
                        s.text, s.suppressed
                    ))
                    .build(),
            );
        }
    }
}

impl log::Log for Collapsing {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let text = record.args().to_string();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (record.level(), record.target(), &text).hash(&mut h);
        let key = h.finish();
        let now = Instant::now();
        let (due, repeat) = {
            let mut r = self.recent.lock();
            let sweep = r
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
            let due = if sweep {
                r.last_sweep = Some(now);
                r.take_expired(now, false)
            } else {
                Vec::new()
            };
            let repeat = match r.by_key.get_mut(&key) {
                Some(s) if now.duration_since(s.since) < REPEAT_WINDOW && s.text == text => {
                    s.suppressed += 1;
                    true
                }
                _ => false,
            };
            let mut due = due;
            if !repeat {
                if let Some(old) = r.by_key.remove(&key).filter(|s| s.suppressed > 0) {
                    due.push(old);
                }
                if r.by_key.len() >= RECENT {
                    if let Some(k) = r
                        .by_key
                        .iter()
                        .min_by_key(|(_, s)| s.since)
                        .map(|(k, _)| *k)
                    {
                        due.extend(r.by_key.remove(&k).filter(|s| s.suppressed > 0));
                    }
                }
                r.by_key.insert(
                    key,
                    Seen {
                        level: record.level(),
                        target: record.target().to_string(),
                        text,
                        since: now,
                        suppressed: 0,
                    },
                );
            }
            (due, repeat)
        };
        self.summarise(due);
        if !repeat {
            self.inner.log(record);
        }
    }

    /// Writes the pending repeat summaries (called at exit).
    fn flush(&self) {
        let due = self.recent.lock().take_expired(Instant::now(), true);
        self.summarise(due);
        self.inner.flush();
    }
}

/// An append-only log file that renames itself to `NAME.1` and starts
/// afresh before it would pass `max` bytes.
pub struct RotatingFile {
    path: PathBuf,
    max: u64,
    len: u64,
    file: File,
    /// Point fd 2 at the current file (the daemon; not in tests).
    follow_stderr: bool,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64, follow_stderr: bool) -> std::io::Result<RotatingFile> {
        let file = open_log(path)?;
        let len = file.metadata()?.len();
        let f = RotatingFile {
            path: path.to_path_buf(),
            max,
            len,
            file,
            follow_stderr,
        };
        f.point_stderr()?;
        Ok(f)
    }

    fn point_stderr(&self) -> std::io::Result<()> {
        if self.follow_stderr {
            nix::unistd::dup2(self.file.as_raw_fd(), std::io::stderr().as_raw_fd())?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = open_log(&self.path)?;
        self.len = 0;
        self.point_stderr()
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            // A failed rotation keeps appending: a log must not stop.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rotation_keeps_two_bounded_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tresor.log");
        let mut f = RotatingFile::open(&path, 4096, false).unwrap();
        let line = [b'x'; 99];
        for i in 0..1000 {
            f.write_all(&line).unwrap();
            f.write_all(b"\n").unwrap();
            let cur = std::fs::metadata(&path).unwrap().len();
            assert!(cur <= 4096, "after {i} lines tresor.log is {cur} bytes");
        }
        let old = dir.path().join("tresor.log.1");
        for p in [&path, &old] {
            let m = std::fs::metadata(p).unwrap();
            assert!(
                m.len() <= 4096 && m.len() > 0,
                "{}: {}",
                p.display(),
                m.len()
            );
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn identical_messages_are_collapsed() {
        let mut r = Recent::default();
        let t0 = Instant::now();
        r.by_key.insert(
            1,
            Seen {
                level: log::Level::Warn,
                target: "t".into(),
                text: "x".into(),
                since: t0,
                suppressed: 59,
            },
        );
        assert!(r.take_expired(t0, false).is_empty());
        let due = r.take_expired(t0 + REPEAT_WINDOW, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].suppressed, 59);
        assert!(r.by_key.is_empty());
    }
}
