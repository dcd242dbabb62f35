//! Listen-queue depth of a listening socket, where the kernel reports it: for
//! TCP, `TCP_INFO` on the listening socket (`tcpi_unacked` is the accept queue
//! now, `tcpi_sacked` the backlog, as `ss -lt` shows them). Unix sockets are not
//! reported (that needs a `sock_diag` netlink query; not done yet).

use std::os::fd::{AsRawFd, BorrowedFd};

/// (waiting connections, backlog) of a TCP listener; `None` for other sockets.
pub fn tcp_listen_queue(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
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
    // TCP_LISTEN is state 10.
    (rc == 0 && info.tcpi_state == 10)
        .then(|| (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}
