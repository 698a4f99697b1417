//! What the runtime's integration tests share: a writer that keeps a guest's raw output, a
//! client that reads a greeting from inside a pod's network namespace, and an HTTP `GET /`.
#![allow(dead_code)] // each test binary uses a part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A writer that keeps what it is given (a container's stdout or stderr tee).
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// What was written, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connects to `addr` from inside `ns` (retrying for 20 s while nothing listens yet) and
/// reads to the end of the connection.
pub fn greeting_inside(ns: &wasmlet_netns::NetNs, addr: SocketAddr) -> String {
    read_greeting(addr, " in the pod's namespace", || {
        ns.connect_tcp(addr, Duration::from_secs(5))
            .map_err(std::io::Error::other)
    })
}

/// Connects to `addr` from this process's namespace, as [`greeting_inside`] does.
pub fn greeting(addr: SocketAddr) -> String {
    read_greeting(addr, "", || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
}

/// Connects with `connect` (retrying for 20 s while nothing listens yet) and reads to the end
/// of the connection; `where_` completes the failure message.
fn read_greeting(
    addr: SocketAddr,
    where_: &str,
    connect: impl Fn() -> std::io::Result<TcpStream>,
) -> String {
    let started = Instant::now();
    let mut conn = loop {
        match connect() {
            Ok(conn) => break conn,
            Err(err) if started.elapsed() > Duration::from_secs(20) => {
                panic!("nothing listens on {addr}{where_}: {err}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

/// One `GET /` on `addr`: the whole response.
pub async fn get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response
}
