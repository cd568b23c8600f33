//! Facts about the machine groundwork runs on. sysinfo gives the host name, the OS, the CPUs,
//! the memory and the NICs; /sys gives what it has not: the block devices (its disk list holds
//! mounted filesystems only, and blank disks matter on a fresh server), whether a NIC is a
//! device; /proc and a few commands give the route, the resolvers and the virtualization.

pub mod preflight;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::Serialize;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    /// `none`, or what runs us: `kvm`, `qemu`, `vmware`, `systemd-nspawn`, `docker`, `lxc`...
    pub virtualization: String,
    pub cpus: Cpus,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Route>,
    pub nameservers: Vec<String>,
    /// Free bytes on the filesystem that holds /var (where services keep their data).
    pub var_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cpus {
    pub model: String,
    /// Logical CPUs the kernel schedules on.
    pub count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub name: String,
    /// `disk`, or a virtual block device: `loop`, `zram`, `dm` (device mapper), `md` (RAID).
    pub kind: String,
    pub path: String,
    pub size_bytes: u64,
    pub rotational: bool,
    pub removable: bool,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Where the disk itself is mounted, if it is (no partition table).
    pub mountpoints: Vec<String>,
    pub partitions: Vec<Partition>,
    /// No partitions, not mounted, not part of another device: free for use.
    pub blank: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub name: String,
    pub size_bytes: u64,
    pub mountpoints: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// `up`, `down`, `unknown`...
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u64>,
    pub mtu: u32,
    /// `physical` (has a device), `virtual` (bridge, veth, tunnel...) or `loopback`.
    pub kind: String,
    /// Addresses in CIDR form.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub gateway: Ipv4Addr,
    pub interface: String,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Read every fact. Nothing here fails: what cannot be read is left empty.
pub fn probe() -> Facts {
    let refresh =
        RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()).with_memory(MemoryRefreshKind::nothing().with_ram());
    let sys = System::new_with_specifics(refresh).ok();
    Facts {
        hostname: System::host_name().ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into()),
        os: os_name(),
        kernel: System::kernel_version().unwrap_or_default(),
        virtualization: virtualization(),
        cpus: cpus(sys.as_ref()),
        memory: Memory {
            total_bytes: sys.as_ref().map_or(0, System::total_memory),
            available_bytes: sys.as_ref().map_or(0, System::available_memory),
        },
        disks: disks(),
        nics: nics(),
        default_route: default_route(),
        nameservers: nameservers(),
        var_free_bytes: free_bytes("/var").or_else(|| free_bytes("/")).unwrap_or(0),
    }
}

/// `NAME VERSION_ID` of os-release, e.g. `Debian GNU/Linux 12`.
fn os_name() -> String {
    match (System::name(), System::os_version()) {
        (Ok(name), Ok(version)) => format!("{name} {version}"),
        (Ok(name), Err(_)) => name,
        _ => "unknown".into(),
    }
}

fn cpus(sys: Option<&System>) -> Cpus {
    let list = sys.map(System::cpus).unwrap_or_default();
    let model = list.iter().map(|c| c.brand().trim()).find(|b| !b.is_empty()).unwrap_or("unknown").to_string();
    let count = match list.len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    Cpus { model, count }
}

/// Mount points by device name (`vda1`, `dm-0`), from /proc/self/mounts.
fn mounts() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("/proc/self/mounts").unwrap_or_default().lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mnt)) = (f.next(), f.next()) else { continue };
        if !dev.starts_with("/dev/") {
            continue;
        }
        let real = fs::canonicalize(dev).unwrap_or_else(|_| dev.into());
        if let Some(name) = real.file_name().and_then(|n| n.to_str()) {
            out.entry(name.to_string()).or_default().push(mnt.replace("\\040", " "));
        }
    }
    out
}

fn sectors_to_bytes(dir: &Path) -> u64 {
    read(dir.join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512
}

fn disks() -> Vec<Disk> {
    let mounts = mounts();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out: Vec<Disk> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if ["ram", "fd", "sr"].iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let dir = e.path();
            let size_bytes = sectors_to_bytes(&dir);
            if size_bytes == 0 {
                return None;
            }
            let flag = |f: &str| read(dir.join(f)).is_some_and(|v| v == "1");
            let mut partitions: Vec<Partition> = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|p| p.path().join("partition").exists())
                .map(|p| {
                    let pname = p.file_name().to_string_lossy().to_string();
                    Partition {
                        size_bytes: sectors_to_bytes(&p.path()),
                        mountpoints: mounts.get(&pname).cloned().unwrap_or_default(),
                        name: pname,
                    }
                })
                .collect();
            partitions.sort_by(|a, b| a.name.cmp(&b.name));
            let mountpoints = mounts.get(&name).cloned().unwrap_or_default();
            let held = fs::read_dir(dir.join("holders")).map(|mut d| d.next().is_some()).unwrap_or(false);
            let kind = ["loop", "zram", "dm", "md"].into_iter().find(|k| name.starts_with(k)).unwrap_or("disk");
            Some(Disk {
                kind: kind.into(),
                path: format!("/dev/{name}"),
                size_bytes,
                rotational: flag("queue/rotational"),
                removable: flag("removable"),
                read_only: flag("ro"),
                model: read(dir.join("device/model")).filter(|s| !s.is_empty()),
                serial: read(dir.join("device/serial")).or_else(|| read(dir.join("serial"))).filter(|s| !s.is_empty()),
                blank: partitions.is_empty() && mountpoints.is_empty() && !held,
                mountpoints,
                partitions,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn nics() -> Vec<Nic> {
    let Ok(networks) = Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut out: Vec<Nic> = networks
        .iter()
        .map(|(name, data)| {
            // What sysinfo does not say: whether a device backs the interface.
            let kind = if name == "lo" {
                "loopback"
            } else if Path::new("/sys/class/net").join(name).join("device").exists() {
                "physical"
            } else {
                "virtual"
            };
            // IPv4 first, then IPv6, each in address order (sysinfo gives them unordered);
            // not the IPv6 link-local ones, which every interface has and nothing here uses.
            let mut addresses: Vec<_> = data
                .ip_networks()
                .iter()
                .filter(|n| !matches!(n.addr, IpAddr::V6(v6) if v6.is_unicast_link_local()))
                .collect();
            addresses.sort();
            Nic {
                name: name.to_string_lossy().into_owned(),
                mac: data.mac_address().to_string(),
                state: data.operational_state().to_string(),
                speed_mbps: data.transmit_link_speed().map(|bps| bps / 1_000_000).filter(|m| *m > 0),
                mtu: u32::try_from(data.mtu()).unwrap_or(u32::MAX),
                kind: kind.into(),
                addresses: addresses.iter().map(ToString::to_string).collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn default_route() -> Option<Route> {
    let text = read("/proc/net/route")?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        Some(Route { gateway: Ipv4Addr::from(gw.swap_bytes()), interface: f[0].to_string() })
    })
}

fn nameservers() -> Vec<String> {
    read("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .collect()
}

fn free_bytes(path: &str) -> Option<u64> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

fn virtualization() -> String {
    if let Ok(out) = std::process::Command::new("systemd-detect-virt").output() {
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !v.is_empty() {
            return v;
        }
    }
    if let Some(c) = read("/run/systemd/container").filter(|s| !s.is_empty()) {
        return c;
    }
    if let Ok(env) = fs::read("/proc/1/environ") {
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"container=") {
                return String::from_utf8_lossy(v).to_string();
            }
        }
    }
    if Path::new("/.dockerenv").exists() {
        return "docker".into();
    }
    if let Some(vendor) = read("/sys/class/dmi/id/sys_vendor") {
        let v = vendor.to_lowercase();
        for (needle, name) in [
            ("qemu", "qemu"),
            ("kvm", "kvm"),
            ("vmware", "vmware"),
            ("innotek", "oracle"),
            ("microsoft", "microsoft"),
            ("xen", "xen"),
            ("proxmox", "kvm"),
        ] {
            if v.contains(needle) {
                return name.into();
            }
        }
    }
    let flags = read("/proc/cpuinfo").unwrap_or_default();
    if flags.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor")) {
        return "vm (unknown hypervisor)".into();
    }
    "none".into()
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

impl Facts {
    /// IPv4 addresses of this machine (not loopback), for matching it to an answer-file host.
    pub fn ipv4_addresses(&self) -> Vec<Ipv4Addr> {
        self.nics
            .iter()
            .filter(|n| n.kind != "loopback")
            .flat_map(|n| n.addresses.iter())
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect()
    }

    /// The NIC that carries the default route, else the first up non-loopback one with IPv4.
    pub fn primary_nic(&self) -> Option<&Nic> {
        let with_v4 = |n: &&Nic| n.addresses.iter().any(|a| !a.contains(':'));
        self.default_route
            .as_ref()
            .and_then(|r| self.nics.iter().find(|n| n.name == r.interface))
            .filter(with_v4)
            .or_else(|| self.nics.iter().filter(|n| n.kind != "loopback").find(with_v4))
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "host     {} ({}, kernel {})", self.hostname, self.os, self.kernel);
        let _ = writeln!(o, "virt     {}", self.virtualization);
        let _ = writeln!(o, "cpus     {} x {}", self.cpus.count, self.cpus.model);
        let _ = writeln!(
            o,
            "memory   {} ({} available)",
            human_bytes(self.memory.total_bytes),
            human_bytes(self.memory.available_bytes)
        );
        let _ = writeln!(o, "/var     {} free", human_bytes(self.var_free_bytes));
        for (i, d) in self.disks.iter().enumerate() {
            let label = if i == 0 { "disks" } else { "" };
            let kind = if d.rotational { "hdd" } else { "ssd" };
            let mut use_ = if d.blank {
                "blank".to_string()
            } else if !d.mountpoints.is_empty() {
                format!("mounted {}", d.mountpoints.join(" "))
            } else {
                let parts: Vec<String> = d
                    .partitions
                    .iter()
                    .map(|p| match p.mountpoints.first() {
                        Some(m) => format!("{} on {m}", p.name),
                        None => format!("{} unmounted", p.name),
                    })
                    .collect();
                if parts.is_empty() { "in use".into() } else { parts.join(", ") }
            };
            if d.removable {
                use_.push_str(", removable");
            }
            let model = d.model.clone().unwrap_or_default();
            let _ = writeln!(
                o,
                "{label:<8} {:<8} {:>10}  {:<4} {kind}  {use_} {model}",
                d.name,
                human_bytes(d.size_bytes),
                d.kind,
            );
        }
        for (i, n) in self.nics.iter().enumerate() {
            let label = if i == 0 { "nics" } else { "" };
            let speed = n.speed_mbps.map(|s| format!("{s} Mb/s")).unwrap_or_default();
            let _ = writeln!(
                o,
                "{label:<8} {:<10} {:<17} {:<7} {:<8} {:<9} {}",
                n.name,
                n.mac,
                n.state,
                n.kind,
                speed,
                n.addresses.join(" ")
            );
        }
        if let Some(r) = &self.default_route {
            let _ = writeln!(o, "gateway  {} via {}", r.gateway, r.interface);
        }
        if !self.nameservers.is_empty() {
            let _ = writeln!(o, "dns      {}", self.nameservers.join(" "));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sysinfo reports is what the kernel says in its own files, in the form the probe
    /// printed before it used sysinfo.
    #[test]
    fn facts_from_sysinfo_agree_with_proc_and_sys() {
        let f = probe();
        assert_eq!(f.hostname, read("/proc/sys/kernel/hostname").unwrap());
        assert_eq!(f.kernel, read("/proc/sys/kernel/osrelease").unwrap());
        let os_release = read("/etc/os-release").unwrap_or_default();
        let field = |k: &str| {
            os_release
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        };
        if let (Some(name), Some(version)) = (field("NAME"), field("VERSION_ID")) {
            assert_eq!(f.os, format!("{name} {version}"));
        }
        let stat = read("/proc/stat").unwrap();
        let online = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
        assert_eq!(f.cpus.count, online);
        assert_ne!(f.cpus.model, "unknown");
        let meminfo = read("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert_eq!(f.memory.total_bytes, total_kib * 1024);
        assert!(f.memory.available_bytes > 0 && f.memory.available_bytes <= f.memory.total_bytes);

        // Interfaces come and go while the lab runs (veths): those there before and after the
        // probe must be listed, and nothing else but those that came or went meanwhile.
        let names = || -> std::collections::BTreeSet<String> {
            fs::read_dir("/sys/class/net").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect()
        };
        let before = names();
        let f = probe();
        let after = names();
        let listed: std::collections::BTreeSet<String> = f.nics.iter().map(|n| n.name.clone()).collect();
        assert!(before.intersection(&after).all(|n| listed.contains(n)), "{listed:?} {before:?}");
        assert!(listed.iter().all(|n| before.contains(n) || after.contains(n)), "{listed:?} {before:?}");
        assert!(f.nics.windows(2).all(|w| w[0].name < w[1].name));
        for n in f.nics.iter().filter(|n| n.kind != "virtual") {
            let dir = Path::new("/sys/class/net").join(&n.name);
            assert_eq!(n.state, read(dir.join("operstate")).unwrap(), "{}", n.name);
            assert_eq!(n.mtu.to_string(), read(dir.join("mtu")).unwrap(), "{}", n.name);
            if read(dir.join("addr_len")).as_deref() == Some("6") {
                assert_eq!(n.mac, read(dir.join("address")).unwrap(), "{}", n.name);
            }
        }
        assert!(f.nics.iter().all(|n| !n.addresses.iter().any(|a| a.starts_with("fe80:"))), "{:?}", f.nics);
        let lo = f.nics.iter().find(|n| n.name == "lo").unwrap();
        assert_eq!(lo.kind, "loopback");
        assert_eq!(lo.addresses.first().map(String::as_str), Some("127.0.0.1/8"), "IPv4 first: {lo:?}");
    }
}
