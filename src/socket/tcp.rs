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
    let fd = OwnedFd::from(listener);
    listen(&fd, backlog, address)?;
    Ok(fd)
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
