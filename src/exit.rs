//! Exit codes. One table, used by `main`, the man page (EXIT STATUS) and the
//! README (a test checks the README lists the same codes).
//!
//! Errors stay `anyhow` errors everywhere; an error that needs a specific
//! code carries a [`Coded`] somewhere in its chain.

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
        "damage found: verify found missing or damaged packs, or fsck found lost data that --repair cannot restore; the affected files are named",
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
];

/// An error with a specific exit code.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: USAGE,
        message: message.into(),
    }
    .into()
}

pub fn wrong_passphrase(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: WRONG_PASSPHRASE,
        message: message.into(),
    }
    .into()
}

pub fn in_use(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: IN_USE,
        message: message.into(),
    }
    .into()
}

pub fn rollback(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: ROLLBACK,
        message: message.into(),
    }
    .into()
}

/// The exit code for an error: the first [`Coded`] in its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map_or(ERROR, |c| c.code)
}

#[cfg(test)]
mod tests {
    use super::*;
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
