//! `tresor verify [--data] [--backend NAME]`: every pack copy on every
//! location against the index (`maintenance::verify`); exit 4 when
//! something is damaged.

use anyhow::Result;

use crate::cli::{Session, VaultArgs};
use crate::maintenance::verify::{self, VerifyOpts};

pub fn run(args: &VaultArgs, opts: VerifyOpts) -> Result<()> {
    let Session { paths, unlocked } = args.open()?;
    verify::run(&paths, &unlocked, opts)
}
