//! The provisioning phase: before anything connects over SSH, each host with `provision` is
//! found on Proxmox VE by its name and the `groundwork` tag; an absent one is created from the
//! template of its kind (a container: `POST /nodes/{node}/lxc`; a VM: clone, then its
//! cloud-init config), started, and waited for until its SSH port answers. A present guest
//! whose cores, memory or tags differ is changed (`PUT .../config`); a stopped one is started.
//! A guest is never destroyed here (only the explicit `groundwork rebuild` does, through
//! [`destroy`]). One built from another template than the answers name now is
//! reported as outdated (its `tpl-` tag says which template it came from).

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::{Client, Error, seg};
use crate::answers::model::{Answers, GuestKind, Host, Proxmox, Role};

/// The tag every guest groundwork creates carries.
pub const TAG: &str = "groundwork";

/// A guest as `/cluster/resources` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Guest {
    pub vmid: u64,
    pub name: String,
    pub node: String,
    pub kind: Option<GuestKind>,
    pub tags: Vec<String>,
    pub status: String,
    pub template: bool,
}

impl Guest {
    fn from_json(v: &Value) -> Guest {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Guest {
            vmid: v.get("vmid").and_then(Value::as_u64).unwrap_or(0),
            name: s("name"),
            node: s("node"),
            kind: match s("type").as_str() {
                "lxc" => Some(GuestKind::Ct),
                "qemu" => Some(GuestKind::Vm),
                _ => None,
            },
            tags: split_tags(&s("tags")),
            status: s("status"),
            template: v.get("template").and_then(Value::as_u64) == Some(1),
        }
    }
}

/// A `pve-tag-list` (`;`, `,` or space separated) as its tags, lower case.
pub fn split_tags(s: &str) -> Vec<String> {
    s.split([';', ',', ' ']).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

/// `tpl-<first 8 hex of sha256>` of what a guest is built from: the container template
/// volume, or the VM template's name and VMID (a template rebuilt under the same name has a
/// new VMID).
pub fn template_tag(identity: &str) -> String {
    let h = Sha256::digest(identity.as_bytes());
    format!("tpl-{}", h.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
}

/// The template identity of a kind, from the answers (and the VM template found online).
pub fn template_identity(p: &Proxmox, kind: GuestKind, vm_template: Option<(u64, &str)>) -> String {
    match kind {
        GuestKind::Ct => p.ct_template.clone().unwrap_or_default(),
        GuestKind::Vm => format!("{}:{}", p.template.as_deref().unwrap_or(""), vm_template.map_or(0, |t| t.0)),
    }
}

/// The tags of a host's guest: groundwork, the site, its roles, its template.
pub fn tags(a: &Answers, h: &Host, tpl: &str) -> Vec<String> {
    let mut t = vec![TAG.to_string(), format!("gw-{}", a.site.name)];
    t.extend(h.roles.iter().map(Role::to_string));
    t.push(tpl.to_string());
    t
}

/// The site's resolvers for a new guest: its DNS hosts, else the forwarders.
fn nameservers(a: &Answers) -> String {
    let dns: Vec<String> = a.hosts_with(Role::Dns).map(|(_, h)| h.address.to_string()).collect();
    if dns.is_empty() {
        a.network.forwarders.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
    } else {
        dns.join(" ")
    }
}

/// The SSH public key next to the host's private key (`KEY.pub`).
pub fn public_key(h: &Host) -> Result<String, String> {
    let key = crate::ssh::expand_tilde(h.ssh_key.as_deref().unwrap_or(std::path::Path::new("~/.ssh/id_ed25519")));
    let mut pubpath = key.clone().into_os_string();
    pubpath.push(".pub");
    let pubpath = std::path::PathBuf::from(pubpath);
    let text = std::fs::read_to_string(&pubpath)
        .map_err(|e| format!("the guest gets the public key of ssh-key: cannot read {}: {e}", pubpath.display()))?;
    let line = text.lines().find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-")).unwrap_or("").trim();
    if line.is_empty() {
        return Err(format!("{} holds no SSH public key", pubpath.display()));
    }
    Ok(line.to_string())
}

/// A disk in a guest's config: its key (`rootfs`, `mp0`, `scsi0`, `virtio0`...), its volume
/// and its `size=` as the config writes it (`8G`, `2252M`).
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub key: String,
    pub volume: String,
    pub size: Option<String>,
}

/// Whether a config key names a disk of a guest of `kind`.
fn disk_key(kind: GuestKind, k: &str) -> bool {
    let numbered =
        |prefix: &str| k.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match kind {
        GuestKind::Ct => k == "rootfs" || numbered("mp") || numbered("unused"),
        GuestKind::Vm => {
            ["ide", "sata", "scsi", "virtio", "unused"].iter().any(|p| numbered(p))
                || k == "efidisk0"
                || k == "tpmstate0"
        }
    }
}

/// The disks of a guest's config (CD-ROM drives and empty drives left out), by key.
pub fn disks(kind: GuestKind, cfg: &Value) -> Vec<Disk> {
    let Some(map) = cfg.as_object() else { return Vec::new() };
    let mut out: Vec<Disk> = map
        .iter()
        .filter(|(k, _)| disk_key(kind, k))
        .filter_map(|(k, v)| {
            let v = v.as_str()?;
            let mut parts = v.split(',');
            let volume = parts.next().unwrap_or("").to_string();
            let opts: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            if volume.is_empty() || volume == "none" || opts.iter().any(|(k, v)| *k == "media" && *v == "cdrom") {
                return None;
            }
            let size = opts.iter().find(|(k, _)| *k == "size").map(|(_, v)| v.to_string());
            Some(Disk { key: k.clone(), volume, size })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// A VM's boot disk: the first disk of `boot: order=...`, else the legacy `bootdisk`, else
/// the first of scsi0, virtio0, sata0, ide0 that the config has.
pub fn boot_disk(cfg: &Value) -> Option<Disk> {
    let all = disks(GuestKind::Vm, cfg);
    let find = |k: &str| all.iter().find(|d| d.key == k).cloned();
    let s = |k: &str| cfg.get(k).and_then(Value::as_str).unwrap_or("");
    let order = s("boot").split(',').find_map(|p| p.strip_prefix("order=")).unwrap_or("");
    order
        .split(';')
        .find_map(find)
        .or_else(|| find(s("bootdisk")))
        .or_else(|| ["scsi0", "virtio0", "sata0", "ide0"].into_iter().find_map(find))
}

/// A size as Proxmox writes it (`8G`, `2252M`, `1.5T`, bytes without a unit) in bytes.
pub fn size_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    let n: f64 = num.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some((n * (1u64 << shift) as f64) as u64)
}

/// What the `disk` answer (GiB) does to a VM disk of `have`: `Ok(true)` grow it, `Ok(false)`
/// nothing; `Err(words)` when the answer is smaller (disks only grow, never shrink).
pub fn disk_growth(d: &Disk, want_gib: u32) -> Result<bool, String> {
    let Some(have) = d.size.as_deref().and_then(size_bytes) else { return Ok(false) };
    let want = u64::from(want_gib) << 30;
    if want < have {
        return Err(format!(
            "disk: {} is {}, larger than the answer's {want_gib} GiB: kept as it is (disks only grow, never shrink)",
            d.key,
            d.size.as_deref().unwrap_or("")
        ));
    }
    Ok(want > have)
}

/// The disk the `disk` answer sizes: a container's root volume, a VM's boot disk.
pub fn sized_disk(kind: GuestKind, cfg: &Value) -> Option<Disk> {
    match kind {
        GuestKind::Ct => disks(kind, cfg).into_iter().find(|d| d.key == "rootfs"),
        GuestKind::Vm => boot_disk(cfg),
    }
}

/// The diff key of a disk to grow (`disk rootfs`, `disk scsi0`): [`change`] resizes it.
const DISK_KEY: &str = "disk ";

/// Grows disk `key` of a guest to `size` (`PUT .../resize`: a task since Proxmox VE 8, an
/// immediate answer before). Proxmox itself refuses to shrink.
async fn resize(
    client: &Client,
    node: &str,
    kind: GuestKind,
    vmid: u64,
    key: &str,
    size: &str,
    progress: &dyn Fn(&str),
) -> Result<(), String> {
    progress(&format!("growing {key} of {vmid} to {size}"));
    let form: Vec<(&str, String)> = vec![("disk", key.to_string()), ("size", size.to_string())];
    let path = format!("/nodes/{}/{}/{vmid}/resize", seg(node), kind.api());
    let poll = |d: Duration| progress(&format!("growing the disk ({} s)", d.as_secs()));
    client.maybe_task(node, reqwest::Method::PUT, &path, &form, &poll).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// After a clone: grows the VM's boot disk to the `disk` answer (a clone has the template's).
async fn grow_vm_disk(
    client: &Client,
    node: &str,
    vmid: u64,
    want_gib: u32,
    progress: &dyn Fn(&str),
) -> Result<(), String> {
    let path = format!("/nodes/{}/qemu/{vmid}/config", seg(node));
    let cfg = client.get(&path, &[]).await.map_err(|e| e.to_string())?;
    let Some(disk) = boot_disk(&cfg) else {
        progress("the VM has no boot disk in its config: its disk is not grown");
        return Ok(());
    };
    match disk_growth(&disk, want_gib) {
        Ok(true) => resize(client, node, GuestKind::Vm, vmid, &disk.key, &format!("{want_gib}G"), progress).await,
        Ok(false) => Ok(()),
        Err(words) => {
            progress(&words);
            Ok(())
        }
    }
}

/// What the phase decided for one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Present, running, matching.
    Nothing,
    /// Absent: to be created (this text says how).
    Create(String),
    /// Present: these differences (lines `key: have -> want`), and whether it is stopped.
    Change { vmid: u64, node: String, diff: Vec<(String, String, String)>, start: bool },
}

/// A host's guest state, as read now.
#[derive(Debug, Clone)]
pub struct Plan {
    pub host: String,
    pub action: Action,
    /// `Some(tag)` when the guest was built from another template than the answers name.
    pub outdated: Option<String>,
    pub kind: GuestKind,
    /// The guest found (absent: `None`).
    pub guest: Option<Guest>,
    /// The `tpl-` tag of the guest found, if it has one.
    pub built_from: Option<String>,
    /// What the plan should say besides (a disk answer smaller than the disk).
    pub notes: Vec<String>,
}

/// The guests of the site, each found by name and the groundwork tag. A guest of that name
/// without the tag is not groundwork's: an error, it is never touched.
pub async fn guests(client: &Client) -> Result<Vec<Guest>, Error> {
    let items = client.get("/cluster/resources", &[("type", "vm".into())]).await?;
    Ok(items.as_array().map(|a| a.iter().map(Guest::from_json).collect()).unwrap_or_default())
}

/// The VM template the answers name (`template`), as found among `all`: its VMID and node.
pub fn vm_template<'g>(p: &Proxmox, all: &'g [Guest]) -> Option<(u64, &'g str)> {
    let name = p.template.as_deref()?;
    all.iter().find(|g| g.template && g.name == name).map(|g| (g.vmid, g.node.as_str()))
}

/// How the guest of `h` compares with the answers.
pub async fn compare(
    a: &Answers,
    h: &Host,
    all: &[Guest],
    client: &Client,
    vm_template: Option<(u64, &str)>,
) -> Result<Plan, String> {
    let p = a.proxmox.as_ref().expect("provisioned hosts have [proxmox] (rules)");
    let pr = h.provision.expect("called for provisioned hosts");
    let tpl = template_tag(&template_identity(p, pr.kind, vm_template));
    let named: Vec<&Guest> = all.iter().filter(|g| g.name == h.name && !g.template).collect();
    let ours: Vec<&&Guest> = named.iter().filter(|g| g.tags.iter().any(|t| t == TAG)).collect();
    let plan = |action, outdated, guest: Option<&Guest>, built_from, notes| Plan {
        host: h.name.clone(),
        action,
        outdated,
        kind: pr.kind,
        guest: guest.cloned(),
        built_from,
        notes,
    };
    match ours.as_slice() {
        [] if !named.is_empty() => Err(format!(
            "a guest named `{}` exists (VMID {}) without the `{TAG}` tag: groundwork does not take over a guest it did not create; rename one of them, or add the tag if this guest is the one",
            h.name, named[0].vmid
        )),
        [] => {
            let from = match pr.kind {
                GuestKind::Ct => p.ct_template.clone().unwrap_or_default(),
                GuestKind::Vm => format!("VM template {}", p.template.as_deref().unwrap_or("")),
            };
            // A clone keeps the template's disk when the answer is smaller.
            let mut notes = Vec::new();
            if pr.kind == GuestKind::Vm
                && let Some((tid, tnode)) = vm_template
            {
                let path = format!("/nodes/{}/qemu/{tid}/config", seg(tnode));
                let cfg = client.get(&path, &[]).await.map_err(|e| e.to_string())?;
                if let Some(Err(words)) = boot_disk(&cfg).map(|d| disk_growth(&d, pr.disk)) {
                    notes.push(format!("the VM template's {words}"));
                }
            }
            Ok(plan(
                Action::Create(format!(
                    "create {} {} on {}: {} cores, {} MiB, {} GiB, {}/{} on {}, from {from}",
                    pr.kind.as_str(),
                    h.name,
                    p.node,
                    pr.cores,
                    pr.memory,
                    pr.disk,
                    h.address,
                    a.network.subnet.prefix(),
                    p.bridge
                )),
                None,
                None,
                None,
                notes,
            ))
        }
        [g] => {
            if g.kind != Some(pr.kind) {
                return Err(format!(
                    "guest `{}` (VMID {}) is a {}, the answers say {}: groundwork does not convert guests",
                    h.name,
                    g.vmid,
                    g.kind.map_or("guest of another type", |k| k.as_str()),
                    pr.kind.as_str()
                ));
            }
            let path = format!("/nodes/{}/{}/{}/config", seg(&g.node), pr.kind.api(), g.vmid);
            let cfg = client.get(&path, &[]).await.map_err(|e| e.to_string())?;
            let num = |k: &str| cfg.get(k).and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
            let mut diff = Vec::new();
            let have_cores = num("cores").unwrap_or(1);
            if have_cores != u64::from(pr.cores) {
                diff.push(("cores".into(), have_cores.to_string(), pr.cores.to_string()));
            }
            let have_mem = num("memory").unwrap_or(512);
            if have_mem != u64::from(pr.memory) {
                diff.push(("memory".into(), have_mem.to_string(), pr.memory.to_string()));
            }
            let have_tags = split_tags(cfg.get("tags").and_then(Value::as_str).unwrap_or(""));
            let built_from = have_tags.iter().find(|t| t.starts_with("tpl-")).cloned();
            // The template tag records what the guest was built from: it is kept as it is.
            let mut want = tags(a, h, built_from.as_deref().unwrap_or(&tpl));
            want.sort();
            let mut have_sorted = have_tags.clone();
            have_sorted.sort();
            if want != have_sorted {
                diff.push(("tags".into(), have_tags.join(";"), want.join(";")));
            }
            let outdated = built_from.clone().filter(|b| *b != tpl);
            let mut notes = Vec::new();
            if let Some(d) = sized_disk(pr.kind, &cfg) {
                match disk_growth(&d, pr.disk) {
                    Ok(true) => diff.push((
                        format!("{DISK_KEY}{}", d.key),
                        d.size.clone().unwrap_or_default(),
                        format!("{}G", pr.disk),
                    )),
                    Ok(false) => {}
                    Err(words) => notes.push(format!("the {}'s {words}", pr.kind.noun())),
                }
            }
            let start = g.status != "running";
            let action = if diff.is_empty() && !start {
                Action::Nothing
            } else {
                Action::Change { vmid: g.vmid, node: g.node.clone(), diff, start }
            };
            Ok(plan(action, outdated, Some(*g), built_from, notes))
        }
        many => Err(format!(
            "{} guests are named `{}` and tagged `{TAG}` (VMIDs {}): keep one",
            many.len(),
            h.name,
            many.iter().map(|g| g.vmid.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The lines of a change, for the plan.
pub fn describe(diff: &[(String, String, String)], start: bool) -> String {
    let mut lines: Vec<String> = diff.iter().map(|(k, have, want)| format!("{k}: {have} -> {want}")).collect();
    if start {
        lines.push("status: stopped -> running".into());
    }
    lines.join("\n")
}

/// The VMIDs one run gives the guests it creates. Proxmox's `nextid` answers the same number
/// to every caller until a create takes it, so guests created side by side take distinct ids
/// from here: from `nextid` up, skipping every guest of the cluster and every id given out.
pub struct Vmids {
    state: tokio::sync::Mutex<(Option<u64>, std::collections::BTreeSet<u64>)>,
}

impl Vmids {
    /// `all`: the cluster's guests (`/cluster/resources`), templates too.
    pub fn new(all: &[Guest]) -> Vmids {
        Vmids { state: tokio::sync::Mutex::new((None, all.iter().map(|g| g.vmid).collect())) }
    }

    /// A free VMID, never the same twice.
    pub async fn take(&self, client: &Client) -> Result<u64, String> {
        let mut st = self.state.lock().await;
        let floor = match st.0 {
            Some(f) => f,
            None => {
                let v = client.get("/cluster/nextid", &[]).await.map_err(|e| e.to_string())?;
                let f = v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).ok_or("nextid: no VMID")?;
                st.0 = Some(f);
                f
            }
        };
        let id = (floor..).find(|id| !st.1.contains(id)).expect("a free VMID");
        st.1.insert(id);
        Ok(id)
    }
}

/// Whether a create was refused because another creator took the VMID first.
fn vmid_taken(e: &Error) -> bool {
    matches!(e, Error::Status { message, .. } if message.contains("already exists"))
}

/// Creates the guest of `h` (absent) and starts it. `progress` hears each stage.
pub async fn create(
    a: &Answers,
    h: &Host,
    client: &Client,
    vm_template: Option<(u64, &str)>,
    vmids: &Vmids,
    progress: &dyn Fn(&str),
) -> Result<u64, String> {
    let p = a.proxmox.as_ref().expect("provisioned hosts have [proxmox]");
    let pr = h.provision.expect("provisioned");
    let key = public_key(h)?;
    let tpl = template_tag(&template_identity(p, pr.kind, vm_template));
    let tags = tags(a, h, &tpl).join(";");
    let node = p.node.as_str();
    let ip = format!("ip={}/{},gw={}", h.address, a.network.subnet.prefix(), a.network.gateway);
    let ns = nameservers(a);
    let poll = |what: &'static str| move |d: Duration| progress(&format!("{what} ({} s)", d.as_secs()));
    let description = format!("groundwork site {}: host {} ({})", a.site.name, h.name, tpl);
    // Another creator (a person, another tool) may take the VMID between nextid and the
    // create: Proxmox refuses it ("already exists"), and the next free one is tried.
    let mut tries = 0;
    let vmid = loop {
        let vmid = vmids.take(client).await?;
        let made = match pr.kind {
            GuestKind::Ct => {
                let mut form: Vec<(&str, String)> = vec![
                    ("vmid", vmid.to_string()),
                    ("ostemplate", p.ct_template.clone().unwrap_or_default()),
                    ("hostname", h.name.clone()),
                    ("cores", pr.cores.to_string()),
                    ("memory", pr.memory.to_string()),
                    ("rootfs", format!("{}:{}", p.storage, pr.disk)),
                    ("net0", format!("name=eth0,bridge={},{ip}", p.bridge)),
                    ("ssh-public-keys", key.clone()),
                    ("searchdomain", a.site.internal_domain.clone()),
                    ("tags", tags.clone()),
                    ("unprivileged", "1".into()),
                    ("features", "nesting=1".into()),
                    ("onboot", "1".into()),
                    ("description", description.clone()),
                ];
                if !ns.is_empty() {
                    form.push(("nameserver", ns.clone()));
                }
                progress(&format!("creating container {vmid}"));
                let path = format!("/nodes/{}/lxc", seg(node));
                client.task(node, reqwest::Method::POST, &path, &form, &poll("creating the container")).await
            }
            GuestKind::Vm => {
                let (tid, tnode) = vm_template.ok_or("the VM template was not found (online checks)")?;
                let mut form: Vec<(&str, String)> = vec![
                    ("newid", vmid.to_string()),
                    ("name", h.name.clone()),
                    ("full", "1".into()),
                    ("storage", p.storage.clone()),
                ];
                if tnode != node {
                    form.push(("target", node.to_string()));
                }
                progress(&format!("cloning VM template {tid} to {vmid}"));
                let path = format!("/nodes/{}/qemu/{tid}/clone", seg(tnode));
                client.task(tnode, reqwest::Method::POST, &path, &form, &poll("cloning the template")).await
            }
        };
        match made {
            Err(e) if vmid_taken(&e) && tries < 4 => {
                tries += 1;
                progress(&format!("VMID {vmid} was taken meanwhile: trying the next one"));
            }
            Err(e) => return Err(e.to_string()),
            Ok(_) => break vmid,
        }
    };
    // A clone has the template's settings: then the VM's own (cloud-init too), and its disk.
    if pr.kind == GuestKind::Vm {
        // sshkeys is URL-encoded inside the value (Proxmox decodes it once more).
        let mut cfg: Vec<(&str, String)> = vec![
            ("cores", pr.cores.to_string()),
            ("memory", pr.memory.to_string()),
            ("net0", format!("virtio,bridge={}", p.bridge)),
            ("ipconfig0", ip.clone()),
            ("ciuser", h.ssh_user.clone()),
            ("sshkeys", super::client::seg(&format!("{key}\n"))),
            ("searchdomain", a.site.internal_domain.clone()),
            ("tags", tags),
            ("onboot", "1".into()),
            ("description", description),
        ];
        if !ns.is_empty() {
            cfg.push(("nameserver", ns));
        }
        progress("setting the VM's cloud-init");
        let path = format!("/nodes/{}/qemu/{vmid}/config", seg(node));
        client
            .task(node, reqwest::Method::POST, &path, &cfg, &poll("configuring the VM"))
            .await
            .map_err(|e| e.to_string())?;
        grow_vm_disk(client, node, vmid, pr.disk, progress).await?;
    }
    start(client, node, pr.kind, vmid, progress).await?;
    Ok(vmid)
}

/// Starts a guest and waits for the start task.
pub async fn start(
    client: &Client,
    node: &str,
    kind: GuestKind,
    vmid: u64,
    progress: &dyn Fn(&str),
) -> Result<(), String> {
    power(client, node, kind, vmid, "start", progress).await
}

/// Stops a guest at once (`POST .../status/stop`, a task), for `groundwork rebuild`.
pub async fn stop(
    client: &Client,
    node: &str,
    kind: GuestKind,
    vmid: u64,
    progress: &dyn Fn(&str),
) -> Result<(), String> {
    power(client, node, kind, vmid, "stop", progress).await
}

/// `POST /nodes/{node}/{kind}/{vmid}/status/{action}` and its task.
async fn power(
    client: &Client,
    node: &str,
    kind: GuestKind,
    vmid: u64,
    action: &str,
    progress: &dyn Fn(&str),
) -> Result<(), String> {
    let doing = if action == "stop" { "stopping" } else { "starting" };
    progress(&format!("{doing} {vmid}"));
    let path = format!("/nodes/{}/{}/{vmid}/status/{action}", seg(node), kind.api());
    let poll = |d: Duration| progress(&format!("{doing} {vmid} ({} s)", d.as_secs()));
    client.task(node, reqwest::Method::POST, &path, &[], &poll).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Destroys a stopped guest of groundwork's and its disks (`DELETE /nodes/{node}/{kind}/{vmid}`
/// with `purge=1`, a task). Only `groundwork rebuild` calls it, after the guest was found by
/// [`compare`] (its name and the `groundwork` tag) and the loss was confirmed.
pub async fn destroy(client: &Client, guest: &Guest, kind: GuestKind, progress: &dyn Fn(&str)) -> Result<(), String> {
    if !guest.tags.iter().any(|t| t == TAG) {
        return Err(format!("guest {} has no `{TAG}` tag: groundwork does not destroy it", guest.vmid));
    }
    let vmid = guest.vmid;
    progress(&format!("destroying {vmid} and its disks"));
    let path = format!("/nodes/{}/{}/{vmid}", seg(&guest.node), kind.api());
    let poll = |d: Duration| progress(&format!("destroying {vmid} ({} s)", d.as_secs()));
    client
        .task(&guest.node, reqwest::Method::DELETE, &path, &[("purge", "1".into())], &poll)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Changes cores, memory and tags of a present guest, and grows its disk (never shrinks it,
/// never touches its network).
pub async fn change(
    client: &Client,
    node: &str,
    kind: GuestKind,
    vmid: u64,
    diff: &[(String, String, String)],
    progress: &dyn Fn(&str),
) -> Result<(), String> {
    let (grow, config): (Vec<_>, Vec<_>) = diff.iter().partition(|(k, _, _)| k.starts_with(DISK_KEY));
    if !config.is_empty() {
        let form: Vec<(&str, String)> = config
            .iter()
            .map(|(k, _, want)| {
                let k: &str = match k.as_str() {
                    "cores" => "cores",
                    "memory" => "memory",
                    _ => "tags",
                };
                (k, want.clone())
            })
            .collect();
        let path = format!("/nodes/{}/{}/{vmid}/config", seg(node), kind.api());
        client.put(&path, &form).await.map_err(|e| e.to_string())?;
    }
    for (k, _, want) in grow {
        resize(client, node, kind, vmid, &k[DISK_KEY.len()..], want, progress).await?;
    }
    Ok(())
}

/// Waits until `address:port` answers with an SSH banner, or the deadline passes.
pub async fn wait_ssh(
    address: &str,
    port: u16,
    deadline: Duration,
    progress: &dyn Fn(&str),
) -> Result<Duration, String> {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect((address, port)).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            if &buf == b"SSH-" { Ok(()) } else { Err("not an SSH server".to_string()) }
        };
        let last = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(())) => return Ok(started.elapsed()),
            Ok(Err(e)) => e,
            Err(_) => "no answer in 3 s".to_string(),
        };
        if started.elapsed() >= deadline {
            return Err(format!(
                "{address}:{port} did not answer SSH within {} s ({last}): is the address right, and does the template run sshd?",
                deadline.as_secs()
            ));
        }
        progress(&format!("waiting for SSH on {address}:{port} ({} s)", started.elapsed().as_secs()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_on_any_separator_and_template_tags_are_stable() {
        assert_eq!(split_tags("groundwork;gw-lab, dns tpl-1"), ["groundwork", "gw-lab", "dns", "tpl-1"]);
        let t = template_tag("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst");
        assert_eq!(t, template_tag("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"));
        assert_ne!(t, template_tag("local:vztmpl/debian-12-standard_12.8-1_amd64.tar.zst"));
        assert!(t.starts_with("tpl-") && t.len() == 12);
    }

    #[test]
    fn disks_boot_disk_and_sizes() {
        let cfg = serde_json::json!({
            "boot": "order=virtio0;ide2;net0",
            "ide2": "local-lvm:vm-101-cloudinit,media=cdrom",
            "scsi0": "local-lvm:vm-101-disk-1,size=4G",
            "virtio0": "local-lvm:vm-101-disk-0,iothread=1,size=2252M",
            "net0": "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0",
        });
        let d = disks(GuestKind::Vm, &cfg);
        assert_eq!(d.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(), ["scsi0", "virtio0"]);
        let boot = boot_disk(&cfg).unwrap();
        assert_eq!((boot.key.as_str(), boot.size.as_deref()), ("virtio0", Some("2252M")));
        assert_eq!(boot_disk(&serde_json::json!({"sata0": "x:y,size=1G"})).unwrap().key, "sata0");
        assert_eq!(size_bytes("8G"), Some(8 << 30));
        assert_eq!(size_bytes("1.5T"), Some(3 << 39));
        assert_eq!(size_bytes("512"), Some(512));
        assert_eq!(size_bytes("8Q"), None);
        assert_eq!(disk_growth(&boot, 8), Ok(true));
        assert_eq!(disk_growth(&Disk { size: Some("8G".into()), ..boot.clone() }, 8), Ok(false));
        assert!(disk_growth(&Disk { size: Some("32G".into()), ..boot }, 8).unwrap_err().contains("never shrink"));
        let ct = serde_json::json!({"rootfs": "local-lvm:vm-100-disk-0,size=8G", "mp0": "local-lvm:vm-100-disk-1,mp=/srv,size=20G"});
        assert_eq!(disks(GuestKind::Ct, &ct).len(), 2);
    }
}
