//! Zone steps: bring the records groundwork owns in a dynamic zone in line with the zone data
//! it rendered, with a TSIG-signed RFC 2136 update. The comparison is made here, on the
//! controller; the host only runs the Debian tools of the dns role: `named-checkzone` (the
//! wanted records, as BIND reads them), `dig` (the live zone by AXFR) and `nsupdate`.
//!
//! Only names groundwork manages are touched: the names of the rendered records, plus the names
//! they held at the last sync (kept on the host in [`APPLIED`]`/ZONE.applied`), so a host removed
//! from the answer file loses its records. Everything else (kea-dhcp-ddns's leases) is left
//! alone. The SOA is compared without its serial, which BIND bumps on every update.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Action, Decision, Detail, file};
use crate::engine::facts::{PathFact, sh_quote};
use crate::playbook::step::Source;

/// Where the record of the names managed in each zone is kept on the host.
pub const APPLIED: &str = "/var/lib/groundwork/dns";
/// Record types BIND maintains itself in a signed zone: never compared.
const SKIP: &[&str] = &["RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY", "TYPE65534"];

/// A zone step, rendered.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone, without the final dot.
    pub zone: String,
    /// The zone file groundwork rendered (checked by `named-checkzone` when it was written).
    pub records: String,
    /// The TSIG key file that signs the transfer and the update.
    pub key: String,
    /// Sync only when this check succeeds (a secondary has no zone of its own to update).
    pub onlyif: Option<String>,
}

impl Zone {
    pub fn applied_path(&self) -> String {
        format!("{APPLIED}/{}.applied", self.zone.to_ascii_lowercase())
    }

    /// The fact script's part for this zone (index `i`): the record lines of each source,
    /// prefixed so they can be told apart (`zw` wanted, `zl` live, `za` applied), and the exit
    /// status of each tool. Read-only. It runs in the background, its tools side by side (a
    /// transfer and a zone check are a no-op's slowest parts on a DNS server), each writing to
    /// its own file under `$z`, which the facts script prints in one piece once all is done.
    pub fn facts_script(&self, i: usize) -> String {
        let zone = sh_quote(&self.zone);
        let records = sh_quote(&self.records);
        let key = sh_quote(&self.key);
        let applied = sh_quote(&self.applied_path());
        let body = format!(
            "{{ w=$(named-checkzone -q -D -o - {zone} {records}); rc=$?; printf '%s\\n' \"$w\" | sed 's/^/zw\\t{i}\\t/'; printf 'zone\\t{i}\\twant\\t%s\\n' $rc; }} >\"$z/{i}w\" &\n\
             {{ l=$(dig -k {key} @127.0.0.1 {zone} AXFR +noall +answer +tries=2 +time=3); rc=$?; printf '%s\\n' \"$l\" | sed 's/^/zl\\t{i}\\t/'; printf 'zone\\t{i}\\tlive\\t%s\\n' $rc; }} >\"$z/{i}l\" &\n\
             if [ -f {applied} ]; then sed 's/^/za\\t{i}\\t/' {applied}; printf 'zone\\t{i}\\tapplied\\n'; fi\n\
             wait\n"
        );
        let part = match &self.onlyif {
            Some(check) => format!(
                "if sh -c {} >/dev/null 2>&1; then\n{body}else printf 'zone\\t{i}\\tskip\\n'; fi\n",
                sh_quote(check)
            ),
            None => body,
        };
        format!("{{\n{part}}} >\"$z/{i}\" &\n")
    }
}

/// What the host said about a zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneFact {
    /// The `onlyif` check failed: nothing to do here.
    pub skip: bool,
    /// The records `named-checkzone` read from the rendered file, and its exit status.
    pub want: Vec<String>,
    pub want_status: Option<i32>,
    /// The zone as the local server transferred it, and dig's exit status.
    pub live: Vec<String>,
    pub live_status: Option<i32>,
    /// The record of managed names written by the last sync (None: never synced).
    pub applied: Option<Vec<String>>,
}

/// One resource record, compared in a canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub rdata: String,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} IN {} {}", self.name, self.ttl, self.rtype, self.rdata)
    }
}

/// Zone text, one record a line with full names (`named-checkzone -D`, `dig AXFR`, the applied
/// file) -> the records, canonical: names lower case, rdata with single spaces and (but for
/// TXT) lower case. Comments, blank lines, other classes and DNSSEC upkeep are left out.
pub fn records<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<Record> {
    let mut out = BTreeSet::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(ttl), Some(class), Some(rtype)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let rdata: Vec<&str> = words.collect();
        let (Ok(ttl), true, false) = (ttl.parse::<u32>(), class.eq_ignore_ascii_case("IN"), rdata.is_empty()) else {
            continue;
        };
        let rtype = rtype.to_ascii_uppercase();
        if SKIP.contains(&rtype.as_str()) {
            continue;
        }
        let rdata = rdata.join(" ");
        let rdata = if rtype == "TXT" { rdata } else { rdata.to_ascii_lowercase() };
        out.insert(Record { name: name.to_ascii_lowercase(), ttl, rtype, rdata });
    }
    out
}

fn soa(set: &BTreeSet<Record>) -> Option<&Record> {
    set.iter().find(|r| r.rtype == "SOA")
}

/// A SOA without its serial: TTL, primary, contact and the four timers.
fn soa_key(r: &Record) -> (u32, Vec<&str>) {
    let f: Vec<&str> = r.rdata.split_whitespace().collect();
    let mut key: Vec<&str> = f.iter().take(2).copied().collect();
    key.extend(f.iter().skip(3));
    (r.ttl, key)
}

/// The differences between what groundwork wants in a zone and what the server has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub add: Vec<Record>,
    pub delete: Vec<Record>,
    /// The new SOA (the live serial plus one), when anything but the serial differs.
    pub soa: Option<Record>,
    /// The record of managed names on the host is not the wanted one.
    pub applied_differs: bool,
}

impl Changes {
    pub fn none(&self) -> bool {
        self.add.is_empty() && self.delete.is_empty() && self.soa.is_none() && !self.applied_differs
    }

    fn updates(&self) -> bool {
        !self.add.is_empty() || !self.delete.is_empty() || self.soa.is_some()
    }
}

/// Compare the wanted records with the live zone; `applied` is the record of the names the
/// last sync managed.
pub fn compare(want: &BTreeSet<Record>, live: &BTreeSet<Record>, applied: &BTreeSet<Record>) -> Changes {
    let desired: BTreeSet<&Record> = want.iter().filter(|r| r.rtype != "SOA").collect();
    let managed: BTreeSet<&str> = desired
        .iter()
        .map(|r| r.name.as_str())
        .chain(applied.iter().filter(|r| r.rtype != "SOA").map(|r| r.name.as_str()))
        .collect();
    let current: BTreeSet<&Record> =
        live.iter().filter(|r| r.rtype != "SOA" && managed.contains(r.name.as_str())).collect();
    let add = desired.difference(&current).map(|r| (*r).clone()).collect();
    let delete = current.difference(&desired).map(|r| (*r).clone()).collect();
    let soa = match (soa(want), soa(live)) {
        (Some(w), Some(l)) if soa_key(w) != soa_key(l) => {
            let live_serial: u32 = l.rdata.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut f: Vec<String> = w.rdata.split_whitespace().map(str::to_string).collect();
            if f.len() > 2 {
                f[2] = live_serial.wrapping_add(1).to_string();
            }
            Some(Record { rdata: f.join(" "), ..w.clone() })
        }
        _ => None,
    };
    Changes { add, delete, soa, applied_differs: applied != want }
}

/// The `nsupdate` input that makes the changes: deletes first (a CNAME can only be added once
/// the records at its name are gone), but the apex's NS records last (BIND ignores deleting
/// the last NS of a zone), then the SOA.
pub fn update_script(zone: &str, c: &Changes) -> String {
    let apex = format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase());
    let apex_ns = |r: &&Record| r.rtype == "NS" && r.name == apex;
    let mut s = format!("server 127.0.0.1\nzone {apex}\n");
    for r in c.delete.iter().filter(|r| !apex_ns(r)) {
        let _ = writeln!(s, "update delete {r}");
    }
    for r in &c.add {
        let _ = writeln!(s, "update add {r}");
    }
    for r in c.delete.iter().filter(apex_ns) {
        let _ = writeln!(s, "update delete {r}");
    }
    if let Some(r) = &c.soa {
        let _ = writeln!(s, "update add {r}");
    }
    s.push_str("send\n");
    s
}

/// The record of managed names the host keeps: the wanted records, sorted.
pub fn applied_file(zone: &str, want: &BTreeSet<Record>) -> String {
    let mut s = format!("; names groundwork manages in {zone} (written after each sync)\n");
    for r in want {
        let _ = writeln!(s, "{r}");
    }
    s
}

/// What differs, for people: one line per record.
fn describe(zone: &str, c: &Changes) -> String {
    let mut s = String::new();
    for r in &c.add {
        let _ = writeln!(s, "missing: {r}");
    }
    for r in &c.delete {
        let _ = writeln!(s, "extra:   {r}");
    }
    if let Some(r) = &c.soa {
        let _ = writeln!(s, "SOA differs: now {}", r.rdata);
    }
    if !c.updates() {
        let _ = writeln!(s, "{zone} is in sync; the record of managed names is written");
    }
    s.trim_end().to_string()
}

/// The nsupdate run: the script reads its input on stdin.
pub fn nsupdate_script(key: &str) -> String {
    format!("nsupdate -k {}", sh_quote(key))
}

/// Decide a zone step. In a dry run, a zone that cannot be read yet (a fresh host: the zone
/// file is not rendered, named does not serve it) would be synced; in a real run that is an
/// error naming the tool that failed.
pub fn decide(z: &Zone, fact: &ZoneFact, run: &str, dry_run: bool) -> Result<Decision, String> {
    if fact.skip {
        return Ok(Decision::converged());
    }
    let want = records(fact.want.iter().map(String::as_str));
    let live = records(fact.live.iter().map(String::as_str));
    let unreadable = if fact.want_status != Some(0) || want.is_empty() {
        Some(format!(
            "named-checkzone cannot read {} for {} (exit {})",
            z.records,
            z.zone,
            fact.want_status.map_or("unknown".into(), |s| s.to_string())
        ))
    } else if fact.live_status != Some(0) || live.is_empty() {
        Some(format!("the local server did not transfer {} (is named running with the zone?)", z.zone))
    } else {
        None
    };
    if let Some(why) = unreadable {
        if !dry_run {
            return Err(why);
        }
        return Ok(Decision {
            actions: vec![Action::Run { command: nsupdate_script(&z.key), changes: Vec::new() }],
            detail: Some(Detail::Text(format!("sync the records of {} ({why})", z.zone))),
            ..Decision::default()
        });
    }
    let applied = records(fact.applied.iter().flatten().map(String::as_str));
    let changes = compare(&want, &live, &applied);
    if changes.none() {
        return Ok(Decision::converged());
    }
    let mut actions = Vec::new();
    if changes.updates() {
        actions.push(Action::Update {
            key: z.key.clone(),
            zone: z.zone.clone(),
            input: update_script(&z.zone, &changes),
            added: changes.add.len(),
            deleted: changes.delete.len(),
            soa: changes.soa.is_some(),
        });
    }
    if changes.applied_differs {
        // The record of managed names is replaced whole (a candidate, then a move).
        let record = file::File {
            dest: z.applied_path(),
            source: Source::Inline(String::new()),
            validate: None,
            notify: Vec::new(),
            mode: 0o644,
            owner: "root:root".into(),
            secret: false,
        };
        let content = applied_file(&z.zone, &want);
        actions.push(Action::MakeDir { path: APPLIED.into(), mode: 0o755, owner: "root:root".into() });
        actions.extend(file::decide(&record, content.as_bytes(), &PathFact::Absent, run)?.actions);
    }
    Ok(Decision { actions, detail: Some(Detail::Text(describe(&z.zone, &changes))), ..Decision::default() })
}
