//! Every filesystem error, and the one table that turns them into errno
//! values at the FUSE boundary ([`FsError::errno`]).

use crate::index::IndexError;
use crate::store::packstore::{ChunkReadError, PackStoreError};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute buffer too small")]
    Range,
    #[error("operation not supported")]
    NotSupported,
    #[error("file too large")]
    TooBig,
    /// SEEK_DATA/SEEK_HOLE at or past the end, or no data after the offset.
    #[error("no such offset")]
    NoSuchOffset,
    /// A change to an old generation (`.snapshots`).
    #[error("read-only file system")]
    ReadOnly,
    #[error("{path}: {source}")]
    Data {
        path: String,
        #[source]
        source: Box<ChunkReadError>,
    },
    #[error("{path}: the index is inconsistent: {detail}")]
    Inconsistent { path: String, detail: String },
    /// A background flush of this file failed; `errno` is the failure's
    /// own (ENOSPC for a full disk), so the writer sees the real cause.
    #[error("writing file data failed earlier: {message}")]
    Flush { message: String, errno: i32 },
    #[error("index: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Store(#[from] PackStoreError),
}

impl FsError {
    /// The variant's name, for logs that report each kind of failure once.
    pub fn kind(&self) -> &'static str {
        match self {
            FsError::NotFound => "not-found",
            FsError::Exists => "exists",
            FsError::NotDir => "not-dir",
            FsError::IsDir => "is-dir",
            FsError::NotEmpty => "not-empty",
            FsError::NameTooLong => "name-too-long",
            FsError::Invalid => "invalid",
            FsError::NotPermitted => "not-permitted",
            FsError::NoAttr => "no-attr",
            FsError::Range => "range",
            FsError::NotSupported => "not-supported",
            FsError::TooBig => "too-big",
            FsError::NoSuchOffset => "no-such-offset",
            FsError::ReadOnly => "read-only",
            FsError::Data { .. } => "data",
            FsError::Inconsistent { .. } => "inconsistent",
            FsError::Flush { .. } => "flush",
            FsError::Index(_) => "index",
            FsError::Store(_) => "store",
        }
    }

    /// The errno table. Doubtful choices:
    /// - authentication failures and unreadable packs are EIO (never wrong
    ///   bytes, never a silent hole), as gocryptfs does;
    /// - index (SQLite) errors are EIO: the operation did not happen;
    /// - a failed pack write surfaces as EIO on the fsync/close that needed it.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid => libc::EINVAL,
            FsError::NotPermitted => libc::EPERM,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::TooBig => libc::EFBIG,
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::ReadOnly => libc::EROFS,
            FsError::Data { .. } => libc::EIO,
            FsError::Index(IndexError::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                libc::ENOSPC
            }
            FsError::Index(_) => libc::EIO,
            FsError::Store(PackStoreError::Store(f)) if f.no_space => libc::ENOSPC,
            FsError::Store(_) => libc::EIO,
            FsError::Flush { errno, .. } => *errno,
            // A missing chunk row or an extent longer than its chunk: a bug
            // or damage; never return made-up bytes.
            FsError::Inconsistent { .. } => libc::EIO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::packstore::StoreFailure;

    /// Regression (issue "One house"): a background flush that failed on a
    /// full disk reached the writer as EIO, because its error was kept as a
    /// string.
    #[test]
    fn a_failed_background_flush_keeps_enospc() {
        let full = FsError::Store(PackStoreError::Store(StoreFailure {
            message: "No space left on device".into(),
            no_space: true,
        }));
        let flush = FsError::Flush {
            message: full.to_string(),
            errno: full.errno(),
        };
        assert_eq!(flush.errno(), libc::ENOSPC);
        let other = FsError::Store(PackStoreError::Store(StoreFailure {
            message: "permission denied".into(),
            no_space: false,
        }));
        assert_eq!(other.errno(), libc::EIO);
    }
}
