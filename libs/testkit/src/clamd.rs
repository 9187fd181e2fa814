//! A real ClamAV daemon of the test's own (`clamd`, Debian package
//! `clamav-daemon`, installed by `.ci/deps.sh`), with a signature database made on
//! the spot: the public one cannot be downloaded here. It knows the EICAR test
//! string anywhere in a file (a body signature, so an image carrying it is found)
//! and the plain EICAR file by its hash. The EICAR string is put together from
//! parts, so no file of the repository carries it whole.
//!
//! When `clamd` is not installed the test fails and says how to install it; it
//! never skips.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The name the body signature reports (clamd adds `.UNOFFICIAL` to signatures
/// of a database it did not get from ClamAV).
pub const SIGNATURE: &str = "Eicar-Test-Signature";
/// The name the hash signature of the plain EICAR file reports.
pub const FILE_SIGNATURE: &str = "Eicar-Test-File";
/// clamd's `StreamMaxLength` in these tests.
pub const STREAM_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// How long clamd may take to answer `PING` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The EICAR anti-virus test string (68 bytes), put together from two halves.
pub fn eicar() -> Vec<u8> {
    let mut eicar = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$".to_vec();
    eicar.extend_from_slice(b"EICAR-STANDARD-ANTI");
    eicar.extend_from_slice(b"VIRUS-TEST-FILE!$H+H*");
    eicar
}

/// A valid PNG (`width`x`height`) that carries the EICAR string in a `tEXt`
/// chunk before its end: an image every decoder accepts, and malware to a scanner.
pub fn png_with_eicar(width: u32, height: u32) -> Vec<u8> {
    let png = crate::fixtures::png(width, height);
    // IEND is the last 12 bytes: length (0), "IEND", its CRC.
    let (body, end) = png.split_at(png.len() - 12);
    let mut text = b"Comment\0".to_vec();
    text.extend_from_slice(&eicar());
    let mut chunk = Vec::with_capacity(text.len() + 12);
    chunk.extend_from_slice(&(text.len() as u32).to_be_bytes());
    let start = chunk.len();
    chunk.extend_from_slice(b"tEXt");
    chunk.extend_from_slice(&text);
    let crc = crc32fast::hash(&chunk[start..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    [body, &chunk, end].concat()
}

/// A running clamd, stopped when dropped.
pub struct Clamd {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Clamd {
    /// Starts clamd on a free loopback port, with the test database, and waits
    /// until it answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("atelier-clamd-")
            .tempdir()?;
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db)?;
        let eicar = eicar();
        std::fs::write(
            db.join("atelier-test.ndb"),
            format!("{SIGNATURE}:0:*:{}\n", hex(&eicar)),
        )?;
        std::fs::write(
            db.join("atelier-test.hsb"),
            format!(
                "{}:{}:{FILE_SIGNATURE}:73\n",
                hex(&Sha256::digest(&eicar)),
                eicar.len()
            ),
        )?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        std::fs::write(
            dir.path().join("clamd.conf"),
            format!(
                "DatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n\
                 StreamMaxLength {STREAM_MAX_BYTES}\nLogFile {log}\nLogTime yes\n\
                 PidFile {pid}\nMaxThreads 4\nLocalSocket {socket}\n",
                db = db.display(),
                log = dir.path().join("clamd.log").display(),
                pid = dir.path().join("clamd.pid").display(),
                socket = dir.path().join("clamd.sock").display(),
            ),
        )?;
        let mut clamd = Self {
            dir,
            addr,
            child: None,
        };
        clamd.spawn(&binary)?;
        Ok(clamd)
    }

    /// `127.0.0.1:<port>`: the `CLAMD_ADDRESS` of the platform under test.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// `unix:<path>`: clamd's Unix socket.
    pub fn socket_address(&self) -> String {
        format!("unix:{}", self.dir.path().join("clamd.sock").display())
    }

    /// Stops clamd (its port refuses connections until [`Clamd::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts clamd again on the same port, and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn(&binary()?)
    }

    fn spawn(&mut self, binary: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("clamd.out"))?;
        let child = Command::new(binary)
            .arg("--foreground")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("clamd.conf").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if ping(self.addr) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("clamd exited with {status}: {}", self.output());
            }
            if started.elapsed() > START_TIMEOUT {
                anyhow::bail!(
                    "clamd did not answer PING within {START_TIMEOUT:?}: {}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("clamd.out"), read("clamd.log"))
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `clamd`, from `PATH` or `/usr/sbin`; an error saying how to install it.
fn binary() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("clamd"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "clamd not found (PATH, /usr/sbin): run .ci/deps.sh, which installs the Debian package clamav-daemon"
    )
}

/// Whether clamd at `addr` answers `PING` with `PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut reply = [0u8; 8];
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"PONG"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
