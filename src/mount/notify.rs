//! `sd_notify(3)` without libsystemd: one datagram to `NOTIFY_SOCKET`.
//! A leaf, so the daemon can report readiness without depending on the
//! unit-file code in `systemd.rs`.

use std::path::Path;

/// `sd_notify(3)`: sends `state` to the service manager if `NOTIFY_SOCKET`
/// is set (a path, or `@name` for an abstract socket); otherwise does nothing.
pub fn notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let sock = UnixDatagram::unbound()?;
        let addr_bytes = std::os::unix::ffi::OsStrExt::as_bytes(addr.as_os_str());
        let target = if let Some(name) = addr_bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        } else {
            SocketAddr::from_pathname(Path::new(&addr))?
        };
        sock.send_to_addr(state.as_bytes(), &target)?;
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("cannot notify the service manager ({state}): {e}");
    }
}
