//! A small client of the Proxmox VE API (`/api2/json`): an API token in the `Authorization`
//! header, the server's certificate pinned by its SHA-256 fingerprint (or checked against this
//! machine's trust store when the answers give none), `{"data": ...}` envelopes, and tasks
//! (UPIDs) polled until they stop, with a deadline.
//!
//! The token secret lives in the header value only (marked sensitive) and in a [`Secret`]:
//! no `Debug`, error or log line of this module carries it.

use std::fmt;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::answers::model::{Proxmox, Secret, TokenSecret};
use crate::http::error_chain as chain;
/// Percent-encodes one path segment, so a UPID (`:`, `@`, `!`) or a name cannot change the path.
pub use crate::http::percent_encode as seg;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed, in words that say what to fix.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The token secret could not be read (file or environment).
    Secret(String),
    /// The TLS handshake was refused: the certificate is not the pinned one, or not trusted.
    Certificate { presented: String, why: String },
    /// No connection (refused, timeout, DNS...).
    Connect(String),
    /// 401: the token id or secret is wrong (or the token expired).
    Unauthorized { token_id: String },
    /// 403: Proxmox says which privilege on which path is missing.
    Forbidden { call: String, message: String },
    /// 400 "Parameter verification failed": each parameter and what is wrong with it.
    Params { call: String, errors: Vec<(String, String)> },
    /// Any other status: the reason phrase carries Proxmox's message.
    Status { call: String, status: u16, message: String },
    /// The body was not the `{"data": ...}` expected.
    Body { call: String, why: String },
    /// A task stopped with another exit status than OK.
    TaskFailed { upid: String, exitstatus: String, log: Vec<String> },
    /// A task was still running at the deadline.
    TaskTimeout { upid: String, waited: Duration, log: Vec<String> },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Secret(e) => write!(f, "the token secret: {e}"),
            Error::Certificate { presented, why } => {
                write!(f, "the API's TLS certificate {presented} was refused: {why}")
            }
            Error::Connect(e) => write!(f, "cannot reach the API: {e}"),
            Error::Unauthorized { token_id } => write!(
                f,
                "401: the API refused token `{token_id}`: the token id or its secret is wrong, or the token expired or was removed"
            ),
            Error::Forbidden { call, message } => write!(f, "403 on {call}: {message}"),
            Error::Params { call, errors } => {
                let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {}", v.trim())).collect();
                write!(f, "400 on {call}: parameter verification failed: {}", list.join("; "))
            }
            Error::Status { call, status, message } => write!(f, "{status} on {call}: {message}"),
            Error::Body { call, why } => write!(f, "{call}: unexpected answer: {why}"),
            Error::TaskFailed { upid, exitstatus, log } => {
                write!(f, "task {upid} failed: {exitstatus}")?;
                if !log.is_empty() {
                    write!(f, "; its last log lines:\n    {}", log.join("\n    "))?;
                }
                Ok(())
            }
            Error::TaskTimeout { upid, waited, log } => {
                write!(f, "task {upid} still running after {} s (task-timeout)", waited.as_secs())?;
                if !log.is_empty() {
                    write!(f, "; its last log lines:\n    {}", log.join("\n    "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// `AA:BB:...` (upper case, colons): how Proxmox shows a certificate's SHA-256 fingerprint.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A fingerprint as written (any case, with or without colons) as its 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Accepts the leaf whose SHA-256 is the pin (chain and name are not checked then: Proxmox's
/// own certificate is self-signed), or without a pin a chain that verifies against this
/// machine's trust store for the URL's host. The handshake's signatures are always verified,
/// so a copied certificate without its key fails.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Option<[u8; 32]>,
    roots: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    refused: Mutex<Option<(String, String)>>,
}

impl PinVerifier {
    pub fn new(pin: Option<[u8; 32]>) -> Result<Arc<PinVerifier>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = if pin.is_none() {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| format!("this machine's trust store: {e}"))?,
            )
        } else {
            None
        };
        Ok(Arc::new(PinVerifier { pin, roots, provider, refused: Mutex::new(None) }))
    }

    /// What the last refused handshake was shown, and why it was refused.
    pub fn refused(&self) -> Option<(String, String)> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refuse(&self, presented: &CertificateDer<'_>, why: String) -> rustls::Error {
        let shown = fingerprint(presented);
        let msg = format!("certificate {shown} refused: {why}");
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some((shown, why));
        rustls::Error::General(msg)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if &got == pin {
                return Ok(ServerCertVerified::assertion());
            }
            let want = pin.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
            return Err(self.refuse(
                end_entity,
                format!(
                    "[proxmox] fingerprint is {want}; if the node's certificate was renewed, check the new one on the node (pvenode cert info) and put it in the answers"
                ),
            ));
        }
        match &self.roots {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|e| {
                self.refuse(
                    end_entity,
                    format!(
                        "not trusted by this machine ({e}); for Proxmox's self-signed certificate set [proxmox] fingerprint (pvenode cert info)"
                    ),
                )
            }),
            None => Err(self.refuse(end_entity, "nothing to check it against".into())),
        }
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

/// The token secret of the answers: from its file (first line, trimmed), its environment
/// variable, or inline.
pub fn read_secret(p: &Proxmox) -> Result<Secret, Error> {
    let value = match &p.token_secret {
        TokenSecret::Inline(s) => return Ok(s.clone()),
        TokenSecret::Env(name) => std::env::var(name).map_err(|_| {
            Error::Secret(format!("the environment variable {name} (token-secret-env) is not set, or not UTF-8"))
        })?,
        TokenSecret::File(path) => {
            let path = crate::ssh::expand_tilde(path);
            std::fs::read_to_string(&path)
                .map_err(|e| Error::Secret(format!("cannot read {} (token-secret-file): {e}", path.display())))?
        }
    };
    let value = value.lines().next().unwrap_or("").trim().to_string();
    if value.is_empty() {
        return Err(Error::Secret("it is empty".into()));
    }
    Ok(Secret::new(value))
}

/// A connection to one Proxmox VE API with one token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    token_id: String,
    secret: Secret,
    verifier: Arc<PinVerifier>,
    pub task_timeout: Duration,
    /// First poll after this long, then doubling up to a second (Proxmox's own UI polls 1 s).
    pub poll: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token_id", &self.token_id).finish_non_exhaustive()
    }
}

/// Parameters of a call (query or form body), encoded by serde.
pub type Params<'a> = &'a [(&'a str, String)];

impl Client {
    /// A client for the answers' API, with the token secret read now.
    pub fn new(p: &Proxmox) -> Result<Client, Error> {
        let secret = read_secret(p)?;
        Client::with_secret(p, secret)
    }

    pub fn with_secret(p: &Proxmox, secret: Secret) -> Result<Client, Error> {
        static RING: Once = Once::new();
        RING.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let pin = match &p.fingerprint {
            Some(f) => Some(
                parse_fingerprint(f)
                    .ok_or_else(|| Error::Connect("[proxmox] fingerprint is not a SHA-256 fingerprint".into()))?,
            ),
            None => None,
        };
        let verifier = PinVerifier::new(pin).map_err(Error::Connect)?;
        let tls = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Connect(format!("TLS set-up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .user_agent(concat!("groundwork/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::Connect(format!("cannot set up HTTPS: {}", chain(&e))))?;
        let mut auth = HeaderValue::from_str(&format!("PVEAPIToken={}={}", p.token_id, secret.expose()))
            .map_err(|_| Error::Secret("it has characters an HTTP header cannot carry".into()))?;
        auth.set_sensitive(true);
        Ok(Client {
            http,
            base: p.api_url.trim_end_matches('/').to_string(),
            auth,
            token_id: p.token_id.clone(),
            secret,
            verifier,
            task_timeout: Duration::from_secs(p.task_timeout),
            poll: Duration::from_millis(250),
        })
    }

    /// The secret, for the run's redactor (never printed).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    pub async fn get(&self, path: &str, query: Params<'_>) -> Result<Value, Error> {
        self.call(reqwest::Method::GET, path, query).await
    }

    pub async fn post(&self, path: &str, form: Params<'_>) -> Result<Value, Error> {
        self.call(reqwest::Method::POST, path, form).await
    }

    pub async fn put(&self, path: &str, form: Params<'_>) -> Result<Value, Error> {
        self.call(reqwest::Method::PUT, path, form).await
    }

    /// One call; `path` is made of segments already encoded with [`seg`]. Returns `data`.
    async fn call(&self, method: reqwest::Method, path: &str, params: Params<'_>) -> Result<Value, Error> {
        let call = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).header(AUTHORIZATION, self.auth.clone());
        if !params.is_empty() {
            // Proxmox reads GET and DELETE parameters from the query string.
            req = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
                req.query(params)
            } else {
                req.form(params)
            };
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some((presented, why)) = self.verifier.refused() {
                    return Err(Error::Certificate { presented, why });
                }
                return Err(Error::Connect(format!("{}: {}", self.base, chain(&e))));
            }
        };
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        // Proxmox puts its message in the reason phrase; reqwest keeps only the code, so the
        // body (which Proxmox fills for 400, and sometimes otherwise) is read too.
        let bytes = resp.bytes().await.map_err(|e| Error::Connect(chain(&e)))?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            let body = body.ok_or_else(|| Error::Body { call: call.clone(), why: "not JSON".into() })?;
            return match body.get("data") {
                Some(d) => Ok(d.clone()),
                None => Err(Error::Body { call, why: "no `data` in it".into() }),
            };
        }
        let message = body
            .as_ref()
            .and_then(|b| b.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(reason)
            .trim()
            .chars()
            .take(500)
            .collect::<String>();
        match status.as_u16() {
            401 => Err(Error::Unauthorized { token_id: self.token_id.clone() }),
            403 => Err(Error::Forbidden { call, message }),
            400 => {
                let errors = body
                    .as_ref()
                    .and_then(|b| b.get("errors"))
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                Err(Error::Params { call, errors })
            }
            code => Err(Error::Status { call, status: code, message }),
        }
    }

    /// Waits for the task `upid` of `node` to stop: `Ok` with its exit status (`OK`, or
    /// `WARNINGS: n`), or its failure with the last lines of its log.
    pub async fn wait_task(&self, node: &str, upid: &str, on_poll: &dyn Fn(Duration)) -> Result<String, Error> {
        let started = Instant::now();
        let path = format!("/nodes/{}/tasks/{}/status", seg(node), seg(upid));
        let mut wait = self.poll;
        loop {
            let st = self.get(&path, &[]).await?;
            if st.get("status").and_then(Value::as_str) == Some("stopped") {
                let exit = st.get("exitstatus").and_then(Value::as_str).unwrap_or("(no exit status)").to_string();
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(exit);
                }
                let log = self.task_log(node, upid).await;
                return Err(Error::TaskFailed { upid: upid.to_string(), exitstatus: exit, log });
            }
            if started.elapsed() >= self.task_timeout {
                let log = self.task_log(node, upid).await;
                return Err(Error::TaskTimeout { upid: upid.to_string(), waited: started.elapsed(), log });
            }
            on_poll(started.elapsed());
            tokio::time::sleep(wait.min(self.task_timeout.saturating_sub(started.elapsed()))).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// The last lines of a task's log (empty when it cannot be read).
    pub async fn task_log(&self, node: &str, upid: &str) -> Vec<String> {
        const LAST: usize = 10;
        let path = format!("/nodes/{}/tasks/{}/log", seg(node), seg(upid));
        let Ok(all) = self.get(&path, &[("start", "0".into()), ("limit", "500".into())]).await else {
            return Vec::new();
        };
        let lines: Vec<String> = all
            .as_array()
            .map(|a| a.iter().filter_map(|l| l.get("t").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        lines[lines.len().saturating_sub(LAST)..].to_vec()
    }

    /// A call that some versions answer at once and others with a task (`PUT .../resize`
    /// became a task in Proxmox VE 8): a UPID that comes back is waited for.
    pub async fn maybe_task(
        &self,
        node: &str,
        method: reqwest::Method,
        path: &str,
        form: Params<'_>,
        on_poll: &dyn Fn(Duration),
    ) -> Result<Option<String>, Error> {
        let data = self.call(method, path, form).await?;
        match data.as_str() {
            Some(upid) if upid.starts_with("UPID:") => Ok(Some(self.wait_task(node, upid, on_poll).await?)),
            _ => Ok(None),
        }
    }

    /// Runs a call that starts a task (its `data` is a UPID) and waits for the task.
    pub async fn task(
        &self,
        node: &str,
        method: reqwest::Method,
        path: &str,
        form: Params<'_>,
        on_poll: &dyn Fn(Duration),
    ) -> Result<String, Error> {
        let data = self.call(method, path, form).await?;
        let call = path.to_string();
        let upid = data.as_str().ok_or_else(|| Error::Body { call, why: format!("expected a task id, got {data}") })?;
        self.wait_task(node, upid, on_poll).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_in_any_case_with_or_without_colons() {
        let f = fingerprint(b"x");
        let bytes = parse_fingerprint(&f).unwrap();
        assert_eq!(parse_fingerprint(&f.to_lowercase()), Some(bytes));
        assert_eq!(parse_fingerprint(&f.replace(':', "")), Some(bytes));
        assert_eq!(parse_fingerprint("AA:BB"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            seg("UPID:pve1:0001A2B3:0042F1C0:6752A1B2:vzcreate:101:gw@pve!bootstrap:"),
            "UPID%3Apve1%3A0001A2B3%3A0042F1C0%3A6752A1B2%3Avzcreate%3A101%3Agw%40pve%21bootstrap%3A"
        );
        assert_eq!(seg("a/../b"), "a%2F..%2Fb");
    }

    #[test]
    fn the_secret_is_in_no_debug_output() {
        let p = Proxmox {
            api_url: "https://pve.example.org:8006/api2/json".into(),
            token_id: "gw@pve!t".into(),
            token_secret: TokenSecret::Inline(Secret::new("5ec2e7-5ec2e7-5ec2e7")),
            insecure_inline_secret: true,
            fingerprint: Some(fingerprint(b"x")),
            node: "pve".into(),
            storage: "local".into(),
            template: None,
            ct_template: None,
            bridge: "vmbr0".into(),
            task_timeout: 5,
        };
        let c = Client::new(&p).unwrap();
        assert!(!format!("{c:?}").contains("5ec2e7"));
        assert!(!format!("{p:?}").contains("5ec2e7"));
    }
}
