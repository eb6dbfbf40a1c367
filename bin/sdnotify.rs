//! Readiness for service managers: the sd_notify(3) protocol, one datagram of
//! newline-separated `KEY=VALUE` lines (`READY=1`, `STATUS=…`, `STOPPING=1`) sent to
//! the Unix datagram socket named by `$NOTIFY_SOCKET` (a path, or with a leading `@` a
//! name in the abstract namespace). Without the variable nothing is sent, so the
//! daemon behaves the same outside systemd (`Type=notify` in contrib/systemd).

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` to `$NOTIFY_SOCKET`; Ok(false) when the variable is not set.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(s) if !s.is_empty() => {
            notify_to(&s.to_string_lossy(), state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to `socket` (a path, or `@name` for an abstract socket).
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let sent = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None => sock.send_to(state.as_bytes(), socket)?,
    };
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "{socket}: sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("rs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=2 ports\n").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=2 ports\n");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            notify_to(path.to_str().unwrap(), "READY=1\n").is_err(),
            "nobody listens"
        );
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rs-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1\n").unwrap();
        assert_eq!(recv(&server), "STOPPING=1\n");
    }
}
