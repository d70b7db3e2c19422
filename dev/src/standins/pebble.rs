//! Pebble, Let's Encrypt's ACME test CA (Debian package `pebble`), on loopback: a real
//! RFC 8555 server that validates TLS-ALPN-01 for real by connecting to the issuer host
//! (resolved through `pebble-challtestsrv`'s DNS to 127.0.0.1) on its `tlsPort`.
//!
//! The package ships no configuration and no certificates, so [`Pebble::start`] makes a
//! throw-away CA and a listener certificate for `127.0.0.1`/`localhost` (the enclave's
//! ACME client trusts that CA with `--acme-root`), writes Pebble's configuration, and
//! starts `pebble-challtestsrv` (DNS only, every A query answered with 127.0.0.1) and
//! `pebble`. Validation is never skipped (`PEBBLE_VA_ALWAYS_VALID` stays unset).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The Pebble binary of the Debian package.
pub const PEBBLE_BIN: &str = "/usr/bin/pebble";
/// The challenge test server of the Debian package (used for its DNS).
pub const CHALLTESTSRV_BIN: &str = "/usr/bin/pebble-challtestsrv";
/// Tests that need Pebble fail instead of skipping when this is `1` (CI installs it).
pub const REQUIRE_ENV: &str = "AGENTKEYS_REQUIRE_PEBBLE";

/// Why Pebble cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    for bin in [PEBBLE_BIN, CHALLTESTSRV_BIN] {
        if !Path::new(bin).exists() {
            return Some(format!("{bin} is not installed (Debian package `pebble`)"));
        }
    }
    None
}

/// For a test: `Some(reason)` to skip (after printing `SKIPPED: reason`), `None` to run;
/// panics instead of skipping under `AGENTKEYS_REQUIRE_PEBBLE=1`.
pub fn skip_reason() -> Option<String> {
    let reason = missing()?;
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ENV}=1 but {reason}");
    }
    println!("SKIPPED: {reason}");
    Some(reason)
}

/// How to run Pebble.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// Where Pebble validates TLS-ALPN-01: the port the issuer's TLS listens on.
    pub tls_port: u16,
    /// Lifetime of the certificates it issues, seconds (Pebble's default is 5 years).
    pub certificate_validity_seconds: Option<u64>,
    /// Directory for the configuration and certificates (must exist).
    pub dir: PathBuf,
}

/// A running Pebble and its DNS; both stopped on drop.
pub struct Pebble {
    /// The ACME directory URL (`https://127.0.0.1:PORT/dir`).
    pub directory: String,
    /// PEM file of the CA that signed Pebble's listener certificate: what an ACME client
    /// must trust for Pebble's own HTTPS (`--acme-root`).
    pub listener_root: PathBuf,
    /// Pebble's management interface (`https://127.0.0.1:PORT`).
    pub management: String,
    /// The DNS server Pebble resolves names with.
    pub dns: String,
    children: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A free loopback UDP and TCP port (challtestsrv's DNS listens on both).
fn free_dns_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port for the DNS server")
}

fn wait_listening(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} is not listening on 127.0.0.1:{port} after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pebble {
    /// Starts `pebble-challtestsrv` and `pebble` on free loopback ports.
    pub fn start(options: &PebbleOptions) -> anyhow::Result<Pebble> {
        if let Some(reason) = missing() {
            bail!("{reason}");
        }
        let dir = &options.dir;
        let certs = crate::api_tls::loopback_certificates("agentkeys test Pebble listener CA")?;
        let listener_root = dir.join("pebble-listener-root.pem");
        std::fs::write(&listener_root, &certs.ca_pem)?;
        std::fs::write(dir.join("pebble-cert.pem"), &certs.leaf_pem)?;
        std::fs::write(dir.join("pebble-key.pem"), certs.key_pem.as_bytes())?;
        let dns_port = free_dns_port()?;
        let challtest_mgmt = free_port()?;
        let listen = free_port()?;
        let management = free_port()?;
        let http_port = free_port()?;
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": http_port,
            "tlsPort": options.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = options.certificate_validity_seconds {
            pebble["certificateValidityPeriod"] = v.into();
        }
        let config = dir.join("pebble-config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&serde_json::json!({ "pebble": pebble }))?,
        )?;
        let log = |name: &str| -> anyhow::Result<Stdio> {
            Ok(std::fs::File::create(dir.join(name))?.into())
        };
        let mut children = Vec::new();
        let mut dns = Command::new(CHALLTESTSRV_BIN)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{challtest_mgmt}")])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log")?)
            .stderr(log("challtestsrv.err")?)
            .spawn()
            .context("cannot start pebble-challtestsrv")?;
        let started = wait_listening(challtest_mgmt, &mut dns, "pebble-challtestsrv");
        children.push(dns);
        let mut this = Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            listener_root,
            management: format!("https://127.0.0.1:{management}"),
            dns: format!("127.0.0.1:{dns_port}"),
            children,
        };
        started?;
        let mut ca = Command::new(PEBBLE_BIN)
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &this.dns])
            // Validates at once instead of after a random pause of up to 15 s.
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Pebble rejects 5% of nonces by default to exercise clients' retries; the
            // tests here look at issuance, not at that.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log")?)
            .stderr(log("pebble.err")?)
            .spawn()
            .context("cannot start pebble")?;
        let started = wait_listening(listen, &mut ca, "pebble");
        this.children.push(ca);
        started?;
        Ok(this)
    }

    /// An HTTP client trusting Pebble's listener certificate.
    fn management_client(&self) -> anyhow::Result<reqwest::Client> {
        crate::api_tls::client_trusting(&self.listener_root, Duration::from_secs(10))
    }

    /// The root that issued the certificates (PEM): what clients of the issuer trust.
    pub async fn issuing_root_pem(&self) -> anyhow::Result<String> {
        let url = format!("{}/roots/0", self.management);
        let response = self
            .management_client()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?;
        Ok(response.text().await?)
    }
}
