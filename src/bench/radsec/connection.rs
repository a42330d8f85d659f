//! One multiplexed RadSec connection of the load generator: many requests outstanding at
//! once, one writer (each packet written whole, RFC 6614 §3.4), and one reader that hands each
//! answer to the request waiting for its number (see `pending`).
//!
//! The connection offers the ALPN name of its RADIUS version alone and is given up unless the
//! server selected exactly that (RFC 9765 §3.3: a client that offered only one version and
//! did not get it closes the connection). When it closes, its outstanding requests fail at
//! once; answers that match no request are counted and dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::RadiusVersion;
use super::pending::{Match, Numbering, Pending};
use crate::server::tls::framing::{FrameError, FrameReader};

type Stream = TlsStream<TcpStream>;

/// How to open a connection.
pub struct Setup {
    pub config: Arc<rustls::ClientConfig>,
    pub server: SocketAddr,
    pub server_name: ServerName<'static>,
    pub bind: Option<SocketAddr>,
    pub version: RadiusVersion,
    /// For the TCP connect, and again for the TLS handshake.
    pub timeout: Duration,
}

/// What became of one request on a connection.
pub enum Outcome {
    /// The answer's bytes, not checked yet; `number` is the request's Identifier or Token.
    Answer {
        bytes: Vec<u8>,
        number: u32,
        latency: Duration,
    },
    Timeout,
    /// The connection closed before the answer came (or was closed already).
    Closed,
}

/// A RADIUS/TLS connection on which this many requests went unanswered (each holding its
/// identifier for an answer that may never come) is closed and opened anew, rather than left
/// to run out of identifiers.
const MAX_ABANDONED_IDENTIFIERS: usize = 128;

/// Packets queued for the writer.
const WRITE_QUEUE: usize = 1024;

pub struct Connection {
    state: Arc<State>,
    to_write: mpsc::Sender<Vec<u8>>,
    /// RADIUS/TLS: the 256 identifiers, one per outstanding request.
    identifiers: Option<Arc<Semaphore>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// What the reader and the writer share with the requests.
struct State {
    numbering: Numbering,
    pending: Mutex<Pending>,
    closed: CancellationToken,
    why_closed: Mutex<Option<String>>,
    unmatched: AtomicU64,
}

impl State {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the connection for `why` (the first reason given is kept): the reader and the
    /// writer stop, every waiting request learns it.
    fn close(&self, why: impl Into<String>) {
        self.why_closed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| why.into());
        // Cancelled before the table is emptied: a request that opens after this sees it.
        self.closed.cancel();
        self.pending().close();
    }

    fn deliver(&self, bytes: Vec<u8>) {
        let number = match self.numbering {
            Numbering::Identifier => bytes.get(1).map(|&id| u32::from(id)),
            Numbering::Token => bytes.get(4..8).and_then(|t| <[u8; 4]>::try_from(t).ok()).map(u32::from_be_bytes),
        };
        let Some(number) = number else { return };
        let found = self.pending().answer(number);
        match found {
            Match::Waiting(waiter) => {
                let _ = waiter.send(bytes);
            }
            Match::Late => {}
            Match::Unknown => {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Connection {
    /// Connects, shakes hands, checks the version the server selected, and starts the reader
    /// and the writer.
    pub async fn open(setup: &Setup) -> std::io::Result<Self> {
        let server = setup.server;
        let tcp = tokio::time::timeout(setup.timeout, connect(server, setup.bind))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {server}: no answer in {:?}", setup.timeout))
            })?
            .map_err(|e| std::io::Error::new(e.kind(), format!("connecting to {server}: {e}")))?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&setup.config));
        let stream = tokio::time::timeout(setup.timeout, connector.connect(setup.server_name.clone(), tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake with {server}: not finished in {:?}", setup.timeout),
                )
            })?
            .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake with {server}: {e}{}", hint(&e, setup.version))))?;
        let offered = setup.version.alpn();
        let selected = stream.get_ref().1.alpn_protocol();
        if selected != Some(offered) {
            let said = selected.map_or_else(|| "none".to_owned(), |a| format!("{:?}", String::from_utf8_lossy(a)));
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{server} did not select ALPN \"{}\" (it selected {said}): it does not speak {} to this client",
                    setup.version, setup.version
                ),
            ));
        }
        let (numbering, identifiers) = match setup.version {
            RadiusVersion::V1_0 => (Numbering::Identifier, Some(Arc::new(Semaphore::new(256)))),
            RadiusVersion::V1_1 => (Numbering::Token, None),
        };
        // RFC 9765 §4.2.1: the Token counter starts at a random value on each connection.
        let state = Arc::new(State {
            numbering,
            pending: Mutex::new(Pending::new(numbering, rand::random())),
            closed: CancellationToken::new(),
            why_closed: Mutex::new(None),
            unmatched: AtomicU64::new(0),
        });
        let (read, write) = tokio::io::split(stream);
        let (to_write, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(read_answers(Arc::clone(&state), read));
        let writer = tokio::spawn(write_requests(Arc::clone(&state), write, queue));
        Ok(Self { state, to_write, identifiers, writer: Mutex::new(Some(writer)) })
    }

    /// Sends the request `build` makes for the number it is given, and waits until `timeout`
    /// for its answer (the wait for a free identifier included).
    pub async fn ask(&self, build: impl FnOnce(u32) -> std::io::Result<Vec<u8>>, timeout: Duration) -> std::io::Result<Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        let identifier = match &self.identifiers {
            Some(identifiers) => tokio::select! {
                permit = Arc::clone(identifiers).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return Ok(Outcome::Closed),
                },
                () = self.state.closed.cancelled() => return Ok(Outcome::Closed),
                () = tokio::time::sleep_until(deadline) => return Ok(Outcome::Timeout),
            },
            None => None,
        };
        let (waiter, answer) = oneshot::channel();
        let ticket = {
            let mut pending = self.state.pending();
            if self.state.closed.is_cancelled() {
                return Ok(Outcome::Closed);
            }
            pending.open(waiter, identifier).ok_or_else(|| std::io::Error::other("every number of the connection is outstanding"))?
        };
        let wire = match build(ticket.number) {
            Ok(wire) => wire,
            Err(e) => {
                self.state.pending().cancel(ticket);
                return Err(e);
            }
        };
        let sent_at = Instant::now();
        match tokio::time::timeout_at(deadline, self.to_write.send(wire)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(Outcome::Closed),
            Err(_) => {
                self.state.pending().cancel(ticket);
                return Ok(Outcome::Timeout);
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(bytes)) => Ok(Outcome::Answer { bytes, number: ticket.number, latency: sent_at.elapsed() }),
            // The waiter was dropped: the connection closed.
            Ok(Err(_)) => Ok(Outcome::Closed),
            Err(_) => {
                let abandoned = {
                    let mut pending = self.state.pending();
                    pending.abandon(ticket);
                    pending.abandoned()
                };
                if self.state.numbering == Numbering::Identifier && abandoned >= MAX_ABANDONED_IDENTIFIERS {
                    self.state.close(format!("{abandoned} requests went unanswered, holding their identifiers; opened anew"));
                }
                Ok(Outcome::Timeout)
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state.closed.is_cancelled()
    }

    /// Why the connection closed, once it has.
    pub fn why_closed(&self) -> Option<String> {
        self.state.why_closed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answers that matched no outstanding request.
    pub fn unmatched(&self) -> u64 {
        self.state.unmatched.load(Ordering::Relaxed)
    }

    /// Ends the connection as a client does when it is done: a TLS close_notify.
    pub async fn finish(&self) {
        self.state.close("the run ended");
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
    }
}

/// What to try when the server refused the version offered.
fn hint(error: &std::io::Error, version: RadiusVersion) -> String {
    let refused = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
    let no_alpn = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).is_some_and(|e| *e == refused);
    match (no_alpn, version) {
        (false, _) => String::new(),
        (true, RadiusVersion::V1_1) => " (the server does not speak radius/1.1 to this client: try --radius-version 1.0)".into(),
        (true, RadiusVersion::V1_0) => " (the server does not speak radius/1.0 to this client: try --radius-version 1.1)".into(),
    }
}

async fn connect(server: SocketAddr, bind: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let Some(bind) = bind else { return TcpStream::connect(server).await };
    let socket = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(bind).map_err(|e| std::io::Error::new(e.kind(), format!("binding {bind}: {e}")))?;
    socket.connect(server).await
}

async fn read_answers(state: Arc<State>, read: ReadHalf<Stream>) {
    let mut frames = FrameReader::new(read);
    let why = loop {
        let frame = tokio::select! {
            () = state.closed.cancelled() => return,
            frame = frames.next() => frame,
        };
        match frame {
            Ok(Some(bytes)) => state.deliver(bytes),
            Ok(None) => break "the server closed the connection".to_owned(),
            Err(FrameError::Io(e)) => break format!("reading from the server: {e}"),
            Err(e) => break format!("the server's answers: {e}"),
        }
    };
    state.close(why);
}

/// Writes requests as they come, each whole, flushing when none is waiting; on close, sends a
/// TLS close_notify.
async fn write_requests(state: Arc<State>, mut write: WriteHalf<Stream>, mut queue: mpsc::Receiver<Vec<u8>>) {
    loop {
        let first = tokio::select! {
            () = state.closed.cancelled() => break,
            next = queue.recv() => match next {
                Some(packet) => packet,
                None => break,
            },
        };
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let written = async {
            for packet in &batch {
                write.write_all(packet).await?;
            }
            write.flush().await
        };
        let result = tokio::select! {
            () = state.closed.cancelled() => break,
            result = written => result,
        };
        if let Err(e) = result {
            state.close(format!("writing to the server: {e}"));
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), write.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A server certificate for localhost from a CA of the test's own.
    struct Pki {
        ca: CertificateDer<'static>,
        server: CertificateDer<'static>,
        server_key: Vec<u8>,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        Pki { ca: ca.der().clone(), server: server.der().clone(), server_key: key.serialize_der() }
    }

    /// A TLS server on loopback selecting `alpn` (if any); each connection goes to `serve`.
    async fn server<F, Fut>(pki: &Pki, alpn: Option<&[u8]>, serve: F) -> SocketAddr
    where
        F: FnOnce(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server.clone()], PrivatePkcs8KeyDer::from(pki.server_key.clone()).into())
            .unwrap();
        config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            serve(stream).await;
        });
        address
    }

    fn setup(pki: &Pki, server: SocketAddr, version: RadiusVersion) -> Setup {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let mut config = crate::tls::with_roots(roots).unwrap();
        config.alpn_protocols = vec![version.alpn().to_vec()];
        Setup {
            config: Arc::new(config),
            server,
            server_name: ServerName::try_from("localhost").unwrap(),
            bind: None,
            version,
            timeout: Duration::from_secs(5),
        }
    }

    async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
        let mut packet = vec![0u8; 4];
        stream.read_exact(&mut packet).await.ok()?;
        let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        packet.resize(len, 0);
        stream.read_exact(&mut packet[4..]).await.ok()?;
        Some(packet)
    }

    /// An answer that echoes a request's header octets 1..20 (its Identifier, or its Token and
    /// reserved octets): the connection matches by those alone.
    fn echo(request: &[u8]) -> Vec<u8> {
        let mut answer = request[..20].to_vec();
        answer[0] = 2;
        answer[2..4].copy_from_slice(&20u16.to_be_bytes());
        answer
    }

    fn request(number: u32, version: RadiusVersion) -> std::io::Result<Vec<u8>> {
        let mut packet = vec![1, 0, 0, 20];
        packet.extend_from_slice(&[0; 16]);
        match version {
            RadiusVersion::V1_0 => packet[1] = u8::try_from(number).map_err(std::io::Error::other)?,
            RadiusVersion::V1_1 => packet[4..8].copy_from_slice(&number.to_be_bytes()),
        }
        Ok(packet)
    }

    #[tokio::test]
    async fn answers_in_any_order_go_to_their_tokens_and_strays_are_counted() {
        let pki = pki();
        let address = server(&pki, Some(b"radius/1.1"), |mut stream| async move {
            let mut requests = Vec::new();
            for _ in 0..3 {
                requests.push(read_packet(&mut stream).await.unwrap());
            }
            let mut stray = echo(&requests[0]);
            stray[4] ^= 0x80;
            stream.write_all(&stray).await.unwrap();
            for request in requests.iter().rev() {
                stream.write_all(&echo(request)).await.unwrap();
            }
            stream.flush().await.unwrap();
            let _ = read_packet(&mut stream).await;
        })
        .await;
        let connection = Connection::open(&setup(&pki, address, RadiusVersion::V1_1)).await.unwrap();
        let ask = || connection.ask(|token| request(token, RadiusVersion::V1_1), Duration::from_secs(5));
        let (a, b, c) = tokio::join!(ask(), ask(), ask());
        let mut tokens = Vec::new();
        for outcome in [a, b, c] {
            let Outcome::Answer { bytes, number, .. } = outcome.unwrap() else { panic!("every request is answered") };
            assert_eq!(bytes[4..8], number.to_be_bytes(), "its own answer");
            tokens.push(number);
        }
        // Counted up from a random start, in the order the requests were made.
        assert_eq!(tokens, [tokens[0], tokens[0].wrapping_add(1), tokens[0].wrapping_add(2)]);
        assert_eq!(connection.unmatched(), 1, "the stray answer");
        connection.finish().await;
    }

    #[tokio::test]
    async fn identifiers_are_never_reused_while_outstanding_so_the_257th_request_waits() {
        let pki = pki();
        let reused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let saw_reuse = Arc::clone(&reused);
        let address = server(&pki, Some(b"radius/1.0"), |mut stream| async move {
            let mut outstanding: Vec<Vec<u8>> = Vec::new();
            loop {
                // Answers only when 256 are outstanding, or when no more come.
                let next = tokio::time::timeout(Duration::from_millis(300), read_packet(&mut stream)).await;
                match next {
                    Ok(Some(request)) => {
                        if outstanding.iter().any(|o| o[1] == request[1]) {
                            saw_reuse.store(true, Ordering::Relaxed);
                        }
                        outstanding.push(request);
                        if outstanding.len() < 256 {
                            continue;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => {}
                }
                for request in outstanding.drain(..) {
                    stream.write_all(&echo(&request)).await.unwrap();
                }
                stream.flush().await.unwrap();
            }
        })
        .await;
        let connection = Connection::open(&setup(&pki, address, RadiusVersion::V1_0)).await.unwrap();
        let asks = (0..300).map(|_| connection.ask(|id| request(id, RadiusVersion::V1_0), Duration::from_secs(10)));
        let outcomes = futures_util::future::join_all(asks).await;
        let answered = outcomes.iter().filter(|o| matches!(o, Ok(Outcome::Answer { .. }))).count();
        assert_eq!(answered, 300);
        assert!(!reused.load(Ordering::Relaxed), "an identifier was sent again while outstanding");
        let ids: HashSet<u32> =
            outcomes.iter().filter_map(|o| if let Ok(Outcome::Answer { number, .. }) = o { Some(*number) } else { None }).collect();
        assert_eq!(ids.len(), 256, "all identifiers used, none beyond");
        connection.finish().await;
    }

    #[tokio::test]
    async fn a_connection_that_closes_fails_its_outstanding_requests_at_once() {
        let pki = pki();
        let address = server(&pki, Some(b"radius/1.1"), |mut stream| async move {
            let _ = read_packet(&mut stream).await;
            // Gone without an answer.
        })
        .await;
        let connection = Connection::open(&setup(&pki, address, RadiusVersion::V1_1)).await.unwrap();
        let started = Instant::now();
        let outcome = connection.ask(|token| request(token, RadiusVersion::V1_1), Duration::from_secs(30)).await.unwrap();
        assert!(matches!(outcome, Outcome::Closed));
        assert!(started.elapsed() < Duration::from_secs(10), "not left to time out");
        assert!(connection.is_closed());
        assert!(connection.why_closed().is_some());
        let again = connection.ask(|token| request(token, RadiusVersion::V1_1), Duration::from_secs(30)).await.unwrap();
        assert!(matches!(again, Outcome::Closed), "nothing more is sent on it");
    }

    #[tokio::test]
    async fn a_server_that_does_not_select_the_version_offered_is_refused() {
        let pki = pki();
        let address = server(&pki, None, |mut stream| async move {
            let _ = read_packet(&mut stream).await;
        })
        .await;
        let Err(refused) = Connection::open(&setup(&pki, address, RadiusVersion::V1_1)).await else {
            panic!("no ALPN selected, yet the connection was taken")
        };
        assert!(refused.to_string().contains("did not select ALPN \"radius/1.1\" (it selected none)"), "{refused}");
    }
}
