//! The OS integration: everything that runs or controls a mount daemon.
//! `daemon` starts and stops it, `fuse` is the thin adapter from the
//! kernel's requests to [`crate::fs`], `control` is the daemon's socket,
//! `fstab`/`systemd` are mount(8) and login integration, `keyring` the
//! desktop Secret Service, `notify` the sd_notify datagram.

pub mod control;
pub mod daemon;
pub mod fstab;
pub mod fuse;
pub mod keyring;
pub mod notify;
pub mod secret;
pub mod systemd;
