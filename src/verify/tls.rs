//! TLS for the checks that send a password: the server must present the certificate
//! groundwork generated on the host (read over the SSH session, whose host key is pinned in
//! the state directory's known_hosts), or, for a certificate of the answers, one that verifies
//! against this machine's trust store. Anything else fails the handshake, before a password
//! could be sent; the verifier remembers what it was shown so the check can say why.
//!
//! [`PgTls`] plugs the same verifier into tokio-postgres and gives it the `tls-server-end-point`
//! channel binding, so SCRAM-SHA-256-PLUS ties the login to this very TLS connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ssh::Session;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `SHA256:ab:cd:...` of a DER certificate (what `openssl x509 -fingerprint -sha256` shows).
pub fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

/// A certificate groundwork trusts for one server, and where it was read.
#[derive(Debug, Clone)]
pub struct PinnedCert {
    pub der: CertificateDer<'static>,
    /// e.g. `ld1:/etc/ldap/tls/selfsigned.crt`
    pub source: String,
    /// The PEM text as read (for clients that take a root certificate file).
    pub pem: Vec<u8>,
}

impl PinnedCert {
    /// The first certificate of a PEM text.
    pub fn from_pem(pem: &[u8], source: &str) -> Result<PinnedCert, String> {
        let der = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or_else(|| format!("{source}: no PEM certificate"))?
            .map_err(|e| format!("{source}: not a PEM certificate ({e})"))?;
        Ok(PinnedCert { der, source: source.to_string(), pem: pem.to_vec() })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }
}

/// Reads the certificate at `path` on the host of `session` (a public file: no secret moves).
pub async fn fetch(session: &Session, host: &str, path: &str) -> Result<PinnedCert, String> {
    let source = format!("{host}:{path}");
    let out = session
        .exec(&format!("cat -- {}", crate::engine::facts::sh_quote(path)), None)
        .await
        .map_err(|e| format!("cannot read {source}: {e}"))?;
    if !out.ok() {
        return Err(format!("cannot read {source}: {} (has apply run?)", out.stderr_str().trim()));
    }
    PinnedCert::from_pem(&out.stdout, &source)
}

/// What the last refused handshake was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub presented: String,
    pub why: String,
}

/// Accepts the pinned leaf (byte for byte), or with `roots` a chain that verifies against
/// them for the server name; refuses everything else.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: Option<PinnedCert>,
    roots: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    refused: Mutex<Option<Refusal>>,
}

impl PinnedVerifier {
    /// `pin`: the certificate read from the host; `system_roots`: also accept a chain that
    /// verifies against this machine's trust store (a certificate from the answers). With
    /// neither, every handshake fails.
    pub fn new(pin: Option<PinnedCert>, system_roots: bool) -> Arc<PinnedVerifier> {
        let provider = provider();
        let roots = if system_roots {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build().ok()
        } else {
            None
        };
        Arc::new(PinnedVerifier { pin, roots, provider, refused: Mutex::new(None) })
    }

    /// The reason of the last refusal, if a handshake was refused.
    pub fn refused(&self) -> Option<Refusal> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How the server's certificate is trusted, for the check's detail.
    pub fn describe(&self) -> String {
        match (&self.pin, &self.roots) {
            (Some(p), Some(_)) => {
                format!("certificate verified (the trust store, or pinned {} from {})", p.fingerprint(), p.source)
            }
            (Some(p), None) => format!("certificate pinned: {} from {}", p.fingerprint(), p.source),
            (None, Some(_)) => "certificate verified against this machine's trust store".into(),
            (None, None) => "no certificate to trust".into(),
        }
    }

    /// A rustls client configuration with this verifier (ring, TLS 1.2 and 1.3).
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, String> {
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn refuse(&self, presented: &CertificateDer<'_>, why: String) -> rustls::Error {
        let r = Refusal { presented: fingerprint(presented), why };
        let msg = format!("certificate {} refused: {}", r.presented, r.why);
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        rustls::Error::General(msg)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pin.as_ref().is_some_and(|p| p.der.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        let roots_said = match &self.roots {
            Some(v) => match v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => Some(e.to_string()),
            },
            None => None,
        };
        let why = match (&self.pin, roots_said) {
            (Some(p), None) => {
                format!("not the certificate groundwork generated ({} from {})", p.fingerprint(), p.source)
            }
            (Some(p), Some(e)) => format!("not {} from {} and not trusted here ({e})", p.fingerprint(), p.source),
            (None, Some(e)) => format!("not trusted here ({e})"),
            (None, None) => "nothing to compare it with".into(),
        };
        Err(self.refuse(end_entity, why))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

// ------------------------------------------------------------------ tokio-postgres

/// The `tls-server-end-point` channel binding (RFC 5929): the hash of the server's
/// certificate with its signature's hash (SHA-256 for MD5, SHA-1 and SHA-256). `None` for a
/// signature without one of these (Ed25519, RSA-PSS): no channel binding then.
pub fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, .. }, .. }
    fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let first = *b.get(1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    let (tag, h, _) = header(der)?;
    if tag != 0x30 {
        return None;
    }
    let rest = der.get(h..)?;
    let (_, th, tlen) = header(rest)?;
    let alg = rest.get(th + tlen..)?;
    let (atag, ah, _) = header(alg)?;
    if atag != 0x30 {
        return None;
    }
    let (otag, oh, olen) = header(alg.get(ah..)?)?;
    if otag != 0x06 {
        return None;
    }
    let oid = alg.get(ah + oh..ah + oh + olen)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let which = match oid {
        [p @ .., 0x04] | [p @ .., 0x05] | [p @ .., 0x0b] if p == RSA => 256,
        [p @ .., 0x0c] if p == RSA => 384,
        [p @ .., 0x0d] if p == RSA => 512,
        [p @ .., 0x01] if p == ECDSA => 256,
        [p @ .., 0x03, 0x02] if p == ECDSA => 256,
        [p @ .., 0x03, 0x03] if p == ECDSA => 384,
        [p @ .., 0x03, 0x04] if p == ECDSA => 512,
        _ => return None,
    };
    Some(match which {
        256 => Sha256::digest(der).to_vec(),
        384 => Sha384::digest(der).to_vec(),
        _ => Sha512::digest(der).to_vec(),
    })
}

/// A tokio-postgres TLS connector using a [`PinnedVerifier`].
#[derive(Clone)]
pub struct PgTls {
    config: Arc<ClientConfig>,
}

impl PgTls {
    pub fn new(verifier: &Arc<PinnedVerifier>) -> Result<PgTls, String> {
        Ok(PgTls { config: verifier.client_config()? })
    }
}

pub struct PgTlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, Self::Error> {
        Ok(PgTlsConnect { config: self.config.clone(), name: ServerName::try_from(domain)?.to_owned() })
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await?;
            Ok(PgTlsStream(s))
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()).and_then(|c| end_point_hash(c)) {
            Some(h) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(h),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two self-signed P-256 certificates (openssl req -x509 -newkey ec ... -sha256), only for
    // these tests: a server proving key A, a pin of A, and an impostor B.
    const CERT_A: &str = include_str!("testdata/a.crt");
    const KEY_A: &str = include_str!("testdata/a.key");
    const CERT_B: &str = include_str!("testdata/b.crt");
    const KEY_B: &str = include_str!("testdata/b.key");

    /// A server presenting `cert` and signing the handshake with `key` (they need not match:
    /// an impostor replaying a stolen certificate without its key).
    fn server_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
        #[derive(Debug)]
        struct Fixed(Arc<rustls::sign::CertifiedKey>);
        impl rustls::server::ResolvesServerCert for Fixed {
            fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let signing = provider().key_provider.load_private_key(key).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Fixed(Arc::new(rustls::sign::CertifiedKey::new(chain, signing))))),
        )
    }

    /// A TLS server on loopback presenting `cert`; the client's handshake result and what it
    /// would have sent (the "password") reaching the server.
    async fn handshake(cert: &str, key: &str, verifier: Arc<PinnedVerifier>) -> (Result<(), String>, Vec<u8>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(cert, key));
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.read_to_end(&mut got).await;
            }
            got
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(verifier.client_config().unwrap());
        let r = match connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await {
            Ok(mut tls) => {
                tls.write_all(b"password").await.unwrap();
                tls.shutdown().await.unwrap();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        (r, server.await.unwrap())
    }

    #[tokio::test]
    async fn the_pinned_certificate_passes_and_another_gets_nothing() {
        let pin = PinnedCert::from_pem(CERT_A.as_bytes(), "h:/a.crt").unwrap();
        let v = PinnedVerifier::new(Some(pin.clone()), false);
        let (r, got) = handshake(CERT_A, KEY_A, v.clone()).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(got, b"password");
        assert!(v.refused().is_none());

        let v = PinnedVerifier::new(Some(pin), false);
        let (r, got) = handshake(CERT_B, KEY_B, v.clone()).await;
        assert!(r.is_err());
        assert!(got.is_empty(), "the impostor received {got:?}");
        let refused = v.refused().unwrap();
        let b = PinnedCert::from_pem(CERT_B.as_bytes(), "b").unwrap();
        assert_eq!(refused.presented, b.fingerprint());
        assert!(
            refused.why.contains("not the certificate groundwork generated") && refused.why.contains("h:/a.crt"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn the_pinned_certificate_without_its_key_is_refused() {
        let pin = PinnedCert::from_pem(CERT_A.as_bytes(), "h:/a.crt").unwrap();
        let (r, got) = handshake(CERT_A, KEY_B, PinnedVerifier::new(Some(pin), false)).await;
        assert!(r.is_err(), "a handshake signed with another key must fail");
        assert!(got.is_empty(), "the impostor received {got:?}");
    }

    #[tokio::test]
    async fn nothing_to_trust_refuses_everything() {
        let v = PinnedVerifier::new(None, false);
        let (r, got) = handshake(CERT_A, KEY_A, v.clone()).await;
        assert!(r.is_err() && got.is_empty());
        assert!(v.refused().is_some());
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        let a = PinnedCert::from_pem(CERT_A.as_bytes(), "a").unwrap();
        assert_eq!(end_point_hash(&a.der), Some(Sha256::digest(&a.der).to_vec()));
        assert_eq!(end_point_hash(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(end_point_hash(b""), None);
        assert!(PinnedCert::from_pem(b"not pem", "x").is_err());
    }
}
