//! Every filesystem error, and the one table that turns them into errno
//! values at the FUSE boundary ([`FsError::errno`]).

use crate::index::IndexError;
use crate::packstore::{ChunkReadError, PackStoreError};

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
    #[error("{path}: {source}")]
    Data {
        path: String,
        #[source]
        source: Box<ChunkReadError>,
    },
    #[error("{path}: the index is inconsistent: {detail}")]
    Inconsistent { path: String, detail: String },
    #[error("writing file data failed earlier: {0}")]
    Flush(String),
    #[error("index: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Store(#[from] PackStoreError),
}

impl FsError {
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
            FsError::Data { .. } => libc::EIO,
            FsError::Index(IndexError::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                libc::ENOSPC
            }
            FsError::Index(_) => libc::EIO,
            FsError::Store(PackStoreError::Store(f)) if f.no_space => libc::ENOSPC,
            FsError::Store(_) => libc::EIO,
            FsError::Flush(_) => libc::EIO,
            // A missing chunk row or an extent longer than its chunk: a bug
            // or damage; never return made-up bytes.
            FsError::Inconsistent { .. } => libc::EIO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;
