//! A PostgreSQL cluster of a test's own, made with the installed server's programs
//! (`initdb`, `pg_ctl`, `pg_basebackup`, ...), on a free port in a directory of the
//! test's own: stopping it, archiving its WAL or recovering it touches nothing
//! shared. Used by the chaos suite (restarts) and the restore drill (base backups,
//! WAL archiving, point-in-time recovery).
//!
//! The programs are `CHAOS_PG_BIN`'s, else the newest `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package; `.ci/deps.sh` installs it). As root they run as
//! the `postgres` user, since PostgreSQL refuses to run as root.

use std::{
    ffi::OsStr,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, ensure};

/// A free loopback port (the listener is closed again at once).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The user PostgreSQL's programs run as: `postgres` when we are root (they refuse to
/// run as root), else ourselves.
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .context("running as root, and there is no `postgres` user to run PostgreSQL as")?;
    Ok(Some((entry[2].parse()?, entry[3].parse()?)))
}

/// PostgreSQL's programs: `CHAOS_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
/// that has the server (`initdb`, `pg_ctl`).
pub fn postgres_bin() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CHAOS_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed under /usr/lib/postgresql (set CHAOS_PG_BIN; `make test` installs it)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("pg_ctl").exists() && bin.join("initdb").exists())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context(
        "no PostgreSQL server (initdb, pg_ctl) under /usr/lib/postgresql; `make test` installs it",
    )
}

/// A PostgreSQL cluster of the test's own (its data directory `<home>/data`, its log
/// `<home>/postgres.log`), stopped when dropped.
pub struct Postgres {
    bin: PathBuf,
    home: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    /// Settings given to the server at every start (`-c name=value`).
    settings: Vec<String>,
}

impl Postgres {
    /// A new cluster in `<dir>/postgres`, started, for restarts under load: fsync off
    /// (durability is not what is tested; the stops are clean), connections for
    /// every pool of every process.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::init(dir.join("postgres"), &["max_connections=400", "fsync=off"])
    }

    /// A new cluster (`initdb`, trust authentication) in `home`, started with
    /// `settings` (`name=value`).
    pub fn init(home: PathBuf, settings: &[&str]) -> anyhow::Result<Self> {
        let pg = Self::at(home, settings)?;
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        pg.up()?;
        Ok(pg)
    }

    /// A cluster whose data directory `<home>/data` is to be filled by the caller
    /// (a base backup restored into it), not started. `home` is made, owned by the
    /// user PostgreSQL runs as.
    pub fn at(home: PathBuf, settings: &[&str]) -> anyhow::Result<Self> {
        let user = postgres_user()?;
        std::fs::create_dir_all(&home)?;
        let pg = Self {
            bin: postgres_bin()?,
            data: home.join("data"),
            log: home.join("postgres.log"),
            home,
            port: free_port()?,
            user,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        };
        pg.own(&pg.home)?;
        if let Some(parent) = pg.home.parent() {
            // The socket directory and the path to the data must be reachable.
            pg.own(parent)?;
        }
        Ok(pg)
    }

    /// Gives `path` to the user PostgreSQL runs as (when we are root).
    pub fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory holding the data directory and the log.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `program` (one of PostgreSQL's, or any other given by path) as the user
    /// PostgreSQL runs as.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let program = program.as_ref();
        let path = self.bin.join(program);
        let mut command = Command::new(if path.exists() {
            path.into_os_string()
        } else {
            program.to_owned()
        });
        command.stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Runs `program` with `args` to its end; fails with its output when it fails.
    pub fn run(&self, program: &str, args: &[&OsStr]) -> anyhow::Result<()> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        ensure!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts the server and waits until it accepts connections (a server in
    /// archive recovery accepts them once consistent, before it is promoted).
    pub fn up(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.home.display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let started = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                self.log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        started.map_err(|err| anyhow::anyhow!("{err:#}\n{}", self.log()))
    }

    /// Stops the server (`fast`: open sessions are ended, as at a restart).
    pub fn down(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    self.data.as_os_str(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "stop".as_ref(),
                ],
            );
        }
    }
}
