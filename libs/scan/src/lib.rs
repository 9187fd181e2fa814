//! Malware scanning of files as their bytes stream past: a [`Scanner`] opens a
//! [`Scan`] per file, is handed every chunk as it arrives (nothing is buffered
//! whole), and gives its [`Verdict`] once the file ended.
//!
//! Two backends:
//! - [`Clamd`]: ClamAV's daemon, spoken to directly over TCP (`host:port`) or a
//!   Unix socket (`unix:/path`) with its `INSTREAM` command: `zINSTREAM\0`, then
//!   chunks as a 4-byte big-endian length and the bytes, ended by a zero-length
//!   chunk; clamd answers `stream: OK`, `stream: <signature> FOUND` or
//!   `<reason> ERROR`. clamd refuses a stream longer than its `StreamMaxLength`
//!   (`INSTREAM size limit exceeded. ERROR`): that is a failed scan, never a clean
//!   one, so the platform's upload limits must stay within it.
//! - [`NoScanner`]: nothing is scanned; every file is recorded as not scanned.
//!
//! A clamd that cannot be reached either fails at once ([`Unavailable::Refuse`])
//! or is waited for, up to a bound ([`Unavailable::Wait`]); either way nothing
//! passes unscanned.

use std::{fmt, io, path::PathBuf, time::Duration};

use async_trait::async_trait;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
    time::{Instant, timeout},
};

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Scanned, and nothing found.
    Clean,
    /// A signature matched: its name, as the scanner reports it.
    Infected(String),
    /// No scanner is configured: the file was not scanned.
    NotScanned,
}

/// Why a file could not be scanned. Neither is ever taken for clean.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The scanner cannot be reached (refused, timed out, gone mid-stream).
    #[error("the malware scanner is unavailable: {0}")]
    Unavailable(String),
    /// The scanner answered, but with an error (e.g. the file is over its
    /// `StreamMaxLength`).
    #[error("the malware scanner could not scan the file: {0}")]
    Failed(String),
}

/// A malware scanner.
#[async_trait]
pub trait Scanner: Send + Sync + fmt::Debug {
    /// Its name, recorded with each verdict (`clamd`, `none`).
    fn name(&self) -> &'static str;

    /// Whether it scans at all (`false` for [`NoScanner`]).
    fn scans(&self) -> bool {
        true
    }

    /// Starts scanning one file; waits for the scanner as configured when it
    /// cannot be reached.
    async fn open(&self) -> Result<Box<dyn Scan>, ScanError>;
}

/// One file being scanned.
#[async_trait]
pub trait Scan: Send {
    /// Hands the next bytes of the file to the scanner.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), ScanError>;

    /// Ends the file and waits for the verdict.
    async fn verdict(self: Box<Self>) -> Result<Verdict, ScanError>;
}

/// No scanning: every file is recorded as not scanned.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoScanner;

#[async_trait]
impl Scanner for NoScanner {
    fn name(&self) -> &'static str {
        "none"
    }

    fn scans(&self) -> bool {
        false
    }

    async fn open(&self) -> Result<Box<dyn Scan>, ScanError> {
        Ok(Box::new(NotScanned))
    }
}

struct NotScanned;

#[async_trait]
impl Scan for NotScanned {
    async fn write(&mut self, _chunk: &[u8]) -> Result<(), ScanError> {
        Ok(())
    }

    async fn verdict(self: Box<Self>) -> Result<Verdict, ScanError> {
        Ok(Verdict::NotScanned)
    }
}

/// Where clamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port`.
    Tcp(String),
    /// `unix:/path/to/clamd.ctl`.
    Unix(PathBuf),
}

impl std::str::FromStr for ClamdAddress {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(path) = raw.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("a Unix socket address needs a path: unix:/path/to/clamd.ctl".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let raw = raw.strip_prefix("tcp://").unwrap_or(raw);
        match raw.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(raw.to_owned()))
            }
            _ => Err(format!(
                "`{raw}` is not a clamd address: use host:port or unix:/path"
            )),
        }
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => f.write_str(address),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What to do when clamd cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Fail at once.
    Refuse,
    /// Try again for up to this long, then fail.
    Wait(Duration),
}

/// clamd's settings.
#[derive(Clone, Debug)]
pub struct ClamdConfig {
    pub address: ClamdAddress,
    /// Bound on connecting once.
    pub connect_timeout: Duration,
    /// Bound on each write, and on waiting for the verdict once the file ended
    /// (clamd scans then).
    pub io_timeout: Duration,
    pub unavailable: Unavailable,
}

impl ClamdConfig {
    pub fn new(address: ClamdAddress) -> Self {
        Self {
            address,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            unavailable: Unavailable::Refuse,
        }
    }
}

/// ClamAV's daemon, over `INSTREAM`.
#[derive(Clone, Debug)]
pub struct Clamd {
    config: ClamdConfig,
}

/// The largest chunk sent at once; larger ones are split (clamd refuses a chunk
/// longer than its `StreamMaxLength`).
const MAX_CHUNK: usize = 256 * 1024;
/// The longest reply read.
const MAX_REPLY: usize = 4096;
/// The first wait between connection attempts, doubled up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Clamd {
    pub fn new(config: ClamdConfig) -> Self {
        Self { config }
    }

    pub fn address(&self) -> &ClamdAddress {
        &self.config.address
    }

    /// Connects once, within the connect timeout.
    async fn connect_once(&self) -> Result<Box<dyn Io>, ScanError> {
        let unavailable = |err: &dyn fmt::Display| {
            ScanError::Unavailable(format!("clamd at {}: {err}", self.config.address))
        };
        let connecting = async {
            Ok::<Box<dyn Io>, io::Error>(match &self.config.address {
                ClamdAddress::Tcp(address) => {
                    let stream = TcpStream::connect(address.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Box::new(stream)
                }
                ClamdAddress::Unix(path) => Box::new(UnixStream::connect(path).await?),
            })
        };
        match timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(unavailable(&err)),
            Err(_) => Err(unavailable(&"connection timed out")),
        }
    }

    /// Connects, retrying while the configuration says to wait.
    async fn connect(&self) -> Result<Box<dyn Io>, ScanError> {
        let deadline = match self.config.unavailable {
            Unavailable::Refuse => return self.connect_once().await,
            Unavailable::Wait(bound) => Instant::now() + bound,
        };
        let mut delay = FIRST_RETRY_DELAY;
        let mut waited = false;
        loop {
            match self.connect_once().await {
                Ok(stream) => {
                    if waited {
                        tracing::info!(address = %self.config.address, "clamd is back");
                    }
                    return Ok(stream);
                }
                Err(err) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(err);
                    }
                    if !waited {
                        tracing::warn!(address = %self.config.address, error = %err, "clamd unavailable, waiting for it");
                        waited = true;
                    }
                    tokio::time::sleep(delay.min(deadline - now)).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    /// Sends `PING` and expects `PONG` (one attempt, no waiting).
    pub async fn ping(&self) -> Result<(), ScanError> {
        let mut stream = self.connect_once().await?;
        let exchange = async {
            stream.write_all(b"zPING\0").await?;
            read_reply(&mut stream).await
        };
        let reply = timeout(self.config.io_timeout, exchange)
            .await
            .map_err(|_| ScanError::Unavailable("clamd did not answer PING in time".into()))?
            .map_err(|err| ScanError::Unavailable(format!("clamd PING: {err}")))?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(ScanError::Failed(format!(
                "clamd answered PING with {reply:?}"
            )))
        }
    }
}

#[async_trait]
impl Scanner for Clamd {
    fn name(&self) -> &'static str {
        "clamd"
    }

    async fn open(&self) -> Result<Box<dyn Scan>, ScanError> {
        let mut stream = self.connect().await?;
        timeout(self.config.io_timeout, stream.write_all(b"zINSTREAM\0"))
            .await
            .map_err(|_| ScanError::Unavailable("clamd: writing timed out".into()))?
            .map_err(|err| ScanError::Unavailable(format!("clamd: {err}")))?;
        Ok(Box::new(ClamdScan {
            stream,
            io_timeout: self.config.io_timeout,
            sent: 0,
            early: None,
        }))
    }
}

/// One `INSTREAM` in progress.
struct ClamdScan {
    stream: Box<dyn Io>,
    io_timeout: Duration,
    sent: u64,
    /// A verdict clamd gave before the stream ended (it stops reading then).
    early: Option<Verdict>,
}

impl ClamdScan {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match timeout(self.io_timeout, self.stream.write_all(bytes)).await {
            Ok(written) => written,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "writing to clamd timed out",
            )),
        }
    }

    /// clamd stopped reading (it closed the stream): what it said before it did.
    async fn stopped(&mut self, err: io::Error) -> Result<Verdict, ScanError> {
        let reply = timeout(self.io_timeout, read_reply(&mut self.stream)).await;
        match reply {
            Ok(Ok(reply)) if !reply.is_empty() => parse_reply(&reply),
            _ => Err(ScanError::Unavailable(format!(
                "clamd closed the stream after {} bytes: {err}",
                self.sent
            ))),
        }
    }
}

#[async_trait]
impl Scan for ClamdScan {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        if self.early.is_some() {
            return Ok(());
        }
        for piece in chunk.chunks(MAX_CHUNK) {
            if piece.is_empty() {
                continue;
            }
            let len = u32::try_from(piece.len()).unwrap_or(u32::MAX).to_be_bytes();
            let sent = match self.send(&len).await {
                Ok(()) => self.send(piece).await,
                Err(err) => Err(err),
            };
            if let Err(err) = sent {
                // A stream clamd stops reading ends in its reply: a size limit
                // is an error, a signature found early a verdict.
                let verdict = self.stopped(err).await?;
                self.early = Some(verdict);
                return Ok(());
            }
            self.sent += piece.len() as u64;
        }
        Ok(())
    }

    async fn verdict(mut self: Box<Self>) -> Result<Verdict, ScanError> {
        if let Some(verdict) = self.early.take() {
            return Ok(verdict);
        }
        if let Err(err) = self.send(&0u32.to_be_bytes()).await {
            return self.stopped(err).await;
        }
        let reply = timeout(self.io_timeout, read_reply(&mut self.stream))
            .await
            .map_err(|_| ScanError::Unavailable("clamd gave no verdict in time".into()))?
            .map_err(|err| ScanError::Unavailable(format!("reading clamd's verdict: {err}")))?;
        parse_reply(&reply)
    }
}

/// Reads a reply up to its terminating NUL (or newline, or the end).
async fn read_reply<R: AsyncRead + Unpin + ?Sized>(stream: &mut R) -> io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let read = stream.read(&mut byte).await?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..read]);
        if let Some(end) = reply.iter().position(|&b| b == 0 || b == b'\n') {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "clamd's reply is too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// A verdict from an `INSTREAM` reply.
fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let body = reply.strip_prefix("stream:").map_or(reply, str::trim);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(signature) = body.strip_suffix(" FOUND") {
        return Ok(Verdict::Infected(signature.trim().to_owned()));
    }
    if let Some(error) = body.strip_suffix("ERROR") {
        let error = error.trim().trim_end_matches('.');
        return Err(ScanError::Failed(if error.is_empty() {
            "clamd answered ERROR".to_owned()
        } else {
            error.to_owned()
        }));
    }
    Err(ScanError::Failed(format!(
        "clamd answered {reply:?}, not a verdict"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_verdicts_or_failures() {
        assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND"),
            Ok(Verdict::Infected("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            parse_reply("INSTREAM size limit exceeded. ERROR"),
            Err(ScanError::Failed("INSTREAM size limit exceeded".into()))
        );
        assert!(matches!(parse_reply("PONG"), Err(ScanError::Failed(_))));
        assert!(matches!(parse_reply(""), Err(ScanError::Failed(_))));
    }

    #[test]
    fn addresses_are_tcp_or_unix() {
        assert_eq!(
            "clamav:3310".parse(),
            Ok(ClamdAddress::Tcp("clamav:3310".into()))
        );
        assert_eq!(
            "unix:/run/clamav/clamd.ctl".parse(),
            Ok(ClamdAddress::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert!("clamav".parse::<ClamdAddress>().is_err());
        assert!("unix:".parse::<ClamdAddress>().is_err());
        assert!("clamav:port".parse::<ClamdAddress>().is_err());
    }
}
