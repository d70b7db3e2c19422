//! TLS to the PostgreSQL audit database, against a throw-away server that accepts TCP
//! clients over TLS only (`hostssl` in `pg_hba.conf`), with a CA and a server certificate
//! made by the `openssl` command line for this test: `verify-full` with the right CA
//! connects over TLS; a wrong CA, a host name the certificate does not hold, and a plain
//! connection are each refused at start with a message naming the cause.

mod support_pg;

use std::path::{Path, PathBuf};
use std::process::Command;

use agentkeys_broker::audit::{AuditDb, AuditError, GroupCommitConfig, PgAuditStore, PgUrl};
use support_pg::{PgCluster, PgTls, SUPERUSER_PASSWORD};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 CA named `name` in `dir` (`name.crt`, `name.key`).
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A server certificate for IP 127.0.0.1 only, issued by the CA `ca`: (cert PEM, key PEM).
fn make_server_cert(dir: &Path, ca: &str) -> (String, String) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=agentkeys-test-postgres",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    (
        std::fs::read_to_string(dir.join("server.crt")).unwrap(),
        std::fs::read_to_string(dir.join("server.key")).unwrap(),
    )
}

fn pg_url(s: &str) -> PgUrl {
    match AuditDb::parse(s).unwrap() {
        AuditDb::Postgres { url, .. } => url,
        other => panic!("not postgres: {other:?}"),
    }
}

/// The URL of the test cluster on `host` with `query`.
fn url(cluster: &PgCluster, host: &str, query: &str) -> String {
    format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@{host}:{}/postgres?{query}",
        cluster.port()
    )
}

async fn open(u: &str) -> Result<PgAuditStore, AuditError> {
    PgAuditStore::open(&pg_url(u), "host-a", GroupCommitConfig::default()).await
}

/// Whether the server says this very connection uses TLS (`pg_stat_ssl`), connecting the
/// way the store does.
async fn connection_uses_tls(u: &str) -> bool {
    let url = pg_url(u);
    let (client, conn) = url
        .config()
        .connect(url.tls().connector())
        .await
        .expect("connects");
    let driver = tokio::spawn(conn);
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    driver.abort();
    ssl
}

#[tokio::test]
async fn tls_to_postgres_verifies_the_server_and_names_each_failure() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_ca(certs.path(), "right-ca");
    let wrong_ca = make_ca(certs.path(), "wrong-ca");
    let (cert_pem, key_pem) = make_server_cert(certs.path(), "right-ca");
    let Some(cluster) = PgCluster::start_or_skip_with(Some(&PgTls {
        cert_pem,
        key_pem,
        hostssl_only: true,
    })) else {
        return;
    };

    // verify-full with the CA that issued the server's certificate: connected, over TLS.
    let good = url(
        &cluster,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let store = open(&good).await.expect("verify-full with the right CA");
    drop(store);
    assert!(connection_uses_tls(&good).await, "the server sees TLS");

    // A CA that did not issue the server's certificate.
    let err = open(&url(
        &cluster,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", wrong_ca.display()),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot connect to PostgreSQL")
            && err.contains("not issued by a CA in sslrootcert=")
            && err.contains("wrong-ca.crt"),
        "{err}"
    );
    // require checks the chain too.
    let err = open(&url(
        &cluster,
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={}", wrong_ca.display()),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("not issued by a CA"), "{err}");

    // A host name the certificate does not hold (it names IP 127.0.0.1 only).
    let by_name = |mode: &str| {
        url(
            &cluster,
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", ca.display()),
        )
    };
    let err = open(&by_name("verify-full")).await.unwrap_err().to_string();
    assert!(
        err.contains("not valid for name \"localhost\"") && err.contains("does not name the host"),
        "{err}"
    );
    // verify-ca checks the chain, not the name.
    drop(
        open(&by_name("verify-ca"))
            .await
            .expect("verify-ca by another name"),
    );

    // No TLS against a server that accepts TLS only.
    for plain in ["sslmode=disable", "connect_timeout=5"] {
        let err = open(&url(&cluster, "127.0.0.1", plain))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no encryption") && err.contains("the server requires TLS"),
            "{plain}: {err}"
        );
        assert!(!err.contains(SUPERUSER_PASSWORD), "{err}");
    }
}

#[test]
fn tls_settings_are_checked_when_the_url_is_parsed() {
    let e = AuditDb::parse("postgres://u:pw@h/db?sslmode=verify-full").unwrap_err();
    assert!(e.to_string().contains("needs sslrootcert=PATH"), "{e}");
    assert!(!e.to_string().contains("pw@"), "{e}");
    let e = AuditDb::parse("postgres://u:pw@h/db?sslmode=prefer").unwrap_err();
    assert!(
        e.to_string()
            .contains("sslmode=\"prefer\" is not supported"),
        "{e}"
    );
    let e = AuditDb::parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem")
        .unwrap_err();
    assert!(
        e.to_string().contains("sslrootcert=/nonexistent.pem"),
        "{e}"
    );
}
