//! A throw-away PostgreSQL cluster for tests: `initdb` in a temporary directory, served on
//! a free loopback port (and a Unix socket in the same directory), stopped on drop.
//!
//! The server refuses to run as root, so under root the cluster belongs to the `postgres`
//! system user (`runuser -u postgres`). Shared by the broker's tests, the end-to-end tests
//! and `agentkeys-bench` (`#[path]`), so it uses only the standard library and `tempfile`.
//!
//! The one rule for a machine that cannot run the server ([`PgCluster::start_or_skip`]):
//! a test prints `SKIPPED: <reason>` and returns, unless `AGENTKEYS_REQUIRE_POSTGRES=1`
//! (CI sets it), in which case the test fails with the reason.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian puts each major version's server binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The superuser's password in every test cluster (loopback only, thrown away).
pub const SUPERUSER_PASSWORD: &str = "agentkeys-test-superuser";

/// The system user the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// Set to `1` to make a missing or unstartable server a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "AGENTKEYS_REQUIRE_POSTGRES";

/// Extra server settings for every test cluster (`-c name=value …`, as `postgres`
/// takes them), for measuring a server tuned otherwise, e.g. `-c
/// wal_sync_method=open_datasync`; the settings the broker checks stay on.
pub const SERVER_OPTIONS_ENV: &str = "AGENTKEYS_PG_SERVER_OPTIONS";

/// TLS for a test cluster: the server's certificate chain and key (PEM), and whether
/// `pg_hba.conf` accepts TCP connections over TLS only (`hostssl`).
pub struct PgTls {
    /// The server certificate (then any intermediates), PEM.
    pub cert_pem: String,
    /// The server's private key, PEM.
    pub key_pem: String,
    /// Only `hostssl` lines for TCP: a plain connection is refused by the server.
    pub hostssl_only: bool,
}

/// A running test cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_root: bool,
    running: bool,
}

/// The directory of `initdb`, `pg_ctl` and `postgres`: `$AGENTKEYS_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin`.
fn server_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("AGENTKEYS_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => Err(format!(
            "PostgreSQL server binaries not found under {DEBIAN_PG_ROOT}/*/bin (initdb, pg_ctl, \
             postgres): install the postgresql package (.ci/run does) or set AGENTKEYS_PG_BIN"
        )),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Whether `AGENTKEYS_REQUIRE_POSTGRES=1` is set.
pub fn postgres_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// The rule for a cluster that could not start: `SKIPPED: <reason>` on stderr and `None`,
/// or, when `required`, a panic with the reason.
pub fn skip_unless_required(
    started: Result<PgCluster, String>,
    required: bool,
) -> Option<PgCluster> {
    match started {
        Ok(c) => Some(c),
        Err(reason) if required => {
            panic!("PostgreSQL is required ({REQUIRE_ENV}=1) but cannot start: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED: PostgreSQL cannot start here: {reason}");
            None
        }
    }
}

fn utf8(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

impl PgCluster {
    /// Creates and starts a cluster, or says why not: no server binaries here, or a step
    /// (initdb, pg_ctl) failed.
    pub fn try_start() -> Result<PgCluster, String> {
        PgCluster::try_start_with(None)
    }

    /// [`try_start`](Self::try_start), serving TLS with `tls` when given.
    pub fn try_start_with(tls: Option<&PgTls>) -> Result<PgCluster, String> {
        let bin = server_bin()?;
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("agentkeys-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).map_err(|e| format!("write pwfile: {e}"))?;
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port()?,
            as_root,
            running: false,
        };
        cluster.chown()?;
        let data = cluster.data_dir();
        // --no-sync only skips initdb's own fsync of the fresh files; the server runs
        // with fsync = on and synchronous_commit = on, the settings the broker checks.
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                utf8(&data)?,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                utf8(&pwfile)?,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if let Some(tls) = tls {
            cluster.configure_tls(tls)?;
        }
        cluster.try_start_server()?;
        Ok(cluster)
    }

    /// Starts a cluster, or, when that is impossible here, prints `SKIPPED: <reason>` and
    /// returns `None` so the test returns; with `AGENTKEYS_REQUIRE_POSTGRES=1` it panics
    /// with the reason instead (CI must not skip).
    pub fn start_or_skip() -> Option<PgCluster> {
        PgCluster::start_or_skip_with(None)
    }

    /// [`start_or_skip`](Self::start_or_skip) with TLS.
    pub fn start_or_skip_with(tls: Option<&PgTls>) -> Option<PgCluster> {
        skip_unless_required(PgCluster::try_start_with(tls), postgres_required())
    }

    /// Under root, gives the cluster's directory to the server's system user.
    fn chown(&self) -> Result<(), String> {
        if !self.as_root {
            return Ok(());
        }
        let owned = Command::new("chown")
            .args(["-R", SERVER_USER])
            .arg(self.dir.path())
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if owned.success() {
            Ok(())
        } else {
            Err(format!(
                "chown {SERVER_USER} of the test cluster dir failed"
            ))
        }
    }

    /// Writes the server's certificate and key, turns `ssl` on, and, with
    /// `hostssl_only`, lets TCP clients in over TLS only.
    fn configure_tls(&self, tls: &PgTls) -> Result<(), String> {
        use std::io::Write;
        let data = self.data_dir();
        let write = |name: &str, text: &str| -> Result<(), String> {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))
        };
        write("server.crt", &tls.cert_pem)?;
        write("server.key", &tls.key_pem)?;
        // The server refuses a key file others can read.
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| format!("chmod server.key: {e}"))?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(|e| format!("open postgresql.conf: {e}"))?;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .map_err(|e| format!("write postgresql.conf: {e}"))?;
        if tls.hostssl_only {
            write(
                "pg_hba.conf",
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostssl all all ::1/128 scram-sha-256\n",
            )?;
        }
        self.chown()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The cluster's directory (its Unix socket lives there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The loopback TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `postgres://` URL for `user`:`password` on database `db`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The superuser's URL on database `db`.
    pub fn admin_url(&self, db: &str) -> String {
        self.url("postgres", SUPERUSER_PASSWORD, db)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<Output, String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))
    }

    /// Starts the server and waits until it accepts connections; panics naming the cause.
    pub fn start_server(&mut self) {
        if let Err(e) = self.try_start_server() {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn try_start_server(&mut self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let extra = std::env::var(SERVER_OPTIONS_ENV).unwrap_or_default();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} {extra} \
             -c fsync=on -c synchronous_commit=on -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                utf8(&data)?,
                "-l",
                utf8(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server (`fast`: active sessions are terminated) and waits for it.
    pub fn stop_server(&mut self) {
        self.stop_with("fast");
    }

    fn stop_with(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("pg_ctl stop: {e}"),
        }
        self.running = false;
    }

    /// Stops and starts the server on the same port.
    pub fn restart_server(&mut self) {
        self.stop_server();
        self.start_server();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_with("immediate");
    }
}
