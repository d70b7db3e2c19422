//! A fleet from the shipped binaries: three hosts (an enclave child and a broker each, on
//! 127.0.0.2-4), one issuer, one KMS stand-in key, one sealed seed copied from the first
//! host to the others, and one audit log on a throw-away PostgreSQL server, each host in
//! its own row chain. Under concurrent load spread over the hosts: one host is killed,
//! PostgreSQL is stopped and started again, the killed host comes back. Afterwards every
//! token a client received has its row and `audit verify` passes for every chain against
//! a fresh attested checkpoint of every host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentkeys_e2e::faults::{drive, status_counts, Outcome};
use agentkeys_e2e::fleet::{Host, Shared};
use agentkeys_e2e::postgres::{PgCluster, SUPERUSER_PASSWORD};
use agentkeys_e2e::{closed_port, run, wait_for, DevOptions, DevStack};
use base64::Engine;

/// The hosts' chain ids; also the label of each load answer.
const NAMES: [&str; 3] = ["host-a", "host-b", "host-c"];
/// Concurrent clients of the load.
const CLIENTS: usize = 6;
/// Longest a single answer may take (the broker's own timeouts are 5 s).
const ANSWER_BOUND: Duration = Duration::from_secs(20);
/// What a mint answers while the audit database is down: the token is withheld, and the
/// client may retry on another host or later (docs/fleet.md, "Faults").
const OUTAGE: u16 = 503;
/// How long a host may take to become ready (cold debug binaries on a loaded machine).
const READY: Duration = Duration::from_secs(40);

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Load running over some hosts.
struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Outcome>>,
}

impl Load {
    /// `CLIENTS` clients minting round robin over `hosts` (index into [`NAMES`], URL).
    fn start(hosts: &[(usize, String)], bearers: &Arc<Vec<String>>) -> Load {
        let targets: Vec<(usize, String)> = hosts
            .iter()
            .map(|(i, url)| (*i, format!("{url}/v1/mint-oidc-jwt")))
            .collect();
        let bearers = bearers.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            drive(
                CLIENTS,
                Duration::from_secs(60),
                ANSWER_BOUND,
                flag,
                move |c, i, http| {
                    let (host, url) = &targets[(c + i as usize) % targets.len()];
                    (NAMES[*host], http.post(url).bearer_auth(&bearers[c]))
                },
            )
        });
        Load {
            started,
            stop,
            handle,
        }
    }

    /// Offset of now from the load's start (an answer with `at` beyond it was asked after).
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("load thread")
    }
}

/// Lets the load run for `d`: a run time for the phase, not a synchronisation (every wait
/// for a state of the system is a poll).
fn run_load_for(d: Duration) {
    std::thread::sleep(d);
}

/// The claims of a compact JWT (payload decoded without verification).
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A token a client received with 200: the host, its `audit_id` and the JWT.
#[derive(Debug, Clone)]
struct Received {
    host: &'static str,
    audit_id: i64,
    jwt: String,
}

fn received(outcomes: &[Outcome]) -> Vec<Received> {
    outcomes
        .iter()
        .filter(|o| o.status == Some(200))
        .map(|o| {
            let v = o.json();
            Received {
                host: o.kind,
                audit_id: v["audit_id"].as_i64().expect("audit_id in a 200"),
                jwt: v["jwt"].as_str().expect("jwt in a 200").to_string(),
            }
        })
        .collect()
}

/// 200s per host among `outcomes` asked after `after`.
fn ok_per_host(outcomes: &[Outcome], after: Duration) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| o.status == Some(200) && o.at > after)
    {
        *m.entry(o.kind).or_default() += 1;
    }
    m
}

/// One row of `audit_log` as the test reads it straight from PostgreSQL.
#[derive(Debug)]
struct PgRow {
    event: String,
    outcome: String,
    jti: Option<String>,
    epoch: Option<i64>,
    seq: Option<i64>,
    signing_input: Option<String>,
}

/// Every row of the log, by `(chain_id, chain_seq)`.
fn pg_rows(url: &str) -> BTreeMap<(String, i64), PgRow> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(conn);
        c.query(
            "SELECT chain_id, chain_seq, event, outcome, jti, enclave_epoch, enclave_seq, \
             signing_input FROM audit_log",
            &[],
        )
        .await
        .expect("read audit_log")
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                PgRow {
                    event: r.get(2),
                    outcome: r.get(3),
                    jti: r.get(4),
                    epoch: r.get(5),
                    seq: r.get(6),
                    signing_input: r.get(7),
                },
            )
        })
        .collect()
    })
}

/// A 64-bit claim (a JSON string, as `agentkeys_epoch` is, or a number) as PostgreSQL's
/// BIGINT holds it: the same 64 bits.
fn claim_u64(v: &serde_json::Value) -> Option<i64> {
    let n = match v {
        serde_json::Value::String(s) => s.parse::<u64>().ok()?,
        other => other.as_u64()?,
    };
    Some(i64::from_ne_bytes(n.to_ne_bytes()))
}

/// What is wrong with the row of each received token (none when every token has its
/// success row holding that very token).
fn tokens_without_their_row(
    tokens: &[Received],
    rows: &BTreeMap<(String, i64), PgRow>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for t in tokens {
        let c = claims(&t.jwt);
        let signing_input = t.jwt.rsplit_once('.').expect("compact JWS").0;
        let Some(r) = rows.get(&(t.host.to_string(), t.audit_id)) else {
            wrong.push(format!("{} row {}: no row", t.host, t.audit_id));
            continue;
        };
        let expected = (
            "mint_jwt",
            "success",
            c["jti"].as_str(),
            claim_u64(&c["agentkeys_epoch"]),
            claim_u64(&c["agentkeys_seq"]),
            Some(signing_input),
        );
        let found = (
            r.event.as_str(),
            r.outcome.as_str(),
            r.jti.as_deref(),
            r.epoch,
            r.seq,
            r.signing_input.as_deref(),
        );
        if found != expected {
            wrong.push(format!(
                "{} row {}: holds {found:?}, the token says {expected:?}",
                t.host, t.audit_id
            ));
        }
    }
    wrong
}

/// The mock enclave image's measurements in `nitro-cli` form (what `audit verify
/// --measurements` pins the checkpoint documents to).
fn write_mock_measurements(path: &Path) {
    let pcrs = agentkeys_mock_nsm::default_boot_pcrs();
    let mut inner = serde_json::Map::new();
    inner.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    for index in agentkeys_attestation::measurements::IMAGE_PCRS {
        let value = pcrs.get(&index).expect("mock image PCR");
        inner.insert(format!("PCR{index}"), hex::encode(value).into());
    }
    std::fs::write(
        path,
        serde_json::json!({ "Measurements": inner }).to_string(),
    )
    .expect("write measurements");
}

fn kid(jwks: &serde_json::Value) -> String {
    let keys = jwks["keys"].as_array().expect("JWKS keys");
    assert_eq!(keys.len(), 1, "one signing key: {jwks}");
    keys[0]["kid"].as_str().expect("kid").to_string()
}

#[test]
fn fleet_on_one_postgres_log_survives_a_lost_host_and_a_database_restart() {
    let t0 = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("ak-fleet")
        .tempdir()
        .expect("tmp");
    let d = tmp.path();
    // SKIPPED without a server here, a failure under AGENTKEYS_REQUIRE_POSTGRES=1 (CI).
    let Some(mut pg) = PgCluster::start_or_skip() else {
        return;
    };
    let db = pg.admin_url("postgres");
    // The load balancer's name: every host serves it, nothing listens there.
    let issuer = format!("http://127.0.0.1:{}", closed_port());
    let shared = Shared::start(d, &issuer, &db).expect("stand-ins");
    let http = client();

    // The first host makes the seed; the others join with a copy of its sealed seed.
    let mut hosts: Vec<Host> = NAMES
        .iter()
        .zip(2u8..)
        .map(|(name, octet)| Host::new(d, name, octet).expect("host dir"))
        .collect();
    hosts[0].start(&shared).expect("start host-a");
    hosts[0].wait_ready(&http, READY).expect("host-a ready");
    let first_seed = hosts[0].sealed_seed();
    let seed = std::fs::read(&first_seed).expect("host-a stored the sealed seed");
    assert!(!seed.is_empty());
    for h in &mut hosts[1..] {
        assert!(
            !h.sealed_seed().exists(),
            "a joining host has no seed of its own"
        );
        std::fs::copy(&first_seed, h.sealed_seed()).expect("copy the sealed seed");
        h.start(&shared).expect("start host");
    }
    for h in &mut hosts[1..] {
        h.wait_ready(&http, READY).expect("host ready");
        assert_eq!(
            std::fs::read(h.sealed_seed()).expect("seed"),
            seed,
            "{}: a joining host keeps the copied seed (no genesis of its own)",
            h.chain
        );
    }
    let kids: Vec<String> = hosts.iter().map(|h| kid(&h.jwks(&http))).collect();
    assert!(
        kids.iter().all(|k| *k == kids[0]),
        "every host serves the same kid: {kids:?}"
    );
    eprintln!(
        "fleet: 3 hosts ready, kid {}, after {:?}",
        kids[0],
        t0.elapsed()
    );

    let bearers: Arc<Vec<String>> = Arc::new(
        (0..CLIENTS)
            .map(|i| shared.session(&http, &format!("0x{:040x}", 0xc0 + i)))
            .collect(),
    );
    let all: Vec<(usize, String)> = hosts.iter().map(|h| h.url.clone()).enumerate().collect();
    let mut tokens = Vec::new();

    // 1. Load spread over the three hosts: every answer is 200, every host serves.
    let load = Load::start(&all, &bearers);
    run_load_for(Duration::from_secs(2));
    let steady = load.finish();
    let counts = status_counts(&steady);
    eprintln!("steady load: {counts:?}");
    for o in &steady {
        assert_eq!(o.status, Some(200), "{}: {} {:?}", o.kind, o.body, o.error);
    }
    assert_eq!(
        ok_per_host(&steady, Duration::ZERO).len(),
        3,
        "every host served: {counts:?}"
    );
    tokens.extend(received(&steady));

    // 2. host-a is lost (broker and enclave SIGKILLed) under load: the others go on.
    let load = Load::start(&all, &bearers);
    run_load_for(Duration::from_millis(1500));
    hosts[0].kill();
    // Taken once the kill has returned (it waits for the processes to exit): a request
    // asked before then may still have been answered.
    let killed_at = load.now();
    run_load_for(Duration::from_secs(2));
    let lost = load.finish();
    let counts = status_counts(&lost);
    eprintln!("host-a killed under load: {counts:?}");
    for o in &lost {
        if o.kind == NAMES[0] {
            // Before the kill 200; in flight or after it, no answer at all.
            assert!(
                matches!(o.status, Some(200) | None),
                "host-a: {:?} {}",
                o.status,
                o.body
            );
            if o.at > killed_at {
                assert_eq!(o.status, None, "host-a answered after its kill: {}", o.body);
            }
        } else {
            assert_eq!(o.status, Some(200), "{}: {} {:?}", o.kind, o.body, o.error);
        }
    }
    let after_kill = ok_per_host(&lost, killed_at);
    assert!(
        after_kill.get(NAMES[1]).is_some_and(|n| *n > 0)
            && after_kill.get(NAMES[2]).is_some_and(|n| *n > 0),
        "host-b and host-c keep serving after host-a is lost: {after_kill:?}"
    );
    assert!(
        lost.iter()
            .any(|o| o.kind == NAMES[0] && o.at > killed_at && o.status.is_none()),
        "the load reached host-a after its kill: {counts:?}"
    );
    tokens.extend(received(&lost));

    // 3. PostgreSQL stops and starts again under load on host-b and host-c.
    let alive: Vec<(usize, String)> = all[1..].to_vec();
    let load = Load::start(&alive, &bearers);
    run_load_for(Duration::from_millis(1000));
    let stopped_at = load.now();
    pg.stop_server();
    for h in &hosts[1..] {
        let (status, why) = wait_for(Duration::from_secs(10), || {
            h.readyz(&http).filter(|(s, _)| *s != 200)
        })
        .unwrap_or_else(|_| panic!("{}: still ready with PostgreSQL down", h.chain));
        assert_eq!(status, 503, "{}: {why}", h.chain);
        assert_eq!(why["checks"]["audit"]["ok"], false, "{why}");
        let cause = why["checks"]["audit"]["error"].as_str().unwrap_or_default();
        assert!(
            cause.contains("PostgreSQL") && cause.contains("***"),
            "{}: /readyz names the database, password redacted: {why}",
            h.chain
        );
        assert!(!cause.contains(SUPERUSER_PASSWORD), "{why}");
        assert_eq!(why["checks"]["enclave"]["ok"], true, "{why}");
        // A mint now: refused, no token.
        let r = http
            .post(format!("{}/v1/mint-oidc-jwt", h.url))
            .bearer_auth(&bearers[0])
            .send()
            .expect("broker answers");
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert_eq!(
            status, OUTAGE,
            "{}: a mint with the database down: {body}",
            h.chain
        );
        assert!(!body.contains("eyJ"), "no token without its row: {body}");
    }
    pg.start_server();
    let restarted_at = load.now();
    for h in &mut hosts[1..] {
        // No broker restart: the writer reconnects by itself.
        h.wait_ready(&http, Duration::from_secs(30))
            .expect("ready again after PostgreSQL is back");
    }
    let recovered_at = load.now();
    run_load_for(Duration::from_millis(1500));
    let outage = load.finish();
    let counts = status_counts(&outage);
    eprintln!(
        "PostgreSQL stopped at {stopped_at:?}, started at {restarted_at:?}, hosts ready at \
         {recovered_at:?}: {counts:?}"
    );
    let mut refused = 0;
    for o in &outage {
        match o.status {
            Some(200) => {}
            Some(OUTAGE) => {
                refused += 1;
                assert!(
                    !o.body.contains("eyJ"),
                    "a refusal carries no token: {}",
                    o.body
                );
                // Answered after the stop (a commit in flight then is refused too), asked
                // before the hosts were ready again.
                assert!(
                    o.at + o.elapsed + Duration::from_millis(100) > stopped_at
                        && o.at < recovered_at,
                    "a refusal outside the outage: asked at {:?}, answered after {:?}: {}",
                    o.at,
                    o.elapsed,
                    o.body
                );
            }
            other => panic!("{}: {other:?} {} {:?}", o.kind, o.body, o.error),
        }
    }
    assert!(refused > 0, "the load met the outage: {counts:?}");
    let after = ok_per_host(&outage, recovered_at);
    assert!(
        after.get(NAMES[1]).is_some_and(|n| *n > 0) && after.get(NAMES[2]).is_some_and(|n| *n > 0),
        "both hosts mint again after PostgreSQL is back: {after:?}"
    );
    tokens.extend(received(&outage));

    // 4. host-a comes back (a new enclave boot on the same seed, the same chain).
    hosts[0].start(&shared).expect("restart host-a");
    hosts[0]
        .wait_ready(&http, READY)
        .expect("host-a ready again");
    assert_eq!(kid(&hosts[0].jwks(&http)), kids[0], "host-a: the same kid");
    let load = Load::start(&all, &bearers);
    run_load_for(Duration::from_secs(2));
    let back = load.finish();
    let counts = status_counts(&back);
    eprintln!("host-a back: {counts:?}");
    for o in &back {
        assert_eq!(o.status, Some(200), "{}: {} {:?}", o.kind, o.body, o.error);
    }
    assert_eq!(
        ok_per_host(&back, Duration::ZERO).len(),
        3,
        "every host serves again: {counts:?}"
    );
    tokens.extend(received(&back));

    // Every token a client received has its success row, holding that token.
    let rows = pg_rows(&db);
    let wrong = tokens_without_their_row(&tokens, &rows);
    assert!(
        wrong.is_empty(),
        "{} of {} tokens without their row: {wrong:#?}",
        wrong.len(),
        tokens.len()
    );
    let chains: BTreeSet<&str> = rows.keys().map(|(c, _)| c.as_str()).collect();
    assert_eq!(chains, NAMES.into_iter().collect(), "one chain per host");
    let epochs_of_a: BTreeSet<i64> = rows
        .iter()
        .filter(|((c, _), r)| c == NAMES[0] && r.event == "mint_jwt")
        .filter_map(|(_, r)| r.epoch)
        .collect();
    assert_eq!(
        epochs_of_a.len(),
        2,
        "host-a's chain holds its two enclave boots: {epochs_of_a:?}"
    );

    // audit verify: every chain, each against a fresh attested checkpoint of its host.
    let root = d.join("mock-root.pem");
    std::fs::write(&root, agentkeys_mock_nsm::mock_root_pem()).expect("mock root");
    let measurements = d.join("mock-measurements.json");
    write_mock_measurements(&measurements);
    let mut args = vec!["audit", "verify", "--db", &db];
    for h in &hosts {
        args.extend(["--broker-url", &h.url]);
    }
    let root_s = root.display().to_string();
    let measurements_s = measurements.display().to_string();
    args.extend([
        "--root",
        &root_s,
        "--allow-mock-root",
        "--measurements",
        &measurements_s,
    ]);
    // And every token the clients received, as a relying party would hand them in.
    let token_file = d.join("received-tokens.txt");
    let lines: Vec<&str> = tokens.iter().map(|t| t.jwt.as_str()).collect();
    std::fs::write(&token_file, lines.join("\n")).expect("tokens file");
    let jwks_file = d.join("jwks.json");
    std::fs::write(&jwks_file, hosts[1].jwks(&http).to_string()).expect("JWKS file");
    let token_s = token_file.display().to_string();
    let jwks_s = jwks_file.display().to_string();
    args.extend(["--token", &token_s, "--jwks", &jwks_s]);
    let out = run("agentkeys-broker", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "audit verify of the fleet's log: {text}"
    );
    assert!(text.contains("chains: 3"), "{text}");
    for name in NAMES {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("chain {name}:")) && l.ends_with(": OK")),
            "chain {name} verified: {text}"
        );
    }
    assert_eq!(
        text.matches(": matches").count(),
        3,
        "one matching checkpoint per host: {text}"
    );
    assert!(
        !text.contains(SUPERUSER_PASSWORD),
        "the password is never printed"
    );
    assert!(text.contains("result: OK"), "{text}");
    let all_found = format!(
        "tokens: {n} of {n} found tokens have their row",
        n = tokens.len()
    );
    assert!(text.contains(&all_found), "{all_found}: {text}");
    eprintln!(
        "fleet: {} tokens, {} rows, done in {:?}",
        tokens.len(),
        rows.len(),
        t0.elapsed()
    );
}

/// The `kid` in a compact JWT's protected header.
fn header_kid(jwt: &str) -> String {
    let header = jwt.split('.').next().expect("JWT header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON header");
    v["kid"].as_str().expect("kid in the header").to_string()
}

#[test]
fn dev_stack_runs_two_hosts_on_one_postgres_log_serving_one_kid() {
    let Some(pg) = PgCluster::start_or_skip() else {
        return;
    };
    let db = pg.admin_url("postgres");
    let stack = DevStack::try_start(DevOptions {
        extra: vec![
            "--hosts".into(),
            "2".into(),
            "--audit-db".into(),
            db.clone(),
        ],
        data_dir: None,
    })
    .expect("agentkeys-dev dev --hosts 2 starts");
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stack.ready_file).expect("ready file"))
            .expect("ready JSON");
    let urls: Vec<String> = ready["broker_urls"]
        .as_array()
        .expect("broker_urls in the ready file")
        .iter()
        .map(|u| u.as_str().expect("URL").to_string())
        .collect();
    assert_eq!(urls.len(), 2, "{ready}");
    assert_ne!(urls[0], urls[1]);
    // The one-host fields still name the first host.
    assert_eq!(stack.info.broker_url, urls[0]);
    let chains: Vec<&str> = ready["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["audit_chain"].as_str().expect("audit_chain"))
        .collect();
    assert_eq!(chains, ["host-1", "host-2"]);

    let bearer = stack.create_session("0x00000000000000000000000000000000000000f1");
    let mut minted = Vec::new();
    for url in &urls {
        let r = stack
            .http
            .post(format!("{url}/v1/mint-oidc-jwt"))
            .bearer_auth(&bearer)
            .send()
            .expect("host answers");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let v: serde_json::Value = r.json().expect("mint JSON");
        let jwt = v["jwt"].as_str().expect("jwt").to_string();
        let jwks: serde_json::Value = stack
            .http
            .get(format!("{url}/.well-known/jwks.json"))
            .send()
            .and_then(|r| r.json())
            .expect("JWKS");
        assert_eq!(
            header_kid(&jwt),
            kid(&jwks),
            "{url} signs with the key it serves"
        );
        assert_eq!(claims(&jwt)["iss"], urls[0].as_str(), "one issuer");
        minted.push((v["audit_id"].as_i64().expect("audit_id"), jwt));
    }
    assert_eq!(
        header_kid(&minted[0].1),
        header_kid(&minted[1].1),
        "both hosts serve the same kid"
    );
    // Each host wrote its mint in its own chain of the one log.
    let rows = pg_rows(&db);
    for ((audit_id, jwt), chain) in minted.iter().zip(["host-1", "host-2"]) {
        let row = rows
            .get(&(chain.to_string(), *audit_id))
            .unwrap_or_else(|| panic!("{chain} row {audit_id} missing"));
        assert_eq!(
            (row.event.as_str(), row.jti.as_deref()),
            ("mint_jwt", claims(jwt)["jti"].as_str())
        );
    }
}

#[test]
fn dev_stack_refuses_several_hosts_without_a_postgres_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().to_str().expect("utf-8");
    for (args, expect) in [
        (
            vec!["--hosts", "2"],
            "--hosts 2 needs --audit-db postgres://",
        ),
        (
            vec!["--hosts", "2", "--audit-db", "sqlite:/tmp/a.db"],
            "--audit-db takes a postgres:// URL",
        ),
        (vec!["--hosts", "0"], "--hosts 0: give 1 to"),
        (
            vec!["--audit-db", "postgres://u:hunter2@h:notaport/db"],
            "malformed PostgreSQL URL",
        ),
    ] {
        let mut all = vec!["dev", "--data-dir", data, "--port", "0"];
        all.extend(&args);
        let out = run("agentkeys-dev", &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{args:?}: {stderr}");
    }
}
