//! `groundwork bundle`, `bundle --check`, and the bundle as `validate` and `apply` see it,
//! against a small HTTP/1.1 server on 127.0.0.1 that serves bytes the test made and counts
//! the requests per path, and (for the GitOps images) Debian's `docker-registry` on
//! 127.0.0.1 holding tiny images the test wrote as OCI layouts and pushed with skopeo. No
//! network beyond loopback, no root. Without skopeo or docker-registry (`apt-get install
//! skopeo docker-registry`; tests/run installs them) the tests that need them say SKIPPED.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

const VERSION: &str = "v1.35.6+k3s1";
/// The tag as it appears in a request path.
const TAG: &str = "v1.35.6%2Bk3s1";
const FLUX: &str = "2.4.0";

// ------------------------------------------------------------------ the fake release server

#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    Status(u16, &'static str),
    /// Claims `claimed` bytes in Content-Length, sends `body`, then closes.
    Short {
        body: Vec<u8>,
        claimed: usize,
    },
}

/// Serves `routes` on 127.0.0.1:<free port> until dropped, one connection per thread.
struct Server {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = Arc::new(Mutex::new(routes));
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (routes.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &r, &h));
            }
        });
        Server { port, routes, hits, stop }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request per connection (`Connection: close`), as HTTP/1.1 allows.
fn serve(conn: TcpStream, routes: &Mutex<HashMap<String, Reply>>, hits: &Mutex<HashMap<String, usize>>) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let reply = routes.lock().unwrap().get(&path).cloned().unwrap_or(Reply::Status(404, "Not Found"));
    let mut conn = conn;
    let head = |status: &str, len: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = match reply {
        Reply::Body(body) => conn.write_all(head("200 OK", body.len()).as_bytes()).and_then(|_| conn.write_all(&body)),
        Reply::Status(code, text) => {
            let body = format!("{code} {text}\n");
            conn.write_all(head(&format!("{code} {text}"), body.len()).as_bytes())
                .and_then(|_| conn.write_all(body.as_bytes()))
        }
        Reply::Short { body, claimed } => {
            conn.write_all(head("200 OK", claimed).as_bytes()).and_then(|_| conn.write_all(&body))
        }
    };
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

// ------------------------------------------------------------------ the image registry

/// Debian's docker-registry (distribution 2.8) on 127.0.0.1:<free port>, storage in a temp
/// dir, killed when dropped. `None` (with SKIPPED said) when skopeo or the registry is missing.
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

fn have_skopeo() -> bool {
    Command::new("skopeo").arg("--version").output().is_ok_and(|o| o.status.success())
}

impl Registry {
    fn start(test: &str) -> Option<Registry> {
        if !have_skopeo() || !Path::new(REGISTRY_BIN).exists() {
            // Straight to stderr: the harness captures println!, and a skip must show.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: needs skopeo and {REGISTRY_BIN} (apt-get install -y skopeo docker-registry)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry { child, port, dir };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(reg);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry did not listen on {port}: {}", reg.log());
    }

    fn mirror(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The manifest requests the registry answered for `repo` (what a pull asks first).
    fn manifest_gets(&self, repo: &str) -> usize {
        let want = format!("\"GET /v2/{repo}/manifests/");
        self.log().lines().filter(|l| l.contains(&want)).count()
    }

    /// A one-layer image (a file `/hello` saying `text`) written by hand as an OCI layout,
    /// pushed as `repo:tag`.
    fn push(&self, repo: &str, tag: &str, text: &str) {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let blobs = w.join("oci/blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir(w.join("root")).unwrap();
        std::fs::write(w.join("root/hello"), text).unwrap();
        let tar = Command::new("tar")
            .args(["--mtime=@0", "--owner=0", "--group=0", "-C"])
            .arg(w.join("root"))
            .args(["-cf", "-", "hello"])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let mut gz = Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        gz.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        let layer = gz.wait_with_output().unwrap().stdout;
        let blob = |bytes: &[u8]| {
            let sum = sha256(bytes);
            std::fs::write(blobs.join(&sum), bytes).unwrap();
            format!("\"digest\":\"sha256:{sum}\",\"size\":{}", bytes.len())
        };
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:{}\"]}}}}",
            sha256(&tar.stdout)
        );
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",{}}}]}}",
            blob(config.as_bytes()),
            blob(&layer)
        );
        let index = format!(
            "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"{tag}\"}}}}]}}",
            blob(manifest.as_bytes())
        );
        std::fs::write(w.join("oci/index.json"), index).unwrap();
        std::fs::write(w.join("oci/oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", w.join("oci").display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.mirror()))
            .output()
            .unwrap();
        assert!(out.status.success(), "push {repo}:{tag}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The two images of [`INSTALL_YAML`], as the mirror holds them.
    fn with_flux_images(self) -> Registry {
        self.push("fluxcd/source-controller", "v1.4.1", "source-controller\n");
        self.push("fluxcd/kustomize-controller", "v1.4.0", "kustomize-controller\n");
        self
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The images of [`INSTALL_YAML`], their archives in the bundle, sorted as the manifest lists them.
const SOURCE_IMAGE: &str = "ghcr.io/fluxcd/source-controller:v1.4.1";
const KUSTOMIZE_IMAGE: &str = "ghcr.io/fluxcd/kustomize-controller:v1.4.0";
const SOURCE_ARCHIVE: &str = "gitops/images/ghcr.io_fluxcd_source-controller_v1.4.1.tar";
const KUSTOMIZE_ARCHIVE: &str = "gitops/images/ghcr.io_fluxcd_kustomize-controller_v1.4.0.tar";

// ------------------------------------------------------------------ the release it serves

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes that do not compress or repeat (xorshift), `n` of them.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Release {
    binary: Vec<u8>,
    images: Vec<u8>,
    sums: String,
    install: String,
}

const INSTALL_YAML: &str = r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: source-controller
spec:
  template:
    spec:
      containers:
        - name: manager
          image: ghcr.io/fluxcd/source-controller:v1.4.1
          imagePullPolicy: IfNotPresent
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kustomize-controller
spec:
  template:
    spec:
      containers:
      - image: "ghcr.io/fluxcd/kustomize-controller:v1.4.0"
        name: manager
      initContainers:
      - image: ghcr.io/fluxcd/source-controller:v1.4.1
"#;

fn release() -> Release {
    let binary = random_bytes(300 * 1024, 7);
    let images = random_bytes(1024 * 1024, 11);
    // As the k3s release writes it: `<sha256>  <name>`, other files listed too.
    let sums = format!(
        "{}  k3s\n{}  k3s-airgap-images-amd64.tar\n{}  k3s-airgap-images-amd64.tar.zst\n{}  k3s-images.txt\n",
        sha256(&binary),
        sha256(b"not served"),
        sha256(&images),
        sha256(b"images list")
    );
    Release { binary, images, sums, install: INSTALL_YAML.to_string() }
}

fn k3s_path(file: &str) -> String {
    format!("/k3s/{TAG}/{file}")
}

const FLUX_PATH: &str = "/flux/v2.4.0/install.yaml";

fn routes(r: &Release) -> HashMap<String, Reply> {
    HashMap::from([
        (k3s_path("sha256sum-amd64.txt"), Reply::Body(r.sums.clone().into_bytes())),
        (k3s_path("k3s"), Reply::Body(r.binary.clone())),
        (k3s_path("k3s-airgap-images-amd64.tar.zst"), Reply::Body(r.images.clone())),
        (FLUX_PATH.to_string(), Reply::Body(r.install.clone().into_bytes())),
    ])
}

// ------------------------------------------------------------------ running groundwork

fn groundwork() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_groundwork"));
    c.env("NO_COLOR", "1");
    // The fake server is on loopback: no proxy from the environment may stand in between.
    for v in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        c.env_remove(v);
    }
    c.env("NO_PROXY", "127.0.0.1");
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = groundwork().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `bundle` of the test release with Flux; `reg` is the registry mirror of its images.
fn bundle(server: &Server, reg: Option<&Registry>, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let k3s_url = format!("{}/k3s", server.base());
    let flux_url = format!("{}/flux", server.base());
    let mirror = reg.map(Registry::mirror);
    let mut args = vec![
        "bundle",
        "--k3s",
        VERSION,
        "--gitops",
        "flux",
        FLUX,
        "--out",
        out.to_str().unwrap(),
        "--k3s-url",
        &k3s_url,
        "--flux-url",
        &flux_url,
    ];
    if let Some(m) = &mirror {
        args.extend(["--registry-mirror", m]);
    }
    args.extend_from_slice(extra);
    run(&args)
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Every `.part` file under `dir`.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(".part") {
                found.push(p);
            }
        }
    }
    found
}

/// A finished bundle in `tmp/bundle`, and the release it holds; `None` when the images
/// cannot be archived on this machine (SKIPPED said).
fn made_bundle(tmp: &Path, test: &str) -> Option<(PathBuf, Release)> {
    let reg = Registry::start(test)?.with_flux_images();
    let r = release();
    let server = Server::start(routes(&r));
    let dir = tmp.join("bundle");
    let (code, _, err) = bundle(&server, Some(&reg), &dir, &[]);
    assert_eq!(code, 0, "{err}");
    Some((dir, r))
}

fn flip_a_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

// ------------------------------------------------------------------ 1, 2: make and re-make

#[test]
fn a_bundle_holds_the_files_their_sums_and_a_manifest() {
    let Some(reg) = Registry::start("a_bundle_holds_the_files_their_sums_and_a_manifest") else { return };
    let reg = reg.with_flux_images();
    let r = release();
    let server = Server::start(routes(&r));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let (code, out, err) = bundle(&server, Some(&reg), &dir, &[]);
    assert_eq!(code, 0, "{err}");

    // the files, byte for byte, where the layout says
    assert_eq!(std::fs::read(dir.join("k3s/k3s")).unwrap(), r.binary);
    assert_eq!(std::fs::read(dir.join("k3s/k3s-airgap-images-amd64.tar.zst")).unwrap(), r.images);
    assert_eq!(std::fs::read_to_string(dir.join("k3s/sha256sum-amd64.txt")).unwrap(), r.sums);
    assert_eq!(std::fs::read_to_string(dir.join("gitops/flux-install.yaml")).unwrap(), r.install);
    assert!(part_files(&dir).is_empty());
    // the tag's + went into the path as %2B, and the list was asked for once
    assert_eq!(server.hits(&k3s_path("sha256sum-amd64.txt")), 1);
    assert_eq!(server.total_hits(), 4);

    // each image in a docker-archive named by the install manifest's reference, not the mirror's
    for (archive, image, text) in [
        (SOURCE_ARCHIVE, SOURCE_IMAGE, "source-controller\n"),
        (KUSTOMIZE_ARCHIVE, KUSTOMIZE_IMAGE, "kustomize-controller\n"),
    ] {
        let path = dir.join(archive);
        let out = Command::new("tar").arg("-xOf").arg(&path).arg("manifest.json").output().unwrap();
        assert!(out.status.success(), "{archive}: {}", String::from_utf8_lossy(&out.stderr));
        let inner: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(inner[0]["RepoTags"], serde_json::json!([image]), "{archive}: {inner}");
        // and it is the image the registry held: its one layer has the file the test wrote
        let layer = inner[0]["Layers"][0].as_str().unwrap();
        let layer = Command::new("tar").arg("-xOf").arg(&path).arg(layer).output().unwrap().stdout;
        let mut hello = Command::new("tar")
            .args(["-xOf", "-", "hello"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        hello.stdin.take().unwrap().write_all(&layer).unwrap();
        assert_eq!(String::from_utf8(hello.wait_with_output().unwrap().stdout).unwrap(), text);
    }
    assert_eq!(reg.manifest_gets("fluxcd/source-controller"), 1);

    let m = manifest(&dir);
    assert_eq!(m["format"], 1);
    assert_eq!(m["arch"], "amd64");
    assert_eq!(m["k3s"]["version"], VERSION);
    assert_eq!(m["gitops"]["engine"], "flux");
    assert_eq!(m["gitops"]["version"], FLUX);
    assert_eq!(m["gitops"]["images"], serde_json::json!([KUSTOMIZE_IMAGE, SOURCE_IMAGE]));
    assert!(m.get("notes").is_none(), "no note that images are not archived: {m}");
    let files = m["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "k3s/k3s",
            "k3s/k3s-airgap-images-amd64.tar.zst",
            "k3s/sha256sum-amd64.txt",
            "gitops/flux-install.yaml",
            KUSTOMIZE_ARCHIVE,
            SOURCE_ARCHIVE
        ]
    );
    let archives =
        [std::fs::read(dir.join(KUSTOMIZE_ARCHIVE)).unwrap(), std::fs::read(dir.join(SOURCE_ARCHIVE)).unwrap()];
    for (f, bytes) in files.iter().zip([
        &r.binary,
        &r.images,
        &r.sums.clone().into_bytes(),
        &r.install.clone().into_bytes(),
        &archives[0],
        &archives[1],
    ]) {
        assert_eq!(f["sha256"], sha256(bytes), "{f}");
        assert_eq!(f["size"], bytes.len(), "{f}");
    }
    assert_eq!(files[0]["what"], "k3s binary");
    assert_eq!(files[0]["version"], VERSION);
    assert_eq!(files[0]["source"], format!("{}/k3s/{TAG}/k3s", server.base()));
    assert_eq!(files[3]["source"], format!("{}{FLUX_PATH}", server.base()));
    assert!(files[..4].iter().all(|f| f.get("image").is_none()), "{m}");
    assert_eq!(files[5]["image"], SOURCE_IMAGE);
    assert_eq!(files[5]["what"], "container image archive");
    assert_eq!(files[5]["version"], FLUX);
    assert_eq!(files[5]["source"], format!("docker://{}/fluxcd/source-controller:v1.4.1", reg.mirror()));

    // the output names each file, how it came, and the total
    for p in &paths[..4] {
        assert!(out.lines().any(|l| l.starts_with("downloaded") && l.contains(p)), "{p}: {out}");
    }
    for (p, image) in [(KUSTOMIZE_ARCHIVE, KUSTOMIZE_IMAGE), (SOURCE_ARCHIVE, SOURCE_IMAGE)] {
        assert!(out.lines().any(|l| l.starts_with("copied") && l.contains(p) && l.contains(image)), "{p}: {out}");
    }
    assert!(out.contains("total: 6 files") && out.contains("6 downloaded"), "{out}");
}

/// (inode, mtime) of a file: the same pair after a re-run means it was not written again.
fn identity(path: &Path) -> (u64, std::time::SystemTime) {
    let m = std::fs::metadata(path).unwrap();
    (std::os::unix::fs::MetadataExt::ino(&m), m.modified().unwrap())
}

#[test]
fn a_rerun_requests_nothing_that_is_already_there() {
    let Some(reg) = Registry::start("a_rerun_requests_nothing_that_is_already_there") else { return };
    let reg = reg.with_flux_images();
    let r = release();
    let server = Server::start(routes(&r));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let (code, _, err) = bundle(&server, Some(&reg), &dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.total_hits(), 4);
    let first = manifest(&dir);
    let archives_before = [identity(&dir.join(SOURCE_ARCHIVE)), identity(&dir.join(KUSTOMIZE_ARCHIVE))];
    let gets = |reg: &Registry| {
        (reg.manifest_gets("fluxcd/source-controller"), reg.manifest_gets("fluxcd/kustomize-controller"))
    };
    assert_eq!(gets(&reg), (1, 1));

    let (code, out, err) = bundle(&server, Some(&reg), &dir, &["--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.total_hits(), 4, "no request on the re-run: {:?}", server.hits.lock().unwrap());
    assert_eq!(gets(&reg), (1, 1), "no image pulled on the re-run");
    assert_eq!([identity(&dir.join(SOURCE_ARCHIVE)), identity(&dir.join(KUSTOMIZE_ARCHIVE))], archives_before);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["files_downloaded"], 0);
    assert_eq!(v["bytes_downloaded"], 0);
    assert!(v["seconds"].is_number());
    assert!(v["files"].as_array().unwrap().iter().all(|f| f["status"] == "already there"), "{v}");
    assert_eq!(manifest(&dir), first);

    // a damaged binary is fetched again, and a damaged archive copied again, and only they
    flip_a_byte(&dir.join("k3s/k3s"), 1000);
    let source_archive = std::fs::read(dir.join(SOURCE_ARCHIVE)).unwrap();
    flip_a_byte(&dir.join(SOURCE_ARCHIVE), 100);
    let (code, out, err) = bundle(&server, Some(&reg), &dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.hits(&k3s_path("k3s")), 2);
    assert_eq!(server.total_hits(), 5);
    assert_eq!(gets(&reg), (2, 1), "only the damaged archive is pulled again");
    assert!(out.lines().any(|l| l.starts_with("downloaded") && l.contains("k3s/k3s ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("already there") && l.contains("k3s/k3s-airgap-images")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("copied") && l.contains(SOURCE_ARCHIVE)), "{out}");
    assert!(out.lines().any(|l| l.starts_with("already there") && l.contains(KUSTOMIZE_ARCHIVE)), "{out}");
    assert_eq!(std::fs::read(dir.join("k3s/k3s")).unwrap(), r.binary);
    assert_eq!(std::fs::read(dir.join(SOURCE_ARCHIVE)).unwrap(), source_archive, "the same image, the same bytes");
    assert_eq!(manifest(&dir), first);
}

#[test]
fn an_image_missing_from_the_registry_is_refused_by_name_and_leaves_nothing() {
    let Some(reg) = Registry::start("an_image_missing_from_the_registry_is_refused_by_name_and_leaves_nothing") else {
        return;
    };
    let reg = reg.with_flux_images();
    let r = release();
    let server = Server::start(routes(&r));
    // a third image the registry does not hold, after the two it does (images are sorted)
    let install = format!("{INSTALL_YAML}      - image: ghcr.io/fluxcd/zz-missing-controller:v9.9.9\n");
    server.set(FLUX_PATH, Reply::Body(install.into_bytes()));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let (code, _, err) = bundle(&server, Some(&reg), &dir, &[]);
    assert_eq!(code, 1, "{err}");
    let mirror = reg.mirror();
    assert!(
        err.contains(&format!(
            "image archive failed: image ghcr.io/fluxcd/zz-missing-controller:v9.9.9 (pulled as docker://{mirror}/fluxcd/zz-missing-controller:v9.9.9): skopeo copy failed (exit 1)"
        )),
        "{err}"
    );
    assert!(err.contains("manifest unknown"), "skopeo's own words: {err}");
    let images: Vec<String> = std::fs::read_dir(dir.join("gitops/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!images.iter().any(|n| n.contains("zz-missing")), "{images:?}");
    assert!(part_files(&dir).is_empty(), "{:?}", part_files(&dir));
    assert!(!dir.join("manifest.json").exists());
    // the archives before it are whole and stay
    assert!(dir.join(SOURCE_ARCHIVE).is_file() && dir.join(KUSTOMIZE_ARCHIVE).is_file());
}

#[test]
fn without_skopeo_the_bundle_says_how_to_install_it_before_any_request() {
    let r = release();
    let server = Server::start(routes(&r));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let k3s_url = format!("{}/k3s", server.base());
    let flux_url = format!("{}/flux", server.base());
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out = groundwork()
        .env("PATH", &empty)
        .args(["bundle", "--k3s", VERSION, "--gitops", "flux", FLUX, "--out"])
        .arg(&dir)
        .args(["--k3s-url", &k3s_url, "--flux-url", &flux_url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("skopeo is not installed") && err.contains("apt-get install skopeo"), "{err}");
    assert_eq!(server.total_hits(), 0);
    assert!(!dir.join("manifest.json").exists());

    // without --gitops there are no images, and no need for skopeo
    let out = groundwork()
        .env("PATH", &empty)
        .args(["bundle", "--k3s", VERSION, "--out"])
        .arg(&dir)
        .args(["--k3s-url", &k3s_url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_registry_mirror_is_host_and_port_and_insecure_only_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let d = dir.to_str().unwrap();
    for bad in ["http://127.0.0.1:5000", "127.0.0.1:5000/v2", "h:0"] {
        let (code, _, err) =
            run(&["bundle", "--k3s", VERSION, "--gitops", "flux", FLUX, "--out", d, "--registry-mirror", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains(&format!("--registry-mirror `{bad}` is not HOST[:PORT]")), "{err}");
    }
    let (code, _, err) = run(&["bundle", "--k3s", VERSION, "--out", d, "--registry-mirror", "127.0.0.1:5000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no images to pull without --gitops"), "{err}");
    let (code, _, err) =
        run(&["bundle", "--k3s", VERSION, "--gitops", "flux", FLUX, "--out", d, "--registry-insecure"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--registry-mirror"), "{err}");
    assert!(!dir.exists());
}

// ------------------------------------------------------------------ 3, 4, 5: refused downloads

/// A run that failed on the image tarball left the earlier files, no trace of the tarball
/// and no manifest.
fn assert_failed_on_images(dir: &Path, r: &Release) {
    assert!(!dir.join("k3s/k3s-airgap-images-amd64.tar.zst").exists());
    assert!(part_files(dir).is_empty(), "{:?}", part_files(dir));
    assert!(!dir.join("manifest.json").exists());
    assert_eq!(std::fs::read(dir.join("k3s/k3s")).unwrap(), r.binary, "the good file before it stays");
}

#[test]
fn a_file_that_does_not_match_the_sha256_list_is_refused() {
    let r = release();
    let server = Server::start(routes(&r));
    let other = random_bytes(r.images.len(), 99);
    server.set(&k3s_path("k3s-airgap-images-amd64.tar.zst"), Reply::Body(other.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let (code, _, err) = bundle(&server, None, &dir, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("k3s/k3s-airgap-images-amd64.tar.zst"), "{err}");
    assert!(err.contains(&sha256(&other)) && err.contains(&sha256(&r.images)), "both sums: {err}");
    assert!(err.contains("k3s/sha256sum-amd64.txt says"), "{err}");
    assert_failed_on_images(&dir, &r);
}

#[test]
fn a_truncated_body_is_refused_with_how_much_came() {
    let r = release();
    let server = Server::start(routes(&r));
    let half = r.images[..r.images.len() / 2].to_vec();
    let claimed = r.images.len();
    server.set(&k3s_path("k3s-airgap-images-amd64.tar.zst"), Reply::Short { body: half.clone(), claimed });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let (code, _, err) = bundle(&server, None, &dir, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("k3s/k3s-airgap-images-amd64.tar.zst"), "{err}");
    assert!(err.contains(&format!("got {} of {claimed} bytes", half.len())), "{err}");
    assert_failed_on_images(&dir, &r);
}

#[test]
fn a_missing_file_is_refused_with_its_url_and_status() {
    let r = release();
    let server = Server::start(routes(&r));
    server.set(&k3s_path("k3s-airgap-images-amd64.tar.zst"), Reply::Status(404, "Not Found"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let (code, _, err) = bundle(&server, None, &dir, &[]);
    assert_ne!(code, 0);
    let url = format!("{}{}", server.base(), k3s_path("k3s-airgap-images-amd64.tar.zst"));
    assert!(err.contains(&format!("{url} returned 404 Not Found")), "{err}");
    assert_failed_on_images(&dir, &r);
    // the GitOps manifest, after the failure, was never asked for
    assert_eq!(server.hits(FLUX_PATH), 0);
}

#[test]
fn a_version_that_is_no_k3s_tag_is_refused_before_any_request() {
    let r = release();
    let server = Server::start(routes(&r));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let k3s_url = format!("{}/k3s", server.base());
    for bad in ["1.35.6+k3s1", "v1.35.6", "v1.35+k3s1", "v1.35.6-k3s1", "latest", "v1.35.6+k3s1/../x"] {
        let (code, _, err) = run(&["bundle", "--k3s", bad, "--out", dir.to_str().unwrap(), "--k3s-url", &k3s_url]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--k3s:") && err.contains("is not a k3s release (e.g. v1.35.6+k3s1)"), "{bad}: {err}");
    }
    let (code, _, err) = run(&[
        "bundle",
        "--k3s",
        VERSION,
        "--gitops",
        "flux",
        FLUX,
        "--out",
        dir.to_str().unwrap(),
        "--k3s-url",
        &k3s_url,
        "--flux-url",
        "ftp://example.org",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--flux-url `ftp://example.org` is not an http:// or https:// URL"), "{err}");
    let (code, _, err) = run(&["bundle", "--k3s", VERSION, "--gitops", "fluxcd", "2", "--out", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("`fluxcd` is not a GitOps engine"), "{err}");
    assert_eq!(server.total_hits(), 0);
    assert!(!dir.exists(), "nothing made either");
}

// ------------------------------------------------------------------ 7: --check

#[test]
fn check_names_a_file_changed_after_the_fact() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((dir, r)) = made_bundle(tmp.path(), "bundle") else { return };
    let d = dir.to_str().unwrap();
    let (code, out, err) = run(&["bundle", "--check", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("checked 6 files") && out.contains("every size and sha256 as the manifest says"), "{out}");
    println!("bundle --check of the test bundle: {}", out.lines().last().unwrap_or_default());

    let images = dir.join("k3s/k3s-airgap-images-amd64.tar.zst");
    flip_a_byte(&images, 4096);
    let mut flipped = r.images.clone();
    flipped[4096] ^= 0x01;
    let (code, out, _) = run(&["bundle", "--check", d]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.contains("k3s-airgap-images")).unwrap();
    assert_eq!(
        line,
        format!(
            "DAMAGED  k3s/k3s-airgap-images-amd64.tar.zst: sha256 is {}, the manifest says {}",
            sha256(&flipped),
            sha256(&r.images)
        )
    );
    assert!(out.lines().any(|l| l.starts_with("ok") && l.contains("k3s/k3s ")), "the others are fine: {out}");
    assert!(out.contains("1 problem"), "{out}");

    std::fs::remove_file(dir.join("gitops/flux-install.yaml")).unwrap();
    let (code, out, _) = run(&["bundle", "--check", d, "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let bad: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["problem"].is_null())
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(bad, ["k3s/k3s-airgap-images-amd64.tar.zst", "gitops/flux-install.yaml"]);

    // an image archive with a byte flipped: named with both sums, like every file
    let archive = dir.join(SOURCE_ARCHIVE);
    let whole = std::fs::read(&archive).unwrap();
    flip_a_byte(&archive, 2000);
    let (code, out, _) = run(&["bundle", "--check", d]);
    assert_eq!(code, 1, "{out}");
    let want = format!(
        "DAMAGED  {SOURCE_ARCHIVE}: sha256 is {}, the manifest says {}",
        sha256(&std::fs::read(&archive).unwrap()),
        sha256(&whole)
    );
    assert!(out.lines().any(|l| l == want), "{want}\n{out}");
    assert!(out.lines().any(|l| l.starts_with("ok") && l.contains(KUSTOMIZE_ARCHIVE)), "{out}");
    assert!(out.contains("3 problems"), "{out}");

    // a manifest that lists an image with no archive of it (as bundles before archives did)
    let mut m = manifest(&dir);
    let files = m["files"].as_array_mut().unwrap();
    files.retain(|f| f["path"] != KUSTOMIZE_ARCHIVE);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, out, _) = run(&["bundle", "--check", d]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("gitops.images lists {KUSTOMIZE_IMAGE}, but the manifest lists no archive of it")),
        "{out}"
    );

    let (code, _, err) = run(&["bundle", "--check", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("has no manifest.json"), "{err}");
}

// ------------------------------------------------------------------ 8: validate

/// wizard/examples/single-server.toml with `[k3s]` version and airgap-bundle set.
fn answer_file(tmp: &Path, version: &str, bundle: &Path) -> (PathBuf, usize) {
    let text = std::fs::read_to_string("wizard/examples/single-server.toml").unwrap();
    let text = text
        .replace("version = \"v1.35.6+k3s1\"", &format!("version = \"{version}\""))
        .replace("\"/srv/groundwork/bundles/k3s-v1.35.6\"", &format!("{:?}", bundle.to_str().unwrap()));
    let line = text.lines().position(|l| l.starts_with("airgap-bundle = ")).unwrap() + 1;
    let file = tmp.join("site.toml");
    std::fs::write(&file, text).unwrap();
    (file, line)
}

#[test]
fn validate_checks_the_bundle_the_answer_file_names() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((dir, _)) = made_bundle(tmp.path(), "bundle") else { return };

    // another k3s version than the bundle's: the problem points at the line of airgap-bundle
    let (file, line) = answer_file(tmp.path(), "v1.32.1+k3s1", &dir);
    let f = file.to_str().unwrap();
    let (code, _, err) = run(&["validate", f]);
    assert_eq!(code, 1, "{err}");
    let want = format!(
        "{f}:{line}:17: k3s.airgap-bundle: the bundle {} holds k3s {VERSION}, but [k3s] version is v1.32.1+k3s1",
        dir.display()
    );
    assert!(err.contains(&want), "{want}\n{err}");
    let (_, out, _) = run(&["validate", "--json", f]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["problems"][0]["field"], "k3s.airgap-bundle");
    assert_eq!(v[0]["problems"][0]["line"], line);

    // the same version: fine
    let (file, _) = answer_file(tmp.path(), VERSION, &dir);
    let (code, out, err) = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // the hand-off installs another engine than the bundle holds
    let text = std::fs::read_to_string(&file).unwrap();
    let argo = tmp.path().join("argo.toml");
    std::fs::write(&argo, text.replace("engine = \"flux\"", "engine = \"argocd\"")).unwrap();
    let (code, _, err) = run(&["validate", argo.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let want = format!(
        ":{line}:17: k3s.airgap-bundle: the bundle {} holds the flux install manifest, and the hand-off installs argocd",
        dir.display()
    );
    assert!(err.contains(&want) && err.contains("--gitops argocd VERSION"), "{want}\n{err}");

    // a file of the bundle with another size (sizes only: validate hashes nothing)
    let images = dir.join("k3s/k3s-airgap-images-amd64.tar.zst");
    let f = std::fs::OpenOptions::new().append(true).open(&images).unwrap();
    f.set_len(1000).unwrap();
    let (code, _, err) = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("k3s/k3s-airgap-images-amd64.tar.zst: is 1000 bytes, the manifest says 1048576"), "{err}");

    // a bundle that is not there yet is no problem for validate
    let (file, _) = answer_file(tmp.path(), VERSION, &tmp.path().join("not-made-yet"));
    let (code, out, err) = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // a directory without a manifest is
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (file, line) = answer_file(tmp.path(), VERSION, &empty);
    let (code, _, err) = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!(":{line}:17: k3s.airgap-bundle: {} has no manifest.json", empty.display())), "{err}");

    // a manifest that is garbage: named by validate (file:line:field) and by bundle --check
    for garbage in [&b"\x00\xffnot json"[..], b"{\"format\": 7}", b"{\"format\": 1, \"files\": 3}"] {
        std::fs::write(empty.join("manifest.json"), garbage).unwrap();
        let (code, _, err) = run(&["validate", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!(":{line}:17: k3s.airgap-bundle: ")) && err.contains("manifest.json"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let (code, _, err) = run(&["bundle", "--check", empty.to_str().unwrap()]);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("manifest.json") && !err.contains("panicked"), "{err}");
    }
}

// ------------------------------------------------------------------ 9: apply

/// A one-host k3s site on 127.0.0.1 at a port nothing listens on, and the shipped roles read
/// from their folder (`--playbooks`).
fn k3s_site(tmp: &Path, bundle: &Path) -> (PathBuf, PathBuf) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        r#"
[site]
name = "loop"
internal-domain = "loop.example.org"
external-domain = "example.org"
admin-email = "it@example.org"

[network]
subnet = "127.0.0.0/24"
gateway = "127.0.0.254"

[[host]]
name = "k1"
address = "127.0.0.1"
ssh-port = {port}
ssh-key = "/nonexistent/groundwork-test-key"
roles = ["k3s-server"]

[k3s]
version = "{VERSION}"
airgap-bundle = {:?}
"#,
        bundle.to_str().unwrap()
    );
    let file = tmp.join("loop.toml");
    std::fs::write(&file, text).unwrap();
    // The shipped roles, given as an override directory (the same roles, from the folder).
    (file, std::path::PathBuf::from("playbooks"))
}

#[test]
fn apply_refuses_a_damaged_bundle_before_it_connects() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((dir, r)) = made_bundle(tmp.path(), "bundle") else { return };
    let (file, roles) = k3s_site(tmp.path(), &dir);
    let state = tmp.path().join("state");
    let args = |cmd: &[&'static str]| {
        let mut a: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        a.extend(
            ["--playbooks", roles.to_str().unwrap(), file.to_str().unwrap(), "--state", state.to_str().unwrap()]
                .map(String::from),
        );
        a
    };
    let run_owned = |a: Vec<String>| run(&a.iter().map(String::as_str).collect::<Vec<_>>());

    flip_a_byte(&dir.join("k3s/k3s"), 10);
    let mut flipped = r.binary.clone();
    flipped[10] ^= 0x01;
    for cmd in [&["apply", "--yes"][..], &["plan", "--live"]] {
        let (code, _, err) = run_owned(args(cmd));
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(
            err.contains(&format!("the air-gap bundle {} (k3s.airgap-bundle) does not match", dir.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("k3s/k3s: sha256 is {}, the manifest says {}", sha256(&flipped), sha256(&r.binary))),
            "{err}"
        );
        assert!(err.contains("nothing was connected") && !err.contains("k1:"), "{err}");
        assert!(!state.exists(), "refused before the state directory is made");
    }

    // a file of another size: refused the same way, with both sums
    flip_a_byte(&dir.join("k3s/k3s"), 10);
    let images = dir.join("k3s/k3s-airgap-images-amd64.tar.zst");
    std::fs::write(&images, &r.images[..1000]).unwrap();
    let (code, _, err) = run_owned(args(&["apply", "--yes"]));
    assert_eq!(code, 2, "{err}");
    let want = format!(
        "k3s/k3s-airgap-images-amd64.tar.zst: is 1000 bytes, the manifest says {}; sha256 is {}, the manifest says {}",
        r.images.len(),
        sha256(&r.images[..1000]),
        sha256(&r.images)
    );
    assert!(err.contains(&want), "{want}\n{err}");
    assert!(!err.contains("k3s/k3s:"), "the binary is fine again: {err}");
    std::fs::write(&images, &r.images).unwrap();

    // a bundle that is not there is refused too (validate lets it pass: it may be made later)
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let nowhere = tmp.path().join("nowhere");
    let (file2, roles2) = k3s_site(&other, &nowhere);
    let (code, _, err) = run(&[
        "apply",
        "--yes",
        "--playbooks",
        roles2.to_str().unwrap(),
        file2.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("the air-gap bundle {} (k3s.airgap-bundle) does not exist", nowhere.display())),
        "{err}"
    );
    assert!(!state.exists());

    // the control: with the bundle repaired, the same apply goes on to connect (the cluster
    // preflight, the first thing that does) and fails there
    let (code, _, err) = run_owned(args(&["apply", "--yes"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cluster preflight") && err.contains("k1: ssh:"), "{err}");
    assert!(err.contains("files (1.3 MiB) match the manifest"), "{err}");
    assert!(!err.contains("does not match"), "{err}");
}

// ------------------------------------------------------------------ 10: [site] package-bundle

/// A bundle of Debian packages as `bundle --debs` leaves it, made up here: a `.deb` of made-up
/// bytes per package (validate reads sizes; apply hashes), the two indexes and the manifest.
fn debs_bundle(dir: &Path, packages: &[&str]) {
    std::fs::create_dir_all(dir.join("debs")).unwrap();
    let mut files = Vec::new();
    for (i, p) in packages.iter().chain(["Packages", "Release"].iter()).enumerate() {
        let bytes = random_bytes(100 + i, i as u64 + 7);
        let is_deb = !["Packages", "Release"].contains(p);
        let path = if is_deb { format!("debs/{p}_1.0_amd64.deb") } else { format!("debs/{p}") };
        std::fs::write(dir.join(&path), &bytes).unwrap();
        let mut f = serde_json::json!({
            "path": path, "what": "Debian package", "version": "1.0", "source": "http://deb.debian.org/x",
            "sha256": sha256(&bytes), "size": bytes.len(),
        });
        if is_deb {
            f["package"] = (*p).into();
        }
        files.push(f);
    }
    let m = serde_json::json!({
        "format": 1, "arch": "amd64", "k3s": null, "gitops": null,
        "debs": {"release": "bookworm", "roles": ["base", "dns"], "packages": packages},
        "files": files,
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

/// A one-host dns site on 127.0.0.1 at a port nothing listens on, with `package-bundle`.
fn dns_site(tmp: &Path, bundle: &Path) -> PathBuf {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[site]\nname = \"loop\"\ninternal-domain = \"loop.example.org\"\nexternal-domain = \"example.org\"\n\
         admin-email = \"it@example.org\"\npackage-bundle = {:?}\n\n\
         [network]\nsubnet = \"127.0.0.0/24\"\ngateway = \"127.0.0.254\"\n\n\
         [[host]]\nname = \"n1\"\naddress = \"127.0.0.1\"\nssh-port = {port}\nssh-key = \"/nonexistent/groundwork-test-key\"\nroles = [\"dns\"]\n",
        bundle.to_str().unwrap()
    );
    let file = tmp.join("dns.toml");
    std::fs::write(&file, text).unwrap();
    file
}

const BASE_AND_DNS: &[&str] =
    &["ca-certificates", "chrony", "tzdata", "openssh-server", "bind9", "bind9-utils", "bind9-dnsutils", "libc6"];

#[test]
fn validate_and_apply_refuse_a_package_bundle_without_a_package_a_role_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("debs-bundle");
    let without: Vec<&str> = BASE_AND_DNS.iter().copied().filter(|p| *p != "bind9" && *p != "chrony").collect();
    debs_bundle(&dir, &without);
    let file = dns_site(tmp.path(), &dir);
    let f = file.to_str().unwrap();
    let (code, _, err) = run(&["validate", f]);
    assert_eq!(code, 1, "{err}");
    let want = format!(
        "{f}:6:18: site.package-bundle: the bundle {} has no package chrony (base), bind9 (dns), which the site's roles need",
        dir.display()
    );
    assert!(err.contains(&want), "{want}\n{err}");
    let (_, out, _) = run(&["validate", "--json", f]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["problems"][0]["field"], "site.package-bundle");
    assert_eq!(v[0]["problems"][0]["line"], 6);

    // apply and plan --live refuse it before they connect (or make the state directory)
    let state = tmp.path().join("state");
    for cmd in [&["apply", "--yes"][..], &["plan", "--live"]] {
        let mut args = cmd.to_vec();
        args.extend(["--playbooks", "playbooks", f, "--state", state.to_str().unwrap()]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(err.contains("(site.package-bundle) cannot be used"), "{err}");
        assert!(err.contains("it has no package chrony (base), bind9 (dns), which the roles of the run need"), "{err}");
        assert!(err.contains("nothing was connected") && !state.exists(), "{err}");
    }

    // With every package: validate is content; a file of another size is named (sizes only)
    std::fs::remove_dir_all(&dir).unwrap();
    debs_bundle(&dir, BASE_AND_DNS);
    let (code, out, err) = run(&["validate", f]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, plan, err) = run(&["plan", f]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains(&format!("packages: from the package bundle {} only", dir.display())), "{plan}");
    let deb = dir.join("debs/bind9_1.0_amd64.deb");
    std::fs::write(&deb, b"short").unwrap();
    let (code, _, err) = run(&["validate", f]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":6:18: site.package-bundle: ") && err.contains("debs/bind9_1.0_amd64.deb: is 5 bytes"),
        "{err}"
    );
    // ...and apply names its sum, before it connects
    let (code, _, err) = run(&["apply", "--yes", "--playbooks", "playbooks", f, "--state", state.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("debs/bind9_1.0_amd64.deb: is 5 bytes") && err.contains("sha256 is"), "{err}");
    assert!(!state.exists());

    // A k3s bundle is no package bundle.
    let Some((k3s_dir, _)) = made_bundle(tmp.path(), "bundle") else { return };
    let file = dns_site(tmp.path(), &k3s_dir);
    let (code, _, err) = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":6:18: site.package-bundle: the bundle") && err.contains("holds no Debian packages"),
        "{err}"
    );

    // The control: a complete, intact bundle gets apply as far as connecting.
    debs_bundle(&dir, BASE_AND_DNS);
    let file = dns_site(tmp.path(), &dir);
    let (code, _, err) = run(&[
        "apply",
        "--yes",
        "--playbooks",
        "playbooks",
        file.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("files (") && err.contains("hosts install from it only"), "{err}");
    assert!(err.contains("n1"), "it went on to the host: {err}");
}

#[test]
fn bundle_needs_k3s_or_debs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (code, _, err) = run(&["bundle", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--k3s"), "{err}");
    // --debs reads the answer file as validate does: its problems are named, nothing is made
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[site]\nname = \"x\"\n").unwrap();
    let (code, _, err) = run(&["bundle", "--debs", bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.toml") && !out.exists(), "{err}");
}

/// One directory named as both bundles is hashed once: the package check takes the air-gap
/// check's result for the same directory (seen here: a file changed after that hashing goes
/// unnoticed by it), and hashes a directory of its own.
#[test]
fn a_directory_that_is_both_bundles_is_hashed_once() {
    use groundwork::bundle::check::{Depth, check_dir, verify_packages_for_run};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("both");
    debs_bundle(&dir, BASE_AND_DNS);
    let file = dns_site(tmp.path(), &dir);
    let text = std::fs::read_to_string(&file).unwrap();
    let a = groundwork::answers::load_str(file.to_str().unwrap(), &text).unwrap().answers;
    let catalog = groundwork::playbook::catalog::Catalog::load(None).unwrap();
    let hashed = check_dir(&dir, Depth::Sha256).unwrap();
    assert!(hashed.ok());
    // Changed after it was hashed, keeping its size.
    let deb = dir.join("debs/bind9_1.0_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&deb, bytes).unwrap();
    let reused = verify_packages_for_run(&a, &catalog, &[], Some(&hashed)).unwrap().unwrap();
    assert_eq!(reused.0.seconds, hashed.seconds, "hashed again");
    let err = verify_packages_for_run(&a, &catalog, &[], None).unwrap_err();
    assert!(err.contains("debs/bind9_1.0_amd64.deb"), "{err}");
    // Another directory's result is not taken for this one.
    let other = tmp.path().join("other");
    debs_bundle(&other, BASE_AND_DNS);
    let other_hashed = check_dir(&other, Depth::Sha256).unwrap();
    let err = verify_packages_for_run(&a, &catalog, &[], Some(&other_hashed)).unwrap_err();
    assert!(err.contains("debs/bind9_1.0_amd64.deb"), "{err}");
}
