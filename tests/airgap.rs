//! The Debian packages of a site without a Debian mirror: `groundwork bundle --debs` against
//! this machine's real apt (Debian 12, its mirror), and hosts of the lab whose own apt path is
//! broken installing every role's packages from `[site] package-bundle` only.
//!
//! The bundle needs this machine to be Debian 12 amd64 with its apt lists; elsewhere the tests
//! say SKIPPED. The lab test uses kd1 and kd2 and takes them down again, also on failure.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// Debian 12 amd64 with apt: what `bundle --debs` needs here.
fn can_bundle() -> bool {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let arch = Command::new("dpkg").arg("--print-architecture").output().map(|o| o.stdout).unwrap_or_default();
    let ok = os.contains("VERSION_CODENAME=bookworm") && String::from_utf8_lossy(&arch).trim() == "amd64";
    if !ok {
        common::lab::skip("bundle --debs needs a Debian 12 amd64 machine with apt");
    }
    ok
}

fn groundwork(args: &[&str]) -> (i32, String, String, f64) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_groundwork")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed().as_secs_f64(),
    )
}

const SITE: &str = r#"[site]
name = "kd"
internal-domain = "kd.example.org"
external-domain = "example.org"
admin-email = "it@example.org"
package-bundle = "BUNDLE"

[network]
subnet = "10.77.0.0/24"
gateway = "10.77.0.1"

[[host]]
name = "kd1"
address = "10.77.0.91"
ssh-key = "KEY"
roles = ["dns"]
"#;

/// An answer file with one dns host (kd1), and `extra` after it.
fn site(dir: &Path, bundle: &Path, extra: &str) -> PathBuf {
    let text =
        SITE.replace("BUNDLE", bundle.to_str().unwrap()).replace("KEY", common::lab::key().to_str().unwrap()) + extra;
    let file = dir.join("site.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Every file of `dir/debs` with its inode and modification time.
fn stamps(dir: &Path) -> Vec<(String, u64, i64, i64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("debs"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (e.file_name().to_string_lossy().into_owned(), m.ino(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    out.sort();
    out
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    groundwork::playbook::catalog::hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

/// Make the bundle of `file` in `out`; its stdout, and the seconds it took.
fn bundle(file: &Path, out: &Path) -> (String, f64) {
    let (code, stdout, stderr, secs) =
        groundwork(&["bundle", "--debs", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    (stdout, secs)
}

#[test]
fn bundle_debs_downloads_the_roles_packages_and_their_closure_once() {
    if !can_bundle() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let file = site(tmp.path(), &out, "");
    let (text, secs) = bundle(&file, &out);
    let m = manifest(&out);
    assert_eq!(m["k3s"], Value::Null, "no --k3s: no k3s part");
    assert_eq!(m["debs"]["release"], "bookworm");
    assert_eq!(m["debs"]["roles"], serde_json::json!(["base", "dns"]));
    let files = m["files"].as_array().unwrap();
    let debs: Vec<&Value> = files.iter().filter(|f| f["package"].is_string()).collect();
    let names: Vec<&str> = debs.iter().map(|f| f["package"].as_str().unwrap()).collect();
    for p in ["bind9", "bind9-utils", "bind9-dnsutils", "bind9-libs", "chrony", "libc6", "debconf", "adduser"] {
        assert!(names.contains(&p), "{p} is not in the bundle: {names:?}");
    }
    // One provider of each alternative: debconf, not cdebconf as well.
    assert!(!names.contains(&"cdebconf"), "{names:?}");
    // Every .deb: in debs/, with its manifest size and sum, and in the Packages index.
    let index = std::fs::read_to_string(out.join("debs/Packages")).unwrap();
    let mut bytes = 0;
    for f in &debs {
        let path = out.join(f["path"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), f["size"].as_u64().unwrap());
        assert_eq!(sha256(&path), f["sha256"].as_str().unwrap());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(index.contains(&format!("Filename: ./{name}\n")), "{name} is not in Packages");
        assert!(index.contains(&format!("Package: {}\n", f["package"].as_str().unwrap())));
        bytes += f["size"].as_u64().unwrap();
    }
    assert_eq!(index.matches("\nSHA256: ").count() + usize::from(index.starts_with("SHA256: ")), debs.len());
    let release = std::fs::read_to_string(out.join("debs/Release")).unwrap();
    assert!(
        release.contains(&format!(" {} {} Packages\n", sha256(&out.join("debs/Packages")), index.len())),
        "{release}"
    );
    let listed: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(listed.contains(&"debs/Packages") && listed.contains(&"debs/Release"), "{listed:?}");
    eprintln!(
        "bundle --debs: {} debs, {:.1} MiB, in {secs:.1} s\n{}",
        debs.len(),
        bytes as f64 / 1048576.0,
        text.lines().rev().take(2).collect::<Vec<_>>().join("\n")
    );
    assert!(!text.contains(" 0 downloaded"), "{text}");
    let (code, check, err, _) = groundwork(&["bundle", "--check", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{check}{err}");
    assert!(check.contains("every size and sha256 as the manifest says"), "{check}");

    // A re-run downloads nothing and touches no file.
    let before = stamps(&out);
    let (again, secs) = bundle(&file, &out);
    assert!(again.contains(&format!("{} already there", debs.len())), "{again}");
    assert!(again.contains(": 0 downloaded,") && again.contains("Packages index unchanged"), "{again}");
    assert_eq!(stamps(&out), before, "a re-run replaced files");
    eprintln!("re-run: {secs:.1} s, 0 downloaded");

    // A lost file is downloaded again, alone.
    let lost = out.join(debs[0]["path"].as_str().unwrap());
    std::fs::remove_file(&lost).unwrap();
    let (again, _) = bundle(&file, &out);
    assert!(again.contains(&format!("{} already there", debs.len() - 1)), "{again}");
    assert!(again.contains(&format!("downloaded     {}", debs[0]["path"].as_str().unwrap())), "{again}");
    assert_eq!(sha256(&lost), debs[0]["sha256"].as_str().unwrap());
    assert!(
        !std::fs::read_dir(out.join("debs")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".download"))
    );

    // Hosts of another architecture than this machine: refused before anything, saying why.
    let other = tmp.path().join("arm");
    let (code, _, err, _) =
        groundwork(&["bundle", "--debs", file.to_str().unwrap(), "--arch", "arm64", "--out", other.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("this machine is amd64, the hosts are arm64 (--arch)"), "{err}");
    assert!(!other.join("manifest.json").exists());
}

/// Points a host's apt at a closed port (no proxy, no lists): its normal path is gone.
fn break_apt(host: &str) {
    common::run::on(
        host,
        "rm -f /etc/apt/sources.list.d/* /etc/apt/apt.conf.d/90groundwork-lab-proxy && \
         echo 'deb http://10.77.0.1:9/debian bookworm main' >/etc/apt/sources.list && \
         rm -rf /var/lib/apt/lists/* && ! apt-get install -y -q hello >/dev/null 2>&1",
    );
}

#[test]
fn hosts_without_a_mirror_install_from_the_package_bundle_only() {
    if !can_bundle() {
        return;
    }
    let hosts = [("kd1", "10.77.0.91"), ("kd2", "10.77.0.92")];
    let Some(_lab) = common::lab::exclusive(&hosts) else { return };
    common::run::fresh(&hosts);
    for (h, _) in hosts {
        break_apt(h);
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let pg = "\n[[host]]\nname = \"kd2\"\naddress = \"10.77.0.92\"\nssh-key = \"KEY\"\nroles = [\"postgresql\"]\n\n\
              [[databases.postgresql]]\nname = \"app\"\nuser = \"app\"\n"
        .replace("KEY", common::lab::key().to_str().unwrap());
    let file = site(tmp.path(), &out, &pg);
    let f = file.to_str().unwrap();
    let (_, secs) = bundle(&file, &out);
    let m = manifest(&out);
    let debs = m["files"].as_array().unwrap().iter().filter(|f| f["package"].is_string()).count();
    let size: u64 = m["files"].as_array().unwrap().iter().map(|f| f["size"].as_u64().unwrap()).sum();
    eprintln!("bundle: {debs} debs, {:.1} MiB in {secs:.1} s", size as f64 / 1048576.0);
    let (code, o, e, _) = groundwork(&["validate", f]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, plan, e, _) = groundwork(&["plan", f]);
    assert_eq!(code, 0, "{e}");
    assert!(plan.contains(&format!("packages: from the package bundle {} only", out.display())), "{plan}");

    let state = tmp.path().join("state");
    let run = common::run::apply(f, &state, &[]);
    assert_eq!(run.code, 0, "{}", run.all_text());
    assert!(run.stderr.contains("hosts install from it only"), "{}", run.stderr);
    for h in ["kd1", "kd2"] {
        assert_eq!(run.failed(h), 0, "{}", run.all_text());
        let note = run
            .events
            .iter()
            .find(|e| {
                e["event"] == "note" && e["host"] == h && e["text"].as_str().unwrap().starts_with("package bundle:")
            })
            .unwrap_or_else(|| panic!("{h}: no upload note\n{}", run.all_text()));
        let text = note["text"].as_str().unwrap();
        assert!(text.starts_with(&format!("package bundle: {0} of {0} files uploaded", debs + 2)), "{text}");
        eprintln!("{h}: {text}; packages step {} ms", run.step(h, "install").unwrap()["ms"]);
        // apt read the bundle only: the host's own lists stayed empty, nothing tried the mirror.
        let lists = common::run::on(h, "ls /var/lib/apt/lists | grep -c Packages || true");
        assert_eq!(lists.trim(), "0", "{h}: apt fetched lists of its mirror");
        let log = common::run::on(h, "cat /var/log/groundwork/packages.log");
        assert!(!log.contains("10.77.0.1:9") && log.contains("file:/var/lib/groundwork/apt"), "{h}: {log}");
    }
    eprintln!("first apply: {:.1} s", run.secs);
    let dig = Command::new("dig").args(["+short", "+time=2", "@10.77.0.91", "kd2.kd.example.org"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.77.0.92", "{dig:?}");
    let db = common::run::on(
        "kd2",
        "runuser -u postgres -- psql -tAc \"select datname from pg_database where datname = 'app'\"",
    );
    assert_eq!(db.trim(), "app");

    // Again: nothing changes, nothing is uploaded.
    let again = common::run::apply(f, &state, &[]);
    assert_eq!(again.code, 0, "{}", again.all_text());
    for h in ["kd1", "kd2"] {
        assert_eq!(again.changed(h), 0, "{h}: {:?}", again.changed_steps(h));
    }
    assert!(!again.all_text().contains("package bundle: "), "{}", again.all_text());
    eprintln!("second apply: {:.1} s, 0 changed, nothing uploaded", again.secs);

    // A bundle without a package a role needs: validate names the field and the package, and
    // apply refuses it before it connects.
    let path = out.join("manifest.json");
    let kept = std::fs::read_to_string(&path).unwrap();
    let mut m: Value = serde_json::from_str(&kept).unwrap();
    m["files"].as_array_mut().unwrap().retain(|f| f["package"] != "bind9");
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let (code, _, err, _) = groundwork(&["validate", f]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{f}:6:18: site.package-bundle: the bundle {} has no package bind9 (dns)",
            out.display()
        )),
        "{err}"
    );
    let refused = common::run::apply(f, &state, &[]);
    assert_eq!(refused.code, 2, "{}", refused.all_text());
    assert!(refused.stderr.contains("has no package bind9 (dns)") && refused.stderr.contains("nothing was connected"));
    std::fs::write(&path, kept).unwrap();
}
