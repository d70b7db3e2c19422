//! `mock-nsm`: the mock Nitro platform on the command line.
//!
//! * `mock-nsm root-cert` prints the mock root certificate (PEM).
//! * `mock-nsm document [...]` writes a signed mock attestation document.
//! * `mock-nsm kms --listen 127.0.0.1:PORT [...]` runs the KMS stand-in.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentkeys_mock_nsm::kms::{serve, KmsConfig};
use agentkeys_mock_nsm::{mock_root_pem, ManualClock, MockNsm, MockNsmConfig, PCR_LEN};
use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mock-nsm",
    version,
    about = "Mock Nitro platform: NSM documents and a KMS stand-in (development only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the mock root certificate (PEM). Public by design; never trust it in production.
    RootCert,
    /// Write a signed mock attestation document (raw COSE_Sign1 bytes).
    Document {
        /// user_data, hex.
        #[arg(long, value_name = "HEX")]
        user_data: Option<String>,
        /// nonce, hex.
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        /// public_key, hex.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// Debug-mode enclave: PCR0/1/2/8 are zero.
        #[arg(long)]
        debug: bool,
        /// Set a PCR (0..31) to a 48-byte value: `N=HEX`. Repeatable.
        #[arg(long = "pcr", value_name = "N=HEX")]
        pcrs: Vec<String>,
        /// Module id written into the document.
        #[arg(long, value_name = "ID")]
        module_id: Option<String>,
        /// Document time in UNIX milliseconds (default: now).
        #[arg(long, value_name = "UNIX_MS")]
        at_ms: Option<u64>,
        /// Write base64 instead of raw bytes.
        #[arg(long)]
        base64: bool,
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run the KMS stand-in (KMS JSON 1.1 protocol) on a loopback address.
    Kms {
        /// Address to listen on, e.g. 127.0.0.1:4566.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Keep master keys in this file (created 0600) so they survive restarts.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Require the recipient document's PCR0 to be one of these (hex). Repeatable.
        #[arg(long = "require-pcr0", value_name = "HEX")]
        require_pcr0: Vec<String>,
        /// Accept recipient documents from debug-mode enclaves (refused by default).
        #[arg(long)]
        allow_debug: bool,
        /// Also listen on a non-loopback address (refused unless given).
        #[arg(long)]
        allow_non_loopback: bool,
    },
}

fn parse_hex(what: &str, value: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(value.trim()).with_context(|| format!("--{what} is not valid hex"))
}

fn parse_pcr(spec: &str) -> anyhow::Result<(u16, [u8; PCR_LEN])> {
    let (index, value) = spec
        .split_once('=')
        .with_context(|| format!("--pcr {spec:?} is not N=HEX"))?;
    let index: u16 = index
        .trim()
        .parse()
        .with_context(|| format!("--pcr {spec:?}: index is not a number"))?;
    let bytes = parse_hex("pcr", value)?;
    let value: [u8; PCR_LEN] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "--pcr {index}: value is {} bytes, expected {PCR_LEN}",
            bytes.len()
        )
    })?;
    Ok((index, value))
}

#[allow(clippy::too_many_arguments)]
fn document(
    user_data: Option<String>,
    nonce: Option<String>,
    public_key: Option<String>,
    debug: bool,
    pcrs: Vec<String>,
    module_id: Option<String>,
    at_ms: Option<u64>,
    base64: bool,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut config = MockNsmConfig::default().debug_mode(debug);
    if let Some(id) = module_id {
        config = config.module_id(id)?;
    }
    if let Some(at) = at_ms {
        config = config.clock(Arc::new(ManualClock::new(at)));
    }
    for spec in &pcrs {
        let (index, value) = parse_pcr(spec)?;
        config = config.pcr(index, value)?;
    }
    let nsm = MockNsm::new(config);
    let user_data = user_data.map(|v| parse_hex("user-data", &v)).transpose()?;
    let nonce = nonce.map(|v| parse_hex("nonce", &v)).transpose()?;
    let public_key = public_key
        .map(|v| parse_hex("public-key", &v))
        .transpose()?;
    let doc = nsm.attest(user_data, nonce, public_key)?;
    let bytes = if base64 {
        let mut s = base64::engine::general_purpose::STANDARD.encode(&doc);
        s.push('\n');
        s.into_bytes()
    } else {
        doc
    };
    match out {
        Some(path) => std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&bytes).context("cannot write to stdout")?;
            stdout.flush().context("cannot write to stdout")?;
        }
    }
    Ok(())
}

async fn kms(
    listen: SocketAddr,
    state: Option<PathBuf>,
    require_pcr0: Vec<String>,
    allow_debug: bool,
    allow_non_loopback: bool,
) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() && !allow_non_loopback {
        bail!("refusing to listen on non-loopback {listen}: the KMS stand-in is for development only (pass --allow-non-loopback to insist)");
    }
    let mut allowed = Vec::new();
    for v in &require_pcr0 {
        let bytes = parse_hex("require-pcr0", v)?;
        if bytes.len() != PCR_LEN {
            bail!(
                "--require-pcr0 is {} bytes, expected {PCR_LEN}",
                bytes.len()
            );
        }
        allowed.push(bytes);
    }
    let config = KmsConfig::new()
        .state_file(state)
        .require_pcr0(allowed)
        .allow_debug(allow_debug);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("no local address")?;
    tracing::info!(address = %local, "KMS stand-in listening");
    eprintln!("mock KMS listening on http://{local}");
    serve(listener, config).await.context("KMS stand-in failed")
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::RootCert => {
            print!("{}", mock_root_pem());
            Ok(())
        }
        Command::Document {
            user_data,
            nonce,
            public_key,
            debug,
            pcrs,
            module_id,
            at_ms,
            base64,
            out,
        } => document(
            user_data, nonce, public_key, debug, pcrs, module_id, at_ms, base64, out,
        ),
        Command::Kms {
            listen,
            state,
            require_pcr0,
            allow_debug,
            allow_non_loopback,
        } => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(kms(
                listen,
                state,
                require_pcr0,
                allow_debug,
                allow_non_loopback,
            )),
            Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-nsm: {e:#}");
            ExitCode::from(1)
        }
    }
}
