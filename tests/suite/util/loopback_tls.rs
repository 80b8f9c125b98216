//! TLS for servers the tests run on loopback: a fresh CA and a server
//! certificate for `127.0.0.1`, `::1` and `localhost`, made with the
//! openssl command line in a directory the caller owns. The CA lands in
//! `ca.crt` there, where a service account mount keeps it, so that kubexit
//! verifies the server exactly as it verifies a cluster's.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Makes `dir/ca.crt` and a server certificate signed by it, and returns
/// a server configuration that presents that certificate.
pub fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    certificates(dir).unwrap_or_else(|why| panic!("{why} (.ci/run installs openssl)"));
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    Arc::new(config)
}

/// Makes, in `dir`, a fresh CA (`ca.crt`, `ca.key`) and a server
/// certificate it signed for `127.0.0.1`, `::1` and `localhost`
/// (`server.crt`, `server.key`), valid for a day; says what failed.
pub fn certificates(dir: &Path) -> Result<(), String> {
    let run = |args: &[&str]| openssl(dir, args);
    let ec_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let with_key = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        head.iter().chain(&ec_key).chain(tail).copied().collect()
    };
    run(&with_key(
        &["req", "-x509", "-days", "1", "-subj", "/CN=test-ca"],
        &["-keyout", "ca.key", "-out", "ca.crt"],
    ))?;
    run(&with_key(
        &["req", "-subj", "/CN=127.0.0.1"],
        &["-keyout", "server.key", "-out", "server.csr"],
    ))?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n\
         basicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])
}

/// A client configuration that trusts only the CA in `ca` (a PEM file).
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("PEM certificate")).expect("CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Runs the openssl command line with `args` in `dir`; says what failed.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl, to make test certificates: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
