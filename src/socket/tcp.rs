//! TCP sockets: uWSGI's address forms, `SO_REUSEADDR`, the backlog.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;

use super::{listen, SocketError};

pub(super) fn bind_tcp(
    host: &str,
    port: u16,
    backlog: u32,
    address: &str,
) -> Result<OwnedFd, SocketError> {
    let addr = resolve_tcp(host, port, address)?;
    // std sets SO_REUSEADDR (a restarted master must rebind while old
    // connections sit in TIME_WAIT) and CLOEXEC, and listens with 128; the
    // second listen() raises the backlog.
    let listener = TcpListener::bind(addr).map_err(|e| SocketError::io(address, "bind", e))?;
    // TCP_NODELAY on the listener: Linux copies it to every accepted socket,
    // so a streamed response's small writes leave at once (Nagle would hold
    // each until the previous one is acknowledged) at no per-request cost.
    // uWSGI needs `tcp-nodelay` for this; gunicorn sets it too.
    set_nodelay(&listener).map_err(|e| SocketError::io(address, "setsockopt(TCP_NODELAY)", e))?;
    let fd = OwnedFd::from(listener);
    listen(&fd, backlog, address)?;
    Ok(fd)
}

fn set_nodelay(listener: &TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// uWSGI's forms: `:port` is every IPv4 interface, `host:port`, and IPv6 in brackets.
pub(super) fn resolve_tcp(host: &str, port: u16, address: &str) -> Result<SocketAddr, SocketError> {
    if host.is_empty() || host == "0.0.0.0" || host == "*" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| SocketError::Resolve {
            address: address.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    // uWSGI resolves hostnames to IPv4 (`localhost` must not become `::1` only).
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| SocketError::Resolve {
            address: address.to_owned(),
            reason: "no address found".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_tcp_nodelay_from_the_listener() {
        let fd = bind_tcp("127.0.0.1", 0, 16, "test").unwrap();
        let listener = TcpListener::from(fd);
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
