//! The object store that holds pack objects: an OpenDAL operator.
//!
//! The embedded default is OpenDAL's `fs` service rooted at `VAULT/store`, so
//! the code path that writes the local store is the one that will write S3,
//! WebDAV or SFTP. OpenDAL is async; the filesystem is threaded, so this type
//! owns a small tokio runtime and blocks on it from worker threads (never from
//! inside the runtime).
//!
//! Durability: OpenDAL's fs writer fsyncs the file before it returns; a new
//! file's directory entry is made durable here by fsyncing the shard directory,
//! because the index only references a pack once its object is durable.
//!
//! Local pack writes bypass the page cache (`O_DIRECT`, [`direct`]) into the
//! same layout OpenDAL reads: through OpenDAL's fs writer, copying pack bytes
//! into ext4's page cache was 42 % of the daemon's CPU during a 1 GiB copy
//! (perf, `copy_folio_from_iter_atomic`), more than sealing and hashing
//! together. Reads, listing and every other service stay on OpenDAL; a
//! filesystem without `O_DIRECT` (tmpfs) falls back to OpenDAL's writer.

pub mod packstore;
pub mod reserve;

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A multi-threaded tokio runtime for OpenDAL (never blocked on from inside).
pub fn new_runtime(name: &str) -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|source| StoreError::Io {
            path: "tokio runtime".into(),
            source,
        })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// One line a human can act on (see [`describe`]); the full OpenDAL
    /// error is logged at debug level when it is made.
    #[error("{}, on {path}", describe(error))]
    Backend { path: String, error: opendal::Error },
    #[error("store object {path} is shorter than expected ({got} of {want} bytes)")]
    Short {
        path: String,
        got: usize,
        want: usize,
    },
    #[error(
        "store object {path} is larger than {max} bytes, the most it can be; \
         refusing to read it: the object is damaged or was planted by the backend"
    )]
    TooLarge { path: String, max: u64 },
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Store {
    operator: opendal::Operator,
    runtime: Arc<tokio::runtime::Runtime>,
    /// Set for the `fs` service: its root on the local disk.
    local_root: Option<PathBuf>,
    /// Open files of the local store, for ranged reads (see [`OpenFiles`]).
    open_files: OpenFiles,
}

/// Files of the local store kept open for ranged reads: a 4 KiB random read
/// is one `pread` on a cached descriptor instead of an open, a read and a
/// close (the open and close were 5 % of the daemon's CPU under fio
/// randread, perf). Objects are immutable under their names; every write,
/// replacement or deletion through this [`Store`] forgets the path first,
/// and a reader that opened a file while it was being forgotten does not
/// cache it (the generation changed), so a cached descriptor never outlives
/// its path's file. A leaf lock, never held across I/O.
///
/// Random readers (a segment, a chunk's header) get descriptors of their
/// own, opened with `POSIX_FADV_RANDOM`: the kernel then reads exactly the
/// pages asked for. Without it the disk's read-ahead (8 MiB on the
/// benchmark VM) grew some 16 KiB segment reads into 64 KiB and more:
/// 37.6 KiB read from the disk per 4 KiB random read (fio randread,
/// /proc/diskstats). Sequential readers (whole chunks, 1 MiB windows) keep
/// the kernel's read-ahead on theirs.
struct OpenFiles {
    inner: parking_lot::Mutex<OpenFilesInner>,
}

struct OpenFilesInner {
    files: lru::LruCache<String, Arc<std::fs::File>>,
    random: lru::LruCache<String, Arc<std::fs::File>>,
    generation: u64,
}

/// How a descriptor will be read (see [`OpenFiles`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Sequential,
    Random,
}

/// Descriptors kept open (packs are ≤ 16 MiB: 64 of them cover 1 GiB).
const OPEN_FILES: usize = 64;

impl OpenFiles {
    fn new() -> OpenFiles {
        OpenFiles {
            inner: parking_lot::Mutex::new(OpenFilesInner {
                files: lru::LruCache::new(
                    std::num::NonZeroUsize::new(OPEN_FILES).expect("non-zero"),
                ),
                random: lru::LruCache::new(
                    std::num::NonZeroUsize::new(OPEN_FILES).expect("non-zero"),
                ),
                generation: 0,
            }),
        }
    }

    fn get(&self, root: &Path, path: &str, access: Access) -> std::io::Result<Arc<std::fs::File>> {
        let generation = {
            let mut inner = self.inner.lock();
            let set = match access {
                Access::Sequential => &mut inner.files,
                Access::Random => &mut inner.random,
            };
            if let Some(f) = set.get(path) {
                return Ok(f.clone());
            }
            inner.generation
        };
        let file = std::fs::File::open(root.join(path))?;
        if access == Access::Random {
            // Advice only: a filesystem that ignores it reads as before.
            let _ = nix::fcntl::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
            );
        }
        let file = Arc::new(file);
        let mut inner = self.inner.lock();
        if inner.generation == generation {
            let set = match access {
                Access::Sequential => &mut inner.files,
                Access::Random => &mut inner.random,
            };
            set.put(path.to_string(), file.clone());
        }
        Ok(file)
    }

    fn forget(&self, path: &str) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.files.pop(path);
        inner.random.pop(path);
    }
}

impl Store {
    /// The embedded local store (OpenDAL `fs`) rooted at `root`.
    pub fn open_local(root: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            path: root.display().to_string(),
            source,
        })?;
        let builder = opendal::services::Fs::default().root(&root.to_string_lossy());
        let operator = opendal::Operator::new(builder).map_err(|error| StoreError::Backend {
            path: root.display().to_string(),
            error,
        })?;
        Ok(Store {
            operator,
            runtime: Arc::new(new_runtime("tresor-store")?),
            local_root: Some(root.to_path_buf()),
            open_files: OpenFiles::new(),
        })
    }

    /// A remote backend's operator, driven by a runtime shared by all remotes.
    pub fn remote(operator: opendal::Operator, runtime: Arc<tokio::runtime::Runtime>) -> Store {
        Store {
            operator,
            runtime,
            local_root: None,
            open_files: OpenFiles::new(),
        }
    }

    /// Closes a descriptor kept open for `path`, if any: after its bytes
    /// failed authentication (a refill may replace the file).
    pub fn forget_open(&self, path: &str) {
        self.open_files.forget(path);
    }

    /// Deletes an object (absent is fine).
    pub fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.open_files.forget(path);
        self.runtime
            .block_on(self.operator.delete(path))
            .map_err(Self::backend_err(path))
    }

    /// Deletes every version of an object and its delete markers (a
    /// versioned bucket, e.g. one with S3 Object Lock, keeps a plainly
    /// deleted object's bytes as an old version). Returns the version ids
    /// the provider refused (403: locked); other failures are errors.
    pub fn delete_versions(&self, path: &str) -> Result<Vec<String>, StoreError> {
        let entries = self
            .runtime
            .block_on(
                self.operator
                    .list_with(path)
                    .versions(true)
                    .deleted(true)
                    .into_future(),
            )
            .map_err(Self::backend_err(path))?;
        let mut refused = Vec::new();
        for e in entries.iter().filter(|e| e.path() == path) {
            let Some(v) = e.metadata().version() else {
                continue;
            };
            match self
                .runtime
                .block_on(self.operator.delete_with(path).version(v).into_future())
            {
                Ok(()) => {}
                Err(e) if e.kind() == opendal::ErrorKind::PermissionDenied => {
                    refused.push(v.to_string())
                }
                Err(e) => return Err(Self::backend_err(path)(e)),
            }
        }
        Ok(refused)
    }

    /// Runs `f` on this store's runtime (requests OpenDAL has no call for).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Object size, `None` if absent.
    pub fn size_of(&self, path: &str) -> Result<Option<u64>, StoreError> {
        match self.runtime.block_on(self.operator.stat(path)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::backend_err(path)(e)),
        }
    }

    /// Reads a whole object of at most `max` bytes. Objects come from a
    /// provider that may be hostile: the body is streamed and reading stops
    /// (with [`StoreError::TooLarge`]) once it passes `max`, so an oversized
    /// object costs at most `max` bytes of memory, whatever the server sends
    /// or claims.
    pub fn read_all(&self, path: &str, max: u64) -> Result<bytes::Bytes, StoreError> {
        self.read_capped(path, 0.., max)
    }

    /// Streams `range` of `path`, failing as soon as more than `max` bytes
    /// arrive (the rest of the body is never read).
    fn read_capped(
        &self,
        path: &str,
        range: impl std::ops::RangeBounds<u64>,
        max: u64,
    ) -> Result<bytes::Bytes, StoreError> {
        use futures_core::Stream;
        let too_large = || StoreError::TooLarge {
            path: path.to_string(),
            max,
        };
        self.runtime.block_on(async {
            let reader = self
                .operator
                .reader(path)
                .await
                .map_err(Self::backend_err(path))?;
            let mut stream = reader
                .into_stream(range)
                .await
                .map_err(Self::backend_err(path))?;
            let mut parts: Vec<opendal::Buffer> = Vec::new();
            let mut got = 0u64;
            while let Some(part) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
            {
                let part = part.map_err(Self::backend_err(path))?;
                got += part.len() as u64;
                if got > max {
                    return Err(too_large());
                }
                parts.push(part);
            }
            let buf: opendal::Buffer = parts.into_iter().flatten().collect();
            Ok(buf.to_bytes())
        })
    }

    /// The files under `prefix` (recursive).
    fn files(&self, prefix: &str) -> Result<Vec<opendal::Entry>, StoreError> {
        let entries = self
            .runtime
            .block_on(
                self.operator
                    .list_with(prefix)
                    .recursive(true)
                    .into_future(),
            )
            .map_err(Self::backend_err(prefix))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .collect())
    }

    /// Paths of the files under `prefix` (recursive).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .files(prefix)?
            .into_iter()
            .map(|e| e.path().to_string())
            .collect())
    }

    fn backend_err(path: &str) -> impl FnOnce(opendal::Error) -> StoreError + '_ {
        move |error| {
            log::debug!("{path}: {error}");
            StoreError::Backend {
                path: path.to_string(),
                error,
            }
        }
    }

    /// Writes a whole object; durable when this returns.
    pub fn write(&self, path: &str, bytes: bytes::Bytes) -> Result<(), StoreError> {
        self.open_files.forget(path);
        if let Some(root) = &self.local_root {
            return direct::write(root, path, &bytes).map_err(|source| StoreError::Io {
                path: path.to_string(),
                source,
            });
        }
        self.runtime
            .block_on(self.operator.write(path, bytes))
            .map_err(Self::backend_err(path))?;
        Ok(())
    }

    /// Reads `len` bytes at `offset` (a ranged GET on object stores). A
    /// server that ignores the range and sends more is cut off after `len`
    /// bytes ([`StoreError::TooLarge`]), never read to its end.
    pub fn read_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes, StoreError> {
        self.read_range_as(path, offset, len, Access::Sequential)
    }

    /// [`Self::read_range`] for a reader that says how it reads: a local
    /// random read goes through a descriptor without read-ahead.
    pub fn read_range_as(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        access: Access,
    ) -> Result<bytes::Bytes, StoreError> {
        if let Some(root) = &self.local_root {
            // The local disk: a positioned read on the calling thread.
            let v = self
                .open_files
                .get(root, path, access)
                .and_then(|file| direct::read_at(&file, offset, len))
                .map_err(|source| {
                    // A damaged file may be replaced by a refill: read it
                    // afresh next time.
                    self.open_files.forget(path);
                    StoreError::Io {
                        path: path.to_string(),
                        source,
                    }
                })?;
            if (v.len() as u64) < len {
                return Err(StoreError::Short {
                    path: path.to_string(),
                    got: v.len(),
                    want: len as usize,
                });
            }
            return Ok(v);
        }
        // A remote store: capped at the range asked for (a hostile body
        // cannot grow past it).
        let v = self.read_capped(path, offset..offset + len, len)?;
        if (v.len() as u64) < len {
            return Err(StoreError::Short {
                path: path.to_string(),
                got: v.len(),
                want: len as usize,
            });
        }
        Ok(v)
    }

    /// Object count and total bytes under `prefix` (for `status`).
    pub fn usage(&self, prefix: &str) -> Result<(u64, u64), StoreError> {
        let entries = self.files(prefix)?;
        let mut bytes = 0;
        for e in &entries {
            bytes += if e.metadata().content_length() > 0 {
                e.metadata().content_length()
            } else {
                self.size_of(e.path())?.unwrap_or(0)
            };
        }
        Ok((entries.len() as u64, bytes))
    }
}

impl Store {
    /// (path, size) of every file under `prefix` (recursive); a listing
    /// without sizes (some WebDAV servers) is completed with a stat each.
    pub fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for e in self.files(prefix)? {
            let listed = e.metadata().content_length();
            let size = if listed > 0 {
                listed
            } else {
                self.size_of(e.path())?.unwrap_or(0)
            };
            out.push((e.path().to_string(), size));
        }
        Ok(out)
    }

    /// Creates `path` only if it does not exist (`If-None-Match: *` on S3,
    /// an exclusive create on SFTP and the local fs). `Ok(false)`: it
    /// existed. Only meaningful where the backend's probe said the provider
    /// enforces it. A retried request may find its own first attempt: the
    /// caller reads the object back to tell.
    pub fn write_if_absent(&self, path: &str, bytes: bytes::Bytes) -> Result<bool, StoreError> {
        self.open_files.forget(path);
        match self.runtime.block_on(
            self.operator
                .write_with(path, bytes)
                .if_not_exists(true)
                .into_future(),
        ) {
            Ok(_) => Ok(true),
            Err(e) if refused_condition(&e) => Ok(false),
            Err(e) => Err(Self::backend_err(path)(e)),
        }
    }

    /// Replaces `path` only if its ETag is still `etag` (`If-Match`).
    /// `Ok(false)`: the object changed (or a retry found its own write).
    pub fn write_if_match(
        &self,
        path: &str,
        bytes: bytes::Bytes,
        etag: &str,
    ) -> Result<bool, StoreError> {
        self.open_files.forget(path);
        match self.runtime.block_on(
            self.operator
                .write_with(path, bytes)
                .if_match(etag)
                .into_future(),
        ) {
            Ok(_) => Ok(true),
            Err(e) if refused_condition(&e) => Ok(false),
            Err(e) => Err(Self::backend_err(path)(e)),
        }
    }

    /// The object's ETag, `None` if absent or the backend has none.
    pub fn etag_of(&self, path: &str) -> Result<Option<String>, StoreError> {
        match self.runtime.block_on(self.operator.stat(path)) {
            Ok(m) => Ok(m.etag().map(str::to_string)),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::backend_err(path)(e)),
        }
    }
}

/// A conditional write the provider refused: S3 answers 412 (or 409 for a
/// concurrent conditional write), the fs and SFTP an existing file.
pub fn refused_condition(e: &opendal::Error) -> bool {
    matches!(
        e.kind(),
        opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
    )
}

impl StoreError {
    /// The object does not exist (evicted from the local cache, or never
    /// uploaded).
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::Backend { error, .. } => error.kind() == opendal::ErrorKind::NotFound,
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            StoreError::Short { .. } | StoreError::TooLarge { .. } => false,
        }
    }
}

/// An OpenDAL error as one short line that says what to do: wrong
/// credentials, a refused connection, an unknown host, a missing bucket,
/// else the error kind with the server's first line (HTML stripped). The
/// full error (context, headers, sources) is several hundred characters,
/// printed twice by its own `Display`; it goes to the debug log instead.
pub fn describe(e: &opendal::Error) -> String {
    // The causes (a refused connect is three sources down) as well.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(" / ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    let url = field(&text, "uri: ").or_else(|| field(&text, "url: "));
    let endpoint = url.map(host_port);
    let at = endpoint
        .as_deref()
        .map(|h| format!(" {h}"))
        .unwrap_or_default();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|r| r.get(..3))
        .and_then(|d| d.parse::<u16>().ok());
    // S3 errors carry `code: "InvalidAccessKeyId"`.
    let code = text
        .split("code: \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|c| !c.is_empty());
    let code_part = code.map(|c| format!(" {c}")).unwrap_or_default();
    let lower = text.to_ascii_lowercase();
    if matches!(status, Some(401 | 403)) || e.kind() == opendal::ErrorKind::PermissionDenied {
        let status = status
            .map(|s| format!("HTTP {s}"))
            .unwrap_or_else(|| "refused".into());
        return format!("wrong credentials: the server{at} refused them ({status}{code_part})");
    }
    if lower.contains("connection refused") {
        return format!(
            "connection refused to {}",
            endpoint.as_deref().unwrap_or("the server")
        );
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return format!("cannot resolve the host of{at}");
    }
    if code == Some("NoSuchBucket") {
        return format!("the bucket does not exist at{at}");
    }
    if lower.contains("timed out") || lower.contains("timeout") {
        return format!("timed out talking to{at}");
    }
    let message = strip_tags(e.message());
    let message = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out = format!("{}", e.kind());
    if let Some(s) = status {
        out.push_str(&format!(" (HTTP {s}{code_part})"));
    }
    if !at.is_empty() {
        out.push_str(&format!(" from{at}"));
    }
    if !message.is_empty() {
        let short: String = message.chars().take(160).collect();
        out.push_str(&format!(": {short}"));
    }
    out
}

/// The value after `key` in OpenDAL's `context: { k: v, … }`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = text.split(key).nth(1)?;
    rest.split([',', ' ', '}']).next().filter(|v| !v.is_empty())
}

/// `host:port` of a URL (the scheme's default port if none is given).
fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        let port = if scheme == "http" { 80 } else { 443 };
        format!("{authority}:{port}")
    }
}

/// Text with `<…>` tags removed (servers answer errors with HTML pages).
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whole-object writes for the local store (`O_DIRECT` where possible).
mod direct {
    use std::cell::RefCell;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// O_DIRECT needs buffer address, file offset and length aligned to the
    /// logical block size; 4096 covers every common device.
    const ALIGN: usize = 4096;

    thread_local! {
        /// Reused per store-writer thread (≈ one pack).
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// Writes `bytes` as `root/path` durably: a temp file (`O_DIRECT`
    /// where the filesystem takes it, buffered elsewhere, e.g. tmpfs),
    /// fsync, rename, fsync of the directory. A failed write (a full disk)
    /// removes its temp file, so it leaves neither a partial pack nor
    /// occupied space behind.
    pub fn write(root: &Path, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let full = root.join(path);
        let dir = full.parent().unwrap_or(root);
        std::fs::create_dir_all(dir)?;
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp_name = || {
            dir.join(format!(
                ".{name}.{}.{}.tmp",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ))
        };
        let tmp = temp_name();
        let result = match write_direct(&tmp, bytes) {
            // The filesystem refuses O_DIRECT (at open or at the first
            // write; tmpfs may create the file before refusing).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(&tmp);
                let tmp = temp_name();
                write_buffered(&tmp, bytes).map(|()| tmp)
            }
            r => r.map(|()| tmp.clone()),
        };
        let tmp = match result {
            Ok(tmp) => tmp,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &full) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn write_direct(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_DIRECT)
            .open(tmp)?;
        BUFFER.with(|cell| -> std::io::Result<()> {
            let mut buf = cell.borrow_mut();
            let padded = bytes.len().div_ceil(ALIGN) * ALIGN;
            if buf.len() < padded + ALIGN {
                buf.resize(padded + ALIGN, 0);
            }
            let skew = buf.as_ptr() as usize % ALIGN;
            let start = if skew == 0 { 0 } else { ALIGN - skew };
            let aligned = &mut buf[start..start + padded];
            aligned[..bytes.len()].copy_from_slice(bytes);
            aligned[bytes.len()..].fill(0);
            file.write_all(aligned)?;
            // Cut the zero padding of the last block.
            file.set_len(bytes.len() as u64)?;
            file.sync_all()
        })
    }

    /// A positioned read on the calling thread. Through OpenDAL's fs
    /// service every ranged read of the local store was an open, a seek, a
    /// read and a close on tokio's blocking pool, reached by `block_on` from
    /// the FUSE thread: thread hops that dominated a 4 KiB random read's
    /// latency once it opens one 64 KiB segment instead of a whole chunk.
    pub fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(bytes::Bytes::from(buf))
    }

    fn write_buffered(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        result
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn writes_exact_bytes_of_unaligned_lengths() {
            let dir = tempfile::tempdir().unwrap();
            for len in [0usize, 1, 4095, 4096, 4097, 1 << 20, (1 << 20) + 13] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                let path = format!("packs/ab/{len}.pack");
                super::write(dir.path(), &path, &data).unwrap();
                let back = std::fs::read(dir.path().join(&path)).unwrap();
                assert_eq!(back.len(), len, "length of {path}");
                assert!(back == data, "content of {path} differs");
            }
            // no temp files left behind
            let left: Vec<_> = std::fs::read_dir(dir.path().join("packs/ab"))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "temp files left: {left:?}");
        }
    }
}
