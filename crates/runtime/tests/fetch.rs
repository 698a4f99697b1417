//! Components as clients, over the host's real sockets: `tcp_fetch` resolves a name with
//! `wasi:sockets/ip-name-lookup` and copies what a TCP server sends to stdout; `http_fetch`,
//! served by the runtime, answers each request with an outgoing `wasi:http` GET. A closed
//! port or an unresolvable name ends the run (or the answer) naming the step and the WASI
//! error code.

mod common;

use common::Captured;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use wasmlet_runtime::{
    Container, ContainerSpec, ExitReason, ExitStatus, Limits, Network, Runtime, RuntimeConfig,
    Stdio,
};

/// The pod IP of these tests, on the host's network.
const POD_IP: &str = "127.0.0.1";
/// The bound of every run, request and wait of these tests.
const BOUND: Duration = Duration::from_secs(30);

/// A text longer than one 4 KiB read, so the copy loops go round more than once.
fn served_text() -> String {
    (0..400)
        .map(|i| format!("line {i:03} of what the server sends\n"))
        .collect()
}

/// A port of 127.0.0.1 that refuses connections: bound by the returned socket, which does not
/// listen, so no other socket takes the port while the socket is held.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A server on 127.0.0.1 that accepts one connection, writes `text` and closes it.
fn serve_text_once(text: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_write_timeout(Some(BOUND)).unwrap();
        conn.write_all(text.as_bytes()).unwrap();
    });
    addr
}

/// Asserts `got` is `want`, showing where they part rather than both whole.
fn assert_same_text(got: &str, want: &str) {
    let common = got
        .bytes()
        .zip(want.bytes())
        .take_while(|(g, w)| g == w)
        .count();
    assert!(
        got == want,
        "{} bytes, {} expected; they part at byte {common}: {:?} instead of {:?}",
        got.len(),
        want.len(),
        &got[common..got.len().min(common + 40)],
        &want[common..want.len().min(common + 40)],
    );
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `tcp_fetch` with TARGET_HOST and TARGET_PORT on the host's network.
async fn tcp_fetch(host: &str, port: &str) -> Run {
    let (stdout, stderr) = (Captured::default(), Captured::default());
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_fetch()).unwrap();
    let spec = ContainerSpec {
        args: vec!["tcp_fetch.wasm".into()],
        env: vec![
            ("TARGET_HOST".into(), host.into()),
            ("TARGET_PORT".into(), port.into()),
        ],
        stdio: Stdio {
            stdout_tee: Some(Box::new(stdout.clone())),
            stderr_tee: Some(Box::new(stderr.clone())),
            ..Stdio::default()
        },
        limits: Limits {
            timeout: Some(BOUND),
            ..Limits::default()
        },
        network: Some(Network::on_host(POD_IP.parse().unwrap())),
        ..ContainerSpec::default()
    };
    let status = rt.run(&program, spec).await.unwrap();
    Run {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fetch_copies_what_the_server_sends_to_stdout() {
    let text = served_text();
    let addr = serve_text_once(text.clone());
    let run = tcp_fetch("127.0.0.1", &addr.port().to_string()).await;
    assert_eq!(
        (run.status.code, run.status.reason),
        (0, ExitReason::Completed),
        "{:?}: {}",
        run.status,
        run.stderr
    );
    assert_eq!(run.stderr, "tcp_fetch: TARGET_HOST resolved to 127.0.0.1\n");
    assert_same_text(&run.stdout, &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fetch_resolves_a_name_with_the_hosts_resolver() {
    let text = served_text();
    let addr = serve_text_once(text.clone());
    let run = tcp_fetch("localhost", &addr.port().to_string()).await;
    assert_eq!(
        (run.status.code, run.status.reason),
        (0, ExitReason::Completed),
        "{:?}: {}",
        run.status,
        run.stderr
    );
    assert_eq!(run.stderr, "tcp_fetch: TARGET_HOST resolved to 127.0.0.1\n");
    assert_same_text(&run.stdout, &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fetch_of_a_closed_port_names_the_address_and_exits_1() {
    let (_held, port) = closed_port();
    let run = tcp_fetch("127.0.0.1", &port.to_string()).await;
    assert_eq!((run.status.code, run.status.reason), (1, ExitReason::Error));
    assert_eq!(
        run.stderr,
        format!(
            "tcp_fetch: TARGET_HOST resolved to 127.0.0.1\n\
             tcp_fetch: cannot connect 127.0.0.1:{port}: wasi:sockets error-code 14\n"
        ),
        "connection-refused"
    );
    assert_eq!(run.stdout, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fetch_of_an_unresolvable_name_exits_1() {
    let run = tcp_fetch("no-such-host.invalid", "80").await;
    assert_eq!((run.status.code, run.status.reason), (1, ExitReason::Error));
    assert_eq!(
        run.stderr, "tcp_fetch: cannot resolve no-such-host.invalid: wasi:sockets error-code 18\n",
        "name-unresolvable"
    );
    assert_eq!(run.stdout, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fetch_refuses_a_port_that_is_not_one() {
    for port in ["", "http", "0", "65536", "80x"] {
        let run = tcp_fetch("127.0.0.1", port).await;
        assert_eq!(
            (run.status.code, run.status.reason),
            (1, ExitReason::Error),
            "{port:?}"
        );
        assert_eq!(
            run.stderr, "tcp_fetch: TARGET_PORT must be a port number\n",
            "{port:?}"
        );
    }
}

/// The head (request line and headers) of the request on `conn`, read byte by byte so that
/// nothing of the body is taken; sets `conn`'s read and write deadlines to [`BOUND`].
fn read_head(conn: &mut std::net::TcpStream) -> String {
    conn.set_read_timeout(Some(BOUND)).unwrap();
    conn.set_write_timeout(Some(BOUND)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).unwrap() {
            0 => panic!("the request ended inside its head"),
            _ => head.push(byte[0]),
        }
    }
    String::from_utf8(head).unwrap()
}

/// An HTTP/1.1 server on 127.0.0.1 that answers one request with `status` (code and reason)
/// and `body`, and sends the request's head (request line and headers) to the returned channel.
fn serve_http_once(status: &'static str, body: String) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        tx.send(read_head(&mut conn)).unwrap();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
    });
    (addr, rx)
}

/// The spec `http_fetch` is served with: FETCH_URL `url`, the host's network, each request
/// bounded.
fn fetch_spec(url: String) -> ContainerSpec {
    ContainerSpec {
        env: vec![("FETCH_URL".into(), url)],
        limits: Limits {
            timeout: Some(BOUND),
            ..Limits::default()
        },
        network: Some(Network::on_host(POD_IP.parse().unwrap())),
        ..ContainerSpec::default()
    }
}

/// Serves `http_fetch` with FETCH_URL on 127.0.0.1, sends it one `GET /` and returns the
/// answer's status code and (de-chunked) body.
async fn http_fetch(url: &str) -> (u16, String) {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::http_fetch()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let container = rt
        .start_http(&program, fetch_spec(url.into()), vec![listener])
        .unwrap();
    let answer = tokio::time::timeout(BOUND, get(addr))
        .await
        .expect("an answer in time");
    container.stop(Duration::from_secs(5));
    let status = tokio::time::timeout(BOUND, container.wait())
        .await
        .expect("a stopped server ends");
    assert_eq!((status.code, status.reason), (0, ExitReason::Completed));
    parse_answer(&answer)
}

/// One `GET /` on `addr`: the whole answer.
async fn get(addr: SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    answer
}

/// The status code and body of an HTTP/1.1 answer, its body de-chunked when it is chunked.
fn parse_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8(answer.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked");
    if !chunked {
        return (status, body.to_owned());
    }
    let mut rest = body;
    let mut decoded = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            assert_eq!(after, "\r\n", "the end of a chunked body");
            return (status, decoded);
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("a chunk's end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_answers_with_the_body_of_its_get() {
    // A DNS name is resolved by the host; the fetched response's own status is not passed on.
    let cases = [
        ("127.0.0.1", "200 OK"),
        ("localhost", "200 OK"),
        ("127.0.0.1", "404 Not Found"),
    ];
    for (host, served_status) in cases {
        let body = served_text();
        let (addr, heads) = serve_http_once(served_status, body.clone());
        let port = addr.port();
        let (status, answer) = http_fetch(&format!("http://{host}:{port}/some/path?x=1")).await;
        assert_eq!(status, 200, "{host}, {served_status}: {answer}");
        assert_same_text(&answer, &body);
        let head = heads
            .recv_timeout(BOUND)
            .expect("the server got the request");
        assert!(
            head.starts_with("GET /some/path?x=1 HTTP/1.1\r\n"),
            "{host}: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("\r\nhost: {host}:{port}\r\n")),
            "{host}: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_answers_502_naming_what_failed() {
    let (_held, port) = closed_port();
    let url = format!("http://127.0.0.1:{port}/");
    let (status, body) = http_fetch(&url).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body,
        format!("http_fetch: GET {url} failed: wasi:http error-code 6\n"),
        "connection-refused"
    );
    let (status, body) = http_fetch(&format!("https://127.0.0.1:{port}/")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body, "http_fetch: FETCH_URL must be an http:// URL\n");
}

/// An HTTP/1.1 server on 127.0.0.1 that answers each request it gets with `200 OK` and the
/// body `held`, but only once the test lets it: the request's head goes to the first channel
/// and the answer waits for a message on the second.
fn serve_http_gated() -> (SocketAddr, mpsc::Receiver<String>, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, heads) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            heads_tx.send(read_head(&mut conn)).unwrap();
            if released.recv_timeout(BOUND).is_err() {
                return;
            }
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nheld";
            conn.write_all(answer.as_bytes()).unwrap();
        }
    });
    (addr, heads, release)
}

/// Serves `http_fetch` from a runtime of `config` whose pool holds one instance, fetching
/// from [`serve_http_gated`]'s backend: the server's address, the backend's request heads and
/// gate, and the serving container.
async fn fetch_on_one_slot(
    config: RuntimeConfig,
) -> (
    SocketAddr,
    mpsc::Receiver<String>,
    mpsc::Sender<()>,
    Container,
) {
    let rt = Runtime::new(RuntimeConfig {
        allocator: wasmlet_runtime::AllocatorChoice::Pooling,
        max_instances: 1,
        ..config
    })
    .unwrap();
    let program = rt.load(wasmlet_fixtures::http_fetch()).unwrap();
    let (backend, heads, release) = serve_http_gated();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spec = fetch_spec(format!("http://{backend}/"));
    let container = rt.start_http(&program, spec, vec![listener]).unwrap();
    (addr, heads, release, container)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_finding_the_instance_pool_full_waits_for_room_instead_of_failing() {
    // A pool of one instance: while the first request's instance waits for its GET, the
    // second request's instance cannot be made. It used to be answered 500 ("maximum
    // concurrent limit of 1 for component instances reached"); it now waits for the slot.
    let (addr, heads, release, container) = fetch_on_one_slot(RuntimeConfig::default()).await;
    let first = tokio::spawn(tokio::time::timeout(BOUND, get(addr)));
    heads.recv_timeout(BOUND).expect("the first request's GET");
    let second = tokio::spawn(tokio::time::timeout(BOUND, get(addr)));
    assert!(
        heads.recv_timeout(Duration::from_millis(300)).is_err(),
        "the second request's instance ran while the first held the pool's only slot"
    );
    release.send(()).unwrap();
    let answer = first.await.unwrap().expect("the first answer in time");
    assert_eq!(parse_answer(&answer), (200, "held".to_owned()));
    heads
        .recv_timeout(BOUND)
        .expect("the second request's GET, once the slot was free");
    release.send(()).unwrap();
    let answer = second.await.unwrap().expect("the second answer in time");
    assert_eq!(parse_answer(&answer), (200, "held".to_owned()));
    container.stop(Duration::from_secs(5));
    tokio::time::timeout(BOUND, container.wait())
        .await
        .expect("a stopped server ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_finding_the_pool_full_past_its_wait_is_answered_503_with_retry_after() {
    // A pool of one instance held by the first request's GET for longer than the second
    // request may wait: the second is answered 503, naming the pool, with Retry-After.
    let config = RuntimeConfig {
        pool_wait: Duration::from_millis(500),
        ..RuntimeConfig::default()
    };
    let (addr, heads, release, container) = fetch_on_one_slot(config).await;
    let first = tokio::spawn(tokio::time::timeout(BOUND, get(addr)));
    heads.recv_timeout(BOUND).expect("the first request's GET");
    let second = tokio::time::timeout(BOUND, get(addr))
        .await
        .expect("the second answer within the bound, not held until the first ends");
    let text = String::from_utf8_lossy(&second).to_lowercase();
    assert_eq!(parse_answer(&second).0, 503, "{text}");
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("instance pool (1 instances)"), "{text}");
    release.send(()).unwrap();
    let answer = first.await.unwrap().expect("the first answer in time");
    assert_eq!(parse_answer(&answer), (200, "held".to_owned()));
    container.stop(Duration::from_secs(5));
    tokio::time::timeout(BOUND, container.wait())
        .await
        .expect("a stopped server ends");
}
