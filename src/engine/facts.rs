//! Facts about a target host, gathered in one round trip: one shell script prints one record
//! per line, and the steps are decided from the answers (pyinfra-style).

use std::collections::HashMap;
use std::fmt::Write as _;

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

    /// The script; it never fails as a whole and prints `end` last, so a cut output shows.
    pub fn script(&self) -> String {
        let mut s = String::from(
            "exec 2>/dev/null </dev/null\n\
             . /etc/os-release; printf 'os\\t%s\\t%s\\t%s\\n' \"$ID\" \"$VERSION_CODENAME\" \"$PRETTY_NAME\"\n\
             printf 'virt\\t%s\\n' \"$(systemd-detect-virt || true)\"\n\
             printf 'machine\\t%s\\n' \"$(cat /etc/machine-id)\"\n\
             if ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then printf 'apt\\tlists\\n'; fi\n",
        );
        if !self.packages.is_empty() {
            let list: Vec<String> = self.packages.iter().map(|p| sh_quote(p)).collect();
            let _ = writeln!(s, "dpkg-query -W -f='pkg\\t${{Package}}\\t${{db:Status-Abbrev}}\\n' {}", list.join(" "));
        }
        for (i, f) in self.files.iter().enumerate() {
            let q = sh_quote(f);
            let _ = writeln!(
                s,
                "if [ -f {q} ]; then printf 'file\\t{i}\\t%s\\t%s\\n' \"$(stat -c '%a %U:%G' -- {q})\" \"$(sha256sum -- {q} | cut -d' ' -f1)\"; \
                 elif [ -e {q} ]; then printf 'file\\t{i}\\tnot-a-file\\n'; else printf 'file\\t{i}\\tabsent\\n'; fi"
            );
        }
        for (i, d) in self.dirs.iter().enumerate() {
            let q = sh_quote(d);
            let _ = writeln!(
                s,
                "if [ -d {q} ]; then printf 'dir\\t{i}\\t%s\\n' \"$(stat -c '%a %U:%G' -- {q})\"; else printf 'dir\\t{i}\\tabsent\\n'; fi"
            );
        }
        for (i, c) in self.checks.iter().enumerate() {
            let _ = writeln!(
                s,
                "if sh -c {} >/dev/null 2>&1; then printf 'check\\t{i}\\t0\\n'; else printf 'check\\t{i}\\t1\\n'; fi",
                sh_quote(c)
            );
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
        s.push_str("printf 'end\\n'\n");
        s
    }
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
    /// Package -> installed (dpkg status `ii`).
    pub packages: HashMap<String, bool>,
    pub files: Vec<PathFact>,
    pub dirs: Vec<PathFact>,
    /// Exit status of each check: 0 is success.
    pub checks: Vec<i32>,
    pub services: HashMap<String, ServiceFact>,
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
            ..Default::default()
        };
        let octal = |s: &str| u32::from_str_radix(s, 8).unwrap_or(0);
        for line in out.lines() {
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
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
