//! The one interface change wasmlet makes itself: bringing `lo` up. Everything else about a
//! pod's interfaces is the CNI plugins' work.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace (`SIOCGIFFLAGS`, then
/// `SIOCSIFFLAGS`, as `ip link set lo up` does through its ioctl fallback).
pub(crate) fn set_loopback_up() -> io::Result<()> {
    let socket = control_socket()?;
    let mut request = loopback_request();
    ioctl(&socket, libc::SIOCGIFFLAGS, &mut request)?;
    // SAFETY: after SIOCGIFFLAGS the kernel has filled the union's `ifru_flags` member.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(&socket, libc::SIOCSIFFLAGS, &mut request)
}

/// A datagram socket, the handle interface ioctls are made on.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is checked, then owned by the returned value.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn loopback_request() -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers); all zeroes is
    // a valid value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
        *slot = *byte as libc::c_char;
    }
    request
}

fn ioctl(socket: &OwnedFd, op: libc::Ioctl, request: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write one `ifreq`, which `request` points
    // to for the duration of the call; `socket` is an open descriptor.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), op, request as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
