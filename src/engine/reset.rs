//! `groundwork reset`: a host put back as groundwork found it, from the ledger the host keeps
//! (see [`super::ledger`]): units groundwork started or enabled are stopped and disabled, every
//! file it replaced comes back from its first backup, what it created goes (files, then
//! directories, deepest first; a directory with something else in it stays and is named),
//! the packages it installed that were not there before are purged, the units that ran before
//! are restarted with their own files, and the ledger, backups and logs go last.
//!
//! One round trip reads the ledger (and apt's simulation of the purge), [`decide`] makes the
//! plan from it without I/O, and one script carries it out. A purge that would take a package
//! groundwork did not bring (something installed since depends on one it did) is refused for
//! that host, naming them: nothing is changed there.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::facts::sh_quote;
use super::ledger::{self, CREATED, ORIG, ORIG_DIR, PACKAGES_ADDED, PACKAGES_BEFORE, UNITS};
use super::steps::file::{BACKUPS, backup_name};

/// The script that reads a host's ledger: one record a line (see [`Ledger::parse`]).
pub fn read_script() -> String {
    format!(
        "exec 2>/dev/null\n\
         b={backups}\n\
         if [ -d \"$b\" ]; then for f in \"$b\"/*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; n=${{f##*/}}; \
         case $n in *{ORIG_DIR}) printf 'entry\\t%s\\t%s\\n' \"$n\" \"$(cat \"$f\")\" ;; *{ORIG}|*{CREATED}) printf 'entry\\t%s\\t\\n' \"$n\" ;; esac; done; fi\n\
         for f in {units}/*; do [ -e \"$f\" ] || continue; printf 'unit\\t%s\\t%s\\n' \"${{f##*/}}\" \"$(cat \"$f\")\"; done\n\
         [ -e {before} ] && sed 's/^/before\\t/' {before}\n\
         [ -e {added} ] && sed 's/^/added\\t/' {added}\n\
         {installed} | sed 's/^/installed\\t/'\n\
         if [ -e {added} ]; then\n\
         \tinst=$(mktemp); {installed} > \"$inst\"\n\
         \tpurge=$(LC_ALL=C sort -u {added} | LC_ALL=C comm -12 - \"$inst\")\n\
         \trm -f \"$inst\"\n\
         \t[ -e {before} ] && purge=$(printf '%s\\n' \"$purge\" | LC_ALL=C comm -23 - {before})\n\
         \t[ -n \"$purge\" ] && apt-get -s -q purge $purge | awk '/^Purg / {{ print \"sim\\t\" $2 }}'\n\
         fi\n\
         printf 'end\\n'\n",
        backups = sh_quote(BACKUPS),
        units = sh_quote(UNITS),
        before = sh_quote(PACKAGES_BEFORE),
        added = sh_quote(PACKAGES_ADDED),
        installed = ledger::INSTALLED,
    )
}

/// What a host's ledger says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Path -> its records (`.orig`, `.created`, `.orig-dir` with `MODE OWNER`).
    pub paths: BTreeMap<String, Vec<(&'static str, String)>>,
    /// Unit -> `ACTIVE ENABLED` before groundwork acted on it.
    pub units: BTreeMap<String, (String, String)>,
    /// `None`: groundwork never ran a package transaction here.
    pub before: Option<BTreeSet<String>>,
    pub added: BTreeSet<String>,
    pub installed: BTreeSet<String>,
    /// What apt's simulation of the purge would take.
    pub simulated: BTreeSet<String>,
    /// The output ended with `end` (not cut).
    pub complete: bool,
}

impl Ledger {
    pub fn parse(out: &str) -> Ledger {
        let mut l = Ledger::default();
        for line in out.lines() {
            let cols: Vec<&str> = line.splitn(3, '\t').collect();
            match cols.as_slice() {
                ["entry", name, rest] => {
                    if let Some((path, kind)) = ledger::parse_entry(name) {
                        l.paths.entry(path).or_default().push((kind, rest.to_string()));
                    }
                }
                ["unit", name, state] => {
                    let unit = name.replace("%2F", "/").replace("%25", "%");
                    let mut w = state.split_whitespace();
                    let active = w.next().unwrap_or("").to_string();
                    let enabled = w.next().unwrap_or("").to_string();
                    l.units.insert(unit, (active, enabled));
                }
                ["before", p] => {
                    l.before.get_or_insert_with(BTreeSet::new).insert(p.to_string());
                }
                ["added", p] => {
                    l.added.insert(p.to_string());
                }
                ["installed", p] => {
                    l.installed.insert(p.to_string());
                }
                ["sim", p] => {
                    l.simulated.insert(p.to_string());
                }
                ["end"] => l.complete = true,
                _ => {}
            }
        }
        l
    }

    /// Nothing recorded: groundwork left nothing here (or never ran).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.units.is_empty() && self.before.is_none() && self.added.is_empty()
    }
}

/// What a reset does on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Units groundwork started that did not run before.
    pub stop: Vec<String>,
    /// Units groundwork enabled that were not enabled before.
    pub disable: Vec<String>,
    /// Files put back from their first backup.
    pub restore: Vec<String>,
    /// Directories whose mode and owner go back: (path, mode, owner).
    pub directory_meta: Vec<(String, String, String)>,
    /// Files and directories groundwork created, deepest first.
    pub remove: Vec<String>,
    /// Packages groundwork installed that the host did not have before.
    pub purge: Vec<String>,
    /// Units that ran before: restarted with their own files (if they are still there).
    pub restart: Vec<String>,
    /// Why nothing can be done here (the purge would take more than groundwork brought).
    pub refused: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty()
            && self.disable.is_empty()
            && self.restore.is_empty()
            && self.directory_meta.is_empty()
            && self.remove.is_empty()
            && self.purge.is_empty()
            && self.restart.is_empty()
    }
}

/// `systemctl is-enabled` states that start the unit at boot.
fn enabled(state: &str) -> bool {
    matches!(state, "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated")
}

/// The reset of a host from its ledger. Pure.
pub fn decide(l: &Ledger) -> Plan {
    let mut p = Plan::default();
    for (unit, (active, en)) in &l.units {
        if active != "active" {
            p.stop.push(unit.clone());
        } else {
            p.restart.push(unit.clone());
        }
        if !enabled(en) {
            p.disable.push(unit.clone());
        }
    }
    for (path, records) in &l.paths {
        let has = |k: &str| records.iter().find(|(kind, _)| *kind == k);
        if has(ORIG).is_some() {
            p.restore.push(path.clone());
        } else if has(CREATED).is_some() {
            p.remove.push(path.clone());
        } else if let Some((_, meta)) = has(ORIG_DIR) {
            let mut w = meta.split_whitespace();
            if let (Some(mode), Some(owner)) = (w.next(), w.next()) {
                p.directory_meta.push((path.clone(), mode.to_string(), owner.to_string()));
            }
        }
    }
    // A unit whose file groundwork wrote (k3s) runs without a record of its own: it is stopped
    // and disabled before its file goes.
    for path in &p.remove {
        if let Some(unit) =
            path.strip_prefix("/etc/systemd/system/").filter(|u| !u.contains('/') && u.ends_with(".service"))
        {
            for list in [&mut p.stop, &mut p.disable] {
                if !list.iter().any(|u| u == unit) {
                    list.push(unit.to_string());
                }
            }
        }
    }
    // Deepest first: a directory groundwork made goes after what it made inside it.
    p.remove.sort_by(|a, b| b.matches('/').count().cmp(&a.matches('/').count()).then(a.cmp(b)));
    let before = l.before.clone().unwrap_or_default();
    p.purge = l.added.iter().filter(|x| l.installed.contains(*x) && !before.contains(*x)).cloned().collect();
    let more: Vec<&String> = l.simulated.iter().filter(|x| !p.purge.contains(x)).collect();
    if !more.is_empty() {
        p.refused = Some(format!(
            "purging what groundwork installed would also remove {} (installed since, and depending on it); \
             nothing was changed here: remove those first, or keep this host as it is",
            more.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    p
}

/// The script that carries out `p`. Each part prints a `groundwork-part` line; what could not
/// be done and is not fatal (a directory with other files in it) prints `kept\tPATH\tWHY`.
pub fn script(p: &Plan) -> String {
    let q = |v: &[String]| v.iter().map(|s| sh_quote(s)).collect::<Vec<_>>().join(" ");
    let mut s = String::from(
        "set -u\nexport DEBIAN_FRONTEND=noninteractive\npart() { printf 'groundwork-part\\t%s\\n' \"$1\"; }\nfail() { printf 'groundwork-failed\\t%s\\n' \"$1\"; exit 1; }\n",
    );
    if !p.purge.is_empty() {
        // Before any file goes: a daemon of a package that goes writes its state when it
        // stops (named its zones), which would bring back what was just removed.
        s.push_str(&format!(
            "part 'stop what the purge removes'\n\
             for u in $(dpkg -L {} 2>/dev/null | sed -n 's,^/\\(usr/\\)\\{{0,1\\}}lib/systemd/system/\\([^/@]*\\.service\\)$,\\2,p' | sort -u); do systemctl stop \"$u\" 2>/dev/null || true; done\n",
            q(&p.purge)
        ));
    }
    if !p.stop.is_empty() || !p.disable.is_empty() {
        s.push_str("part 'stop and disable'\n");
        for u in &p.stop {
            s.push_str(&format!("systemctl stop {} 2>/dev/null || true\n", sh_quote(u)));
        }
        for u in &p.disable {
            s.push_str(&format!("systemctl disable {} 2>/dev/null || true\n", sh_quote(u)));
        }
    }
    if !p.restore.is_empty() {
        s.push_str("part 'restore files'\n");
        for path in &p.restore {
            let (b, d) = (sh_quote(&format!("{}{ORIG}", backup_name(path))), sh_quote(path));
            let tmp = sh_quote(&format!("{path}.groundwork-reset"));
            s.push_str(&format!(
                "{{ [ ! -d {d} ] || rm -rf -- {d}; }} && cp -a {b} {tmp} && mv -f {tmp} {d} || fail {}\n",
                sh_quote(&format!("restore {path}"))
            ));
        }
    }
    for (path, mode, owner) in &p.directory_meta {
        let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
        s.push_str(&format!(
            "chmod {} {d} && chown {}:{} {d} || fail {}\n",
            sh_quote(mode),
            sh_quote(user),
            sh_quote(group),
            sh_quote(&format!("mode and owner of {path}")),
            d = sh_quote(path)
        ));
    }
    if !p.remove.is_empty() {
        s.push_str("part 'remove what groundwork created'\n");
        for path in &p.remove {
            let d = sh_quote(path);
            s.push_str(&format!(
                "if [ -d {d} ] && [ ! -L {d} ]; then rmdir -- {d} 2>/dev/null || printf 'kept\\t%s\\t%s\\n' {d} 'a directory with files groundwork did not make'; else rm -f -- {d}; fi\n"
            ));
        }
    }
    if !p.stop.is_empty() || !p.remove.is_empty() {
        s.push_str("systemctl daemon-reload 2>/dev/null || true\n");
    }
    if !p.purge.is_empty() {
        s.push_str(&format!(
            "part 'purge {} packages'\n\
             apt-get purge -y -q -o DPkg::Lock::Timeout=600 {} > /var/tmp/groundwork-reset-purge.log 2>&1 || {{ tail -n 20 /var/tmp/groundwork-reset-purge.log >&2; fail 'apt-get purge'; }}\n\
             rm -f /var/tmp/groundwork-reset-purge.log\n",
            p.purge.len(),
            q(&p.purge)
        ));
    }
    if !p.purge.is_empty() {
        // What the purge left in the directories under /etc that groundwork's package
        // transactions added and no installed package owns now (a file a maintainer script
        // wrote, an empty directory): deepest first.
        s.push_str(&format!(
            "if [ -e {added} ]; then LC_ALL=C sort -ru {added} | while IFS= read -r d; do \
             [ -d \"$d\" ] || continue; dpkg -S \"$d\" >/dev/null 2>&1 && continue; \
             find \"$d\" -mindepth 1 -maxdepth 1 ! -type d | while IFS= read -r f; do dpkg -S \"$f\" >/dev/null 2>&1 || {{ rm -f -- \"$f\" && printf 'leftover\\t%s\\n' \"$f\"; }}; done; \
             rmdir -- \"$d\" 2>/dev/null && printf 'leftover\\t%s\\n' \"$d\"; done; fi\n",
            added = sh_quote(ledger::ETC_DIRS_ADDED)
        ));
    }
    if !p.restart.is_empty() {
        s.push_str("part 'restart what ran before'\n");
        for u in &p.restart {
            // A unit whose package went with the purge is not there to restart.
            s.push_str(&format!(
                "if systemctl cat {u} >/dev/null 2>&1; then systemctl try-restart {u} || fail {}; fi\n",
                sh_quote(&format!("restart {}", u)),
                u = sh_quote(u)
            ));
        }
    }
    s.push_str(&format!(
        "part 'forget the ledger'\nrm -rf -- {} {} {} /var/lib/apt/lists/.groundwork-updated\npart done\n",
        sh_quote(BACKUPS),
        sh_quote(ledger::STATE),
        sh_quote(ledger::LOGS)
    ));
    s
}

/// What the purge left under /etc that the script removed (`leftover` lines).
pub fn leftovers(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|l| l.strip_prefix("leftover\t")).map(str::to_string).collect()
}

/// The paths `kept` lines of the script's output name, with why.
pub fn kept(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("kept\t"))
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, why)| (p.to_string(), why.to_string()))
        .collect()
}

/// The reset for people: one line per kind of change, with the paths and packages.
pub fn describe(p: &Plan) -> Vec<String> {
    let list = |v: &[String]| v.join(", ");
    let mut out = Vec::new();
    if let Some(r) = &p.refused {
        out.push(format!("REFUSED: {r}"));
        return out;
    }
    if !p.stop.is_empty() {
        out.push(format!("stop {}", list(&p.stop)));
    }
    if !p.disable.is_empty() {
        out.push(format!("disable {}", list(&p.disable)));
    }
    if !p.restore.is_empty() {
        out.push(format!("restore {} file(s) from their first backup: {}", p.restore.len(), list(&p.restore)));
    }
    for (path, mode, owner) in &p.directory_meta {
        out.push(format!("directory {path}: mode {mode}, owner {owner} again"));
    }
    if !p.remove.is_empty() {
        out.push(format!("remove {} path(s) groundwork created: {}", p.remove.len(), list(&p.remove)));
    }
    if !p.purge.is_empty() {
        out.push(format!("purge {} package(s) groundwork installed: {}", p.purge.len(), list(&p.purge)));
        out.push(format!(
            "then remove what the purge leaves in directories under /etc that those packages added ({})",
            ledger::ETC_DIRS_ADDED
        ));
    }
    if !p.restart.is_empty() {
        out.push(format!("restart (where still installed) {}", list(&p.restart)));
    }
    out.push(format!("remove the ledger: {BACKUPS}, {}, {}", ledger::STATE, ledger::LOGS));
    out
}

/// One host's reset, as it went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub host: String,
    pub plan: Plan,
    /// Paths left in place, with why (a directory with files groundwork did not make).
    pub kept: Vec<(String, String)>,
    /// What the purge left under /etc in directories its packages added, removed afterwards.
    pub leftovers: Vec<String>,
    /// The host's records removed from the site's zones (`NAME TYPE`), when the DNS primary
    /// stays.
    pub dns_removed: Vec<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Read a host's ledger and decide its reset.
pub async fn read(session: &crate::ssh::Session) -> Result<Plan, String> {
    let out = session.exec(&read_script(), None).await.map_err(|e| e.to_string())?;
    let l = Ledger::parse(&out.stdout_str());
    if !l.complete {
        return Err(format!("the ledger could not be read (exit {}): {}", out.status, out.stderr_str().trim()));
    }
    Ok(decide(&l))
}

/// Carry out a host's reset; `Err` names the part that failed, with its last words.
pub async fn carry_out(
    session: &crate::ssh::Session,
    p: &Plan,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Vec<(String, String)>, Vec<String>), String> {
    let on_line = |line: &str| {
        if let Some(part) = line.strip_prefix("groundwork-part\t") {
            progress(part);
        }
    };
    let out = session.exec_watching(&script(p), None, &on_line).await.map_err(|e| e.to_string())?;
    let stdout = out.stdout_str();
    if out.ok() {
        return Ok((kept(&stdout), leftovers(&stdout)));
    }
    let part = stdout.lines().find_map(|l| l.strip_prefix("groundwork-failed\t")).unwrap_or("the reset");
    let mut msg = format!("{part} failed (exit {})", out.status);
    for l in out.stderr_str().lines().rev().take(10).collect::<Vec<_>>().into_iter().rev() {
        msg.push_str(&format!("\n  {l}"));
    }
    Err(msg)
}

/// The records groundwork put in the site's zones for a host that is reset while the DNS
/// primary stays: its name's address records, the names that point to it (service CNAMEs,
/// the k3s label's record for its address) and its PTR. Run on the primary; the zones are
/// read with a signed AXFR and changed with a signed update, as the zone steps do. Prints
/// `removed<TAB>NAME TYPE` for each.
pub fn dns_removal_script(domain: &str, reverse_zone: &str, host: &str, address: &str) -> String {
    let fqdn = format!("{host}.{domain}.");
    let ptr = {
        let mut o: Vec<&str> = address.split('.').collect();
        o.reverse();
        format!("{}.in-addr.arpa.", o.join("."))
    };
    format!(
        "set -u
key={key}
         recs=$(dig -k \"$key\" @127.0.0.1 {zone} AXFR +noall +answer +tries=2 +time=3 | \
         awk -v t={fqdn} -v a={addr} '($4 == \"A\" && $5 == a) {{ print $1, \"A\", $5 }} ($4 == \"CNAME\" && tolower($5) == tolower(t)) {{ print $1, \"CNAME\", $5 }}') || exit 1
         ptr=$(dig -k \"$key\" @127.0.0.1 {rzone} AXFR +noall +answer +tries=2 +time=3 | awk -v p={ptr} 'tolower($1) == tolower(p) && $4 == \"PTR\" {{ print $1, \"PTR\", $5 }}')
         [ -n \"$recs$ptr\" ] || exit 0
         {{ echo 'server 127.0.0.1'; echo {zone_line}; printf '%s\\n' \"$recs\" | awk 'NF {{ print \"update delete\", $1, $2, $3 }}'; echo send; \
         echo {rzone_line}; printf '%s\\n' \"$ptr\" | awk 'NF {{ print \"update delete\", $1, $2, $3 }}'; echo send; }} | nsupdate -k \"$key\" || exit 1
         printf '%s\\n%s\\n' \"$recs\" \"$ptr\" | awk 'NF {{ print \"removed\\t\" $1 \" \" $2 }}'
",
        key = sh_quote("/etc/bind/groundwork/ddns.key"),
        zone = sh_quote(domain),
        rzone = sh_quote(reverse_zone),
        fqdn = sh_quote(&fqdn),
        addr = sh_quote(address),
        ptr = sh_quote(&ptr),
        zone_line = sh_quote(&format!("zone {domain}")),
        rzone_line = sh_quote(&format!("zone {reverse_zone}")),
    )
}

/// The `removed` lines of [`dns_removal_script`].
pub fn removed_records(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|l| l.strip_prefix("removed\t")).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "entry\t%2Fetc%2Fhosts.orig\t\n\
        entry\t%2Fetc%2Fbind%2Fgroundwork.created\t\n\
        entry\t%2Fetc%2Fbind%2Fgroundwork%2Frole.created\t\n\
        entry\t%2Fetc%2Fbind%2Fgroundwork%2Frole.wrote\t\n\
        entry\t%2Fsrv.orig-dir\t755 root:root\n\
        entry\t%2Fetc%2Fsystemd%2Fsystem%2Fk3s-agent.service.created\t\n\
        unit\tssh\tactive enabled\n\
        unit\tk3s\tinactive \n\
        before\tbase-files\nbefore\topenssh-server\n\
        added\tbind9\nadded\tlibuv1\nadded\tchrony\n\
        installed\tbase-files\ninstalled\topenssh-server\ninstalled\tbind9\ninstalled\tlibuv1\n\
        sim\tbind9\nsim\tlibuv1\nend\n";

    #[test]
    fn a_ledger_becomes_a_reset_that_undoes_only_what_groundwork_did() {
        let l = Ledger::parse(READ);
        assert!(l.complete);
        let p = decide(&l);
        assert_eq!(p.stop, ["k3s", "k3s-agent.service"]);
        assert_eq!(p.disable, ["k3s", "k3s-agent.service"], "no enabled state before: it did not exist");
        assert_eq!(p.restart, ["ssh"]);
        assert_eq!(p.restore, ["/etc/hosts"]);
        assert_eq!(
            p.remove,
            ["/etc/bind/groundwork/role", "/etc/systemd/system/k3s-agent.service", "/etc/bind/groundwork"],
            "deepest first"
        );
        assert_eq!(p.directory_meta, [("/srv".to_string(), "755".to_string(), "root:root".to_string())]);
        // chrony was purged by hand since: nothing to purge; openssh-server was there before.
        assert_eq!(p.purge, ["bind9", "libuv1"]);
        assert_eq!(p.refused, None);
        let s = script(&p);
        let out = std::process::Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(s.contains("apt-get purge -y -q -o DPkg::Lock::Timeout=600 'bind9' 'libuv1'"), "{s}");
        assert!(s.find("restore files").unwrap() < s.find("purge 2 packages").unwrap(), "files before the purge");
    }

    #[test]
    fn a_purge_that_would_take_more_is_refused() {
        let l = Ledger::parse(&format!("{READ}sim\tmy-app\n"));
        let p = decide(&l);
        let why = p.refused.unwrap();
        assert!(why.contains("my-app") && why.contains("nothing was changed"), "{why}");
    }

    #[test]
    fn a_host_groundwork_never_touched_has_nothing_to_reset() {
        let l = Ledger::parse("installed\tbase-files\nend\n");
        assert!(l.is_empty());
        assert!(decide(&l).is_empty());
    }

    #[test]
    fn a_hosts_records_are_found_by_name_address_and_alias() {
        let s = dns_removal_script("rz.example", "0.77.10.in-addr.arpa", "kz2", "10.77.0.141");
        let out = std::process::Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(s.contains("-v t='kz2.rz.example.' -v a='10.77.0.141'"), "{s}");
        assert!(s.contains("-v p='141.0.77.10.in-addr.arpa.'"), "{s}");
        assert_eq!(removed_records("removed\tkz2.rz.example. A\nx\n"), ["kz2.rz.example. A"]);
    }

    #[test]
    fn paths_are_quoted_in_the_script() {
        let p =
            Plan { restore: vec!["/etc/x'; reboot; '".into()], remove: vec!["/etc/$(id)".into()], ..Plan::default() };
        let s = script(&p);
        assert!(s.contains(r"'/etc/x'\''; reboot; '\'''"), "{s}");
        assert!(s.contains("'/etc/$(id)'"), "{s}");
        let out = std::process::Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
        assert!(out.status.success());
    }
}
