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
    #[error("store error on {path}: {source}")]
    Backend {
        path: String,
        #[source]
        source: opendal::Error,
    },
    #[error("store object {path} is shorter than expected ({got} of {want} bytes)")]
    Short {
        path: String,
        got: usize,
        want: usize,
    },
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
}

impl Store {
    /// The embedded local store (OpenDAL `fs`) rooted at `root`.
    pub fn open_local(root: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            path: root.display().to_string(),
            source,
        })?;
        let builder = opendal::services::Fs::default().root(&root.to_string_lossy());
        let operator = opendal::Operator::new(builder).map_err(|source| StoreError::Backend {
            path: root.display().to_string(),
            source,
        })?;
        Ok(Store {
            operator,
            runtime: Arc::new(new_runtime("tresor-store")?),
            local_root: Some(root.to_path_buf()),
        })
    }

    /// A remote backend's operator, driven by a runtime shared by all remotes.
    pub fn remote(operator: opendal::Operator, runtime: Arc<tokio::runtime::Runtime>) -> Store {
        Store {
            operator,
            runtime,
            local_root: None,
        }
    }

    /// Deletes an object (absent is fine).
    pub fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.operator.delete(path))
            .map_err(Self::backend_err(path))
    }

    /// Object size, `None` if absent.
    pub fn size_of(&self, path: &str) -> Result<Option<u64>, StoreError> {
        match self.runtime.block_on(self.operator.stat(path)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::backend_err(path)(e)),
        }
    }

    /// Reads a whole object.
    pub fn read_all(&self, path: &str) -> Result<bytes::Bytes, StoreError> {
        let buf = self
            .runtime
            .block_on(self.operator.read(path))
            .map_err(Self::backend_err(path))?;
        Ok(buf.to_bytes())
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
        move |source| StoreError::Backend {
            path: path.to_string(),
            source,
        }
    }

    /// Writes a whole object; durable when this returns.
    pub fn write(&self, path: &str, bytes: bytes::Bytes) -> Result<(), StoreError> {
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

    /// Reads `len` bytes at `offset` (a ranged GET on object stores).
    pub fn read_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes, StoreError> {
        if let Some(root) = &self.local_root {
            let v =
                direct::read_range(root, path, offset, len).map_err(|source| StoreError::Io {
                    path: path.to_string(),
                    source,
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
        let buf = self
            .runtime
            .block_on(
                self.operator
                    .read_with(path)
                    .range(offset..offset + len)
                    .into_future(),
            )
            .map_err(Self::backend_err(path))?;
        // One contiguous piece for the fs service: no copy.
        let v = buf.to_bytes();
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
}

impl StoreError {
    /// The object does not exist (evicted from the local cache, or never
    /// uploaded).
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::Backend { source, .. } => source.kind() == opendal::ErrorKind::NotFound,
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            StoreError::Short { .. } => false,
        }
    }
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
    pub fn read_range(
        root: &Path,
        path: &str,
        offset: u64,
        len: u64,
    ) -> std::io::Result<bytes::Bytes> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(root.join(path))?;
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
