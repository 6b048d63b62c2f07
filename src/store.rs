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

use std::future::IntoFuture;
use std::path::{Path, PathBuf};

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
    runtime: tokio::runtime::Runtime,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tresor-store")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: "tokio runtime".into(),
                source,
            })?;
        Ok(Store {
            operator,
            runtime,
            local_root: Some(root.to_path_buf()),
        })
    }

    fn backend_err(path: &str) -> impl FnOnce(opendal::Error) -> StoreError + '_ {
        move |source| StoreError::Backend {
            path: path.to_string(),
            source,
        }
    }

    /// Writes a whole object; durable when this returns.
    pub fn write(&self, path: &str, bytes: bytes::Bytes) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.operator.write(path, bytes))
            .map_err(Self::backend_err(path))?;
        if let Some(root) = &self.local_root {
            let full = root.join(path);
            if let Some(dir) = full.parent() {
                let d = std::fs::File::open(dir).map_err(|source| StoreError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                d.sync_all().map_err(|source| StoreError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` (a ranged GET on object stores).
    pub fn read_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes, StoreError> {
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
        let entries = self
            .runtime
            .block_on(
                self.operator
                    .list_with(prefix)
                    .recursive(true)
                    .into_future(),
            )
            .map_err(Self::backend_err(prefix))?;
        let mut count = 0;
        let mut bytes = 0;
        for e in entries {
            if e.metadata().is_file() {
                count += 1;
                let len = if e.metadata().content_length() > 0 {
                    e.metadata().content_length()
                } else {
                    self.runtime
                        .block_on(self.operator.stat(e.path()))
                        .map(|m| m.content_length())
                        .unwrap_or(0)
                };
                bytes += len;
            }
        }
        Ok((count, bytes))
    }
}
