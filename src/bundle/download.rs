//! One download into the bundle: streamed to `<file>.part` chunk by chunk (an image tarball is
//! hundreds of MB; it is never held in memory), hashed as it arrives, checked against
//! Content-Length and the expected sha256, and only then renamed to its name. Any failure
//! removes the `.part` and says which file, which URL and what went wrong.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::http::error_chain as chain;
use crate::playbook::catalog::hex;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a download may go without a byte (or without response headers) before it is
/// given up. There is no total limit: a slow link that keeps sending finishes.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong with one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// The server answered with another status than 2xx.
    Status(String),
    /// The body ended before Content-Length said it would.
    Truncated { got: u64, want: u64 },
    /// No byte for [`STALL_TIMEOUT`].
    Stalled { got: u64, want: Option<u64> },
    /// The body arrived whole but is not what the sums say.
    Sum { got: String, want: String, listed_in: String },
    /// No connection, or it broke (other than by ending early).
    Connection(String),
    /// This machine could not write the file.
    Local(String),
}

/// A download that failed: the file (relative to the bundle), the URL and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub path: String,
    pub url: String,
    pub cause: Cause,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Failure { path, url, cause } = self;
        match cause {
            Cause::Status(status) => write!(f, "{path}: {url} returned {status}"),
            Cause::Truncated { got, want } => {
                write!(f, "{path}: {url} ended early: got {got} of {want} bytes")
            }
            Cause::Stalled { got, want } => {
                let of = want.map_or(String::new(), |w| format!(" of {w}"));
                write!(f, "{path}: {url} sent nothing for {} s (got {got}{of} bytes)", STALL_TIMEOUT.as_secs())
            }
            Cause::Sum { got, want, listed_in } => {
                write!(f, "{path}: {url} sent a file with sha256 {got}, but {listed_in} says {want}")
            }
            Cause::Connection(e) => write!(f, "{path}: {url}: {e}"),
            Cause::Local(e) => write!(f, "{path}: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

/// A file now in place.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub size: u64,
    pub sha256: String,
    pub seconds: f64,
}

/// The HTTP client of a bundle run: rustls with ring (the crate's one crypto backend), a
/// connect timeout, proxies from the environment.
pub fn client() -> Result<reqwest::Client, String> {
    static RING: Once = Once::new();
    // reqwest (rustls-no-provider) takes the process default; another part of the program
    // may have installed ring already, which is as good.
    RING.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("groundwork/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {}", chain(&e)))
}

/// `path` with `.part` appended to its name.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// What to download and what it must hash to.
pub struct Request<'a> {
    /// Relative to the bundle directory, as messages and the manifest name it.
    pub path: &'a str,
    pub dest: &'a Path,
    pub url: &'a str,
    /// The sha256 it must have, and the file that says so.
    pub expected: Option<(&'a str, &'a str)>,
}

/// Download `req.url` to `req.dest` through `req.dest.part`; on failure nothing is left but
/// what was there before.
pub async fn download(client: &reqwest::Client, req: &Request<'_>) -> Result<Fetched, Failure> {
    let part = part_path(req.dest);
    let result = fetch_to(client, req, &part).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}

async fn fetch_to(client: &reqwest::Client, req: &Request<'_>, part: &Path) -> Result<Fetched, Failure> {
    let fail = |cause: Cause| Failure { path: req.path.to_string(), url: req.url.to_string(), cause };
    let local = |what: &str, e: std::io::Error| fail(Cause::Local(format!("{what} {}: {e}", part.display())));
    let started = Instant::now();
    let mut response = match tokio::time::timeout(STALL_TIMEOUT, client.get(req.url).send()).await {
        Err(_) => return Err(fail(Cause::Stalled { got: 0, want: None })),
        // The URL is in the message already.
        Ok(Err(e)) => return Err(fail(Cause::Connection(chain(&e.without_url())))),
        Ok(Ok(r)) => r,
    };
    if !response.status().is_success() {
        return Err(fail(Cause::Status(response.status().to_string())));
    }
    let want = response.content_length();
    let bar = progress_bar(req.path, want);
    let mut file = tokio::fs::File::create(part).await.map_err(|e| local("cannot create", e))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    loop {
        let chunk = match tokio::time::timeout(STALL_TIMEOUT, response.chunk()).await {
            Err(_) => {
                bar.finish_and_clear();
                return Err(fail(Cause::Stalled { got, want }));
            }
            Ok(Err(e)) => {
                bar.finish_and_clear();
                // A connection closed before Content-Length bytes: say how much came.
                return Err(fail(match want {
                    Some(want) if got < want => Cause::Truncated { got, want },
                    _ => Cause::Connection(chain(&e.without_url())),
                }));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| local("cannot write", e))?;
        got += chunk.len() as u64;
        bar.set_position(got);
    }
    bar.finish_and_clear();
    if let Some(want) = want
        && got != want
    {
        return Err(fail(Cause::Truncated { got, want }));
    }
    file.flush().await.map_err(|e| local("cannot write", e))?;
    file.sync_all().await.map_err(|e| local("cannot write", e))?;
    drop(file);
    let sha256 = hex(&hasher.finalize());
    if let Some((expected, listed_in)) = req.expected
        && sha256 != expected
    {
        return Err(fail(Cause::Sum { got: sha256, want: expected.to_string(), listed_in: listed_in.to_string() }));
    }
    tokio::fs::rename(part, req.dest)
        .await
        .map_err(|e| fail(Cause::Local(format!("cannot rename {} to {}: {e}", part.display(), req.dest.display()))))?;
    Ok(Fetched { size: got, sha256, seconds: started.elapsed().as_secs_f64() })
}

/// A bar on standard error at a terminal; nothing elsewhere (a log, a pipe, CI).
pub fn progress_bar(label: &str, len: Option<u64>) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{prefix} {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{prefix} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_file_the_url_and_the_cause() {
        let f = |cause| Failure { path: "k3s/k3s".into(), url: "http://h/v1%2Bk3s1/k3s".into(), cause }.to_string();
        assert_eq!(f(Cause::Status("404 Not Found".into())), "k3s/k3s: http://h/v1%2Bk3s1/k3s returned 404 Not Found");
        assert!(f(Cause::Truncated { got: 10, want: 20 }).ends_with("ended early: got 10 of 20 bytes"));
        assert!(f(Cause::Stalled { got: 0, want: None }).contains("sent nothing for 30 s (got 0 bytes)"));
        let sum = f(Cause::Sum { got: "aa".into(), want: "bb".into(), listed_in: "k3s/sha256sum-amd64.txt".into() });
        assert!(sum.contains("sha256 aa, but k3s/sha256sum-amd64.txt says bb"), "{sum}");
    }

    #[test]
    fn the_part_file_sits_beside_the_file() {
        assert_eq!(part_path(Path::new("/b/k3s/k3s")), Path::new("/b/k3s/k3s.part"));
    }
}
