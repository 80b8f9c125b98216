//! TLS for `https://` readiness probes and quit endpoints.
//!
//! The kubelet probes HTTPS endpoints without verifying certificates: a
//! readiness probe asks "does the server answer?", not "is it who it says
//! it is?", and the servers probed usually carry self-signed certificates.
//! kubexit does the same. The handshake's signatures are still checked
//! against the certificate presented, so the connection is real TLS; only
//! the certificate's chain of trust and name are not judged.
//!
//! Built with the `tls` feature (on by default); without it, an https probe
//! or quit endpoint is a configuration error, said at start-up.

#[cfg(feature = "tls")]
use tokio::net::TcpStream;

/// A TLS client connection.
#[cfg(feature = "tls")]
pub type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// Makes the TLS handshake on `tcp` with the server named `host`.
#[cfg(feature = "tls")]
pub async fn connect(tcp: TcpStream, host: &str) -> Result<Stream, String> {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// Accepts any certificate, but checks the handshake signatures with it.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

#[cfg(feature = "tls")]
impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
