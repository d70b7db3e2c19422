//! A throw-away PostgreSQL cluster for tests: `initdb` in a temporary directory, served on
//! a free loopback port (and a Unix socket in the same directory), stopped on drop.
//!
//! The server refuses to run as root, so under root the cluster belongs to the `postgres`
//! system user (`runuser -u postgres`). A missing server is a test failure naming what to
//! install, never a silent pass. Shared by the broker's tests and the end-to-end tests
//! (`#[path]`), so it uses only the standard library.
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
fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGENTKEYS_PG_BIN") {
        return PathBuf::from(dir);
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
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under {DEBIAN_PG_ROOT}/*/bin (initdb, pg_ctl, \
             postgres): install the postgresql-15 package (.ci/run does) or set AGENTKEYS_PG_BIN; \
             these tests need a real server and do not skip"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl PgCluster {
    /// Creates and starts a cluster; panics naming the step that failed.
    pub fn start() -> PgCluster {
        let bin = server_bin();
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("agentkeys-pg-")
            .tempdir()
            .expect("temporary directory");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write pwfile");
        if as_root {
            let owned = Command::new("chown")
                .args(["-R", SERVER_USER])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                owned.success(),
                "chown {SERVER_USER} of the test cluster dir failed"
            );
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            as_root,
            running: false,
        };
        let data = cluster.data_dir();
        // --no-sync only skips initdb's own fsync of the fresh files; the server runs
        // with fsync = on and synchronous_commit = on, the settings the broker checks.
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                pwfile.to_str().expect("utf-8 path"),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start_server();
        cluster
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

    fn run(&self, tool: &str, args: &[&str]) -> Output {
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
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&mut self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on \
             -c synchronous_commit=on -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
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
        if !out.status.success() {
            eprintln!("pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
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
