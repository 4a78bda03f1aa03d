//! A TCP forwarder in front of the embedded broker, so that the workshop's bootstrap
//! address (`127.0.0.1:9094`) reaches it: librdkafka's mock cluster listens on a port of
//! its own choosing. Each connection to the forwarder is relayed to the mock cluster's
//! bootstrap address; a client's metadata request then names the mock broker's own
//! address, which the client connects to directly (fine on one machine). Dev only.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("`{0}` is not an address to listen on (write host:port, e.g. 127.0.0.1:9094)")]
    Address(String),
    #[error(
        "cannot listen on {address} for the embedded broker: the port is taken (another broker, Docker's Kafka or an earlier `rivulet broker`?); stop it, or pass --listen with another address (e.g. --listen 127.0.0.1:0)"
    )]
    Taken { address: String },
    #[error("cannot listen on {address} for the embedded broker: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start the forwarder's thread: {0}")]
    Thread(std::io::Error),
}

/// Relays connections on its address to a target; stops accepting when dropped.
#[derive(Debug)]
pub struct Forwarder {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    /// Listens on `listen` (`host:port`; port 0 picks a free one) and relays every
    /// connection to `target`. On 127.0.0.1 it also listens on `[::1]` at the same port when
    /// it can, since `localhost` may resolve to either.
    pub fn start(listen: &str, target: &str) -> Result<Forwarder, ForwardError> {
        use std::net::ToSocketAddrs;
        let wanted = listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| ForwardError::Address(listen.to_owned()))?;
        let listener = TcpListener::bind(wanted).map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => ForwardError::Taken {
                address: listen.to_owned(),
            },
            _ => ForwardError::Listen {
                address: listen.to_owned(),
                source,
            },
        })?;
        let address = listener
            .local_addr()
            .map_err(|source| ForwardError::Listen {
                address: listen.to_owned(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        accept_on(listener, target, &stop)?;
        if address.ip() == std::net::Ipv4Addr::LOCALHOST {
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()));
            if let Ok(listener) = TcpListener::bind(v6) {
                accept_on(listener, target, &stop)?;
            }
        }
        Ok(Forwarder { address, stop })
    }

    /// The address clients bootstrap at.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loops (each then sees the flag).
        let _ = TcpStream::connect(self.address);
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.address.port()));
        if self.address.ip() == std::net::Ipv4Addr::LOCALHOST {
            let _ = TcpStream::connect(v6);
        }
    }
}

fn accept_on(
    listener: TcpListener,
    target: &str,
    stop: &Arc<AtomicBool>,
) -> Result<(), ForwardError> {
    let (target, stop) = (target.to_owned(), stop.clone());
    std::thread::Builder::new()
        .name("rivulet-broker-forward".into())
        .spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                match TcpStream::connect(&target) {
                    Ok(broker) => relay(client, broker),
                    Err(err) => {
                        tracing::warn!(
                            "forwarding a connection to the embedded broker at {target}: {err}"
                        );
                    }
                }
            }
        })
        .map(drop)
        .map_err(ForwardError::Thread)
}

/// Copies both ways until either side closes.
fn relay(client: TcpStream, broker: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (Ok(client_back), Ok(broker_back)) = (client.try_clone(), broker.try_clone()) else {
        return;
    };
    let spawn = |from: TcpStream, to: TcpStream| {
        std::thread::Builder::new()
            .name("rivulet-broker-relay".into())
            .spawn(move || pipe(from, to))
    };
    // A relay that cannot start drops its ends: the client sees the connection close.
    let _ = spawn(client, broker);
    let _ = spawn(broker_back, client_back);
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_a_clear_error_and_a_bad_address_too() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let err = Forwarder::start(&address, "127.0.0.1:1").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot listen on {address} for the embedded broker: the port is taken (another broker, Docker's Kafka or an earlier `rivulet broker`?); stop it, or pass --listen with another address (e.g. --listen 127.0.0.1:0)"
            )
        );
        let err = Forwarder::start("localhost", "127.0.0.1:1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`localhost` is not an address to listen on (write host:port, e.g. 127.0.0.1:9094)"
        );
    }

    #[test]
    fn bytes_are_relayed_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = echo.accept().unwrap();
            let mut buffer = [0u8; 5];
            stream.read_exact(&mut buffer).unwrap();
            buffer.reverse();
            stream.write_all(&buffer).unwrap();
        });
        let forwarder = Forwarder::start("127.0.0.1:0", &target).unwrap();
        let mut client = TcpStream::connect(forwarder.address()).unwrap();
        client.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"olleh");
    }
}
