//! The online checks of `[proxmox]` (`validate --online`, and the first phase of `plan --live`
//! and `apply` when hosts are provisioned): the API answers with this token, the node is
//! online, the storage is active and holds guests of the kinds the answers ask for, the
//! templates exist, and the token has the privileges the run needs. Each failure is a
//! [`Problem`] on the field of the answers to fix, so it is reported with its file and line.

use serde_json::Value;

use super::client::{Client, Error, seg};
use crate::answers::Problem;
use crate::answers::model::{Answers, GuestKind, Proxmox};

/// What the checks learnt, for the next phase and for the operator.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `version` of `GET /version`, e.g. `8.2.4`.
    pub version: String,
    /// The VM template's (vmid, node), when `vm` guests are provisioned.
    pub vm_template: Option<(u64, String)>,
}

/// One privilege the run needs, where, and why (also the README's table).
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    pub privilege: &'static str,
    pub path: String,
    pub why: &'static str,
}

/// The privileges a run with these answers needs: reading always; creating and changing
/// guests when hosts are provisioned; cloning for VMs. (`template_vmid`: the VM template.)
pub fn needs(a: &Answers, template_vmid: Option<u64>) -> Vec<Need> {
    let Some(p) = &a.proxmox else { return Vec::new() };
    let node = format!("/nodes/{}", p.node);
    let storage = format!("/storage/{}", p.storage);
    let mut out = vec![
        Need { privilege: "Sys.Audit", path: node, why: "read the node's status and the tasks groundwork starts" },
        Need { privilege: "Datastore.Audit", path: storage.clone(), why: "read the storage's status and content" },
        Need { privilege: "VM.Audit", path: "/vms".into(), why: "find the site's guests and read their configuration" },
    ];
    let kinds: Vec<GuestKind> = a.hosts.iter().filter_map(|h| h.provision.map(|p| p.kind)).collect();
    if kinds.is_empty() {
        return out;
    }
    for (privilege, why) in [
        ("VM.Allocate", "create guests"),
        ("VM.Config.CPU", "set cores"),
        ("VM.Config.Memory", "set memory"),
        ("VM.Config.Network", "attach net0 to the bridge with the host's address"),
        ("VM.Config.Disk", "give a guest its root disk"),
        ("VM.Config.Options", "set tags, name and start at boot"),
        ("VM.PowerMgmt", "start guests"),
    ] {
        out.push(Need { privilege, path: "/vms".into(), why });
    }
    out.push(Need { privilege: "Datastore.AllocateSpace", path: storage, why: "allocate guests' disks" });
    out.push(Need {
        privilege: "SDN.Use",
        path: format!("/sdn/zones/localnetwork/{}", p.bridge),
        why: "attach guests to the bridge",
    });
    if kinds.contains(&GuestKind::Ct)
        && let Some(volid) = &p.ct_template
        && let Some((st, _)) = volid.split_once(':')
    {
        out.push(Need {
            privilege: "Datastore.AllocateSpace",
            path: format!("/storage/{st}"),
            why: "use the container template volume",
        });
    }
    if kinds.contains(&GuestKind::Vm) {
        out.push(Need { privilege: "VM.Config.Cloudinit", path: "/vms".into(), why: "set the VM's cloud-init" });
        let path = template_vmid.map_or("/vms".to_string(), |id| format!("/vms/{id}"));
        out.push(Need { privilege: "VM.Clone", path, why: "clone the VM template" });
    }
    out.dedup_by(|x, y| x.privilege == y.privilege && x.path == y.path);
    out
}

/// The field of the answers an API error is about, and the problem.
pub fn problem_of(p: &Proxmox, e: &Error, field: &str) -> Problem {
    let (field, help) = match e {
        Error::Secret(_) => (secret_field(p), None),
        Error::Certificate { .. } if p.fingerprint.is_some() => ("proxmox.fingerprint", None),
        Error::Certificate { .. } => ("proxmox.api-url", None),
        Error::Connect(_) => {
            ("proxmox.api-url", Some("is the URL right (https://HOST:8006/api2/json) and the API reachable from here?"))
        }
        Error::Unauthorized { .. } => (
            "proxmox.token-id",
            Some("check the token id (user@realm!name) and its secret (Datacenter > Permissions > API Tokens)"),
        ),
        _ => (field, None),
    };
    let mut pr = Problem::new(field, e.to_string());
    if let Some(h) = help {
        pr = pr.help(h);
    }
    pr
}

fn secret_field(p: &Proxmox) -> &'static str {
    match p.token_secret {
        crate::answers::model::TokenSecret::File(_) => "proxmox.token-secret-file",
        crate::answers::model::TokenSecret::Env(_) => "proxmox.token-secret-env",
        crate::answers::model::TokenSecret::Inline(_) => "proxmox.token-secret",
    }
}

/// Every online check; the problems (empty: all passed) and what was learnt.
pub async fn online(a: &Answers, client: &Client) -> (Vec<Problem>, Facts) {
    let mut out = Vec::new();
    let mut facts = Facts::default();
    let Some(p) = &a.proxmox else { return (out, facts) };
    // The API and the token: nothing else can be checked without them.
    match client.get("/version", &[]).await {
        Ok(v) => facts.version = v.get("version").and_then(Value::as_str).unwrap_or("?").to_string(),
        Err(e) => {
            out.push(problem_of(p, &e, "proxmox.api-url"));
            return (out, facts);
        }
    }
    let major: u32 = facts.version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 7 {
        out.push(Problem::new(
            "proxmox.api-url",
            format!("Proxmox VE {} answers here; groundwork needs 7 or later (tags, API tokens)", facts.version),
        ));
    }
    let kinds: Vec<GuestKind> = a.hosts.iter().filter_map(|h| h.provision.map(|p| p.kind)).collect();

    // The node.
    match client.get("/nodes", &[]).await {
        Ok(nodes) => {
            let list = nodes.as_array().cloned().unwrap_or_default();
            let name = |n: &Value| n.get("node").and_then(Value::as_str).unwrap_or("").to_string();
            match list.iter().find(|n| name(n) == p.node) {
                None => {
                    let names: Vec<String> = list.iter().map(name).collect();
                    out.push(
                        Problem::new("proxmox.node", format!("the cluster has no node `{}`", p.node))
                            .help(format!("its nodes: {}", names.join(", "))),
                    );
                    return (out, facts);
                }
                Some(n) => {
                    let status = n.get("status").and_then(Value::as_str).unwrap_or("unknown");
                    if status != "online" {
                        out.push(Problem::new(
                            "proxmox.node",
                            format!("node `{}` is {status}: guests cannot be created or started on it", p.node),
                        ));
                    }
                }
            }
        }
        Err(e) => {
            out.push(problem_of(p, &e, "proxmox.node"));
            return (out, facts);
        }
    }

    // The storage.
    let st_path = format!("/nodes/{}/storage/{}/status", seg(&p.node), seg(&p.storage));
    match client.get(&st_path, &[]).await {
        Ok(st) => {
            let on = |k: &str| st.get(k).is_some_and(|v| v.as_u64() == Some(1) || v.as_bool() == Some(true));
            if !on("active") {
                out.push(Problem::new(
                    "proxmox.storage",
                    format!("storage `{}` is not active on node `{}`", p.storage, p.node),
                ));
            }
            let content = st.get("content").and_then(Value::as_str).unwrap_or("");
            let has: Vec<&str> = content.split(',').map(str::trim).collect();
            for (kind, needed) in [(GuestKind::Ct, "rootdir"), (GuestKind::Vm, "images")] {
                if kinds.contains(&kind) && !has.contains(&needed) {
                    out.push(
                        Problem::new(
                            "proxmox.storage",
                            format!(
                                "storage `{}` does not hold `{needed}` (it holds: {content}); {} guests need it",
                                p.storage,
                                kind.as_str()
                            ),
                        )
                        .help(format!("choose a storage with content `{needed}`, or add it to this one")),
                    );
                }
            }
        }
        Err(e) => {
            out.push(not_found(p, &e, "proxmox.storage", &format!("storage `{}` on node `{}`", p.storage, p.node)))
        }
    }

    // The container template volume.
    if kinds.contains(&GuestKind::Ct)
        && let Some(volid) = &p.ct_template
    {
        let st = volid.split_once(':').map_or(volid.as_str(), |(s, _)| s);
        let path = format!("/nodes/{}/storage/{}/content", seg(&p.node), seg(st));
        match client.get(&path, &[("content", "vztmpl".into())]).await {
            Ok(items) => {
                let vols: Vec<String> = items
                    .as_array()
                    .map(|a| {
                        a.iter().filter_map(|i| i.get("volid").and_then(Value::as_str).map(str::to_string)).collect()
                    })
                    .unwrap_or_default();
                if !vols.contains(volid) {
                    let mut pr = Problem::new(
                        "proxmox.ct-template",
                        format!("no container template `{volid}` on node `{}`", p.node),
                    );
                    pr = if vols.is_empty() {
                        pr.help(format!(
                            "storage `{st}` has no templates: download one (pveam download {st} debian-12-standard_...)"
                        ))
                    } else {
                        pr.help(format!("templates there: {}", vols.join(", ")))
                    };
                    out.push(pr);
                }
            }
            Err(e) => out.push(not_found(p, &e, "proxmox.ct-template", &format!("storage `{st}` of the template"))),
        }
    }

    // The VM template, by name.
    if kinds.contains(&GuestKind::Vm)
        && let Some(name) = &p.template
    {
        match client.get("/cluster/resources", &[("type", "vm".into())]).await {
            Ok(items) => {
                let items = items.as_array().cloned().unwrap_or_default();
                let named: Vec<&Value> =
                    items.iter().filter(|i| i.get("name").and_then(Value::as_str) == Some(name.as_str())).collect();
                let tpl = named.iter().find(|i| {
                    i.get("template").and_then(Value::as_u64) == Some(1)
                        && i.get("type").and_then(Value::as_str) == Some("qemu")
                });
                match tpl {
                    Some(t) => {
                        let id = t.get("vmid").and_then(Value::as_u64).unwrap_or(0);
                        let node = t.get("node").and_then(Value::as_str).unwrap_or(&p.node).to_string();
                        facts.vm_template = Some((id, node));
                    }
                    None if !named.is_empty() => out.push(
                        Problem::new("proxmox.template", format!("`{name}` is a guest but not a VM template"))
                            .help("convert it (qm template VMID), or name the template to clone"),
                    ),
                    None => out.push(
                        Problem::new("proxmox.template", format!("there is no VM template named `{name}`"))
                            .help("create one with cloud-init (qm template) or name an existing one"),
                    ),
                }
            }
            Err(e) => out.push(problem_of(p, &e, "proxmox.template")),
        }
    }

    // The token's privileges, on each path the run uses.
    let needs = needs(a, facts.vm_template.as_ref().map(|t| t.0));
    let mut paths: Vec<&str> = needs.iter().map(|n| n.path.as_str()).collect();
    paths.dedup();
    paths.sort();
    paths.dedup();
    for path in paths {
        match client.get("/access/permissions", &[("path", path.to_string())]).await {
            Ok(perms) => {
                let here = perms.get(path);
                let granted = |privilege: &str| {
                    here.and_then(|m| m.get(privilege))
                        .is_some_and(|v| v.as_u64().is_some_and(|n| n > 0) || v.as_bool() == Some(true))
                };
                let missing: Vec<&Need> = needs.iter().filter(|n| n.path == path && !granted(n.privilege)).collect();
                if !missing.is_empty() {
                    let list: Vec<String> = missing.iter().map(|n| format!("{} (to {})", n.privilege, n.why)).collect();
                    let privs: Vec<&str> = missing.iter().map(|n| n.privilege).collect();
                    out.push(
                        Problem::new(
                            "proxmox.token-id",
                            format!("the token lacks on `{path}`: {}", list.join(", ")),
                        )
                        .help(format!(
                            "grant them to the token and its user (a privilege-separated token gets what both have), e.g. a role with {} on {path}",
                            privs.join(" ")
                        )),
                    );
                }
            }
            Err(e) => out.push(problem_of(p, &e, "proxmox.token-id")),
        }
    }
    (out, facts)
}

/// An API error about something the answers name: Proxmox says "does not exist" with a 500
/// (or 404/595); that becomes "no such X" on the field.
fn not_found(p: &Proxmox, e: &Error, field: &str, what: &str) -> Problem {
    match e {
        Error::Status { status, message, .. } if [404, 500, 595].contains(status) => {
            Problem::new(field, format!("{what}: {message}"))
        }
        _ => problem_of(p, e, field),
    }
}

/// The report of online problems on the answer file `file` (its text and index), the secret
/// value hidden as offline validation hides it.
pub fn report(
    file: &str,
    text: &str,
    index: &crate::answers::span::SpanIndex,
    problems: Vec<Problem>,
) -> crate::answers::Report {
    let secrets = crate::answers::rules::SECRET_FIELDS.iter().filter_map(|f| index.exact_value_span(f)).collect();
    crate::answers::Report::new(file, text).hiding(secrets).with_all(problems).located(index).sorted()
}

/// The online checks of a loaded answer file, run to the end: `Ok(summary line)` or the
/// report to print. (`file`, `text`: what the report names and shows.)
pub fn run_blocking(file: &str, text: &str, loaded: &crate::answers::Loaded) -> Result<String, crate::answers::Report> {
    let a = &loaded.answers;
    let Some(p) = &a.proxmox else { return Ok("no [proxmox] section: nothing to check online".into()) };
    let fail = |ps: Vec<Problem>| report(file, text, &loaded.index, ps);
    let client = Client::new(p).map_err(|e| fail(vec![problem_of(p, &e, "proxmox")]))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(vec![Problem::new("", format!("cannot start the async runtime: {e}"))]))?;
    let (mut problems, facts) = rt.block_on(online(a, &client));
    for (i, h) in a.hosts.iter().enumerate() {
        if h.provision.is_some()
            && let Err(e) = super::provision::public_key(h)
        {
            problems.push(Problem::new(format!("host[{i}].ssh-key"), e));
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let n = a.hosts.iter().filter(|h| h.provision.is_some()).count();
    Ok(format!(
        "Proxmox VE {} at {}: node {} online, storage {} ready, templates present, token privileges sufficient for {n} provisioned host(s)",
        facts.version, p.api_url, p.node, p.storage
    ))
}
