//! A TEST DOUBLE of the Proxmox VE API. It is not Proxmox: it was written by hand from the
//! public API documentation (the API viewer's parameter lists and pveum's API-token chapter)
//! for the few endpoints groundwork calls, and from no schema file (Proxmox's apidata.js is
//! AGPL and is not in this repository).
//!
//! HTTPS on 127.0.0.1 with a self-signed certificate made when it starts (openssl CLI); it
//! checks the `Authorization: PVEAPIToken=ID=SECRET` header (401 otherwise), each request's
//! required parameters, their formats and unknown parameters (400 with `errors`, as Proxmox
//! answers "Parameter verification failed."), that UPIDs arrive percent-encoded in the path,
//! answers `{"data": ...}`, and runs tasks that stop after a few polls. It records every
//! request, and can be told to fail: a bad token (401), a refused call (403 with Proxmox's
//! "Permission check failed" wording), 500 on a path, missing privileges, a task that fails,
//! a task that never ends. It stops and destroys guests (`status/stop`, `DELETE` with
//! `purge`) only when asked, never a template, never a running guest. `on_start` is called when a guest starts (the end-to-end test boots
//! a real lab host there).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const NODE: &str = "pve1";
pub const TOKEN_ID: &str = "groundwork@pve!bootstrap";
pub const SECRET: &str = "8f2c1d3e-5b7a-4c9e-a1d2-3e4f5a6b7c8d";
pub const CT_TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
pub const VM_TEMPLATE: &str = "debian-12-cloudinit";

/// Every privilege the double knows (what `/access/permissions` grants unless denied).
pub const PRIVS: &[&str] = &[
    "Sys.Audit",
    "Datastore.Audit",
    "Datastore.AllocateSpace",
    "VM.Audit",
    "VM.Allocate",
    "VM.Clone",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Disk",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
    "VM.PowerMgmt",
    "SDN.Use",
];

/// A request as the double received it (path decoded, parameters of the query or form).
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Guest {
    pub vmid: u64,
    pub name: String,
    pub kind: &'static str, // lxc | qemu
    pub status: String,
    pub template: bool,
    pub config: BTreeMap<String, String>,
}

/// Where a start's hook leaves its result.
type HookSlot = Arc<Mutex<Option<Result<(), String>>>>;

struct Task {
    node: String,
    kind: String,
    polls_left: u32,
    exit: String,
    hang: bool,
    /// A start's hook runs in a thread; the task stops when it is done.
    waiting: Option<HookSlot>,
    log: Vec<String>,
}

pub type OnStart = Arc<dyn Fn(&str, &str) -> Result<(), String> + Send + Sync>;

/// What the double holds and how it should misbehave; tests change it through [`Pve::with`].
pub struct State {
    pub version: String,
    pub node_status: String,
    pub storage_content: String,
    pub storage_active: bool,
    pub vztmpl: Vec<String>,
    pub guests: Vec<Guest>,
    pub requests: Vec<Req>,
    /// (path, privilege) that `/access/permissions` leaves out.
    pub deny: Vec<(String, String)>,
    /// Calls `METHOD path-prefix` answered 403 (Proxmox's wording).
    pub forbid: Vec<(String, String)>,
    /// Paths (prefix) answered 500.
    pub fail_500: Vec<String>,
    /// Task types (`vzcreate`, `vzstart`, `qmclone`...) that fail / never stop.
    pub fail_task: Vec<String>,
    pub hang_task: Vec<String>,
    pub polls: u32,
    /// `PUT .../resize` answers at once (`null`, as before Proxmox VE 8) instead of a task.
    pub resize_sync: bool,
    /// VMIDs another creator takes just before groundwork's create of that id arrives (the
    /// race `nextid` leaves open): the create is refused with "already exists".
    pub taken_meanwhile: Vec<u64>,
    pub on_start: Option<OnStart>,
    tasks: BTreeMap<String, Task>,
    pid: u32,
}

pub struct Pve {
    pub url: String,
    pub fingerprint: String,
    pub state: Arc<Mutex<State>>,
    _dir: tempfile::TempDir,
}

impl Pve {
    /// Starts the double (its own thread and runtime) with a node, an lvm-thin storage
    /// `local-lvm`, the container template and a VM template (VMID 9000).
    pub fn start() -> Pve {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let st = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=pve1.test-double", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(st.status.success(), "openssl: {}", String::from_utf8_lossy(&st.stderr));
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
        let pkey = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let fingerprint = groundwork::proxmox::client::fingerprint(&der);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], pkey)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut tpl_cfg = BTreeMap::new();
        tpl_cfg.insert("name".into(), VM_TEMPLATE.into());
        tpl_cfg.insert("cores".into(), "2".into());
        tpl_cfg.insert("memory".into(), "2048".into());
        tpl_cfg.insert("scsi0".into(), "local-lvm:base-9000-disk-0,size=2G".into());
        tpl_cfg.insert("ide2".into(), "local-lvm:vm-9000-cloudinit,media=cdrom".into());
        tpl_cfg.insert("boot".into(), "order=scsi0;ide2;net0".into());
        let state = Arc::new(Mutex::new(State {
            version: "8.2.4".into(),
            node_status: "online".into(),
            storage_content: "rootdir,images".into(),
            storage_active: true,
            vztmpl: vec![CT_TEMPLATE.into()],
            guests: vec![Guest {
                vmid: 9000,
                name: VM_TEMPLATE.into(),
                kind: "qemu",
                status: "stopped".into(),
                template: true,
                config: tpl_cfg,
            }],
            requests: Vec::new(),
            deny: Vec::new(),
            forbid: Vec::new(),
            fail_500: Vec::new(),
            fail_task: Vec::new(),
            hang_task: Vec::new(),
            polls: 2,
            resize_sync: false,
            taken_meanwhile: Vec::new(),
            on_start: None,
            tasks: BTreeMap::new(),
            pid: 0x1a2b3,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (acceptor, st) = (acceptor.clone(), st.clone());
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = serve(tls, st).await;
                        }
                    });
                }
            });
        });
        Pve { url: format!("https://127.0.0.1:{port}/api2/json"), fingerprint, state, _dir: dir }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Req> {
        self.with(|s| s.requests.clone())
    }

    /// The requests that change something (POST, PUT, DELETE).
    pub fn writes(&self) -> Vec<Req> {
        self.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    /// The `[proxmox]` section for this double (secret in the environment variable `env`).
    pub fn section(&self, env: &str) -> String {
        format!(
            "[proxmox]\napi-url = \"{}\"\ntoken-id = \"{TOKEN_ID}\"\ntoken-secret-env = \"{env}\"\nfingerprint = \"{}\"\nnode = \"{NODE}\"\nstorage = \"local-lvm\"\ntemplate = \"{VM_TEMPLATE}\"\nct-template = \"{CT_TEMPLATE}\"\nbridge = \"vmbr0\"\n",
            self.url, self.fingerprint
        )
    }
}

fn upid(node: &str, pid: u32, kind: &str, id: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!("UPID:{node}:{pid:08X}:{:08X}:{t:08X}:{kind}:{id}:{TOKEN_ID}:", pid * 7)
}

/// Percent-decoding, as Proxmox reads paths and the `sshkeys` value.
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str) -> BTreeMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

type Answer = (u16, String, Value);

fn ok(v: Value) -> Answer {
    (200, "OK".into(), json!({ "data": v }))
}
fn err(code: u16, reason: &str) -> Answer {
    (code, reason.into(), json!({ "data": null }))
}
fn bad(errors: Vec<(&str, String)>) -> Answer {
    let e: serde_json::Map<String, Value> = errors.into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    (400, "Parameter verification failed.".into(), json!({ "data": null, "errors": e }))
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    st: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
    let headers: BTreeMap<String, String> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))).collect();
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let (raw_path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut params = parse_form(query);
    params.extend(parse_form(&body));
    let (code, reason, v) = handle(&st, &method, raw_path, &headers, params);
    let text = v.to_string();
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// The formats of the parameters the double checks (from the API documentation).
fn tag_ok(t: &str) -> bool {
    let mut c = t.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || "_-+.".contains(x))
        && t == t.to_lowercase()
}
fn int_ok(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())
}
fn cidr_ok(v: &str) -> bool {
    v.split_once('/')
        .is_some_and(|(a, p)| a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32))
}
fn disk_key_ok(v: &str) -> bool {
    let n = |p: &str, max: u32| {
        v.strip_prefix(p)
            .is_some_and(|n| int_ok(n) && n.parse::<u32>().is_ok_and(|n| n <= max) && (n == "0" || !n.starts_with('0')))
    };
    n("ide", 3) || n("sata", 5) || n("scsi", 30) || n("virtio", 15) || v == "efidisk0" || v == "tpmstate0"
}
/// A container's volume keys (`rootfs`, `mp0`..`mp255`), as the lxc resize call's enum has them.
fn ct_disk_key_ok(v: &str) -> bool {
    v == "rootfs"
        || v.strip_prefix("mp")
            .is_some_and(|n| int_ok(n) && n.parse::<u32>().is_ok_and(|n| n <= 255) && (n == "0" || !n.starts_with('0')))
}
fn size_ok(v: &str) -> bool {
    let v = v.strip_prefix('+').unwrap_or(v);
    let v = v.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(v);
    let (int, frac) = v.split_once('.').unwrap_or((v, "0"));
    int_ok(int) && int_ok(frac)
}
/// A size as the config writes it, in bytes.
fn bytes(v: &str) -> f64 {
    let (num, shift) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 10),
        Some('M') => (&v[..v.len() - 1], 20),
        Some('G') => (&v[..v.len() - 1], 30),
        Some('T') => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    num.parse::<f64>().unwrap_or(0.0) * (1u64 << shift) as f64
}

/// `key=value,key=value` property strings: the keys, each value.
fn props(v: &str) -> BTreeMap<String, String> {
    v.split(',').filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// Checks `params` against the allowed ones, the required ones and each format.
fn verify(params: &BTreeMap<String, String>, allowed: &[&str], required: &[&str]) -> Vec<(&'static str, String)> {
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let mut leak = |k: &str, m: String| errors.push((Box::leak(k.to_string().into_boxed_str()), m));
    for r in required {
        if !params.contains_key(*r) {
            leak(r, "property is missing and it is not optional".into());
        }
    }
    for (k, v) in params {
        if !allowed.contains(&k.as_str()) {
            leak(k, "property is not defined in schema and the schema does not allow additional properties".into());
            continue;
        }
        let good = match k.as_str() {
            "vmid" | "newid" | "cores" | "memory" | "swap" => int_ok(v),
            "unprivileged"
            | "onboot"
            | "full"
            | "start"
            | "agent"
            | "purge"
            | "destroy-unreferenced-disks"
            | "force"
            | "skiplock" => v == "0" || v == "1",
            "hostname" | "name" => {
                !v.is_empty() && v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            }
            "tags" => v.split(';').all(tag_ok),
            "ostemplate" => v.contains(":vztmpl/"),
            "rootfs" => v.split_once(':').is_some_and(|(s, size)| !s.is_empty() && int_ok(size)),
            "net0" if params.contains_key("ostemplate") || params.contains_key("hostname") => {
                let p = props(v);
                p.contains_key("name")
                    && p.contains_key("bridge")
                    && p.get("ip").is_some_and(|ip| cidr_ok(ip))
                    && p.get("gw").is_none_or(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
            }
            "net0" => v.starts_with("virtio") && v.contains("bridge="),
            "ipconfig0" => {
                let p = props(v);
                p.get("ip").is_some_and(|ip| cidr_ok(ip))
                    && p.get("gw").is_none_or(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
            }
            "ssh-public-keys" => v.lines().all(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-")),
            // cloud-init keys: URL-encoded inside the value.
            "sshkeys" => v.starts_with("ssh-") && !v.contains(' ') && pct_decode(v).starts_with("ssh-"),
            "nameserver" => v.split([' ', ',']).all(|a| a.parse::<std::net::IpAddr>().is_ok()),
            "searchdomain" => v.contains('.'),
            "features" => v.split(',').all(|f| ["nesting=1", "keyctl=1"].contains(&f)),
            "type" => ["vm", "storage", "node", "sdn"].contains(&v.as_str()),
            // The disk keys a resize takes (ide0-3, sata0-5, scsi0-30, virtio0-15, efidisk0, tpmstate0).
            "disk" => disk_key_ok(v) || ct_disk_key_ok(v),
            // `\+?\d+(\.\d+)?[KMGT]?`
            "size" => size_ok(v),
            "content" => ["vztmpl", "iso", "images", "rootdir", "backup", "snippets"].contains(&v.as_str()),
            _ => true,
        };
        if !good {
            leak(k, format!("value '{v}' does not have the format of {k}"));
        }
    }
    errors
}

fn handle(
    st: &Arc<Mutex<State>>,
    method: &str,
    raw_path: &str,
    headers: &BTreeMap<String, String>,
    params: BTreeMap<String, String>,
) -> Answer {
    let mut s = st.lock().unwrap();
    let Some(rest) = raw_path.strip_prefix("/api2/json") else { return err(404, "Not Found") };
    let raw: Vec<&str> = rest.split('/').filter(|x| !x.is_empty()).collect();
    let path: Vec<String> = raw.iter().map(|x| pct_decode(x)).collect();
    s.requests.push(Req { method: method.into(), path: format!("/{}", path.join("/")), params: params.clone() });
    if headers.get("authorization").map(String::as_str) != Some(&format!("PVEAPIToken={TOKEN_ID}={SECRET}")) {
        return err(401, "authentication failure");
    }
    let full = format!("/{}", path.join("/"));
    if s.fail_500.iter().any(|p| full.starts_with(p.as_str())) {
        return err(500, "internal error (told to fail by the test)");
    }
    if let Some((_, p)) = s.forbid.iter().find(|(m, p)| m == method && full.starts_with(p.as_str())) {
        return err(403, &format!("Permission check failed ({p}, VM.Allocate)"));
    }
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let st_path = |s: &State, node: &str| -> Option<Answer> {
        if node != NODE {
            return Some(err(595, &format!("no such cluster node '{node}'")));
        }
        if s.node_status != "online" {
            return Some(err(595, &format!("node '{node}' offline")));
        }
        None
    };
    match (method, p.as_slice()) {
        ("GET", ["version"]) => ok(json!({"version": s.version, "release": "8.2", "repoid": "double"})),
        ("GET", ["nodes"]) => ok(json!([{"node": NODE, "status": s.node_status, "ssl_fingerprint": "", "maxcpu": 8}])),
        ("GET", ["nodes", node, "storage", storage, "status"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            if *storage != "local-lvm" && *storage != "local" {
                return err(500, &format!("storage '{storage}' does not exist"));
            }
            let content = if *storage == "local" { "vztmpl,iso,backup".to_string() } else { s.storage_content.clone() };
            ok(
                json!({"active": u8::from(s.storage_active), "enabled": 1, "content": content, "type": "lvmthin", "shared": 0}),
            )
        }
        ("GET", ["nodes", node, "storage", storage, "content"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let errs = verify(&params, &["content"], &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            if *storage != "local" && *storage != "local-lvm" {
                return err(500, &format!("storage '{storage}' does not exist"));
            }
            let prefix = format!("{storage}:");
            let items: Vec<Value> = s
                .vztmpl
                .iter()
                .filter(|v| v.starts_with(&prefix))
                .map(|v| json!({"volid": v, "format": "tzst", "content": "vztmpl", "size": 123456}))
                .collect();
            ok(json!(items))
        }
        ("GET", ["cluster", "resources"]) => {
            let errs = verify(&params, &["type"], &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let items: Vec<Value> = s
                .guests
                .iter()
                .map(|g| {
                    json!({"vmid": g.vmid, "id": format!("{}/{}", g.kind, g.vmid), "name": g.name, "node": NODE,
                           "type": g.kind, "status": g.status, "template": u8::from(g.template),
                           "tags": g.config.get("tags").cloned().unwrap_or_default()})
                })
                .collect();
            ok(json!(items))
        }
        ("GET", ["cluster", "nextid"]) => {
            let next = s.guests.iter().filter(|g| g.vmid < 9000).map(|g| g.vmid + 1).max().unwrap_or(100).max(100);
            ok(json!(next.to_string()))
        }
        ("GET", ["access", "permissions"]) => {
            let errs = verify(&params, &["path", "userid"], &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let path = params.get("path").cloned().unwrap_or_else(|| "/".into());
            let granted: serde_json::Map<String, Value> = PRIVS
                .iter()
                .filter(|p| !s.deny.iter().any(|(dp, d)| path.starts_with(dp.as_str()) && d == *p))
                .map(|p| (p.to_string(), json!(1)))
                .collect();
            ok(json!({ path: granted }))
        }
        ("POST", ["nodes", node, "lxc"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let allowed = [
                "vmid",
                "ostemplate",
                "hostname",
                "cores",
                "memory",
                "swap",
                "rootfs",
                "net0",
                "ssh-public-keys",
                "nameserver",
                "searchdomain",
                "tags",
                "unprivileged",
                "features",
                "onboot",
                "start",
                "description",
                "storage",
                "pool",
            ];
            let errs = verify(&params, &allowed, &["vmid", "ostemplate"]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let vmid: u64 = params["vmid"].parse().unwrap();
            take_meanwhile(&mut s, vmid);
            if s.guests.iter().any(|g| g.vmid == vmid) {
                return err(500, &format!("CT {vmid} already exists on node '{node}'"));
            }
            if !s.vztmpl.contains(&params["ostemplate"]) {
                return err(500, &format!("volume '{}' does not exist", params["ostemplate"]));
            }
            let mut config = params.clone();
            config.remove("vmid");
            config.insert("cores".into(), params.get("cores").cloned().unwrap_or("1".into()));
            config.insert("memory".into(), params.get("memory").cloned().unwrap_or("512".into()));
            let name = params.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}"));
            s.guests.push(Guest { vmid, name, kind: "lxc", status: "stopped".into(), template: false, config });
            ok(json!(new_task(&mut s, node, "vzcreate", &vmid.to_string(), None)))
        }
        ("POST", ["nodes", node, "qemu", id, "clone"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let errs =
                verify(&params, &["newid", "name", "full", "storage", "target", "pool", "description"], &["newid"]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let Some(tpl) = s.guests.iter().find(|g| g.vmid.to_string() == *id && g.kind == "qemu").cloned() else {
                return err(500, &format!("Configuration file 'nodes/{node}/qemu-server/{id}.conf' does not exist"));
            };
            let vmid: u64 = params["newid"].parse().unwrap();
            take_meanwhile(&mut s, vmid);
            if s.guests.iter().any(|g| g.vmid == vmid) {
                return err(500, &format!("VM {vmid} already exists on node '{node}'"));
            }
            let mut config = tpl.config.clone();
            let name = params.get("name").cloned().unwrap_or_else(|| format!("Copy-of-VM-{}", tpl.name));
            config.insert("name".into(), name.clone());
            for v in config.values_mut() {
                *v = v.replace(&format!("base-{id}-disk-"), &format!("vm-{vmid}-disk-"));
                *v = v.replace(&format!("vm-{id}-cloudinit"), &format!("vm-{vmid}-cloudinit"));
            }
            s.guests.push(Guest { vmid, name, kind: "qemu", status: "stopped".into(), template: false, config });
            ok(json!(new_task(&mut s, node, "qmclone", id, None)))
        }
        (m @ ("POST" | "PUT"), ["nodes", node, kind @ ("lxc" | "qemu"), id, "config"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let allowed: &[&str] = if *kind == "lxc" {
                &[
                    "cores",
                    "memory",
                    "tags",
                    "hostname",
                    "nameserver",
                    "searchdomain",
                    "description",
                    "net0",
                    "onboot",
                    "digest",
                    "delete",
                ]
            } else {
                &[
                    "cores",
                    "memory",
                    "tags",
                    "name",
                    "net0",
                    "ipconfig0",
                    "ciuser",
                    "sshkeys",
                    "nameserver",
                    "searchdomain",
                    "description",
                    "onboot",
                    "agent",
                    "digest",
                    "delete",
                ]
            };
            let errs = verify(&params, allowed, &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let Some(g) = s.guests.iter_mut().find(|g| g.vmid.to_string() == *id && g.kind == *kind) else {
                return err(500, &format!("Configuration file for {id} does not exist"));
            };
            g.config.extend(params.clone());
            if m == "PUT" || *kind == "lxc" {
                ok(Value::Null)
            } else {
                ok(json!(new_task(&mut s, node, "qmconfig", id, None)))
            }
        }
        ("PUT", ["nodes", node, kind @ ("lxc" | "qemu"), id, "resize"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let mut errs = verify(&params, &["disk", "size", "digest", "skiplock"], &["disk", "size"]);
            let fits = if *kind == "lxc" { ct_disk_key_ok } else { disk_key_ok };
            if params.get("disk").is_some_and(|d| !fits(d)) {
                errs.push(("disk", format!("value '{}' does not have the format of disk", params["disk"])));
            }
            if !errs.is_empty() {
                return bad(errs);
            }
            let sync = s.resize_sync;
            let Some(g) = s.guests.iter_mut().find(|g| g.vmid.to_string() == *id && g.kind == *kind) else {
                return err(500, &format!("Configuration file for {id} does not exist"));
            };
            let (key, size) = (&params["disk"], &params["size"]);
            let Some(drive) = g.config.get(key).cloned() else {
                return err(500, &format!("disk '{key}' does not exist"));
            };
            let mut parts: Vec<String> = drive.split(',').map(str::to_string).collect();
            let old = parts.iter().find_map(|p| p.strip_prefix("size=")).map_or(0.0, bytes);
            let new = match size.strip_prefix('+') {
                Some(more) => old + bytes(more),
                None => bytes(size),
            };
            if new < old {
                return err(500, "shrinking disks is not supported");
            }
            parts.retain(|p| !p.starts_with("size="));
            parts.push(format!("size={}G", (new / f64::from(1u32 << 30)).round()));
            g.config.insert(key.clone(), parts.join(","));
            let task = if *kind == "lxc" { "resize" } else { "qmresize" };
            if sync { ok(Value::Null) } else { ok(json!(new_task(&mut s, node, task, id, None))) }
        }
        ("GET", ["nodes", _node, kind @ ("lxc" | "qemu"), id, "config"]) => {
            match s.guests.iter().find(|g| g.vmid.to_string() == *id && g.kind == *kind) {
                Some(g) => {
                    let mut m: serde_json::Map<String, Value> =
                        g.config.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    for k in ["cores", "memory"] {
                        if let Some(n) = g.config.get(k).and_then(|v| v.parse::<u64>().ok()) {
                            m.insert(k.into(), json!(n));
                        }
                    }
                    ok(Value::Object(m))
                }
                None => err(500, &format!("Configuration file for {id} does not exist")),
            }
        }
        ("POST", ["nodes", node, kind @ ("lxc" | "qemu"), id, "status", "start"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let errs = verify(&params, &[], &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let Some(g) = s.guests.iter().find(|g| g.vmid.to_string() == *id && g.kind == *kind).cloned() else {
                return err(500, &format!("Configuration file for {id} does not exist"));
            };
            let ip = g
                .config
                .get(if *kind == "lxc" { "net0" } else { "ipconfig0" })
                .and_then(|n| props(n).get("ip").cloned())
                .unwrap_or_default();
            let ip = ip.split('/').next().unwrap_or("").to_string();
            let waiting = s.on_start.clone().map(|hook| {
                let slot = Arc::new(Mutex::new(None));
                let (slot2, name) = (slot.clone(), g.name.clone());
                std::thread::spawn(move || {
                    let r = hook(&name, &ip);
                    *slot2.lock().unwrap() = Some(r);
                });
                slot
            });
            let t = if *kind == "lxc" { "vzstart" } else { "qmstart" };
            let u = new_task(&mut s, node, t, id, waiting);
            ok(json!(u))
        }
        ("POST", ["nodes", node, kind @ ("lxc" | "qemu"), id, "status", "stop"]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let errs = verify(&params, &["skiplock", "timeout", "overrule-shutdown"], &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let Some(g) = s.guests.iter().find(|g| g.vmid.to_string() == *id && g.kind == *kind) else {
                return err(500, &format!("Configuration file for {id} does not exist"));
            };
            if g.status != "running" {
                let what = if *kind == "lxc" { "CT" } else { "VM" };
                return err(500, &format!("{what} {id} not running"));
            }
            let t = if *kind == "lxc" { "vzstop" } else { "qmstop" };
            ok(json!(new_task(&mut s, node, t, id, None)))
        }
        ("DELETE", ["nodes", node, kind @ ("lxc" | "qemu"), id]) => {
            if let Some(e) = st_path(&s, node) {
                return e;
            }
            let allowed: &[&str] = if *kind == "lxc" {
                &["purge", "destroy-unreferenced-disks", "force"]
            } else {
                &["purge", "destroy-unreferenced-disks", "skiplock"]
            };
            let errs = verify(&params, allowed, &[]);
            if !errs.is_empty() {
                return bad(errs);
            }
            let Some(i) = s.guests.iter().position(|g| g.vmid.to_string() == *id && g.kind == *kind) else {
                return err(500, &format!("Configuration file for {id} does not exist"));
            };
            let what = if *kind == "lxc" { "CT" } else { "VM" };
            if s.guests[i].template {
                return err(500, &format!("{what} {id} is a template (the test double never destroys it)"));
            }
            if s.guests[i].status == "running" {
                return err(500, &format!("{what} {id} is running - destroy failed"));
            }
            s.guests.remove(i);
            let t = if *kind == "lxc" { "vzdestroy" } else { "qmdestroy" };
            ok(json!(new_task(&mut s, node, t, id, None)))
        }
        ("GET", ["nodes", node, "tasks", upid, what @ ("status" | "log")]) => {
            // The UPID must come percent-encoded: `:` `@` `!` are not path characters here.
            let raw_upid = raw[3];
            if raw_upid.contains(':') || raw_upid.contains('!') || raw_upid.contains('@') {
                return bad(vec![("upid", format!("value '{raw_upid}' is not percent-encoded"))]);
            }
            if !upid.starts_with("UPID:") || upid.split(':').count() != 9 {
                return bad(vec![("upid", "value does not match the regex pattern".into())]);
            }
            if *what == "log" {
                let errs = verify(&params, &["start", "limit"], &[]);
                if !errs.is_empty() {
                    return bad(errs);
                }
            }
            let Some(t) = s.tasks.get_mut(*upid) else { return err(500, "no such task") };
            if t.node != *node {
                return err(500, "no such task");
            }
            if *what == "log" {
                let lines: Vec<Value> = t.log.iter().enumerate().map(|(i, l)| json!({"n": i + 1, "t": l})).collect();
                return ok(json!(lines));
            }
            let hook_done = match &t.waiting {
                None => Some(Ok(())),
                Some(slot) => slot.lock().unwrap().clone(),
            };
            if !t.hang && t.polls_left > 0 {
                t.polls_left -= 1;
            }
            let done = !t.hang && t.polls_left == 0 && hook_done.is_some();
            if !done {
                return ok(json!({"status": "running", "type": t.kind, "node": t.node}));
            }
            if let Some(Err(e)) = hook_done {
                t.exit = format!("startup for container failed: {e}");
                t.log.push(e);
            }
            let exit = t.exit.clone();
            let kind = t.kind.clone();
            if exit == "OK" && (kind == "vzstart" || kind == "qmstart") {
                let id = upid.split(':').nth(6).unwrap_or("").to_string();
                if let Some(g) = s.guests.iter_mut().find(|g| g.vmid.to_string() == id) {
                    g.status = "running".into();
                }
            }
            if exit == "OK" && (kind == "vzstop" || kind == "qmstop") {
                let id = upid.split(':').nth(6).unwrap_or("").to_string();
                if let Some(g) = s.guests.iter_mut().find(|g| g.vmid.to_string() == id) {
                    g.status = "stopped".into();
                }
            }
            ok(json!({"status": "stopped", "exitstatus": exit, "type": kind, "node": NODE}))
        }
        _ => err(501, &format!("Method '{method} {full}' not implemented")),
    }
}

/// Another creator's container at `vmid`, if a test said one would appear there.
fn take_meanwhile(s: &mut State, vmid: u64) {
    if let Some(i) = s.taken_meanwhile.iter().position(|v| *v == vmid) {
        s.taken_meanwhile.remove(i);
        let config = BTreeMap::from([("hostname".to_string(), "someone-else".to_string())]);
        s.guests.push(Guest {
            vmid,
            name: "someone-else".into(),
            kind: "lxc",
            status: "stopped".into(),
            template: false,
            config,
        });
    }
}

fn new_task(s: &mut State, node: &str, kind: &str, id: &str, waiting: Option<HookSlot>) -> String {
    s.pid += 1;
    let u = upid(node, s.pid, kind, id);
    let fails = s.fail_task.iter().any(|t| t == kind);
    let mut log = vec![format!("starting task {kind} {id}"), "working...".to_string()];
    let exit = if fails {
        log.push(format!("{kind} {id}: unable to create the volume: no space left on device (told to fail)"));
        "command 'lxc-usernsexec' failed: exit code 1".to_string()
    } else {
        log.push("TASK OK".into());
        "OK".to_string()
    };
    let hang = s.hang_task.iter().any(|t| t == kind);
    s.tasks.insert(
        u.clone(),
        Task { node: node.into(), kind: kind.into(), polls_left: s.polls, exit, hang, waiting, log },
    );
    u
}
