//! Exit codes. One table, used by `main`, the man page (EXIT STATUS) and the
//! README (a test checks the README lists the same codes).
//!
//! Domain code never returns exit codes: it raises a typed
//! [`crate::error::Error`], and [`code_of`] maps its class here.

use crate::error::{kind_of, Kind};

/// Everything worked.
pub const OK: u8 = 0;
/// Any failure not listed below; the message on stderr says what and what to do.
pub const ERROR: u8 = 1;
/// Usage error: unknown subcommand or option, missing argument, bad mount
/// option (clap uses 2 for its own errors too).
pub const USAGE: u8 = 2;
/// The passphrase opens no key slot of the vault. Retrying with the same
/// passphrase cannot help (the systemd unit does not restart on it).
pub const WRONG_PASSPHRASE: u8 = 3;
/// Damage found: `tresor verify` found a pack missing or damaged, or
/// `fsck` found lost data that `--repair` cannot restore. The report names
/// the affected files.
pub const DAMAGED: u8 = 4;
/// `fsck` found inconsistencies that `fsck --repair` fixes (nothing is lost).
pub const FSCK_FOUND: u8 = 5;
/// `fsck`'s lost data is damage like `verify`'s.
pub const FSCK_DAMAGE: u8 = DAMAGED;

/// Another machine or vault directory holds the vault's lease (it is
/// mounted elsewhere), or a backend holds a newer index than this vault.
pub const IN_USE: u8 = 10;
/// A backend offers an older index snapshot than this machine has seen
/// (rollback refused; `--accept-rollback` overrides).
pub const ROLLBACK: u8 = 11;
/// A backend's storage root holds another vault's objects (its key file):
/// the two vaults would destroy each other's snapshots.
pub const FOREIGN: u8 = 12;

/// (code, meaning) for the documentation.
pub const TABLE: &[(u8, &str)] = &[
    (OK, "success"),
    (
        ERROR,
        "error: the message on stderr says what happened and what to do",
    ),
    (
        USAGE,
        "usage error: unknown subcommand, option or mount option, or a missing argument",
    ),
    (
        WRONG_PASSPHRASE,
        "wrong passphrase: it opens no key slot of the vault",
    ),
    (
        DAMAGED,
        "damage found: verify found missing or damaged packs or an incomplete index snapshot on a backend, or fsck found lost data that --repair cannot restore; the affected files are named",
    ),
    (
        FSCK_FOUND,
        "fsck found inconsistencies; `tresor fsck --repair` fixes them",
    ),
    (
        IN_USE,
        "the vault is in use elsewhere: another machine or vault directory holds its lease or has written a newer index",
    ),
    (
        ROLLBACK,
        "rollback refused: a backend offers an older index snapshot than this machine has seen",
    ),
    (
        FOREIGN,
        "a backend's storage root holds another vault (its key file): give each vault its own root",
    ),
];

/// The exit code for a class of failure: the one mapping from
/// [`crate::error::Kind`] to codes.
pub fn code_for(kind: Kind) -> u8 {
    match kind {
        Kind::Usage => USAGE,
        Kind::WrongPassphrase => WRONG_PASSPHRASE,
        Kind::InUse => IN_USE,
        Kind::Rollback => ROLLBACK,
        Kind::Damaged => DAMAGED,
        Kind::Repairable => FSCK_FOUND,
        Kind::Foreign => FOREIGN,
    }
}

/// The exit code for an error: the first typed [`crate::error::Error`] in
/// its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    kind_of(e).map_or(ERROR, code_for)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::wrong_passphrase;
    use anyhow::Context;

    #[test]
    fn code_survives_context() {
        let e = Err::<(), _>(wrong_passphrase("nope"))
            .context("cannot mount")
            .unwrap_err();
        assert_eq!(code_of(&e), WRONG_PASSPHRASE);
        assert_eq!(format!("{e:#}"), "cannot mount: nope");
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ERROR);
    }
}
