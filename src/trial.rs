//! `apply --try SECONDS` and `groundwork confirm`: a change to DNS, DHCP or sshd that takes
//! itself back unless it is confirmed.
//!
//! Before anything changes, each host of the run is armed: what the try may change (BIND's,
//! Kea's and sshd's configuration and zone data) is copied aside with a note of which of
//! those services run, and a systemd timer on the host is started that puts it all back and
//! restarts them after SECONDS. The timer is an enabled unit on disk, so neither a cut SSH
//! connection, a controller that dies, nor a reboot of the host stops it. Then the change is
//! applied and the changed services are checked from this machine (`verify`'s DNS and DHCP
//! rows, and a new SSH login); a failed check reverts at once. `confirm` disarms the timers.

use serde::{Deserialize, Serialize};

/// On the host: the copy, the notes and the revert script of the armed try.
pub const DIR: &str = "/var/lib/groundwork/try";
/// Where a revert leaves the run id it took back (for `confirm` to say so).
pub const REVERTED: &str = "/var/lib/groundwork/try-reverted";
/// The timer and the oneshot service that reverts.
pub const UNIT: &str = "groundwork-try-revert";
/// What a try can take back: configuration and zone data of BIND, Kea and sshd (only those
/// that exist when it is armed). Not Kea's leases: an older lease file would offer addresses
/// that clients were given during the window.
pub const PATHS: &[&str] = &["etc/bind", "var/lib/bind", "var/cache/bind", "etc/kea", "etc/ssh"];
/// The services restarted after a revert when they ran before the try (stopped while the
/// files are put back, except sshd, whose open sessions a restart keeps).
pub const SERVICES: &[&str] = &["named", "kea-dhcp4-server", "kea-dhcp-ddns-server", "ssh"];
/// The `verify` services a try checks (with a new SSH login for sshd).
pub const CHECKED: &[&str] = &["dns", "dhcp"];
/// The record of an armed try in the state directory.
pub const RECORD: &str = "try.json";

/// The armed try, as the state directory keeps it for `confirm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub run: String,
    pub hosts: Vec<String>,
    pub seconds: u64,
    /// When the timers were started (RFC 3339, this machine's clock).
    pub armed: String,
}

/// The revert, run by the timer's service (or at once, by `apply --try` after a failed check).
pub fn revert_script() -> String {
    let stop: Vec<&str> = SERVICES.iter().copied().filter(|s| *s != "ssh").collect();
    format!(
        r#"#!/bin/sh
# groundwork apply --try: puts back what the try changed, unless `groundwork confirm` came first.
d={DIR}
[ -f "$d/files.tar" ] || exit 0
for s in {stop}; do systemctl stop "$s" 2>/dev/null; done
for p in $(cat "$d/paths"); do rm -rf "/$p"; done
tar -C / --xattrs -xpf "$d/files.tar"
while read -r s; do systemctl restart "$s"; done < "$d/active"
cat "$d/run" > {REVERTED}
systemctl disable --now {UNIT}.timer 2>/dev/null
rm -f /etc/systemd/system/{UNIT}.timer /etc/systemd/system/{UNIT}.service
systemctl daemon-reload
rm -rf "$d"
"#,
        stop = stop.join(" ")
    )
}

/// Arms a host: refuses when a try is armed there already, copies the paths aside, notes the
/// running services, writes the revert script and the units, starts the timer.
pub fn arm_script(run: &str, seconds: u64) -> String {
    let paths = PATHS.join(" ");
    let services = SERVICES.join(" ");
    let revert = revert_script();
    format!(
        r#"set -e
d={DIR}
if systemctl -q is-active {UNIT}.timer; then echo "a try is armed here already: groundwork confirm, or let it revert" >&2; exit 3; fi
rm -rf "$d" && mkdir -p "$d" && chmod 700 "$d"
paths=''
for p in {paths}; do if [ -e "/$p" ]; then paths="$paths $p"; fi; done
echo "$paths" > "$d/paths"
tar -C / --xattrs -cpf "$d/files.tar" --files-from=/dev/null $paths
: > "$d/active"
for s in {services}; do if systemctl -q is-active "$s"; then echo "$s" >> "$d/active"; fi; done
printf '%s\n' {run} > "$d/run"
rm -f {REVERTED}
cat > "$d/revert.sh" <<'GROUNDWORK_REVERT'
{revert}GROUNDWORK_REVERT
cat > /etc/systemd/system/{UNIT}.service <<'GROUNDWORK_UNIT'
[Unit]
Description=groundwork apply --try: revert the change unless it was confirmed

[Service]
Type=oneshot
ExecStart=/bin/sh {DIR}/revert.sh
GROUNDWORK_UNIT
cat > /etc/systemd/system/{UNIT}.timer <<'GROUNDWORK_UNIT'
[Unit]
Description=groundwork apply --try: the revert deadline

[Timer]
OnActiveSec={seconds}
AccuracySec=1s

[Install]
WantedBy=timers.target
GROUNDWORK_UNIT
systemctl daemon-reload
systemctl enable --now {UNIT}.timer 2>/dev/null
"#,
        run = crate::engine::facts::sh_quote(run),
    )
}

/// Disarms a host; prints `confirmed`, `reverted <run>` (the timer was first) or `none`.
pub fn confirm_script() -> String {
    format!(
        r#"d={DIR}
if [ -f "$d/files.tar" ]; then
  systemctl disable --now {UNIT}.timer 2>/dev/null
  rm -f /etc/systemd/system/{UNIT}.timer /etc/systemd/system/{UNIT}.service
  systemctl daemon-reload
  rm -rf "$d"
  echo confirmed
elif [ -f {REVERTED} ]; then echo "reverted $(cat {REVERTED})"
else echo none
fi
"#
    )
}

/// Reverts a host now (a failed check): the timer's own service, so it runs exactly once; a
/// host whose timer came first has nothing left to do.
pub fn revert_now_command() -> String {
    format!("if [ -f {DIR}/files.tar ]; then systemctl start {UNIT}.service; fi")
}

/// What `apply --try` came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub run: String,
    pub hosts: Vec<String>,
    pub seconds: u64,
    /// Whether the apply itself finished without a failed host.
    pub applied: bool,
    /// The checks made from this machine after the change.
    pub checks: Vec<crate::verify::Row>,
    /// Reverted at once (a failed apply or check); the hosts that could not be reached revert
    /// by their timer.
    pub reverted: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_reached: Vec<String>,
    /// The same checks after a revert.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_revert: Vec<crate::verify::Row>,
}

impl Outcome {
    pub fn checks_ok(&self) -> bool {
        self.checks.iter().all(crate::verify::Row::ok)
    }
}

fn ssh_options(state: &crate::state::StateDir) -> crate::ssh::SshOptions {
    crate::ssh::SshOptions { known_hosts: state.known_hosts_path(), ..crate::ssh::SshOptions::default() }
}

/// Runs `script` on each host at once; per host, its standard output or why not.
async fn on_hosts(
    hosts: &[&crate::answers::model::Host],
    state: &crate::state::StateDir,
    script: &str,
) -> Vec<(String, Result<String, String>)> {
    let opts = ssh_options(state);
    let jobs = hosts.iter().map(|h| {
        let opts = &opts;
        async move {
            let r = async {
                let s = crate::ssh::Session::connect(&crate::engine::target_of(h), opts)
                    .await
                    .map_err(|e| format!("ssh: {e}"))?;
                let o = s.exec(script, None).await.map_err(|e| e.to_string());
                s.close().await;
                let o = o?;
                if o.ok() {
                    Ok(o.stdout_str().trim().to_string())
                } else {
                    Err(format!("exit {}: {}", o.status, o.stderr_str().trim()))
                }
            }
            .await;
            (h.name.clone(), r)
        }
    });
    futures::future::join_all(jobs).await
}

/// The checks of a try: `verify`'s rows of the services it is for, and a new SSH login to
/// every host of the run (sshd took its new configuration and still lets groundwork in).
async fn check_hosts(
    a: &crate::answers::Answers,
    hosts: &[&crate::answers::model::Host],
    state: &crate::state::StateDir,
) -> Vec<crate::verify::Row> {
    use crate::verify::{Failure, Row};
    let secrets = crate::state::Secrets::load(&state.secrets_path()).unwrap_or_default();
    // A DNS server that does not answer at all fails the try at once.
    let quick = crate::verify::dns::soa_rows(a).await;
    let mut rows: Vec<Row> = if quick.iter().all(Row::ok) {
        crate::verify::verify_only(a, &secrets, state, Some(CHECKED))
            .await
            .into_iter()
            .filter(|r| CHECKED.contains(&r.service.as_str()))
            .collect()
    } else {
        quick
    };
    let opts = ssh_options(state);
    for h in hosts {
        let t = std::time::Instant::now();
        let r = match crate::ssh::Session::connect(&crate::engine::target_of(h), &opts).await {
            Ok(s) => {
                s.close().await;
                Ok(format!("logged in as {} on port {}", h.ssh_user, h.ssh_port))
            }
            Err(e) => Err(Failure::error(e.to_string())),
        };
        rows.push(Row::from_result("ssh", &h.name, "new login", r, t.elapsed()));
    }
    rows
}

/// `apply --try SECONDS`: arm every host of the run, apply, check, and revert at once when
/// the apply or a check failed. `say` hears what happens. The caller holds the state lock.
pub async fn apply(
    a: &crate::answers::Answers,
    catalog: &crate::playbook::catalog::Catalog,
    state: &crate::state::StateDir,
    opts: &crate::engine::Options,
    seconds: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Outcome, String> {
    let record = state.root.join(RECORD);
    if let Some(p) = pending(state)? {
        return Err(format!(
            "a try (run {}, armed {}, {} s) may still be armed on {}: run `groundwork confirm` (or wait for it to revert), then try again (record: {})",
            p.run,
            p.armed,
            p.seconds,
            p.hosts.join(", "),
            record.display()
        ));
    }
    let hosts: Vec<&crate::answers::model::Host> =
        a.hosts.iter().filter(|h| opts.hosts.is_empty() || opts.hosts.contains(&h.name)).collect();
    let run = crate::engine::run_id();
    say(&format!("try {run}: arming the revert on {} host(s): after {seconds} s unless confirmed", hosts.len()));
    let armed = on_hosts(&hosts, state, &arm_script(&run, seconds)).await;
    let failed: Vec<String> = armed.iter().filter_map(|(h, r)| r.as_ref().err().map(|e| format!("{h}: {e}"))).collect();
    if !failed.is_empty() {
        let ok: Vec<&crate::answers::model::Host> =
            hosts.iter().copied().filter(|h| armed.iter().any(|(n, r)| n == &h.name && r.is_ok())).collect();
        on_hosts(&ok, state, &confirm_script()).await;
        return Err(format!("could not arm the revert, nothing was changed: {}", failed.join("; ")));
    }
    let p = Pending {
        run: run.clone(),
        hosts: hosts.iter().map(|h| h.name.clone()).collect(),
        seconds,
        armed: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let text = serde_json::to_vec_pretty(&p).expect("a record serializes");
    crate::state::write_private(&record, &text, 0o600).map_err(|e| format!("{}: {e}", record.display()))?;

    let applied = crate::engine::run(a, catalog, state, opts).await;
    let applied = match applied {
        Ok(o) => o.ok,
        Err(e) => {
            say(&format!("try {run}: the apply stopped: {e}"));
            false
        }
    };
    let checks = if applied { check_hosts(a, &hosts, state).await } else { Vec::new() };
    let mut out = Outcome {
        run: run.clone(),
        hosts: p.hosts.clone(),
        seconds,
        applied,
        checks,
        reverted: false,
        not_reached: Vec::new(),
        after_revert: Vec::new(),
    };
    if applied && out.checks_ok() {
        return Ok(out);
    }
    say(&format!("try {run}: {}: reverting now", if applied { "a check failed" } else { "the apply failed" }));
    let reverted = on_hosts(&hosts, state, &revert_now_command()).await;
    out.reverted = true;
    out.not_reached = reverted.iter().filter(|(_, r)| r.is_err()).map(|(h, _)| h.clone()).collect();
    if out.not_reached.is_empty() {
        let _ = std::fs::remove_file(&record);
    } else {
        say(&format!(
            "try {run}: not reached: {} (its timer reverts it {seconds} s after it was armed)",
            out.not_reached.join(", ")
        ));
    }
    out.after_revert = check_hosts(a, &hosts, state).await;
    Ok(out)
}

/// The armed try the state directory records, if any.
pub fn pending(state: &crate::state::StateDir) -> Result<Option<Pending>, String> {
    let record = state.root.join(RECORD);
    match std::fs::read(&record) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", record.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", record.display())),
    }
}

/// How a host answered `confirm`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Confirmed {
    /// The timer was stopped before it fired: the change stays.
    Confirmed,
    /// The timer fired first: the change was taken back.
    Reverted,
    /// No try armed there.
    None,
    /// Not reached: its timer decides.
    NotReached(String),
}

/// `groundwork confirm`: disarms every host of the armed try; the record goes when no host
/// is left armed.
pub async fn confirm(
    a: &crate::answers::Answers,
    state: &crate::state::StateDir,
) -> Result<(Pending, Vec<(String, Confirmed)>), String> {
    let p = pending(state)?.ok_or("no try is armed (no `apply --try` since the last confirm or revert)")?;
    let hosts: Vec<&crate::answers::model::Host> = a.hosts.iter().filter(|h| p.hosts.contains(&h.name)).collect();
    let said = on_hosts(&hosts, state, &confirm_script()).await;
    let out: Vec<(String, Confirmed)> = said
        .into_iter()
        .map(|(h, r)| {
            let c = match r {
                Ok(s) if s == "confirmed" => Confirmed::Confirmed,
                Ok(s) if s.starts_with("reverted") => Confirmed::Reverted,
                Ok(_) => Confirmed::None,
                Err(e) => Confirmed::NotReached(e),
            };
            (h, c)
        })
        .collect();
    if out.iter().all(|(_, c)| !matches!(c, Confirmed::NotReached(_))) {
        let _ = std::fs::remove_file(state.root.join(RECORD));
    }
    Ok((p, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arm_script_is_valid_sh_and_quotes_the_run_id() {
        let script = arm_script("20261201T1300Z-ab'cd", 30);
        assert!(script.contains("printf '%s\\n' '20261201T1300Z-ab'\\''cd'"), "{script}");
        assert!(script.contains("OnActiveSec=30\n"));
        for s in [script.as_str(), &revert_script(), &confirm_script()] {
            let out = std::process::Command::new("sh").args(["-n", "-c", s]).output().unwrap();
            assert!(out.status.success(), "{}\n{s}", String::from_utf8_lossy(&out.stderr));
        }
        // The revert script is written verbatim inside the arm script (its here-document is quoted).
        assert!(script.contains(&revert_script()));
        // An elapsed timer stays active until stopped: the revert stops it, or the next try
        // would find it armed.
        assert!(revert_script().contains("systemctl disable --now groundwork-try-revert.timer"));
    }

    /// The scripts against a scratch root: arm copies the paths, the revert puts them back and
    /// removes what the change added, confirm keeps the change. Run with `sh`, with the
    /// absolute paths rewritten under a temporary directory and systemctl stubbed out (the
    /// lab test runs them for real under systemd).
    #[test]
    fn arm_then_revert_puts_the_files_back_and_confirm_keeps_them() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display().to_string();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // Nothing is active; everything else systemd is asked succeeds.
        std::fs::write(bin.join("systemctl"), "#!/bin/sh\ncase \"$*\" in *is-active*) exit 1;; esac\n").unwrap();
        std::process::Command::new("chmod")
            .args(["755", &bin.join("systemctl").display().to_string()])
            .status()
            .unwrap();
        std::fs::create_dir_all(root.path().join("etc/bind")).unwrap();
        std::fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/groundwork")).unwrap();
        std::fs::write(root.path().join("etc/bind/named.conf.options"), "old\n").unwrap();
        let local = |s: String| {
            s.replace(" /etc/systemd", &format!(" {r}/etc/systemd"))
                .replace("/var/lib/groundwork", &format!("{r}/var/lib/groundwork"))
                .replace("-C / ", &format!("-C {r}/ "))
                .replace("\"/$p\"", &format!("\"{r}/$p\""))
        };
        let sh = |s: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(s)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (ok, said) = sh(&local(arm_script("run-1", 5)));
        assert!(ok, "{said}");
        std::fs::write(root.path().join("etc/bind/named.conf.options"), "new\n").unwrap();
        std::fs::write(root.path().join("etc/bind/added"), "x\n").unwrap();
        let (ok, said) = sh(&format!("sh {r}/var/lib/groundwork/try/revert.sh"));
        assert!(ok, "{said}");
        assert_eq!(std::fs::read_to_string(root.path().join("etc/bind/named.conf.options")).unwrap(), "old\n");
        assert!(!root.path().join("etc/bind/added").exists());
        assert_eq!(sh(&local(confirm_script())).1.trim(), "reverted run-1");
        // Armed again, changed, confirmed: the change stays.
        assert!(sh(&local(arm_script("run-2", 5))).0);
        std::fs::write(root.path().join("etc/bind/named.conf.options"), "new\n").unwrap();
        assert_eq!(sh(&local(confirm_script())).1.trim(), "confirmed");
        assert_eq!(std::fs::read_to_string(root.path().join("etc/bind/named.conf.options")).unwrap(), "new\n");
        assert_eq!(sh(&local(confirm_script())).1.trim(), "none");
    }
}
