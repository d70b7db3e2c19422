//! Transport addresses (`vsock:CID:PORT`, `unix:PATH`) and the streams/listeners behind them.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

/// `VMADDR_CID_ANY` (`-1U`, linux/vm_sockets.h): listen on every CID. Accepted as `any`.
pub const VSOCK_CID_ANY: u32 = tokio_vsock::VMADDR_CID_ANY;

/// Where the enclave listens / the parent connects.
///
/// Text form: `vsock:CID:PORT` (CID and port are decimal `u32`; the CID may be `any`)
/// or `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// An `AF_VSOCK` address (production: parent ⇄ enclave).
    Vsock {
        /// Context id (the enclave's CID when connecting; usually `any` when listening).
        cid: u32,
        /// vsock port.
        port: u32,
    },
    /// A Unix domain socket path (mock mode and tests).
    Unix(PathBuf),
}

/// Why an address string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `scheme:` prefix at all.
    #[error("address {input:?} has no scheme: expected \"vsock:CID:PORT\" or \"unix:PATH\"")]
    MissingScheme {
        /// The rejected input.
        input: String,
    },
    /// A scheme other than `vsock` or `unix`.
    #[error("address scheme {scheme:?} is not supported: expected \"vsock\" or \"unix\"")]
    UnknownScheme {
        /// The scheme found.
        scheme: String,
    },
    /// `vsock:` without the `CID:PORT` pair.
    #[error("vsock address {input:?} must be \"vsock:CID:PORT\"")]
    VsockShape {
        /// The rejected input.
        input: String,
    },
    /// The CID is not a decimal `u32` (or `any`).
    #[error("vsock CID {value:?} is not a decimal u32 or \"any\"")]
    InvalidCid {
        /// The CID text found.
        value: String,
    },
    /// The port is not a decimal `u32`.
    #[error("vsock port {value:?} is not a decimal u32")]
    InvalidPort {
        /// The port text found.
        value: String,
    },
    /// `unix:` with an empty path.
    #[error("unix address has an empty path")]
    EmptyPath,
}

fn parse_u32_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = input.split_once(':') else {
            return Err(AddressError::MissingScheme {
                input: input.to_owned(),
            });
        };
        match scheme {
            "vsock" => {
                let Some((cid, port)) = rest.split_once(':') else {
                    return Err(AddressError::VsockShape {
                        input: input.to_owned(),
                    });
                };
                if port.contains(':') {
                    return Err(AddressError::VsockShape {
                        input: input.to_owned(),
                    });
                }
                let cid = if cid == "any" {
                    VSOCK_CID_ANY
                } else {
                    parse_u32_decimal(cid).ok_or_else(|| AddressError::InvalidCid {
                        value: cid.to_owned(),
                    })?
                };
                let port = parse_u32_decimal(port).ok_or_else(|| AddressError::InvalidPort {
                    value: port.to_owned(),
                })?;
                Ok(Address::Vsock { cid, port })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(AddressError::EmptyPath);
                }
                Ok(Address::Unix(PathBuf::from(rest)))
            }
            other => Err(AddressError::UnknownScheme {
                scheme: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Address {
    /// Connects to this address.
    pub async fn connect(&self) -> io::Result<Stream> {
        match self {
            Address::Vsock { cid, port } => Ok(Stream::Vsock(
                VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
            )),
            Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    /// Binds a listener on this address.
    ///
    /// For a Unix path, a stale socket file left by a previous process (one nobody
    /// accepts on any more) is removed and the bind retried; a live one is an error.
    pub async fn listen(&self) -> io::Result<Listener> {
        match self {
            Address::Vsock { cid, port } => Ok(Listener::Vsock(VsockListener::bind(
                VsockAddr::new(*cid, *port),
            )?)),
            Address::Unix(path) => match UnixListener::bind(path) {
                Ok(listener) => Ok(Listener::Unix(listener)),
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                    let is_socket = std::fs::symlink_metadata(path)
                        .map(|meta| {
                            use std::os::unix::fs::FileTypeExt;
                            meta.file_type().is_socket()
                        })
                        .unwrap_or(false);
                    if is_socket && UnixStream::connect(path).await.is_err() {
                        std::fs::remove_file(path)?;
                        Ok(Listener::Unix(UnixListener::bind(path)?))
                    } else {
                        Err(error)
                    }
                }
                Err(error) => Err(error),
            },
        }
    }
}

/// A connected stream of either transport.
#[derive(Debug)]
pub enum Stream {
    /// Unix domain socket.
    Unix(UnixStream),
    /// vsock.
    Vsock(VsockStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A bound listener of either transport.
#[derive(Debug)]
pub enum Listener {
    /// Unix domain socket listener.
    Unix(UnixListener),
    /// vsock listener.
    Vsock(VsockListener),
}

impl Listener {
    /// Accepts one connection; the peer is described as text for logs.
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), "unix peer".to_owned()))
            }
            Listener::Vsock(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((
                    Stream::Vsock(stream),
                    format!("vsock:{}:{}", peer.cid(), peer.port()),
                ))
            }
        }
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Self {
        Listener::Unix(listener)
    }
}

impl From<VsockListener> for Listener {
    fn from(listener: VsockListener) -> Self {
        Listener::Vsock(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vsock() {
        assert_eq!(
            "vsock:16:5000".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: 16,
                port: 5000
            }
        );
        assert_eq!(
            "vsock:any:5000".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: 5000
            }
        );
        assert_eq!(
            "vsock:4294967295:0".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: u32::MAX,
                port: 0
            }
        );
    }

    #[test]
    fn parses_unix() {
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Address>().unwrap(),
            Address::Unix(PathBuf::from("/tmp/x.sock"))
        );
        assert_eq!(
            "unix:rel/a:b".parse::<Address>().unwrap(),
            Address::Unix(PathBuf::from("rel/a:b"))
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["vsock:3:5000", "vsock:4294967295:1", "unix:/run/e.sock"] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
            assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        let cases: &[(&str, AddressError)] = &[
            (
                "",
                AddressError::MissingScheme {
                    input: String::new(),
                },
            ),
            (
                "/tmp/x.sock",
                AddressError::MissingScheme {
                    input: "/tmp/x.sock".into(),
                },
            ),
            (
                "tcp:127.0.0.1:1",
                AddressError::UnknownScheme {
                    scheme: "tcp".into(),
                },
            ),
            (
                "VSOCK:1:2",
                AddressError::UnknownScheme {
                    scheme: "VSOCK".into(),
                },
            ),
            (
                "vsock:16",
                AddressError::VsockShape {
                    input: "vsock:16".into(),
                },
            ),
            (
                "vsock:1:2:3",
                AddressError::VsockShape {
                    input: "vsock:1:2:3".into(),
                },
            ),
            ("vsock::5000", AddressError::InvalidCid { value: "".into() }),
            (
                "vsock:-1:5000",
                AddressError::InvalidCid { value: "-1".into() },
            ),
            (
                "vsock:+3:5000",
                AddressError::InvalidCid { value: "+3".into() },
            ),
            (
                "vsock:4294967296:5000",
                AddressError::InvalidCid {
                    value: "4294967296".into(),
                },
            ),
            ("vsock:3:", AddressError::InvalidPort { value: "".into() }),
            (
                "vsock:3:50x",
                AddressError::InvalidPort {
                    value: "50x".into(),
                },
            ),
            (
                "vsock:3: 5",
                AddressError::InvalidPort { value: " 5".into() },
            ),
            ("unix:", AddressError::EmptyPath),
        ];
        for (input, expected) in cases {
            assert_eq!(&input.parse::<Address>().unwrap_err(), expected, "{input}");
            // Every error message names what was expected.
            assert!(!expected.to_string().is_empty());
        }
    }
}
