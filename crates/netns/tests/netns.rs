//! Real network namespaces (these tests need root, as the node agent and the shim do; without
//! it they fail with the error that says so).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use wasmlet_netns::{Error, NetNs, is_pinned, remove};

/// A temp dir whose pins are removed when the test ends, pass or fail.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let nested = self.0.path().join("nested");
        for dir in [self.0.path(), nested.as_path()] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if is_pinned(&entry.path()) {
                    let _ = remove(&entry.path());
                }
            }
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The inode of the calling thread's own network namespace.
fn own_namespace() -> u64 {
    let link = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    inode_of_link(&link.to_string_lossy())
}

/// `net:[4026531840]` -> 4026531840.
fn inode_of_link(link: &str) -> u64 {
    link.trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

fn up(dir: &Path, name: &str) -> NetNs {
    let ns = NetNs::create(&dir.join(name)).expect("create a namespace (needs root)");
    ns.set_loopback_up().unwrap();
    ns
}

#[test]
fn a_pinned_namespace_is_entered_by_a_helper_thread_only() {
    let dir = Scratch::new();
    let path = dir.path().join("nested/pod-a");
    let ns = NetNs::create(&path).expect("create a namespace (needs root)");
    assert!(is_pinned(&path));
    let host = own_namespace();
    assert_ne!(ns.inode(), host);
    let inside = ns.run(own_namespace).unwrap();
    assert_eq!(inside, ns.inode());
    assert_eq!(own_namespace(), host, "the caller's thread must not move");
    let again = NetNs::open(&path).unwrap();
    assert_eq!(again.inode(), ns.inode());
    assert!(matches!(NetNs::create(&path), Err(Error::Pin { .. })));
    remove(&path).unwrap();
    assert!(!path.exists() && !is_pinned(&path));
    remove(&path).unwrap();
    assert!(matches!(NetNs::open(&path), Err(Error::Open { .. })));
}

#[test]
fn sockets_stay_in_the_namespace_they_were_made_in() {
    let dir = Scratch::new();
    let a = up(dir.path(), "a");
    let b = up(dir.path(), "b");
    let listener = a.bind_tcp(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Dialled from inside the namespace, accepted and served on this (host) thread.
    let mut client = a
        .connect_tcp(loopback(port), Duration::from_secs(5))
        .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(b"hello from a").unwrap();
    let mut got = [0u8; 12];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello from a");
    // Another namespace's loopback is another network: nothing listens there.
    let err = b
        .connect_tcp(loopback(port), Duration::from_secs(5))
        .unwrap_err();
    match err {
        Error::Socket { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("{other}"),
    }
    drop((a, b));
    remove(&dir.path().join("a")).unwrap();
    remove(&dir.path().join("b")).unwrap();
    // The listener keeps its namespace alive after the pin is gone.
    drop(client);
    assert_eq!(listener.local_addr().unwrap().port(), port);
}

#[test]
fn a_new_namespace_has_no_loopback_until_it_is_brought_up() {
    let dir = Scratch::new();
    let path = dir.path().join("fresh");
    let ns = NetNs::create(&path).expect("create a namespace (needs root)");
    // Down, the loopback network is unreachable: a connection fails before any port is tried.
    let down = ns
        .connect_tcp(loopback(9), Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(&down, Error::Socket { source, .. } if source.raw_os_error() == Some(libc::ENETUNREACH)),
        "{down}"
    );
    ns.set_loopback_up().unwrap();
    ns.set_loopback_up().unwrap();
    let socket = ns.bind_udp(loopback(0)).unwrap();
    let peer = ns.bind_udp(loopback(0)).unwrap();
    socket.send_to(b"ping", peer.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 4];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(peer.recv(&mut buf).unwrap(), 4);
    remove(&path).unwrap();
}

#[test]
fn only_namespace_files_open() {
    let dir = Scratch::new();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let err = NetNs::open(&plain).unwrap_err();
    assert!(matches!(err, Error::NotANamespace { .. }), "{err}");
    assert!(err.to_string().contains("not a network namespace"), "{err}");
    assert!(!is_pinned(&plain));
    // A stale pin (the file left after its mount was undone) is removed like a live one.
    remove(&plain).unwrap();
    assert!(!plain.exists());
    let own = NetNs::open(Path::new("/proc/self/ns/net")).unwrap();
    assert_eq!(own.inode(), own_namespace());
}

#[test]
fn pins_outlive_their_handles_and_a_panic_inside_reaches_the_caller() {
    let dir = Scratch::new();
    let path = dir.path().join("p");
    let inode = NetNs::create(&path).unwrap().inode();
    let ns = NetNs::open(&path).unwrap();
    assert_eq!(ns.inode(), inode);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = ns.run(|| panic!("inside"));
    }));
    assert!(caught.is_err());
    assert_eq!(ns.run(own_namespace).unwrap(), inode);
    remove(&path).unwrap();
}

#[test]
fn a_thread_that_enters_stays_and_its_children_are_born_inside() {
    let dir = Scratch::new();
    let ns = up(dir.path(), "lab");
    let host = own_namespace();
    let (here, child) = std::thread::spawn(move || {
        ns.enter().unwrap();
        let child = std::thread::spawn(own_namespace).join().unwrap();
        (own_namespace(), (child, ns.inode()))
    })
    .join()
    .unwrap();
    assert_eq!(here, child.1, "the thread that entered is inside");
    assert_eq!(child.0, child.1, "a thread it starts is born inside");
    assert_eq!(own_namespace(), host, "other threads stay where they were");
}

#[test]
fn a_future_polled_inside_makes_its_sockets_there_and_the_thread_goes_back() {
    let dir = Scratch::new();
    let ns = std::sync::Arc::new(up(dir.path(), "pod"));
    let host = own_namespace();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inside = wasmlet_netns::InNamespace::new(ns.clone(), async {
        let first = own_namespace();
        // Yield, so the second half is a second poll.
        tokio::task::yield_now().await;
        let listener = tokio::net::TcpListener::bind(loopback(0)).await.unwrap();
        (first, own_namespace(), listener)
    });
    let (first, second, listener) = runtime.block_on(inside).unwrap();
    assert_eq!((first, second), (ns.inode(), ns.inode()));
    assert_eq!(own_namespace(), host, "the polling thread is back home");
    let port = listener.local_addr().unwrap().port();
    assert!(
        std::net::TcpStream::connect(loopback(port)).is_err(),
        "the listener is not on the host's loopback"
    );
    let dialled = ns.connect_tcp(loopback(port), Duration::from_secs(5));
    assert!(dialled.is_ok(), "the listener is in the pod's namespace");
}

#[test]
fn within_makes_a_socket_inside_on_the_calling_thread_and_comes_back() {
    let dir = Scratch::new();
    let ns = up(dir.path(), "pod");
    let host = own_namespace();
    let caller = std::thread::current().id();
    let (inside, thread, listener) = ns
        .within(|| {
            let listener = std::net::TcpListener::bind(loopback(0)).unwrap();
            (own_namespace(), std::thread::current().id(), listener)
        })
        .unwrap();
    assert_eq!(inside, ns.inode(), "f ran inside the namespace");
    assert_eq!(thread, caller, "on the calling thread");
    assert_eq!(own_namespace(), host, "and the thread came back");
    let port = listener.local_addr().unwrap().port();
    assert!(std::net::TcpStream::connect(loopback(port)).is_err());
    assert!(
        ns.connect_tcp(loopback(port), Duration::from_secs(5))
            .is_ok()
    );
}
