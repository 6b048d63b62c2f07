//! The failures a caller must tell apart, as one typed enum.
//!
//! Most errors above `fs/` travel as `anyhow::Error` with context added on
//! the way up ("cannot mount: …"). An error that decides what the user or a
//! script does next (retry with another passphrase, break a lease, run
//! `fsck --repair`) carries a [`Error`] somewhere in that chain. The CLI maps
//! each variant to an exit code in exactly one place (`cli::exit::code_of`);
//! the domain never sees exit codes. The daemon's control socket sends the
//! variant's [`Kind`] along with the message, so an error raised inside the
//! daemon keeps its class (and exit code) in the client.

use serde::{Deserialize, Serialize};

/// A failure with a class the caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or options: retrying unchanged cannot help.
    #[error("{0}")]
    Usage(String),
    /// The secret opens no key slot of the vault.
    #[error("{0}")]
    WrongPassphrase(String),
    /// Another machine or vault directory holds the lease, or a backend holds
    /// a newer index than this vault.
    #[error("{0}")]
    InUse(String),
    /// A backend offers an older index snapshot than this machine has seen.
    #[error("{0}")]
    Rollback(String),
    /// Data is damaged or lost (verify, fsck).
    #[error("{0}")]
    Damaged(String),
    /// A backend's storage root holds another vault's objects (its key
    /// file): two vaults on one root destroy each other's snapshots.
    #[error("{0}")]
    Foreign(String),
    /// fsck found inconsistencies that `fsck --repair` fixes.
    #[error("{0}")]
    Repairable(String),
}

/// The class of an [`Error`], without its message: what the control
/// protocol carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Usage,
    WrongPassphrase,
    InUse,
    Rollback,
    Damaged,
    Repairable,
    Foreign,
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) => Kind::Usage,
            Error::WrongPassphrase(_) => Kind::WrongPassphrase,
            Error::InUse(_) => Kind::InUse,
            Error::Rollback(_) => Kind::Rollback,
            Error::Damaged(_) => Kind::Damaged,
            Error::Repairable(_) => Kind::Repairable,
            Error::Foreign(_) => Kind::Foreign,
        }
    }

    pub fn new(kind: Kind, message: String) -> Error {
        match kind {
            Kind::Usage => Error::Usage(message),
            Kind::WrongPassphrase => Error::WrongPassphrase(message),
            Kind::InUse => Error::InUse(message),
            Kind::Rollback => Error::Rollback(message),
            Kind::Damaged => Error::Damaged(message),
            Kind::Repairable => Error::Repairable(message),
            Kind::Foreign => Error::Foreign(message),
        }
    }
}

/// The class of the first [`Error`] in an error's chain, if any.
pub fn kind_of(e: &anyhow::Error) -> Option<Kind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map(Error::kind)
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Error::Usage(message.into()).into()
}

pub fn wrong_passphrase(message: impl Into<String>) -> anyhow::Error {
    Error::WrongPassphrase(message.into()).into()
}

pub fn in_use(message: impl Into<String>) -> anyhow::Error {
    Error::InUse(message.into()).into()
}

pub fn foreign(message: impl Into<String>) -> anyhow::Error {
    Error::Foreign(message.into()).into()
}

pub fn rollback(message: impl Into<String>) -> anyhow::Error {
    Error::Rollback(message.into()).into()
}
