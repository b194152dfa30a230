//! TLS and mutual TLS on the gRPC port, with certificates made by rcgen per test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holdless::app::{AppError, Application};
use holdless::auth::tls::TlsReloader;
use holdless::clock::ManualClock;
use holdless::config::{Settings, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::*;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) for `names`.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let p = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes a server certificate from `ca` (and optionally a client CA) into `dir`.
fn write_server_files(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> TlsSettings {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    TlsSettings {
        cert: write("server.crt", &cert),
        key: write("server.key", &key),
        client_ca: client_ca.map(|c| write("clients-ca.crt", &c.pem())),
    }
}

struct TlsApp {
    addr: SocketAddr,
    tls: Arc<TlsReloader>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn build(tls: TlsSettings) -> Result<(Application, tempfile::TempDir), AppError> {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.metrics.listen = "127.0.0.1:0".parse().unwrap();
    settings.console.listen = "127.0.0.1:0".parse().unwrap();
    settings.store.path = dir.path().join("store");
    settings.server.tls = Some(tls);
    let clock = Arc::new(ManualClock::new(at(WEEKDAY_NOON)));
    Ok((Application::build(settings, clock).await?, dir))
}

async fn spawn_tls_app(tls: TlsSettings) -> TlsApp {
    let (app, dir) = build(tls).await.expect("app builds");
    let addr = app.local_addr();
    let reloader = app.tls().expect("TLS configured");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    TlsApp {
        addr,
        tls: reloader,
        _stop: tx,
        _dir: dir,
    }
}

/// Connects over TLS trusting `ca`, with an optional client identity, and asks health.
async fn health_over_tls(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<(String, String)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let attempt = async {
        let channel = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| format!("health: {e:?}"))?;
        Ok(channel)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn health_in_plaintext(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test]
async fn tls_serves_trusting_clients_and_refuses_plaintext_and_other_cas() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("holdless test CA");
    let app = spawn_tls_app(write_server_files(dir.path(), &ca, None)).await;

    let channel = health_over_tls(app.addr, &ca, None)
        .await
        .expect("TLS client");
    wait_serving(channel.clone()).await;
    let mut routing = holdless::api::pb::routing_service_client::RoutingServiceClient::new(channel);
    routing
        .route_call(call("tls-1", "+442079460958"))
        .await
        .expect("routes over TLS");

    assert!(health_in_plaintext(app.addr).await.is_err());
    let other = Ca::new("some other CA");
    assert!(health_over_tls(app.addr, &other, None).await.is_err());
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let app = spawn_tls_app(write_server_files(dir.path(), &server_ca, Some(&client_ca))).await;

    let good = client_ca.issue(&["pbx.example"]);
    health_over_tls(app.addr, &server_ca, Some(good))
        .await
        .expect("client with a certificate from the client CA");
    let no_cert = health_over_tls(app.addr, &server_ca, None).await;
    assert!(no_cert.is_err(), "a client without a certificate got in");
    let stranger = Ca::new("stranger CA").issue(&["pbx.example"]);
    let wrong = health_over_tls(app.addr, &server_ca, Some(stranger)).await;
    assert!(
        wrong.is_err(),
        "a client certificate from another CA got in"
    );
    assert!(health_in_plaintext(app.addr).await.is_err());
}

#[tokio::test]
async fn reload_puts_a_new_certificate_in_service() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let app = spawn_tls_app(write_server_files(dir.path(), &old_ca, None)).await;
    health_over_tls(app.addr, &old_ca, None).await.expect("old");
    assert!(health_over_tls(app.addr, &new_ca, None).await.is_err());

    write_server_files(dir.path(), &new_ca, None);
    app.tls.reload().expect("reload");
    health_over_tls(app.addr, &new_ca, None)
        .await
        .expect("new certificate in service");

    // A broken file: the reload fails and the current certificate stays.
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    assert!(app.tls.reload().is_err());
    health_over_tls(app.addr, &new_ca, None)
        .await
        .expect("still serving the new certificate");
}

#[tokio::test]
async fn unreadable_tls_files_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsSettings {
        cert: dir.path().join("missing.crt"),
        key: dir.path().join("missing.key"),
        client_ca: None,
    };
    let Err(e) = build(tls).await else {
        panic!("started without a certificate");
    };
    assert!(e.to_string().contains("missing.crt"), "{e}");
}

#[tokio::test]
async fn the_cli_talks_tls_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("holdless test CA");
    let app = spawn_tls_app(write_server_files(dir.path(), &ca, None)).await;
    let channel = health_over_tls(app.addr, &ca, None)
        .await
        .expect("TLS client");
    wait_serving(channel).await;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let server = format!("https://{}", app.addr);
    let run = move |with_ca: bool| {
        let (server, ca_file) = (server.clone(), ca_file.clone());
        tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_holdless"));
            c.env_remove("HOLDLESS_TOKEN")
                .env_remove("HOLDLESS_CA_CERT");
            c.args(["route", "--caller", "+442079460958", "--server", &server]);
            if with_ca {
                c.arg("--ca-cert").arg(&ca_file);
            }
            c.output().unwrap()
        })
    };
    let out = run.clone()(true).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(false).await.unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-cert"));
}

#[tokio::test]
async fn the_cli_says_tls_failure_when_the_server_certificate_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("holdless test CA");
    let app = spawn_tls_app(write_server_files(dir.path(), &ca, None)).await;
    let channel = health_over_tls(app.addr, &ca, None)
        .await
        .expect("TLS client");
    wait_serving(channel).await;
    let stranger = dir.path().join("other-ca.crt");
    std::fs::write(&stranger, Ca::new("another CA").pem()).unwrap();
    // No scheme with --ca-cert: TLS.
    let server = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdless"))
            .env_remove("HOLDLESS_TOKEN")
            .env_remove("HOLDLESS_SERVER")
            .args(["health", "--server", &server, "--ca-cert"])
            .arg(&stranger)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("TLS failure"), "{stderr}");
    assert!(!stderr.contains("transport error"), "{stderr}");
}

/// The console is served over TLS with the gRPC server's certificate (ALPN
/// `http/1.1`, so a browser does not pick HTTP/2), and its session cookie is `Secure`.
#[tokio::test]
async fn the_console_uses_the_same_certificate_and_marks_its_cookie_secure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let ca = Ca::new("console CA");
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = build(write_server_files(dir.path(), &ca, None))
        .await
        .expect("app builds");
    let console = app.console_addr().expect("console enabled");
    let (tx, rx) = oneshot::channel::<()>();
    let grpc = app.local_addr();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let channel = health_over_tls(grpc, &ca, None).await.expect("gRPC up");
    wait_serving(channel).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(console).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the gRPC server's certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /wallboard HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let cookie = reply
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {reply}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    drop(tx);
}
