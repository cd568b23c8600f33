//! Step decisions without a host, in pyinfra's manner: each `tests/steps/<kind>/<case>.toml`
//! holds a step (as written in `role.toml`, its values already rendered), the facts about it,
//! and the decision expected from them: status, detail, the actions (how they are shown, the
//! shell they run, how a failure reads), the notifications and the facts the step asks for.
//! The file-write script also runs for real, with sh in a temporary directory: backups are one
//! set per path and pruned to the last five, and a refused candidate leaves the live file alone.
//! No root, no lab.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use groundwork::engine::facts::{FileFact, PathFact, Probe, ServiceFact};
use groundwork::engine::steps::{Action, Decision, Detail, Step, command, directory, file, service, wait, zone};
use groundwork::playbook::catalog::Catalog;
use groundwork::playbook::step::{Source, StepSpec};
use serde::Deserialize;
use sha2::{Digest, Sha256};

const KINDS: &[&str] = &["file", "directory", "command", "service", "wait", "zone"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Case {
    /// The run id, which names a file's candidate.
    #[serde(default = "default_run")]
    run: String,
    #[serde(default)]
    dry_run: bool,
    step: StepSpec,
    #[serde(default)]
    facts: Facts,
    expect: Expect,
}

fn default_run() -> String {
    "20261130T120000Z-0a1b".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Facts {
    /// File and directory steps: the state of the path.
    path: Option<PathIn>,
    /// Command steps: the exit status of each guard's check.
    creates: Option<i32>,
    unless: Option<i32>,
    onlyif: Option<i32>,
    /// Service steps: the unit's state (absent: systemctl said nothing about it).
    service: Option<ServiceIn>,
    /// Wait steps: something changed (or, in a dry run, would change) on the host before it.
    #[serde(default)]
    changed_before: bool,
    /// Services notified so far on the host.
    #[serde(default)]
    notified: Vec<String>,
    /// Zone steps: what the host said about the zone.
    zone: Option<ZoneIn>,
    /// Upload steps: the local file's size and sha256.
    local: Option<LocalIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalIn {
    size: u64,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ZoneIn {
    /// The onlyif check failed.
    #[serde(default)]
    skip: bool,
    /// `named-checkzone -D` of the rendered records, and its exit status.
    #[serde(default)]
    want: String,
    #[serde(default)]
    want_status: Option<i32>,
    /// The AXFR from the local server, and dig's exit status.
    #[serde(default)]
    live: String,
    #[serde(default)]
    live_status: Option<i32>,
    /// The record of managed names from the last sync, if there was one.
    applied: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case", deny_unknown_fields)]
enum PathIn {
    Absent,
    Other,
    File { mode: String, owner: String, content: String },
    Dir { mode: String, owner: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceIn {
    active: String,
    enabled: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Expect {
    /// `ok`, `changed`, `would change`; or `error` when the decision fails.
    status: Option<String>,
    error: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    notify: Vec<String>,
    settles: Option<String>,
    #[serde(default, rename = "action")]
    actions: Vec<ActionOut>,
    /// What the step asks the fact script, when the case pins it.
    asks: Option<Asks>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionOut {
    show: String,
    shell: String,
    stdin: Option<String>,
    /// How the action reads when its script ends like this.
    fails: Option<Fails>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fails {
    exit: u32,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    error: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Asks {
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    dirs: Vec<String>,
    #[serde(default)]
    checks: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    /// A zone step's part of the fact script.
    zone_script: Option<String>,
}

fn octal(s: &str) -> u32 {
    u32::from_str_radix(s, 8).expect("an octal mode")
}

fn path_fact(p: &Option<PathIn>) -> PathFact {
    match p.as_ref().expect("this kind needs [facts] path") {
        PathIn::Absent => PathFact::Absent,
        PathIn::Other => PathFact::Other,
        PathIn::File { mode, owner, content } => PathFact::File(FileFact {
            mode: octal(mode),
            owner: owner.clone(),
            sha256: Sha256::digest(content.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
        }),
        PathIn::Dir { mode, owner } => PathFact::Dir { mode: octal(mode), owner: owner.clone() },
    }
}

/// The case's step, rendered as the engine renders it (fixture values are already what a host
/// would get; what the step kind adds, such as a wait's quoting filter, is rendered here).
fn rendered(case: &Case) -> Result<Step, String> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| groundwork::engine::context::environment(&Catalog::load(None).unwrap()));
    let checked = case.step.check(&case.step.template.iter().cloned().collect::<Vec<_>>(), &Default::default())?;
    Step::render(&checked.kind, &|s| {
        if s.contains("{{") || s.contains("{%") {
            env.render_str(s, ()).map_err(|e| e.to_string())
        } else {
            Ok(s.to_string())
        }
    })
}

fn decide(case: &Case, step: &Step) -> Result<Decision, String> {
    let f = &case.facts;
    match step {
        Step::File(s) => match &s.source {
            Source::Inline(content) => file::decide(s, content.as_bytes(), &path_fact(&f.path), &case.run),
            Source::Local(path) => {
                let l = f.local.as_ref().expect("an upload case needs [facts] local");
                let local = file::Local { path: path.clone(), size: l.size, sha256: l.sha256.clone() };
                file::decide_upload(s, &local, &path_fact(&f.path), &case.run)
            }
            Source::Template(_) | Source::Copy { .. } => Err("a file case gives its content inline or uploads".into()),
        },
        Step::Directory(s) => Ok(directory::decide(s, &path_fact(&f.path))),
        Step::Command(s) => {
            let codes: Vec<i32> = s
                .guards
                .iter()
                .map(|(g, _)| {
                    let code = match g {
                        command::Guard::Creates => f.creates,
                        command::Guard::Unless => f.unless,
                        command::Guard::Onlyif => f.onlyif,
                    };
                    code.unwrap_or_else(|| panic!("[facts] has no exit status for the {g:?} guard"))
                })
                .collect();
            Ok(command::decide(s, &codes))
        }
        Step::Service(s) => {
            let fact = f.service.as_ref().map(|x| ServiceFact { active: x.active.clone(), enabled: x.enabled.clone() });
            let notified: HashSet<String> = f.notified.iter().cloned().collect();
            service::decide(s, fact.as_ref(), &notified)
        }
        Step::Wait(s) => Ok(wait::decide(s, f.changed_before)),
        Step::Zone(s) => {
            let z = f.zone.as_ref().expect("this kind needs [facts] zone");
            let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
            let fact = zone::ZoneFact {
                skip: z.skip,
                want: lines(&z.want),
                want_status: z.want_status,
                live: lines(&z.live),
                live_status: z.live_status,
                applied: z.applied.as_deref().map(lines),
            };
            zone::decide(s, &fact, &case.run, case.dry_run)
        }
    }
}

fn kind_of(step: &Step) -> &'static str {
    match step {
        Step::File(_) => "file",
        Step::Directory(_) => "directory",
        Step::Command(_) => "command",
        Step::Service(_) => "service",
        Step::Wait(_) => "wait",
        Step::Zone(_) => "zone",
    }
}

/// Compares one field; a mismatch is pushed to `errs` with both sides in full.
fn same(errs: &mut Vec<String>, what: &str, want: &str, got: &str) {
    if want.trim_end() != got.trim_end() {
        errs.push(format!("{what}:\n  want: {want:?}\n  got:  {got:?}"));
    }
}

/// Runs one fixture; the list of what differs from its expectation.
fn check(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let case: Case = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut errs = Vec::new();
    let step = match rendered(&case) {
        Ok(s) => s,
        Err(e) => return vec![format!("the step is refused: {e}")],
    };
    let dir = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("");
    if kind_of(&step) != dir {
        errs.push(format!("a {} step in the {dir}/ folder", kind_of(&step)));
    }
    if let Some(asks) = &case.expect.asks {
        let mut probe = Probe::default();
        step.ask(&mut probe);
        for (what, want, got) in [
            ("asks files", &asks.files, &probe.files),
            ("asks dirs", &asks.dirs, &probe.dirs),
            ("asks checks", &asks.checks, &probe.checks),
            ("asks services", &asks.services, &probe.services),
        ] {
            same(&mut errs, what, &want.join("\n"), &got.join("\n"));
        }
        if let Some(want) = &asks.zone_script {
            let got: String = probe.zones.iter().enumerate().map(|(i, z)| z.facts_script(i)).collect();
            same(&mut errs, "asks zone-script", want, &got);
        }
    }
    let decision = match (decide(&case, &step), &case.expect.error) {
        (Ok(d), None) => d,
        (Err(e), Some(want)) => {
            same(&mut errs, "error", want, &e);
            return errs;
        }
        (Ok(d), Some(want)) => {
            errs.push(format!("expected the error {want:?}, got {d:?}"));
            return errs;
        }
        (Err(e), None) => {
            errs.push(format!("unexpected error: {e}"));
            return errs;
        }
    };
    let live = match (&decision.detail, &case.facts.path) {
        (Some(Detail::Diff { live: true, .. }), Some(PathIn::File { content, .. })) => Some(content.as_str()),
        _ => None,
    };
    let (status, detail) = decision.outcome(case.dry_run, live);
    same(&mut errs, "status", case.expect.status.as_deref().unwrap_or("(none)"), status.as_str());
    same(&mut errs, "detail", case.expect.detail.as_deref().unwrap_or("(none)"), detail.as_deref().unwrap_or("(none)"));
    same(&mut errs, "notify", &case.expect.notify.join(" "), &decision.notify.join(" "));
    same(
        &mut errs,
        "settles",
        case.expect.settles.as_deref().unwrap_or("(none)"),
        decision.settles.as_deref().unwrap_or("(none)"),
    );
    if decision.actions.len() != case.expect.actions.len() {
        errs.push(format!(
            "{} action(s), expected {}: {:#?}",
            decision.actions.len(),
            case.expect.actions.len(),
            decision.actions.iter().map(|a| (a.show(), a.script())).collect::<Vec<_>>()
        ));
    }
    for (i, (got, want)) in decision.actions.iter().zip(&case.expect.actions).enumerate() {
        same(&mut errs, &format!("action {i} show"), &want.show, &got.show());
        same(&mut errs, &format!("action {i} shell"), &want.shell, &got.script());
        if let Some(stdin) = &want.stdin {
            same(
                &mut errs,
                &format!("action {i} stdin"),
                stdin,
                &String::from_utf8_lossy(got.stdin().unwrap_or_default()),
            );
        }
        if let Some(f) = &want.fails {
            match got.verdict(f.exit, &f.stdout, &f.stderr) {
                Ok(()) => errs.push(format!("action {i}: exit {} reads as success", f.exit)),
                Err(e) => same(&mut errs, &format!("action {i} failure"), &f.error, &e),
            }
        }
        if got.verdict(0, "", "").is_err() {
            errs.push(format!("action {i}: exit 0 reads as a failure"));
        }
    }
    // A secret file's content, new or live, is nowhere people or logs can see it: not in the
    // detail, an action's display or shell, or the decision's debug form.
    if case.step.secret {
        let live = match &case.facts.path {
            Some(PathIn::File { content, .. }) => content.as_str(),
            _ => "",
        };
        let content = format!("{}\n{live}", case.step.content.as_deref().unwrap_or_default());
        let seen = format!(
            "{}\n{decision:?}\n{}",
            detail.unwrap_or_default(),
            decision.actions.iter().map(|a| format!("{}\n{}", a.show(), a.script())).collect::<Vec<_>>().join("\n")
        );
        for line in content.lines().filter(|l| l.trim().len() >= 4) {
            if seen.contains(line.trim()) {
                errs.push(format!("the secret content `{}` is shown", line.trim()));
            }
        }
    }
    errs
}

fn fixtures() -> BTreeMap<String, Vec<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/steps");
    let mut by_kind = BTreeMap::new();
    for kind in KINDS {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(root.join(kind))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        cases.retain(|p| p.extension().is_some_and(|x| x == "toml"));
        cases.sort();
        by_kind.insert(kind.to_string(), cases);
    }
    by_kind
}

#[test]
fn every_fixture_decides_as_expected() {
    let by_kind = fixtures();
    let mut failures = Vec::new();
    let mut total = 0;
    for (kind, cases) in &by_kind {
        if cases.len() < 3 {
            failures.push(format!("tests/steps/{kind}/ has {} case(s); every kind needs at least 3", cases.len()));
        }
        for case in cases {
            total += 1;
            let errs = check(case);
            if !errs.is_empty() {
                failures.push(format!("{}:\n{}", case.display(), errs.join("\n")));
            }
        }
    }
    let counts: Vec<String> = by_kind.iter().map(|(k, c)| format!("{k} {}", c.len())).collect();
    eprintln!("{total} step fixtures ({})", counts.join(", "));
    assert!(failures.is_empty(), "{} failure(s) in {total} fixtures:\n\n{}", failures.len(), failures.join("\n\n"));
}

// --- The write script, run for real with sh in a temporary directory. ---

/// This user as `user:group`, so the script's chown works without root.
fn me() -> String {
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    format!("{}:{}", id("-un"), id("-gn"))
}

/// A write of `content` to `dest`, with backups under `backups` instead of the real place.
fn write(dest: &Path, content: &str, backups: &Path, validate: Option<&str>) -> Action {
    let dest = dest.to_str().unwrap();
    let step = file::File {
        dest: dest.to_string(),
        source: Source::Inline(content.to_string()),
        validate: validate.map(str::to_string),
        notify: Vec::new(),
        mode: 0o640,
        owner: me(),
        secret: false,
    };
    let d = file::decide(&step, content.as_bytes(), &PathFact::Absent, "R1").unwrap();
    let mut a = d.actions.into_iter().next().unwrap();
    if let Action::Write(w) = &mut a {
        w.backup = w.backup.replace(file::BACKUPS, backups.to_str().unwrap());
    }
    a
}

/// Runs an action's script with sh, as the runner does over SSH (an upload's local file
/// streamed to its stdin); its verdict.
fn run(a: &Action) -> Result<(), String> {
    let stdin = match a.stdin_file() {
        Some(l) => std::fs::read(&l.path).unwrap(),
        None => a.stdin().unwrap_or_default().to_vec(),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(a.script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let status = out.status.code().unwrap_or(128) as u32;
    a.verdict(status, &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr))
}

/// The timestamped backups in `dir` (not the ledger's records), sorted.
fn timestamped(dir: &Path) -> Vec<String> {
    let stamp = |n: &str| {
        n.len() > 16
            && n.as_bytes()[n.len() - 16] == b'.'
            && n[n.len() - 15..].chars().all(|c| c.is_ascii_digit() || c == 'T')
    };
    listing(dir).into_iter().filter(|n| stamp(n)).collect()
}

/// The ledger's record `suffix` of `path` in the backups directory `dir`.
fn record(dir: &Path, path: &Path, suffix: &str) -> Option<String> {
    let name = file::backup_name(path.to_str().unwrap()).rsplit('/').next().unwrap().to_string();
    std::fs::read_to_string(dir.join(format!("{name}{suffix}"))).ok()
}

/// The files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn two_paths_that_flattened_alike_keep_their_own_backups_pruned_to_five() {
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    // `/` -> `_` made these two one name; a path with a space and a quote needs quoting.
    let etc = tmp.path().join("it's etc");
    std::fs::create_dir_all(etc.join("a")).unwrap();
    let (flat, nested, other) = (etc.join("a_b"), etc.join("a/b"), etc.join("a_b.allow"));
    std::fs::write(&flat, "old a_b\n").unwrap();
    std::fs::write(&nested, "old a/b\n").unwrap();
    let name = |p: &Path| file::backup_name(p.to_str().unwrap()).rsplit('/').next().unwrap().to_string();
    // Six older backups of a_b, and one of a_b.allow, whose name starts like them.
    std::fs::create_dir_all(&backups).unwrap();
    for i in 0..6 {
        std::fs::write(backups.join(format!("{}.2020010{}T000000", name(&flat), i + 1)), "older").unwrap();
    }
    std::fs::write(backups.join(format!("{}.20200101T000000", name(&other))), "allow").unwrap();

    run(&write(&flat, "new a_b\n", &backups, None)).unwrap();
    run(&write(&nested, "new a/b\n", &backups, None)).unwrap();

    assert_eq!(std::fs::read_to_string(&flat).unwrap(), "new a_b\n");
    assert_eq!(std::fs::read_to_string(&nested).unwrap(), "new a/b\n");
    let all = listing(&backups);
    let of = |p: &Path| {
        all.iter().filter(|n| n.strip_prefix(&name(p)).is_some_and(|r| r.len() == 16)).cloned().collect::<Vec<_>>()
    };
    let flat_backups = of(&flat);
    assert_eq!(flat_backups.len(), 5, "the last five of a_b: {all:?}");
    assert!(
        !flat_backups.iter().any(|n| n.ends_with(".20200101T000000") || n.ends_with(".20200102T000000")),
        "the oldest go: {all:?}"
    );
    let newest = backups.join(flat_backups.last().unwrap());
    assert_eq!(std::fs::read_to_string(newest).unwrap(), "old a_b\n", "the newest backup is the replaced file");
    let nested_backups = of(&nested);
    assert_eq!(nested_backups.len(), 1, "{all:?}");
    assert_eq!(std::fs::read_to_string(backups.join(&nested_backups[0])).unwrap(), "old a/b\n");
    assert_eq!(of(&other).len(), 1, "another file's backups are not pruned with these: {all:?}");
    assert_eq!(timestamped(&backups).len(), 7, "{all:?}");
    // The ledger keeps each file as groundwork first found it, never pruned, and what it wrote.
    assert_eq!(record(&backups, &flat, ".orig").as_deref(), Some("old a_b\n"));
    assert_eq!(record(&backups, &nested, ".content").as_deref(), Some("new a/b\n"));
    let wrote = record(&backups, &flat, ".wrote").unwrap();
    assert!(wrote.ends_with(&format!(" 640 {}\n", me())), "{wrote}");
    // The candidates are gone: moved in place.
    assert!(!listing(&etc).iter().any(|n| n.contains("groundwork-")), "{:?}", listing(&etc));
}

#[test]
fn a_refused_candidate_leaves_the_live_file_and_no_candidate_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let dest = tmp.path().join("sshd.conf");
    std::fs::write(&dest, "PermitRootLogin no\n").unwrap();
    let a = write(
        &dest,
        "PermitRootLogin sometimes\n",
        &backups,
        Some("grep -q 'Login no' {tmp} || { echo 'unsupported option'; exit 1; }"),
    );
    let err = run(&a).unwrap_err();
    assert!(err.contains("refused the new") && err.contains("live file is unchanged"), "{err}");
    assert!(err.contains("unsupported option"), "the validator's words: {err}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "PermitRootLogin no\n");
    assert_eq!(listing(tmp.path()), vec!["sshd.conf"], "no candidate, no backup");

    let good = write(&dest, "PermitRootLogin no\nX11Forwarding no\n", &backups, Some("grep -q 'Login no' {tmp}"));
    run(&good).unwrap();
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "PermitRootLogin no\nX11Forwarding no\n");
    assert_eq!(timestamped(&backups).len(), 1);
    assert_eq!(record(&backups, &dest, ".orig").as_deref(), Some("PermitRootLogin no\n"));
}

/// An upload of `local` to `dest`, checked against `sha256`, with backups under `backups`.
fn upload(dest: &Path, local: &Path, sha256: &str, backups: &Path) -> Action {
    let step = file::File {
        dest: dest.to_str().unwrap().to_string(),
        source: Source::Local(local.to_str().unwrap().to_string()),
        validate: None,
        notify: Vec::new(),
        mode: 0o640,
        owner: me(),
        secret: false,
    };
    let l = file::Local {
        path: local.to_str().unwrap().to_string(),
        size: std::fs::metadata(local).unwrap().len(),
        sha256: sha256.to_string(),
    };
    let d = file::decide_upload(&step, &l, &PathFact::Absent, "R1").unwrap();
    let mut a = d.actions.into_iter().next().unwrap();
    if let Action::Write(w) = &mut a {
        w.backup = w.backup.replace(file::BACKUPS, backups.to_str().unwrap());
    }
    a
}

#[test]
fn an_upload_that_arrives_damaged_is_refused_and_the_live_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("bundle.tar");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&local, &bytes).unwrap();
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let dest = dir.path().join("live.tar");
    std::fs::write(&dest, b"old").unwrap();
    let backups = dir.path().join("backups");

    // What arrives is not what was hashed (a cut stream, a flipped bit): refused, and nothing
    // of it is left beside the live file.
    let wrong = format!("{}0", &sha[..63]);
    let err = run(&upload(&dest, &local, &wrong, &backups)).unwrap_err();
    assert!(err.contains("arrived damaged") && err.contains(&wrong), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    assert_eq!(listing(dir.path()), ["bundle.tar", "live.tar"]);

    // The right sum: in place, the old file kept as a backup.
    run(&upload(&dest, &local, &sha, &backups)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(timestamped(&backups).len(), 1);

    // Another version a second later (backups are named by the second): still one backup
    // (an upload keeps one, other files five), and it is the version before.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newer: Vec<u8> = bytes.iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(&local, &newer).unwrap();
    let sha2: String = Sha256::digest(&newer).iter().map(|b| format!("{b:02x}")).collect();
    run(&upload(&dest, &local, &sha2, &backups)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), newer);
    let kept = timestamped(&backups);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(backups.join(&kept[0])).unwrap(), bytes);
    // The file as first found stays for `reset`; no copy of an upload is kept for `drift`.
    assert_eq!(record(&backups, &dest, ".orig").as_deref(), Some("old"));
    assert_eq!(record(&backups, &dest, ".content"), None);
    assert!(record(&backups, &dest, ".wrote").unwrap().starts_with(&sha2));
}
