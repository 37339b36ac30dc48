//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` per state change.
//!
//! wharf sends `READY=1` once it listens, `RELOADING=1` and `READY=1` around a SIGHUP reload, and
//! `STOPPING=1` when a shutdown starts, each with a `STATUS=` line `systemctl status` shows. Without
//! `$NOTIFY_SOCKET` (not under systemd) nothing is sent. The protocol is a few lines with std's
//! `UnixDatagram`, abstract sockets (`@name`) included; see `sd_notify(3)`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;

use tracing::debug;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` lines) to systemd, if wharf runs under it.
/// Failures are logged at debug and otherwise ignored: notification is best effort.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(error) = send(&socket, state) {
        debug!(%error, "cannot notify systemd");
    }
}

/// Sends `state` to the datagram socket `path` (`@` first for an abstract one).
///
/// # Errors
/// When the socket cannot be made or the datagram not sent.
pub fn send(path: &OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => send_abstract(&socket, name, state),
        Some((b'/', _)) => socket.send_to(state.as_bytes(), path).map(drop),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract socket",
        )),
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("wharf-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
            let receiver = UnixDatagram::bind_addr(&addr).unwrap();
            send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }

        assert!(send(OsStr::new("relative"), "READY=1").is_err());
    }
}
