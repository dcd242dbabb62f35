//! Listen-queue depth of a listening socket, where the kernel reports it (what
//! `ss -l` shows as Recv-Q / Send-Q): for TCP, `TCP_INFO` on the listening
//! socket (`tcpi_unacked` is the accept queue now, `tcpi_sacked` the backlog);
//! for a unix socket, one `sock_diag` netlink query for its inode with
//! `UDIAG_SHOW_RQLEN` (`rqueue` is the queue, `wqueue` the backlog). Both are
//! a syscall or three per listener per scrape, none on the request path.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// (waiting connections, backlog) of a listening socket; `None` when the
/// kernel does not say.
pub fn listen_queue(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    tcp_listen_queue(fd).or_else(|| unix_listen_queue(fd))
}

fn tcp_listen_queue(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is plain data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_state == TCP_LISTEN)
        .then(|| (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}

const TCP_LISTEN: u8 = 10;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;

fn unix_listen_queue(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    let ino = u32::try_from(st.st_ino).ok()?;
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let nl = unsafe { OwnedFd::from_raw_fd(raw) };
    // nlmsghdr (16) + unix_diag_req (24): one socket, by inode, any cookie.
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.push(libc::AF_UNIX as u8);
    req.push(0); // protocol
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: sockaddr_nl is plain data; the kernel is pid 0, groups 0.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: the buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            nl.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent != req.len() as isize {
        return None;
    }
    let mut buf = [0u8; 512];
    // SAFETY: recv writes at most buf.len() bytes into buf. The kernel answers
    // a diag request synchronously, so this does not block.
    let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let msg = buf.get(..usize::try_from(n).ok()?)?;
    parse_unix_diag(msg, ino)
}

/// The `UNIX_DIAG_RQLEN` attribute of an answer about `ino`.
fn parse_unix_diag(msg: &[u8], ino: u32) -> Option<(u64, u64)> {
    let u16_at = |o: usize| msg.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        msg.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let len = u32_at(0)? as usize;
    if u16_at(4)? != SOCK_DIAG_BY_FAMILY || len > msg.len() {
        return None; // NLMSG_ERROR: no such listening socket
    }
    // unix_diag_msg: family, type, state, pad, ino, cookie[2].
    if u32_at(16 + 4)? != ino {
        return None;
    }
    let mut at = 16 + 16;
    while at + 4 <= len {
        let (alen, atype) = (u16_at(at)? as usize, u16_at(at + 2)?);
        if alen < 4 {
            return None;
        }
        if atype == UNIX_DIAG_RQLEN {
            return Some((u64::from(u32_at(at + 4)?), u64::from(u32_at(at + 8)?)));
        }
        at += (alen + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_unix_listener_reports_its_waiting_connections_and_backlog() {
        let dir = crate::testutil::TempDir::new("queue");
        let path = dir.0.join("q.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(listen_queue(l.as_fd()).map(|q| q.0), Some(0));
        let _a = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _b = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (waiting, backlog) = listen_queue(l.as_fd()).unwrap();
        assert_eq!(waiting, 2);
        assert!(backlog >= 2, "{backlog}");
    }

    #[test]
    fn a_tcp_listener_reports_its_accept_queue() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // The handshake completes in the kernel before connect() returns.
        let (waiting, backlog) = listen_queue(l.as_fd()).unwrap();
        assert_eq!(waiting, 1);
        assert!(backlog >= 1);
    }
}
