//! Facts about a target host, gathered in one round trip: one shell script prints one record
//! per line, and the steps are decided from the answers (pyinfra-style).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::steps::zone::{Zone, ZoneFact};

/// Single-quote a string for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What to look at on a host.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub packages: Vec<String>,
    pub files: Vec<String>,
    pub dirs: Vec<String>,
    /// Shell checks (guards of commands, wait conditions): only their exit status is kept.
    pub checks: Vec<String>,
    pub services: Vec<String>,
    /// Zones whose records are compared (the wanted, live and applied records of each).
    pub zones: Vec<Zone>,
    /// Ask for the Debian architecture (a role uploads binaries built for one).
    pub arch: bool,
    /// Only what the steps asked: no OS, virtualization, machine-id or apt lists (a step's
    /// live re-check after a change, which happens once per step on a first converge).
    pub steps_only: bool,
}

impl Probe {
    pub fn file(&mut self, path: &str) -> usize {
        index_of(&mut self.files, path)
    }
    pub fn dir(&mut self, path: &str) -> usize {
        index_of(&mut self.dirs, path)
    }
    pub fn check(&mut self, cmd: &str) -> usize {
        index_of(&mut self.checks, cmd)
    }
    pub fn service(&mut self, name: &str) {
        index_of(&mut self.services, name);
    }
    pub fn zone(&mut self, z: &Zone) -> usize {
        self.zones.push(z.clone());
        self.zones.len() - 1
    }

    /// The script; it never fails as a whole and prints `end` last, so a cut output shows.
    /// The checks (guards, waits: a no-op's slowest part, database logins take tens of ms)
    /// start first, all at once, and report on standard error, one short line each in one
    /// write; everything else reports in order on standard output meanwhile. Parse both.
    pub fn script(&self) -> String {
        let mut s = String::from("exec 3>&2 2>/dev/null </dev/null\n");
        for (i, c) in self.checks.iter().enumerate() {
            let _ = writeln!(
                s,
                "{{ if sh -c {} >/dev/null 2>&1 3>&-; then printf 'check\\t{i}\\t0\\n' >&3; else printf 'check\\t{i}\\t1\\n' >&3; fi; }} &",
                sh_quote(c)
            );
        }
        // The container type is in /run/systemd/container where systemd runs (what
        // systemd-detect-virt reads first): one process less per host there.
        if !self.steps_only {
            s.push_str(
                ". /etc/os-release; printf 'os\\t%s\\t%s\\t%s\\n' \"$ID\" \"$VERSION_CODENAME\" \"$PRETTY_NAME\"\n\
             v=; [ -r /run/systemd/container ] && read -r v </run/systemd/container; [ -n \"$v\" ] || v=$(systemd-detect-virt || true); printf 'virt\\t%s\\n' \"$v\"\n\
             read -r m </etc/machine-id; printf 'machine\\t%s\\n' \"$m\"\n\
             for p in /var/lib/apt/lists/*_Packages; do [ -e \"$p\" ] && printf 'apt\\tlists\\n'; break; done\n",
            );
        }
        if self.arch && !self.steps_only {
            s.push_str("printf 'arch\\t%s\\n' \"$(dpkg --print-architecture)\"\n");
        }
        if !self.packages.is_empty() {
            let list: Vec<String> = self.packages.iter().map(|p| sh_quote(p)).collect();
            let _ = writeln!(s, "dpkg-query -W -f='pkg\\t${{Package}}\\t${{db:Status-Abbrev}}\\n' {}", list.join(" "));
        }
        // Files and directories in one stat (and one sha256sum) for all of them: a stat and a
        // sha256sum per path cost 4 ms each on a small host. Lines come back in argument
        // order and are paired with the indexes of the paths that exist; a count that does
        // not match (a path removed meanwhile) prints no `end`, so the facts count as cut.
        if !self.files.is_empty() {
            s.push_str(&batch_stat("file", "-f", "not-a-file", &self.files, true));
        }
        if !self.dirs.is_empty() {
            s.push_str(&batch_stat("dir", "-d", "absent", &self.dirs, false));
        }
        if !self.services.is_empty() {
            // One systemctl for every service: a block of properties per unit, in argument order.
            let list: Vec<String> = self.services.iter().map(|n| sh_quote(n)).collect();
            let _ = writeln!(
                s,
                "systemctl show --property=ActiveState,UnitFileState -- {} | awk -v names={}                  'BEGIN {{ n = split(names, N, \" \"); i = 1 }}                   /^ActiveState=/ {{ a = substr($0, 13) }} /^UnitFileState=/ {{ u = substr($0, 15) }}                   /^$/ {{ printf \"svc\\t%s\\t%s\\t%s\\n\", N[i], a, u; i++; a = \"\"; u = \"\" }}                   END {{ if (i <= n) printf \"svc\\t%s\\t%s\\t%s\\n\", N[i], a, u }}'",
                list.join(" "),
                sh_quote(&self.services.join(" "))
            );
        }
        // Zones run in the background with the checks, into files of a temporary directory
        // (a cut there prints no `end`, so the facts count as cut).
        if !self.zones.is_empty() {
            s.push_str("z=$(mktemp -d) || exit 1\n");
        }
        for (i, z) in self.zones.iter().enumerate() {
            s.push_str(&z.facts_script(i));
        }
        s.push_str("wait\n");
        if !self.zones.is_empty() {
            let files: Vec<String> =
                (0..self.zones.len()).map(|i| format!("\"$z/{i}\" \"$z/{i}w\" \"$z/{i}l\"")).collect();
            let _ = writeln!(s, "cat -- {} 2>/dev/null; rm -rf -- \"$z\"", files.join(" "));
        }
        s.push_str("printf 'end\\n'\n");
        s
    }
}

/// The facts lines of KIND (`file`, `dir`) for PATHS: `KIND<TAB>i<TAB>absent`, or OTHER when
/// something else is in the way (OTHER is `absent` for a directory: the step then says what
/// is there), or `KIND<TAB>i<TAB>MODE OWNER:GROUP[<TAB>SHA256]` for each path that passes TEST.
fn batch_stat(kind: &str, test: &str, other: &str, paths: &[String], hash: bool) -> String {
    let list: Vec<String> = paths.iter().map(|p| sh_quote(p)).collect();
    let hash_part = if hash { "; printf '%s\\n' --; sha256sum -- \"$@\"" } else { "" };
    format!(
        "i=0; found=; set --\n\
         for p in {list}; do if [ {test} \"$p\" ]; then set -- \"$@\" \"$p\"; found=\"$found $i\"; \
         elif [ -e \"$p\" ]; then printf '{kind}\\t%s\\t{other}\\n' $i; else printf '{kind}\\t%s\\tabsent\\n' $i; fi; i=$((i+1)); done\n\
         if [ $# -gt 0 ]; then {{ stat -c '%a %U:%G' -- \"$@\"{hash_part}; }} | awk -v idx=\"$found\" -v kind={kind} -v hash={h} \
         'BEGIN {{ n = split(idx, I, \" \") }} $0 == \"--\" {{ part = 2; next }} part == 2 {{ h[++k] = $1; next }} {{ m[++j] = $0 }} \
         END {{ if (j != n || (hash && k != n)) {{ print \"facts: a path changed while it was read\" > \"/dev/stderr\"; exit 1 }} \
         for (x = 1; x <= n; x++) {{ sub(/^\\\\/, \"\", h[x]); printf \"%s\\t%s\\t%s%s\\n\", kind, I[x], m[x], hash ? \"\\t\" h[x] : \"\" }} }}' \
         || exit 1; fi\n",
        list = list.join(" "),
        h = u8::from(hash),
    )
}

fn index_of(list: &mut Vec<String>, item: &str) -> usize {
    match list.iter().position(|x| x == item) {
        Some(i) => i,
        None => {
            list.push(item.to_string());
            list.len() - 1
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFact {
    /// Permission bits.
    pub mode: u32,
    pub owner: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathFact {
    Absent,
    /// Something that is not a regular file (or not a directory) is in the way.
    Other,
    File(FileFact),
    Dir {
        mode: u32,
        owner: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFact {
    pub active: String,
    pub enabled: String,
}

impl ServiceFact {
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }
    pub fn is_enabled(&self) -> bool {
        matches!(self.enabled.as_str(), "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub os_id: String,
    pub os_codename: String,
    pub os_pretty: String,
    pub virtualization: String,
    /// /etc/machine-id: with the SSH host key, which machine a host name reached.
    pub machine_id: String,
    pub apt_lists: bool,
    /// `dpkg --print-architecture`, when the probe asked.
    pub arch: String,
    /// Package -> installed (dpkg status `ii`).
    pub packages: HashMap<String, bool>,
    pub files: Vec<PathFact>,
    pub dirs: Vec<PathFact>,
    /// Exit status of each check: 0 is success.
    pub checks: Vec<i32>,
    pub services: HashMap<String, ServiceFact>,
    pub zones: Vec<ZoneFact>,
    pub complete: bool,
}

impl Facts {
    /// Containers (nspawn, lxc, docker...) cannot set the clock or load modules.
    pub fn container(&self) -> bool {
        matches!(
            self.virtualization.as_str(),
            "systemd-nspawn"
                | "lxc"
                | "lxc-libvirt"
                | "docker"
                | "podman"
                | "openvz"
                | "rkt"
                | "wsl"
                | "container-other"
        )
    }

    pub fn parse(out: &str, probe: &Probe) -> Facts {
        let mut f = Facts {
            files: vec![PathFact::Absent; probe.files.len()],
            dirs: vec![PathFact::Absent; probe.dirs.len()],
            checks: vec![1; probe.checks.len()],
            zones: vec![ZoneFact::default(); probe.zones.len()],
            ..Default::default()
        };
        let octal = |s: &str| u32::from_str_radix(s, 8).unwrap_or(0);
        for line in out.lines() {
            // A zone's record lines keep their own tabs: only the prefix is split off.
            if let Some((kind, rest)) = line.split_once('\t')
                && matches!(kind, "zw" | "zl" | "za")
            {
                let Some((i, record)) = rest.split_once('\t') else { continue };
                let Some(z) = i.parse::<usize>().ok().and_then(|i| f.zones.get_mut(i)) else { continue };
                match kind {
                    "zw" => z.want.push(record.to_string()),
                    "zl" => z.live.push(record.to_string()),
                    _ => z.applied.get_or_insert_with(Vec::new).push(record.to_string()),
                }
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            match cols.as_slice() {
                ["os", id, code, pretty] => {
                    f.os_id = id.to_string();
                    f.os_codename = code.to_string();
                    f.os_pretty = pretty.to_string();
                }
                ["virt", v] => f.virtualization = v.to_string(),
                ["machine", id] => f.machine_id = id.to_string(),
                ["apt", "lists"] => f.apt_lists = true,
                ["arch", a] => f.arch = a.to_string(),
                ["pkg", name, status] => {
                    f.packages.insert(name.to_string(), status.trim() == "ii");
                }
                ["file", i, rest @ ..] => {
                    let Some(slot) = i.parse::<usize>().ok().and_then(|i| f.files.get_mut(i)) else { continue };
                    *slot = match rest {
                        ["absent"] => PathFact::Absent,
                        ["not-a-file"] => PathFact::Other,
                        [meta, sha] => {
                            let (mode, owner) = meta.split_once(' ').unwrap_or((meta, ""));
                            PathFact::File(FileFact {
                                mode: octal(mode),
                                owner: owner.to_string(),
                                sha256: sha.to_string(),
                            })
                        }
                        _ => PathFact::Other,
                    };
                }
                ["dir", i, rest @ ..] => {
                    let Some(slot) = i.parse::<usize>().ok().and_then(|i| f.dirs.get_mut(i)) else { continue };
                    *slot = match rest {
                        ["absent"] => PathFact::Absent,
                        [meta] => {
                            let (mode, owner) = meta.split_once(' ').unwrap_or((meta, ""));
                            PathFact::Dir { mode: octal(mode), owner: owner.to_string() }
                        }
                        _ => PathFact::Other,
                    };
                }
                ["check", i, rc] => {
                    if let (Ok(i), Ok(rc)) = (i.parse::<usize>(), rc.parse::<i32>())
                        && let Some(slot) = f.checks.get_mut(i)
                    {
                        *slot = rc;
                    }
                }
                ["svc", name, active, enabled] => {
                    f.services.insert(
                        name.to_string(),
                        ServiceFact { active: active.to_string(), enabled: enabled.to_string() },
                    );
                }
                ["zone", i, what, rest @ ..] => {
                    let Some(z) = i.parse::<usize>().ok().and_then(|i| f.zones.get_mut(i)) else { continue };
                    let rc = rest.first().and_then(|r| r.parse::<i32>().ok());
                    match *what {
                        "skip" => z.skip = true,
                        "want" => z.want_status = rc,
                        "live" => z.live_status = rc,
                        "applied" => {
                            z.applied.get_or_insert_with(Vec::new);
                        }
                        _ => {}
                    }
                }
                ["end"] => f.complete = true,
                _ => {}
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn script_output_parses_back() {
        let mut p = Probe { packages: vec!["bind9".into(), "chrony".into()], ..Default::default() };
        assert_eq!(p.file("/etc/hosts"), 0);
        assert_eq!(p.file("/etc/x y"), 1);
        assert_eq!(p.file("/etc/hosts"), 0);
        p.check("test -e /x");
        p.service("ssh");
        let out = "os\tdebian\tbookworm\tDebian GNU/Linux 12 (bookworm)\nvirt\tsystemd-nspawn\n\
                   pkg\tchrony\tii \npkg\tbind9\tun \nfile\t0\t644 root:root\tabc\nfile\t1\tabsent\n\
                   check\t0\t0\nsvc\tssh\tactive\tenabled\nend\n";
        let f = Facts::parse(out, &p);
        assert!(f.complete && f.container());
        assert_eq!(f.packages.get("chrony"), Some(&true));
        assert_eq!(f.packages.get("bind9"), Some(&false));
        assert_eq!(
            f.files[0],
            PathFact::File(FileFact { mode: 0o644, owner: "root:root".into(), sha256: "abc".into() })
        );
        assert_eq!(f.files[1], PathFact::Absent);
        assert_eq!(f.checks, vec![0]);
        assert!(f.services["ssh"].is_active());
        assert!(p.script().contains("'/etc/x y'"));
    }

    #[test]
    fn zone_records_keep_their_tabs_and_each_zone_its_own() {
        let mut p = Probe::default();
        for (i, name) in ["a.test", "b.test"].iter().enumerate() {
            let z = Zone { zone: name.to_string(), records: format!("/r/{name}"), key: "/k".into(), onlyif: None };
            assert_eq!(p.zone(&z), i);
        }
        let out = "zw\t0\ta.test.\t3600 IN A\t10.0.0.1\nzone\t0\twant\t0\nzl\t0\ta.test.\t\t3600\tIN\tA\t10.0.0.1\n\
                   zone\t0\tlive\t0\nzone\t1\tskip\nzw\t7\tstray\nza\t0\t; header\nzone\t0\tapplied\nend\n";
        let f = Facts::parse(out, &p);
        let z = &f.zones[0];
        assert_eq!(z.want, vec!["a.test.\t3600 IN A\t10.0.0.1"]);
        assert_eq!(z.live, vec!["a.test.\t\t3600\tIN\tA\t10.0.0.1"]);
        assert_eq!((z.want_status, z.live_status, z.skip), (Some(0), Some(0), false));
        assert_eq!(z.applied.as_deref(), Some(&["; header".to_string()][..]));
        assert!(f.zones[1].skip && f.zones[1].applied.is_none() && f.complete);
    }

    #[test]
    fn checks_that_run_at_once_each_report_their_own_status() {
        let mut p = Probe::default();
        p.file("/etc/hostname");
        for i in 0..40 {
            p.check(&format!("test {} -eq 0 # {i}", i % 3));
        }
        let out = std::process::Command::new("sh").arg("-c").arg(p.script()).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // The checks report apart from the rest, so their lines never cut into another's.
        assert!(!stdout.contains("check\t") && stderr.lines().all(|l| l.starts_with("check\t")), "{stderr}");
        let f = Facts::parse(&format!("{stderr}\n{stdout}"), &p);
        assert!(f.complete);
        let want: Vec<i32> = (0..40).map(|i| if i % 3 == 0 { 0 } else { 1 }).collect();
        assert_eq!(f.checks, want);
    }

    #[test]
    fn zones_read_side_by_side_come_back_whole_and_in_their_own_slots() {
        // Run for real with sh: the tools' exit status (127 where BIND's tools are missing, or
        // dig's failure) and the applied record file are each reported under their own zone,
        // a skipped zone says so, the checks still report, and nothing is left in the temp dir.
        let dir = tempfile::tempdir().unwrap();
        let applied = dir.path().join("a.test.applied");
        std::fs::write(&applied, "; names\na.test.\n").unwrap();
        let mut p = Probe::default();
        p.check("true");
        let mut z = Zone { zone: "a.test".into(), records: "/nonexistent".into(), key: "/k".into(), onlyif: None };
        p.zone(&z);
        z.onlyif = Some("false".into());
        p.zone(&z);
        let script =
            p.script().replace(&Zone { zone: "a.test".into(), ..z.clone() }.applied_path(), applied.to_str().unwrap());
        let out = std::process::Command::new("sh").arg("-c").arg(&script).env("TMPDIR", dir.path()).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let f = Facts::parse(&format!("{stderr}\n{stdout}"), &p);
        assert!(f.complete, "{stdout}");
        assert_eq!(f.checks, vec![0]);
        let (a, b) = (&f.zones[0], &f.zones[1]);
        assert!(!a.skip && a.want_status.is_some_and(|rc| rc != 0) && a.live_status.is_some_and(|rc| rc != 0), "{a:?}");
        assert_eq!(a.applied.as_deref(), Some(&["; names".to_string(), "a.test.".to_string()][..]));
        assert!(b.skip && b.want_status.is_none() && b.applied.is_none(), "{b:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.test.applied")]);
    }

    #[test]
    fn a_live_recheck_asks_only_what_the_step_needs() {
        let mut p = Probe { steps_only: true, ..Default::default() };
        p.file("/etc/hostname");
        let script = p.script();
        assert!(!script.contains("systemd-detect-virt") && !script.contains("machine-id"), "{script}");
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let f = Facts::parse(&String::from_utf8_lossy(&out.stdout), &p);
        assert!(f.complete && matches!(f.files[0], PathFact::File(_) | PathFact::Absent));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
    #[test]
    fn files_and_directories_are_read_in_one_stat_and_one_sha256sum() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Names sha256sum escapes (a backslash, a newline), a quote, something in the way.
        let names = ["plain", "it's", "back\\slash", "new\nline"];
        for (k, n) in names.iter().enumerate() {
            std::fs::write(d.join(n), format!("content {k}")).unwrap();
        }
        std::fs::create_dir(d.join("sub")).unwrap();
        let mut p = Probe { steps_only: true, ..Default::default() };
        let path = |n: &str| d.join(n).to_string_lossy().into_owned();
        for n in names {
            p.file(&path(n));
        }
        let (absent, in_the_way) = (p.file(&path("absent")), p.file(&path("sub")));
        let (sub, no_dir) = (p.dir(&path("sub")), p.dir(&path("plain")));
        let script = p.script();
        assert_eq!(script.matches("sha256sum").count(), 1, "{script}");
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let f = Facts::parse(&String::from_utf8_lossy(&out.stdout), &p);
        assert!(f.complete);
        for (k, n) in names.iter().enumerate() {
            let PathFact::File(ff) = &f.files[k] else { panic!("{n}: {:?}", f.files[k]) };
            let want: String = Sha256::digest(format!("content {k}")).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(ff.sha256, want, "{n}");
            assert_eq!(ff.mode & 0o777, std::fs::metadata(d.join(n)).unwrap().permissions().mode() & 0o777, "{n}");
        }
        assert_eq!(f.files[absent], PathFact::Absent);
        assert_eq!(f.files[in_the_way], PathFact::Other);
        assert!(matches!(f.dirs[sub], PathFact::Dir { .. }));
        assert_eq!(f.dirs[no_dir], PathFact::Absent);
    }
}
