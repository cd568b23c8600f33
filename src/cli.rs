//! The command line: `groundwork validate | schema | probe | wizard | plan | apply | verify | drift | reset |
//! forget-host | rebuild | bundle`.
//!
//! Nothing here prints with `print!`/`println!` (they panic when standard output is closed or
//! full): standard output goes through [`Out`], which keeps the first write error and turns it
//! into the exit code, and messages go to standard error with [`say!`], which ignores errors.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::answers::{self, Report};
use crate::playbook::catalog::Catalog;
use crate::probe::{self, preflight};
use crate::state::{Access, Secrets, StateDir};
use crate::wizard;

/// A line on standard error; a closed or failing standard error is ignored (there is nowhere
/// left to say anything).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod wizard_apply;

#[derive(Parser, Debug)]
#[command(name = "groundwork", version, about = "Bootstrap a bare-metal site: DNS, DHCP, LDAP, databases, k3s, GitOps", long_about = None)]
pub struct Cli {
    /// Before the command, as older versions took it; `--state` belongs to the commands that
    /// use a state directory (wizard, plan, apply, verify, forget-host).
    #[arg(long, value_name = "DIR", hide = true)]
    pub state: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// `--state DIR`, on the commands that use the state directory.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StateArg {
    /// State directory: secrets, known_hosts, journal, logs. A missing one is created with mode
    /// 0700; an existing one must belong to you and be closed to other users (it is never
    /// changed). Default: $XDG_STATE_HOME/groundwork/<site> (~/.local/state/groundwork/<site>)
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check answer files offline: types, keys and the rules across sections.
    Validate {
        /// Answer files to check (one or more); every problem names file, line and field.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// One JSON document with every problem (file, line, column, field, message).
        #[arg(long)]
        json: bool,
        /// Also check [proxmox] against its API: version, node, storage, templates, the
        /// token's privileges for what a run would do.
        #[arg(long)]
        online: bool,
    },
    /// Print the JSON Schema of the answer file.
    Schema {
        /// Write it to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Facts about this machine; with --for, judge it against its roles (preflight).
    Probe {
        /// The facts (and the preflight verdict) as one JSON document.
        #[arg(long)]
        json: bool,
        /// Answer file whose roles this machine should carry.
        #[arg(long = "for", value_name = "FILE")]
        for_file: Option<PathBuf>,
    },
    /// Ask for the answers at a terminal and write the answer file (0600).
    Wizard {
        /// Where to write the answer file (mode 0600); an existing file is never overwritten.
        #[arg(long, value_name = "FILE", default_value = "groundwork.toml")]
        out: PathBuf,
        #[command(flatten)]
        state: StateArg,
    },
    /// Show which roles land on which host, in which order, and why; with --live, connect
    /// and show the steps that would change, with diffs (a dry run).
    Plan {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The plan as one JSON document (with --live: one JSON event per line).
        #[arg(long)]
        json: bool,
        /// Compare with the live hosts over SSH (changes nothing).
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        state: StateArg,
    },
    /// Before k3s is installed: each cluster node's CPUs and memory against its role, and
    /// whether every node reaches every other on the ports k3s needs (listeners opened for a
    /// few seconds, nothing installed). Exit 1 on a failure.
    Preflight {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// One JSON document: {"ok", "fits": [...], "paths": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// The path of the cluster's kubeconfig (0600, in the state directory; the API endpoint as
    /// its server), as `apply` fetched it from the first k3s server.
    Kubeconfig {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Check every service the way a client would; a table, or --json. Exit 1 on a failure.
    Verify {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// One JSON document: {"ok", "failed", "rows": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Converge the hosts: install, configure and start what the answers ask for.
    Apply {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Do not show the changes and ask first.
        #[arg(long, short = 'y')]
        yes: bool,
        /// One JSON event per line on standard output.
        #[arg(long)]
        json: bool,
        /// For changes to DNS, DHCP and sshd: arm a revert on each host first (a systemd
        /// timer), apply, check from here (verify's DNS and DHCP rows, a new SSH login), and
        /// put the previous files back after SECONDS unless `groundwork confirm` comes first;
        /// a failed check reverts at once.
        #[arg(long = "try", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(5..=86400))]
        try_secs: Option<u64>,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        state: StateArg,
    },
    /// Keep the change of the last `apply --try`: disarm the revert timers on its hosts.
    /// Exit 1 when a host had reverted already or could not be reached (its timer decides).
    Confirm {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// One JSON document: {"ok", "run", "hosts": {NAME: confirmed|reverted|none|not-reached}}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Put hosts back as groundwork found them: stop and disable what it started, restore
    /// every file it replaced from its first backup, remove what it created, purge the packages
    /// it installed that were not there before, and forget its own records on the host.
    ///
    /// Without --yes it shows what it would do and asks (without a terminal it needs --yes);
    /// --dry-run only shows it. The record of what was there before lives on each host
    /// (/var/backups/groundwork, /var/lib/groundwork), written by apply as it changes things.
    Reset {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Only this host (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Only the hosts that carry this role (repeatable); each is reset whole.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Show what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not show the reset and ask first.
        #[arg(long, short = 'y')]
        yes: bool,
        /// One JSON document: {"ok", "dry_run", "hosts": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// A new value for generated secrets (database users' and LDAP accounts' passwords, the
    /// TSIG key, the k3s token), applied and checked by a client before the old value goes
    /// from the secrets file; a rotation cut short goes on where it stopped. Exit 1 on a failure.
    Rotate {
        /// `postgresql.USER`, `mariadb.USER`, `ldap.admin`, `ldap.service`, a table (`postgresql`,
        /// `ldap`), `tsig` or `k3s`; none: every secret of the site.
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Answer file; without it, the bundled lab example.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// One JSON event per line (the applies' events, then `rotate-finished`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// What changed on the hosts since groundwork left them: files it wrote (content, mode,
    /// owner; with the diff, secrets masked), services of their roles stopped or disabled,
    /// packages removed. Exit 2 when something drifted, 1 when a host could not be checked.
    Drift {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Only this host (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// One JSON document: {"drifted", "hosts": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Forget a host's recorded key (after the host was reinstalled).
    ///
    /// Its lines leave <state>/known_hosts, every other line stays as it is, and the next run
    /// records the host's new key.
    ForgetHost {
        /// The host's name in the answer file, or its address (`10.0.0.5`, `[10.0.0.5]:2222`).
        #[arg(value_name = "NAME|ADDRESS")]
        host: String,
        /// Answer file (host names, SSH port, the site's state directory); without it, the
        /// bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Destroy a provisioned host's guest on Proxmox VE and create it again from the template
    /// the answers name now (an outdated guest). Everything on its disks is lost.
    ///
    /// Says first what will be lost (VMID, name, disks and sizes) and asks; without a terminal
    /// it needs --yes. Only for a guest with the `groundwork` tag. Then stops it, destroys it
    /// (purge), forgets its SSH host key in the state's known_hosts, creates and starts it and
    /// waits for SSH; `groundwork apply` then converges it.
    Rebuild {
        /// The host's name in the answer file (it must have `provision`).
        #[arg(value_name = "HOST")]
        host: String,
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Do not ask (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Download the k3s air-gap files (and a GitOps install manifest, with an archive of each
    /// of its images made by skopeo) and/or the Debian packages of an answer file's roles into
    /// a directory, checked against their sums, with a
    /// manifest; or check such a directory (--check).
    ///
    /// Run it on a machine with Internet access (for --debs: Debian 12, of the hosts'
    /// architecture); `[k3s] airgap-bundle` and `[site] package-bundle` then name the
    /// directory. A re-run requests nothing that is already there and right.
    Bundle(BundleArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct BundleArgs {
    /// The k3s release, as tagged: v1.35.6+k3s1.
    #[arg(long = "k3s", value_name = "VERSION", required_unless_present_any = ["check", "debs"])]
    pub k3s: Option<String>,
    /// Also (or only) the Debian packages every role of this answer file's hosts installs,
    /// with their dependencies, as an apt repository in DIR/debs (`[site] package-bundle`).
    /// Uses this machine's apt: it must be Debian 12 of the hosts' architecture (--arch).
    #[arg(long, value_name = "ANSWERS", conflicts_with = "check")]
    pub debs: Option<PathBuf>,
    /// Also the GitOps engine's install.yaml: `--gitops flux 2.4.0` or `--gitops argocd 2.13.2`.
    #[arg(long, num_args = 2, value_names = ["ENGINE", "VERSION"], conflicts_with = "check")]
    pub gitops: Option<Vec<String>>,
    /// The bundle directory (made if missing): k3s/, gitops/, debs/, manifest.json.
    #[arg(long, value_name = "DIR", required_unless_present = "check", conflicts_with = "check")]
    pub out: Option<PathBuf>,
    /// The architecture of the k3s nodes (and of the hosts, for --debs).
    #[arg(long, value_enum, default_value_t = crate::bundle::Arch::Amd64)]
    pub arch: crate::bundle::Arch,
    /// Where k3s releases are: BASE/<tag>/<file>.
    #[arg(long = "k3s-url", value_name = "BASE", default_value = crate::bundle::K3S_URL)]
    pub k3s_url: String,
    /// Where Flux releases are: BASE/v<version>/install.yaml.
    #[arg(long = "flux-url", value_name = "BASE", default_value = crate::bundle::FLUX_URL)]
    pub flux_url: String,
    /// Where Argo CD's manifests are: BASE/v<version>/manifests/install.yaml.
    #[arg(long = "argocd-url", value_name = "BASE", default_value = crate::bundle::ARGOCD_URL)]
    pub argocd_url: String,
    /// Pull the GitOps images from this registry instead of each image's own
    /// (ghcr.io/fluxcd/x:v1 is pulled as HOST[:PORT]/fluxcd/x:v1 and archived as ghcr.io/fluxcd/x:v1).
    /// A mirror on 127.0.0.0/8, localhost or [::1] is pulled from without TLS verification.
    #[arg(long = "registry-mirror", value_name = "HOST[:PORT]", conflicts_with = "check")]
    pub registry_mirror: Option<String>,
    /// Pull from a --registry-mirror that is not on loopback without TLS verification (plain http).
    #[arg(long = "registry-insecure", requires = "registry_mirror")]
    pub registry_insecure: bool,
    /// Check DIR against its manifest (every file's size and sha256) instead of downloading.
    #[arg(long, value_name = "DIR", conflicts_with = "k3s")]
    pub check: Option<PathBuf>,
    /// One JSON object at the end instead of a line per file (files, bytes downloaded, seconds).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Directory with roles (`<role>/role.toml`, `templates/`) that replace the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub playbooks: Option<PathBuf>,
    /// Only this host (repeatable).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

/// Standard output that does not panic. The first write error is kept and later writes are
/// skipped; [`Out::finish`] decides the exit code: a reader that went away (EPIPE, e.g.
/// `| head -c1`) is a quiet exit with the command's own code, any other error (a full disk,
/// `> /dev/full`) says so and exits 2.
struct Out {
    w: std::io::Stdout,
    err: Option<std::io::Error>,
}

impl Out {
    fn new() -> Out {
        Out { w: std::io::stdout(), err: None }
    }

    fn print(&mut self, s: &str) {
        if self.err.is_none()
            && let Err(e) = self.w.write_all(s.as_bytes())
        {
            self.err = Some(e);
        }
    }

    fn println(&mut self, s: &str) {
        self.print(s);
        self.print("\n");
    }

    /// Flushes, and returns `code`, or 2 after a write error other than a closed pipe.
    fn finish(mut self, code: i32) -> i32 {
        if self.err.is_none()
            && let Err(e) = self.w.flush()
        {
            self.err = Some(e);
        }
        match self.err {
            None => code,
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
            Some(e) => {
                say!("error: cannot write to standard output: {e}");
                2
            }
        }
    }
}

/// Run the CLI and return the process exit code (0 ok, 1 problems found, 2 could not run).
pub fn main() -> i32 {
    let cli = Cli::parse();
    let mut out = Out::new();
    let code = run(cli, &mut out);
    out.finish(code)
}

fn run(cli: Cli, out: &mut Out) -> i32 {
    // `groundwork --state DIR <command>` still works where a state directory is used.
    let state = |s: StateArg| s.state.or(cli.state.clone());
    let no_state = |command: &str| {
        say!(
            "error: --state does nothing for `groundwork {command}`; it belongs to wizard, plan, apply, confirm, verify, drift, reset, rotate, forget-host and rebuild"
        );
        2
    };
    match cli.command {
        Command::Validate { .. } if cli.state.is_some() => no_state("validate"),
        Command::Schema { .. } if cli.state.is_some() => no_state("schema"),
        Command::Probe { .. } if cli.state.is_some() => no_state("probe"),
        Command::Bundle(_) if cli.state.is_some() => no_state("bundle"),
        Command::Validate { files, json, online } => validate(out, &files, json, online),
        Command::Schema { out: file } => schema(out, file.as_deref()),
        Command::Probe { json, for_file } => probe_cmd(out, json, for_file.as_deref()),
        Command::Wizard { out: file, state: s } => wizard_cmd(out, &file, state(s).as_deref()),
        Command::Plan { file, json, live, engine, state: s } => {
            if live {
                let opts = engine_options(&engine, true, json);
                engine_cmd(out, file.as_deref(), state(s).as_deref(), engine.playbooks.as_deref(), opts, true, None)
            } else {
                plan_cmd(out, file.as_deref(), json, &engine)
            }
        }
        Command::Verify { file, json, state: s } => code(verify_cmd(out, file.as_deref(), state(s).as_deref(), json)),
        Command::Preflight { file, json, state: s } => {
            code(preflight_cmd(out, file.as_deref(), state(s).as_deref(), json))
        }
        Command::Kubeconfig { file, state: s } => code(kubeconfig_cmd(out, file.as_deref(), state(s).as_deref())),
        Command::Apply { file, yes, json, try_secs, engine, state: s } => {
            let opts = engine_options(&engine, false, json);
            engine_cmd(out, file.as_deref(), state(s).as_deref(), engine.playbooks.as_deref(), opts, yes, try_secs)
        }
        Command::Confirm { file, json, state: s } => code(confirm_cmd(out, file.as_deref(), state(s).as_deref(), json)),
        Command::Rotate { names, file, json, state: s } => {
            code(rotate_cmd(out, &names, file.as_deref(), state(s).as_deref(), json))
        }
        Command::ForgetHost { host, file, state: s } => {
            forget_host_cmd(out, &host, file.as_deref(), state(s).as_deref())
        }
        Command::Rebuild { host, file, yes, state: s } => {
            rebuild_cmd(out, &host, file.as_deref(), state(s).as_deref(), yes)
        }
        Command::Bundle(args) => bundle_cmd(out, args),
        Command::Reset { file, hosts, roles, dry_run, yes, json, state: s } => {
            let only = Only { hosts, roles };
            reset_cmd(out, file.as_deref(), state(s).as_deref(), &only, dry_run, yes, json)
        }
        Command::Drift { file, hosts, json, state: s } => {
            code(drift_cmd(out, file.as_deref(), state(s).as_deref(), &hosts, json))
        }
    }
}

fn color() -> bool {
    console::colors_enabled_stderr()
}

fn print_report(r: &Report) {
    let _ = write!(std::io::stderr(), "{}", r.render(color()));
}

fn validate(out: &mut Out, files: &[PathBuf], json: bool, online: bool) -> i32 {
    let catalog = match load_catalog(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut failed = 0;
    let mut docs = Vec::new();
    for f in files {
        let checked = crate::plan::validate_file(f, &catalog).and_then(|l| {
            if !online {
                return Ok((l, None));
            }
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let line = crate::proxmox::check::run_blocking(&f.display().to_string(), &text, &l)?;
            Ok((l, Some(line)))
        });
        match checked {
            Ok((l, online_line)) => {
                if let Some(line) = online_line
                    && !json
                {
                    out.println(&format!("{}: online: {line}", f.display()));
                }
                let roles: usize = l.answers.hosts.iter().map(|h| h.roles.len()).sum();
                if json {
                    docs.push(serde_json::json!({"file": f.display().to_string(), "ok": true, "problems": []}));
                } else {
                    let n = l.answers.hosts.len();
                    out.println(&format!(
                        "{}: ok (site `{}`, {n} host{}, {roles} role assignment{})",
                        f.display(),
                        l.answers.site.name,
                        if n == 1 { "" } else { "s" },
                        if roles == 1 { "" } else { "s" },
                    ));
                }
            }
            Err(report) => {
                failed += 1;
                if json {
                    docs.push(serde_json::json!({
                        "file": f.display().to_string(),
                        "ok": false,
                        "problems": report.located_problems(),
                    }));
                } else {
                    print_report(&report);
                }
            }
        }
    }
    if json {
        out.println(&to_json_pretty(&docs));
    }
    i32::from(failed > 0)
}

fn to_json_pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize")
}

fn schema(out: &mut Out, file: Option<&Path>) -> i32 {
    let text = answers::schema::json();
    match file {
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => {
                out.println(&format!("wrote {}", p.display()));
                0
            }
            Err(e) => {
                say!("error: {}: {e}", p.display());
                2
            }
        },
        None => {
            out.print(&text);
            0
        }
    }
}

fn probe_cmd(out: &mut Out, json: bool, for_file: Option<&Path>) -> i32 {
    let facts = probe::probe();
    let catalog = match load_catalog(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let verdict = match for_file {
        Some(f) => match crate::plan::load_file(f, &catalog) {
            Ok(l) => Some(preflight::judge(&facts, &l.answers, &catalog)),
            Err(r) => {
                print_report(&r);
                return 1;
            }
        },
        None => None,
    };
    if json {
        let doc = match &verdict {
            Some(v) => serde_json::json!({"facts": facts, "preflight": v}),
            None => serde_json::to_value(&facts).expect("facts serialize"),
        };
        out.println(&to_json_pretty(&doc));
    } else {
        out.print(&facts.render());
        if let Some(v) = &verdict {
            out.print(&v.render());
        }
    }
    match verdict {
        Some(v) if v.worst() == preflight::Level::Fail => 1,
        _ => 0,
    }
}

fn wizard_cmd(out: &mut Out, file: &Path, state: Option<&Path>) -> i32 {
    let Some(mut prompter) = wizard::terminal::TerminalPrompter::new() else {
        say!(
            "error: `groundwork wizard` asks its questions at a terminal, and this is not one.\n\
             For an unattended run, write an answer file (examples: wizard/examples/) and use\n\
             `groundwork validate FILE`, then `groundwork plan FILE` / `groundwork apply FILE`."
        );
        return 2;
    };
    if file.exists() {
        say!("error: {} exists; the wizard does not overwrite an answer file (choose another --out)", file.display());
        return 2;
    }
    let facts = probe::probe();
    let defaults = wizard::Defaults::from_facts(&facts);
    out.println("groundwork wizard: Enter keeps the [default]. Ctrl-C stops without writing anything.");
    let answers = match wizard::run(&mut prompter, &defaults) {
        Ok(a) => a,
        Err(wizard::WizardError::Cancelled) => {
            say!("cancelled; nothing was written");
            return 1;
        }
        Err(e) => {
            say!("error: {e}; nothing was written");
            return 2;
        }
    };
    let text = wizard::render(&answers);
    // The file is checked exactly as `validate` will read it.
    let catalog = Catalog::embedded();
    if let Err(r) = crate::plan::load_str(&file.display().to_string(), &text, catalog) {
        print_report(&r);
        say!("the answers above do not validate; nothing was written");
        return 1;
    }
    out.println(&format!("\n{}", console::style("Summary").bold()));
    out.print(&text);
    out.println(&format!("\n{}", crate::plan::build(&answers, catalog).render()));
    let _ = std::io::stdout().flush();
    match dialoguer::Confirm::new().with_prompt(format!("Write {}?", file.display())).default(true).interact() {
        Ok(true) => {}
        Ok(false) => {
            say!("nothing was written");
            return 1;
        }
        Err(e) => {
            say!("error: {e}; nothing was written");
            return 2;
        }
    }
    match write_answers_and_secrets(out, file, &text, state, &answers) {
        0 => wizard_apply::offer(out, file, state, &preflight::judge(&facts, &answers, catalog)),
        code => code,
    }
}

fn write_answers_and_secrets(
    out: &mut Out,
    file: &Path,
    text: &str,
    state: Option<&Path>,
    a: &answers::Answers,
) -> i32 {
    // The state directory first: a refused or busy one leaves no answer file behind.
    let dir = StateDir::for_site(state, &a.site.name);
    let _lock = match dir.lock(Access::Exclusive) {
        Ok(l) => l,
        Err(e) => {
            say!("error: {e}; nothing was written");
            return 2;
        }
    };
    if let Err(e) = crate::state::write_private(file, text.as_bytes(), 0o600) {
        say!("error: cannot write {}: {e}", file.display());
        return 2;
    }
    out.println(&format!("wrote {} (mode 0600)", file.display()));
    let path = dir.secrets_path();
    let result = Secrets::load(&path).map_err(|e| e.to_string()).and_then(|mut s| {
        let made = s.ensure_for(a);
        s.save(&path).map_err(|e| e.to_string())?;
        Ok(made)
    });
    match result {
        Ok(made) => {
            if made.is_empty() {
                out.println(&format!("secrets: {} already holds everything (nothing generated)", path.display()));
            } else {
                out.println(&format!(
                    "secrets: generated {} into {} (mode 0600): {}",
                    made.len(),
                    path.display(),
                    made.join(", ")
                ));
            }
            0
        }
        Err(e) => {
            say!("error: secrets: {e}");
            2
        }
    }
}

/// The answer file (or the bundled lab example), checked with the role graph of `catalog`.
/// The catalog (built-in, or `--playbooks DIR`) and the answers checked against it; an error
/// has been printed when this returns the exit code.
fn load_site(file: Option<&Path>, playbooks: Option<&Path>) -> Result<(Catalog, answers::Loaded), i32> {
    let catalog = load_catalog(playbooks)?;
    let loaded = load_or_lab(file, &catalog)?;
    Ok((catalog, loaded))
}

fn load_or_lab(file: Option<&Path>, catalog: &Catalog) -> Result<answers::Loaded, i32> {
    let loaded = match file {
        Some(f) => crate::plan::load_file(f, catalog),
        None => crate::plan::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1, catalog),
    };
    loaded.map_err(|r| {
        print_report(&r);
        1
    })
}

fn engine_options(e: &EngineArgs, dry_run: bool, json: bool) -> crate::engine::Options {
    crate::engine::Options { dry_run, json, hosts: e.hosts.clone(), local_files: Vec::new(), package_repo: None }
}

/// The role catalog of a command: the embedded roles, with those of a `--playbooks` directory
/// in their place. One that does not load (missing, no roles, a template that does not
/// compile, a circle of needs) is refused before anything else happens.
fn load_catalog(dir: Option<&Path>) -> Result<Catalog, i32> {
    Catalog::load(dir).map_err(|e| {
        say!("error: {e}");
        2
    })
}

/// The online Proxmox checks of `apply`, `plan --live` and `rebuild` (the answers' node,
/// storage, templates and the token's privileges), each failure on its field; `Err` is the
/// exit code after the report.
fn proxmox_checks(file: Option<&Path>, loaded: &answers::Loaded) -> Result<(), i32> {
    let (name, text) = match file {
        Some(f) => (f.display().to_string(), std::fs::read_to_string(f).unwrap_or_default()),
        None => (crate::LAB_EXAMPLE.0.to_string(), crate::LAB_EXAMPLE.1.to_string()),
    };
    match crate::proxmox::check::run_blocking(&name, &text, loaded) {
        Ok(line) => {
            say!("{line}");
            Ok(())
        }
        Err(report) => {
            print_report(&report);
            say!("error: the Proxmox checks failed; nothing was changed");
            Err(1)
        }
    }
}

/// `apply` and `plan --live`. An apply without --yes shows the dry run first and asks.
/// `trial`: `apply --try SECONDS` (src/trial.rs).
fn engine_cmd(
    out: &mut Out,
    file: Option<&Path>,
    state: Option<&Path>,
    playbooks: Option<&Path>,
    opts: crate::engine::Options,
    yes: bool,
    trial: Option<u64>,
) -> i32 {
    let (catalog, loaded) = match load_site(file, playbooks) {
        Ok(site) => site,
        Err(code) => return code,
    };
    let a = &loaded.answers;
    // Before the state directory, and before anything connects.
    if let Err(e) = crate::plan::build(a, &catalog).refuse_roles_without_steps(&opts.hosts) {
        say!("error: {e}");
        return 2;
    }
    // The first phase when guests are provisioned: the Proxmox API, node, storage, templates
    // and the token's privileges, each failure on its field of the answers.
    if a.proxmox.is_some()
        && a.hosts.iter().any(|h| h.provision.is_some() && (opts.hosts.is_empty() || opts.hosts.contains(&h.name)))
        && let Err(code) = proxmox_checks(file, &loaded)
    {
        return code;
    }
    let mut opts = opts;
    let mut airgap = None;
    match crate::bundle::check::verify_for_run(a, &opts.hosts) {
        Ok(Some((checked, files))) => {
            say!("air-gap bundle {}", checked.summary());
            opts.local_files = files;
            airgap = Some(checked);
        }
        Ok(None) => {}
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    }
    // One directory may be both bundles: it is hashed once.
    match crate::bundle::check::verify_packages_for_run(a, &catalog, &opts.hosts, airgap.as_ref()) {
        Ok(Some((checked, repo))) => {
            say!("package bundle {}; hosts install from it only", checked.summary());
            opts.package_repo = Some(repo);
        }
        Ok(None) => {}
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    }
    let dir = StateDir::for_site(state, &a.site.name);
    // An apply holds the directory from its preview to its end; a dry run only reads secrets
    // (it generates none on disk), so dry runs may share it.
    let access = if opts.dry_run { Access::Shared } else { Access::Exclusive };
    let _lock = match dir.lock(access) {
        Ok(l) => l,
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    let Some(rt) = runtime() else { return 2 };
    if file.is_none() {
        say!("(no FILE given: the bundled lab example, {})", crate::LAB_EXAMPLE.0);
    }
    if !opts.dry_run && !yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            say!("error: apply asks before changing hosts, and there is no terminal to ask at; add --yes");
            return 2;
        }
        let dry = crate::engine::Options { dry_run: true, ..opts.clone() };
        match rt.block_on(crate::engine::run(a, &catalog, &dir, &dry)) {
            Ok(o) if !o.ok => return 1,
            Ok(o) if o.changed == 0 => {
                say!("nothing to change");
                return 0;
            }
            Ok(_) => {}
            Err(e) => {
                say!("error: {e}");
                return 2;
            }
        }
        let question = match trial {
            Some(secs) => format!("Apply these changes, reverted after {secs} s unless confirmed?"),
            None => "Apply these changes?".to_string(),
        };
        match dialoguer::Confirm::new().with_prompt(question).default(false).interact() {
            Ok(true) => {}
            _ => {
                say!("nothing was changed");
                return 1;
            }
        }
    }
    if let Some(secs) = trial {
        return try_report(
            out,
            rt.block_on(crate::trial::apply(a, &catalog, &dir, &opts, secs, &|m| say!("{m}"))),
            opts.json,
        );
    }
    let code = match rt.block_on(crate::engine::run(a, &catalog, &dir, &opts)) {
        Ok(o) => i32::from(!o.ok),
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    if opts.dry_run && code != 0 {
        say!("\ndrift: not checked (a host failed above)");
    } else if opts.dry_run {
        // plan --live: what changed by hand since groundwork left the hosts.
        let secrets = Secrets::load(&dir.secrets_path()).unwrap_or_default();
        let ssh = crate::ssh::SshOptions { known_hosts: dir.known_hosts_path(), ..Default::default() };
        let hosts = rt.block_on(crate::engine::drift::run(a, &catalog, &secrets, &ssh, &opts.hosts));
        if opts.json {
            let doc = serde_json::json!({"event": "drift", "hosts": hosts});
            out.println(&doc.to_string());
            return code;
        }
        say!("\ndrift (changed since groundwork left the hosts):\n{}", crate::engine::drift::render(&hosts).trim_end());
    }
    code
}

/// `--host` and `--role`: which hosts a command is for (all when both are empty).
struct Only {
    hosts: Vec<String>,
    roles: Vec<String>,
}

impl Only {
    /// The names of the chosen hosts; `Err` names a host or role the answers do not have.
    fn pick(&self, a: &answers::Answers) -> Result<Vec<String>, String> {
        for h in &self.hosts {
            if !a.hosts.iter().any(|x| &x.name == h) {
                return Err(format!("--host {h}: no such host in the answer file"));
            }
        }
        for r in &self.roles {
            if !a.hosts.iter().any(|x| x.roles.iter().any(|role| role.as_str() == r)) {
                return Err(format!("--role {r}: no host of the answer file has this role"));
            }
        }
        Ok(a.hosts
            .iter()
            .filter(|h| self.hosts.is_empty() || self.hosts.contains(&h.name))
            .filter(|h| self.roles.is_empty() || h.roles.iter().any(|r| self.roles.iter().any(|x| x == r.as_str())))
            .map(|h| h.name.clone())
            .collect())
    }
}

fn reset_cmd(
    out: &mut Out,
    file: Option<&Path>,
    state: Option<&Path>,
    only: &Only,
    dry_run: bool,
    yes: bool,
    json: bool,
) -> i32 {
    use crate::engine::reset;
    let (_, loaded) = match load_site(file, None) {
        Ok(site) => site,
        Err(code) => return code,
    };
    let a = &loaded.answers;
    let names = match only.pick(a) {
        Ok(n) => n,
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    let dir = StateDir::for_site(state, &a.site.name);
    // Exclusive: no apply may change the hosts meanwhile.
    let _lock = match dir.lock(if dry_run { Access::Shared } else { Access::Exclusive }) {
        Ok(l) => l,
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    if !dry_run && !yes && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        say!(
            "error: reset asks before changing hosts, and there is no terminal to ask at; nothing was changed (add --yes, or --dry-run to see it)"
        );
        return 2;
    }
    let Some(rt) = runtime() else { return 2 };
    let ssh = crate::ssh::SshOptions { known_hosts: dir.known_hosts_path(), ..Default::default() };
    let hosts: Vec<&answers::model::Host> = a.hosts.iter().filter(|h| names.contains(&h.name)).collect();
    let sessions = rt.block_on(futures::future::join_all(hosts.iter().map(|h| async {
        let session =
            crate::ssh::Session::connect(&crate::engine::target_of(h), &ssh).await.map_err(|e| e.to_string())?;
        let plan = reset::read(&session).await;
        Ok::<_, String>((session, plan?))
    })));
    let mut outcomes: Vec<reset::Outcome> = Vec::new();
    let mut work = Vec::new();
    for (h, r) in hosts.iter().zip(sessions) {
        let mut o = reset::Outcome { host: h.name.clone(), ..Default::default() };
        match r {
            Ok((session, plan)) => {
                o.plan = plan;
                if let Some(why) = &o.plan.refused {
                    o.error = Some(why.clone());
                }
                outcomes.push(o);
                work.push(Some(session));
            }
            Err(e) => {
                o.error = Some(e);
                outcomes.push(o);
                work.push(None);
            }
        }
    }
    if !json || dry_run {
        for o in &outcomes {
            match (&o.error, o.plan.is_empty()) {
                (Some(e), _) if o.plan.refused.is_none() => say!("{}: cannot be reset: {e}", o.host),
                (_, true) => say!("{}: nothing to reset (groundwork left no record here)", o.host),
                _ => {
                    say!("{}:", o.host);
                    for l in reset::describe(&o.plan) {
                        say!("  {l}");
                    }
                }
            }
        }
    }
    if let Some((primary, dropped)) = dns_kept_for(a, &names) {
        for h in dropped {
            say!(
                "{}: then its records in the site's zones on {} (its name, the names pointing to it, its PTR)",
                h.name,
                primary.name
            );
        }
    }
    let close = |work: Vec<Option<crate::ssh::Session>>| {
        rt.block_on(futures::future::join_all(work.into_iter().flatten().map(|s| s.close())));
    };
    if dry_run {
        close(work);
        if json {
            let doc = serde_json::json!({"ok": outcomes.iter().all(|o| o.error.is_none()), "dry_run": true, "hosts": outcomes});
            out.println(&to_json_pretty(&doc));
        }
        return i32::from(outcomes.iter().any(|o| o.error.is_some()));
    }
    if !yes {
        match dialoguer::Confirm::new().with_prompt("Reset these hosts?").default(false).interact() {
            Ok(true) => {}
            _ => {
                close(work);
                say!("nothing was changed");
                return 1;
            }
        }
    }
    let results = rt.block_on(futures::future::join_all(outcomes.iter().zip(&work).map(|(o, s)| async move {
        let Some(session) = s else { return None };
        if o.error.is_some() || o.plan.is_empty() {
            return None;
        }
        let progress = |m: &str| say!("{}: {m}", o.host);
        Some(reset::carry_out(session, &o.plan, &progress).await)
    })));
    close(work);
    for (o, r) in outcomes.iter_mut().zip(results) {
        match r {
            None => o.ok = o.error.is_none(),
            Some(Ok((kept, leftovers))) => {
                o.ok = true;
                o.kept = kept;
                o.leftovers = leftovers;
            }
            Some(Err(e)) => o.error = Some(e),
        }
    }
    for o in &outcomes {
        if let Some(e) = &o.error {
            say!("{}: reset FAILED: {e}", o.host);
        } else if !o.plan.is_empty() {
            say!(
                "{}: reset: {} file(s) restored, {} path(s) removed, {} package(s) purged, {} unit(s) stopped",
                o.host,
                o.plan.restore.len(),
                o.plan.remove.len() - o.kept.len(),
                o.plan.purge.len(),
                o.plan.stop.len()
            );
            for (path, why) in &o.kept {
                say!("{}:   kept {path}: {why}", o.host);
            }
            if !o.leftovers.is_empty() {
                say!("{}:   removed what the purge left under /etc: {}", o.host, o.leftovers.join(", "));
            }
        }
    }
    // The records the reset hosts had in the site's zones, where the DNS primary stays.
    if let Some((primary, dropped)) = dns_kept_for(a, &names) {
        let removed = rt.block_on(async {
            let session = crate::ssh::Session::connect(&crate::engine::target_of(primary), &ssh)
                .await
                .map_err(|e| e.to_string())?;
            let mut all = Vec::new();
            for h in &dropped {
                let script = reset::dns_removal_script(
                    &a.site.internal_domain,
                    &answers::model::reverse_zone(&a.network.subnet),
                    &h.name,
                    &h.address.to_string(),
                );
                let out = session.exec(&script, None).await.map_err(|e| e.to_string());
                all.push((h.name.clone(), out));
            }
            session.close().await;
            Ok::<_, String>(all)
        });
        match removed {
            Ok(all) => {
                for (name, r) in all {
                    let Some(o) = outcomes.iter_mut().find(|o| o.host == name) else { continue };
                    match r {
                        Ok(out) if out.ok() => {
                            o.dns_removed = reset::removed_records(&out.stdout_str());
                            say!("{name}: removed from DNS on {}: {}", primary.name, o.dns_removed.join(", "));
                        }
                        Ok(out) => {
                            o.ok = false;
                            o.error = Some(format!("its DNS records on {}: {}", primary.name, out.stderr_str().trim()));
                        }
                        Err(e) => {
                            o.ok = false;
                            o.error = Some(format!("its DNS records on {}: {e}", primary.name));
                        }
                    }
                }
            }
            Err(e) => {
                say!("{}: its zones could not be reached: {e}", primary.name);
                for o in outcomes.iter_mut().filter(|o| dropped.iter().any(|h| h.name == o.host)) {
                    o.ok = false;
                    o.error = Some(format!("its DNS records on {} stay: {e}", primary.name));
                }
            }
        }
    }
    let ok = outcomes.iter().all(|o| o.ok);
    if json {
        out.println(&to_json_pretty(&serde_json::json!({"ok": ok, "dry_run": false, "hosts": outcomes})));
    }
    i32::from(!ok)
}

/// The DNS primary (the first dns host) when it is not among the `reset` hosts, with the reset
/// hosts whose records are in its zones (those that are not DNS servers themselves).
fn dns_kept_for<'a>(
    a: &'a answers::Answers,
    reset: &[String],
) -> Option<(&'a answers::model::Host, Vec<&'a answers::model::Host>)> {
    let (_, primary) = a.hosts_with(answers::model::Role::Dns).next()?;
    if reset.contains(&primary.name) {
        return None;
    }
    let dropped: Vec<&answers::model::Host> =
        a.hosts.iter().filter(|h| reset.contains(&h.name) && !h.roles.contains(&answers::model::Role::Dns)).collect();
    (!dropped.is_empty()).then_some((primary, dropped))
}

fn drift_cmd(out: &mut Out, file: Option<&Path>, state: Option<&Path>, only: &[String], json: bool) -> Exit {
    let (catalog, loaded) = load_site(file, None)?;
    let a = &loaded.answers;
    for h in only {
        if !a.hosts.iter().any(|x| &x.name == h) {
            say!("error: --host {h}: no such host in the answer file");
            return Ok(2);
        }
    }
    let dir = StateDir::for_site(state, &a.site.name);
    let _lock = dir.lock(Access::Shared).or_exit()?;
    // The secrets are what diffs are masked with: without them, nothing is shown.
    let secrets = Secrets::load(&dir.secrets_path()).or_exit()?;
    let rt = runtime().ok_or(2)?;
    let ssh = crate::ssh::SshOptions { known_hosts: dir.known_hosts_path(), ..Default::default() };
    let hosts = rt.block_on(crate::engine::drift::run(a, &catalog, &secrets, &ssh, only));
    let drifted = hosts.iter().any(|h| h.drifted);
    if json {
        out.println(&to_json_pretty(&serde_json::json!({"drifted": drifted, "hosts": hosts})));
    } else {
        out.print(&crate::engine::drift::render(&hosts));
    }
    Ok(if drifted { 2 } else { i32::from(hosts.iter().any(|h| h.error.is_some())) })
}

/// The async runtime of a command that talks to hosts; `None` after saying why not.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// A command's result: its exit code, or an earlier exit code after saying why.
type Exit = Result<i32, i32>;

fn code(r: Exit) -> i32 {
    r.unwrap_or_else(|code| code)
}

/// Says `error: ...` and exits 2 on an error.
trait OrExit<T> {
    fn or_exit(self) -> Result<T, i32>;
}

impl<T, E: std::fmt::Display> OrExit<T> for Result<T, E> {
    fn or_exit(self) -> Result<T, i32> {
        self.map_err(|e| {
            say!("error: {e}");
            2
        })
    }
}

/// What `apply --try` says: the checks, and whether the change waits for `confirm` or was
/// taken back.
fn try_report(out: &mut Out, result: Result<crate::trial::Outcome, String>, json: bool) -> i32 {
    let o = match result {
        Ok(o) => o,
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    let kept = o.applied && o.checks_ok();
    if json {
        let mut doc = serde_json::to_value(&o).expect("an outcome serializes");
        doc["event"] = serde_json::json!("try-finished");
        doc["ok"] = serde_json::json!(kept);
        out.println(&doc.to_string());
    } else {
        if !o.checks.is_empty() {
            out.print(&crate::verify::render_table(&o.checks));
        }
        if kept {
            out.println(&format!(
                "try {}: applied and checked; every host puts the previous files back in {} s unless `groundwork confirm` runs first",
                o.run, o.seconds
            ));
        } else {
            out.println(&format!(
                "try {}: REVERTED ({})",
                o.run,
                if o.applied { "a check failed" } else { "the apply failed" }
            ));
            if !o.after_revert.is_empty() {
                out.println("after the revert:");
                out.print(&crate::verify::render_table(&o.after_revert));
            }
        }
    }
    i32::from(!kept)
}

/// The state directory of `a`'s site, locked for `access`; `Err` is the exit code after
/// saying why not.
fn locked_state(
    state: Option<&Path>,
    a: &answers::Answers,
    access: Access,
) -> Result<(StateDir, crate::state::StateLock), i32> {
    let dir = StateDir::for_site(state, &a.site.name);
    let lock = dir.lock(access).or_exit()?;
    Ok((dir, lock))
}

fn confirm_cmd(out: &mut Out, file: Option<&Path>, state: Option<&Path>, json: bool) -> Exit {
    let (_, loaded) = load_site(file, None)?;
    let a = &loaded.answers;
    let (dir, _lock) = locked_state(state, a, Access::Exclusive)?;
    let rt = runtime().ok_or(2)?;
    let (p, hosts) = rt.block_on(crate::trial::confirm(a, &dir)).or_exit()?;
    use crate::trial::Confirmed;
    let ok = hosts.iter().all(|(_, c)| *c == Confirmed::Confirmed);
    if json {
        let map: serde_json::Map<String, serde_json::Value> = hosts
            .iter()
            .map(|(h, c)| {
                let v = match c {
                    Confirmed::NotReached(why) => serde_json::json!({"not-reached": why}),
                    other => serde_json::to_value(other).expect("a state serializes"),
                };
                (h.clone(), v)
            })
            .collect();
        out.println(&to_json_pretty(&serde_json::json!({"ok": ok, "run": p.run, "hosts": map})));
    } else {
        for (h, c) in &hosts {
            let said = match c {
                Confirmed::Confirmed => "confirmed: the change stays".to_string(),
                Confirmed::Reverted => "REVERTED already: the timer came first".to_string(),
                Confirmed::None => "nothing armed".to_string(),
                Confirmed::NotReached(why) => format!("NOT REACHED ({why}): its timer reverts it"),
            };
            out.println(&format!("{h}: {said}"));
        }
    }
    Ok(i32::from(!ok))
}

fn rotate_cmd(out: &mut Out, names: &[String], file: Option<&Path>, state: Option<&Path>, json: bool) -> Exit {
    let (catalog, loaded) = load_site(file, None)?;
    let a = &loaded.answers;
    let chosen = match crate::rotate::select(&crate::rotate::rotatable(a), names) {
        Ok(c) if c.is_empty() => {
            say!("error: this site has no generated secret to rotate");
            return Ok(2);
        }
        Ok(c) => c,
        Err(e) => {
            say!("error: {e}");
            return Ok(2);
        }
    };
    let dir = StateDir::for_site(state, &a.site.name);
    if !dir.secrets_path().exists() {
        say!("error: {} does not exist: rotate renews what `groundwork apply` generated", dir.secrets_path().display());
        return Ok(2);
    }
    let (_, _lock) = locked_state(state, a, Access::Exclusive)?;
    let rt = runtime().ok_or(2)?;
    let opts = crate::engine::Options { json, ..crate::engine::Options::default() };
    let progress = |secret: &str, what: &str| say!("rotate {secret}: {what}");
    let done = rt.block_on(crate::rotate::run(a, &catalog, &dir, &opts, &chosen, &progress));
    let ok = done.len() == chosen.len() && done.iter().all(|d| d.ok);
    if json {
        let doc = serde_json::json!({"event": "rotate-finished", "ok": ok, "secrets": done});
        out.println(&doc.to_string());
    } else {
        for d in &done {
            match &d.error {
                None => out.println(&format!(
                    "{}: rotated; verified by {} client check(s): {}",
                    d.secret,
                    d.verified.len(),
                    d.verified.join(", ")
                )),
                Some(e) => out.println(&format!(
                    "{}: NOT rotated: {e}\n  the old value stays in [previous]; `groundwork rotate {}` goes on from here",
                    d.secret, d.secret
                )),
            }
        }
        for r in chosen.iter().skip(done.len()) {
            out.println(&format!("{}: not started (an earlier rotation failed)", r.name()));
        }
    }
    Ok(i32::from(!ok))
}

fn kubeconfig_cmd(out: &mut Out, file: Option<&Path>, state: Option<&Path>) -> Exit {
    let (_, loaded) = load_site(file, None)?;
    let a = &loaded.answers;
    if a.k3s.is_none() {
        say!("error: the answers have no [k3s] section: there is no cluster");
        return Ok(2);
    }
    let path = StateDir::for_site(state, &a.site.name).root.join("kubeconfig");
    if !path.exists() {
        say!("error: {} does not exist yet: `groundwork apply` fetches it once the cluster is up", path.display());
        return Ok(1);
    }
    out.println(&path.display().to_string());
    Ok(0)
}

fn preflight_cmd(out: &mut Out, file: Option<&Path>, state: Option<&Path>, json: bool) -> Exit {
    let (catalog, loaded) = load_site(file, None)?;
    let a = &loaded.answers;
    // Exclusive: first contact writes known_hosts, as apply does.
    let (dir, _lock) = locked_state(state, a, Access::Exclusive)?;
    let rt = runtime().ok_or(2)?;
    let report = rt.block_on(crate::cluster::reach::run(a, &catalog, &dir)).or_exit()?;
    if json {
        let mut doc = serde_json::to_value(&report).unwrap_or_default();
        doc["ok"] = serde_json::json!(report.ok());
        out.println(&to_json_pretty(&doc));
    } else {
        out.print(&report.render());
    }
    Ok(i32::from(!report.ok()))
}

fn verify_cmd(out: &mut Out, file: Option<&Path>, state: Option<&Path>, json: bool) -> Exit {
    let (_, loaded) = load_site(file, None)?;
    let a = &loaded.answers;
    let dir = StateDir::for_site(state, &a.site.name);
    let secrets_path = dir.secrets_path();
    if !secrets_path.exists() {
        say!(
            "error: {} does not exist: verify checks what `groundwork apply` laid down, with its secrets",
            secrets_path.display()
        );
        return Ok(2);
    }
    // Shared: an apply that is changing the secrets must finish first.
    let _lock = dir.lock(Access::Shared).or_exit()?;
    let secrets = Secrets::load(&secrets_path).or_exit()?;
    for w in crate::ssh::known_hosts_warnings(&dir.known_hosts_path()) {
        say!("warning: {w}");
    }
    let rt = runtime().ok_or(2)?;
    let rows = rt.block_on(crate::verify::verify(a, &secrets, &dir));
    let mut redactor = crate::engine::context::Redactor::new(&secrets);
    // The Proxmox token is never in a row; masked all the same.
    if let Some(secret) = a.proxmox.as_ref().and_then(|p| crate::proxmox::client::read_secret(p).ok()) {
        redactor = redactor.also(secret.expose());
    }
    if json {
        let doc = crate::verify::to_json(&rows);
        out.println(&redactor.redact(&to_json_pretty(&doc)));
    } else {
        out.print(&redactor.redact(&crate::verify::render_table(&rows)));
    }
    Ok(i32::from(!crate::verify::all_ok(&rows)))
}

fn plan_cmd(out: &mut Out, file: Option<&Path>, json: bool, engine: &EngineArgs) -> i32 {
    let catalog = match load_catalog(engine.playbooks.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // As `validate` reads it (the bundle too); the lab example names no bundle.
    let loaded = match file {
        Some(f) => crate::plan::validate_file(f, &catalog),
        None => crate::plan::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1, &catalog),
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(r) => {
            print_report(&r);
            return 1;
        }
    };
    let plan = crate::plan::build(&loaded.answers, &catalog);
    if json {
        out.println(&to_json_pretty(&plan));
    } else {
        if file.is_none() {
            out.println(&format!("(no FILE given: the bundled lab example, {})\n", crate::LAB_EXAMPLE.0));
        }
        out.print(&plan.render());
    }
    0
}

/// `bundle --k3s ... --out DIR`, or `bundle --check DIR`.
fn bundle_cmd(out: &mut Out, args: BundleArgs) -> i32 {
    if let Some(dir) = &args.check {
        return bundle_check_cmd(out, dir, args.json);
    }
    let Some(dir) = args.out else {
        say!("error: bundle needs --out DIR with --k3s VERSION and/or --debs ANSWERS (or --check DIR)");
        return 2;
    };
    if args.k3s.is_none() && args.debs.is_none() {
        say!("error: bundle needs --k3s VERSION and/or --debs ANSWERS (or --check DIR)");
        return 2;
    }
    // The roles' packages, from the answer file as `validate` reads it (without its bundles:
    // the bundle is what is being made).
    let debs = match &args.debs {
        None => None,
        Some(file) => {
            let catalog = match load_catalog(None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::plan::load_file(file, &catalog) {
                Ok(loaded) => Some(crate::bundle::debs::site_packages(&loaded.answers, &catalog)),
                Err(r) => {
                    print_report(&r);
                    return 1;
                }
            }
        }
    };
    let gitops = match args.gitops.as_deref() {
        None => None,
        Some([engine, version]) => match crate::bundle::parse_gitops(engine, version) {
            Ok(g) => Some(g),
            Err(e) => {
                say!("error: {e}");
                return 2;
            }
        },
        Some(_) => unreachable!("clap takes exactly two values for --gitops"),
    };
    let req = crate::bundle::Request {
        k3s_version: args.k3s,
        gitops,
        out: dir,
        arch: args.arch,
        k3s_url: args.k3s_url,
        flux_url: args.flux_url,
        argocd_url: args.argocd_url,
        registry_mirror: args.registry_mirror,
        registry_insecure: args.registry_insecure,
        debs,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let json = args.json;
    let result = rt.block_on(crate::bundle::make(&req, &mut |f| {
        if !json {
            out.println(&f.line());
        }
    }));
    match result {
        Ok(done) => {
            for d in &done.dropped {
                say!("note: the earlier manifest listed {d}; this one does not");
            }
            if json {
                out.println(&to_json_pretty(&done.to_json()));
            } else {
                if let Some(s) = &done.debs_summary {
                    out.println(s);
                }
                out.println(&done.total_line());
            }
            0
        }
        Err(e) => {
            say!("error: {e}");
            if json {
                out.println(&to_json_pretty(&serde_json::json!({"ok": false, "error": e.to_string()})));
            }
            match e {
                crate::bundle::Error::Input(_) => 2,
                _ => 1,
            }
        }
    }
}

fn bundle_check_cmd(out: &mut Out, dir: &Path, json: bool) -> i32 {
    match crate::bundle::check::check_dir(dir, crate::bundle::check::Depth::Sha256) {
        Ok(checked) => {
            if json {
                out.println(&to_json_pretty(&checked.to_json()));
            } else {
                out.print(&checked.render());
            }
            i32::from(!checked.ok())
        }
        Err(e) => {
            say!("error: {e}");
            if json {
                out.println(&to_json_pretty(&serde_json::json!({"ok": false, "error": e})));
            }
            1
        }
    }
}

/// Which known_hosts entry `host` means: `[addr]:port`; a host name (or address) of the
/// answer file, with its SSH port; else an address on port 22.
fn forget_target(host: &str, a: &answers::Answers) -> (String, u16, Option<String>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((addr, port)) = rest.split_once("]:")
        && let Ok(port) = port.parse::<u16>()
    {
        return (addr.to_string(), port, None);
    }
    if let Some(h) = a.hosts.iter().find(|h| h.name == host || h.address.to_string() == host) {
        return (h.address.to_string(), h.ssh_port, Some(h.name.clone()));
    }
    (host.to_string(), 22, None)
}

/// What forgetting a host's key did (`done` changed the file).
fn forgot_line(done: &crate::ssh::Forgotten, who: &str, entry: &str, path: &Path) -> String {
    let lines = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
    let mut what = Vec::new();
    if !done.removed.is_empty() {
        what.push(format!("removed line(s) {}", lines(&done.removed)));
    }
    if !done.narrowed.is_empty() {
        what.push(format!("took {entry} out of line(s) {} (other hosts on them stay)", lines(&done.narrowed)));
    }
    format!(
        "forgot the recorded key(s) of {who} in {}: {}; the next run records its new key",
        path.display(),
        what.join("; ")
    )
}

/// `groundwork rebuild HOST`: what will be lost, a confirmation, then stop, destroy (purge),
/// forget the host key, create from the current template, start, wait for SSH.
fn rebuild_cmd(out: &mut Out, host: &str, file: Option<&Path>, state: Option<&Path>, yes: bool) -> i32 {
    use crate::proxmox::provision as pv;
    let (_, loaded) = match load_site(file, None) {
        Ok(site) => site,
        Err(code) => return code,
    };
    let a = &loaded.answers;
    let Some(h) = a.hosts.iter().find(|h| h.name == host) else {
        say!("error: no host named `{host}` in the answers");
        return 2;
    };
    let (Some(pr), Some(p)) = (h.provision, a.proxmox.as_ref()) else {
        say!(
            "error: host `{host}` is not provisioned (no `provision` in the answers): groundwork rebuilds only the guests it creates"
        );
        return 2;
    };
    let dir = StateDir::for_site(state, &a.site.name);
    // Exclusive: known_hosts changes, and no apply may run on the guest meanwhile.
    let _lock = match dir.lock(Access::Exclusive) {
        Ok(l) => l,
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    // What creating it again needs (node, storage, template, privileges, the public key) is
    // checked before anything is destroyed.
    if let Err(code) = proxmox_checks(file, &loaded) {
        return code;
    }
    let client = match crate::proxmox::Client::new(p) {
        Ok(c) => c,
        Err(e) => {
            say!("error: proxmox: {e}");
            return 2;
        }
    };
    let Some(rt) = runtime() else { return 2 };
    let found = rt.block_on(async {
        let all = pv::guests(&client).await.map_err(|e| e.to_string())?;
        let tpl = pv::vm_template(p, &all).map(|(id, node)| (id, node.to_string()));
        let plan = pv::compare(a, h, &all, &client, tpl.as_ref().map(|(id, n)| (*id, n.as_str()))).await?;
        let Some(g) = plan.guest.clone() else {
            return Err(format!(
                "no guest named `{host}` with the `{}` tag on Proxmox VE: nothing to rebuild (`groundwork apply` creates it)",
                pv::TAG
            ));
        };
        let path = format!("/nodes/{}/{}/{}/config", crate::proxmox::client::seg(&g.node), pr.kind.api(), g.vmid);
        let cfg = client.get(&path, &[]).await.map_err(|e| e.to_string())?;
        Ok((g, plan, tpl, pv::disks(pr.kind, &cfg)))
    });
    let (g, plan, tpl, disks) = match found {
        Ok(f) => f,
        Err(e) => {
            say!("error: proxmox: {e}");
            return 2;
        }
    };
    let identity = pv::template_identity(p, pr.kind, tpl.as_ref().map(|(id, n)| (*id, n.as_str())));
    out.println(&format!(
        "groundwork rebuild {host}: destroys guest {} (`{}`, {} on {}, {}, built from {}) and creates it again from {identity} ({}).",
        g.vmid,
        g.name,
        pr.kind.api(),
        g.node,
        g.status,
        plan.built_from.as_deref().unwrap_or("an unrecorded template"),
        pv::template_tag(&identity)
    ));
    out.println("Lost for good:");
    for d in &disks {
        out.println(&format!("  {}: {} ({})", d.key, d.volume, d.size.as_deref().unwrap_or("size not in the config")));
    }
    out.println("  everything on its disks: databases, zone files, leases, LDAP data that are not elsewhere");
    out.println(&format!(
        "Kept: groundwork's state ({}) keeps the site's secrets (passwords, keys, tokens), not data: the new guest gets the same secrets and empty services.",
        dir.root.display()
    ));
    if !yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            say!(
                "error: rebuild asks before destroying guest {}, and there is no terminal to ask at; nothing was changed (add --yes)",
                g.vmid
            );
            return 2;
        }
        let prompt = format!("Destroy guest {} and everything on its disks?", g.vmid);
        match dialoguer::Confirm::new().with_prompt(prompt).default(false).interact() {
            Ok(true) => {}
            _ => {
                say!("nothing was changed");
                return 1;
            }
        }
    }
    let progress = |m: &str| say!("{host}: {m}");
    let rebuilt = rt.block_on(async {
        if g.status == "running" {
            pv::stop(&client, &g.node, pr.kind, g.vmid, &progress).await?;
        }
        pv::destroy(&client, &g, pr.kind, &progress).await?;
        Ok::<(), String>(())
    });
    if let Err(e) = rebuilt {
        say!("error: proxmox: {e}");
        return 1;
    }
    out.println(&format!("destroyed guest {} and its disks", g.vmid));
    // The new guest has a new SSH host key.
    let (address, port) = (h.address.to_string(), h.ssh_port);
    let path = dir.known_hosts_path();
    match crate::ssh::forget_host(&path, &address, port) {
        Ok(done) if done.changed() => {
            let entry = crate::ssh::host_field(&address, port);
            out.println(&forgot_line(&done, &format!("host {host} ({entry})"), &entry, &path));
        }
        Ok(_) => {}
        Err(e) => say!("warning: {}: {e}: forget the old key with `groundwork forget-host {host}`", path.display()),
    }
    let created = rt.block_on(async {
        // The old guest is gone: nextid's answer is free for this one alone.
        let vmids = pv::Vmids::new(&[]);
        let vmid = pv::create(a, h, &client, tpl.as_ref().map(|(id, n)| (*id, n.as_str())), &vmids, &progress).await?;
        let deadline = std::time::Duration::from_secs(p.task_timeout);
        pv::wait_ssh(&address, port, deadline, &progress).await?;
        Ok::<u64, String>(vmid)
    });
    match created {
        Ok(vmid) => {
            out.println(&format!("created guest {vmid} from {identity} and started it; SSH answers"));
            let file = file.map_or(String::new(), |f| format!(" {}", crate::ssh::shell_word(&f.to_string_lossy())));
            out.println(&format!("next: groundwork apply{file} (converges {host} again: its roles, from scratch)"));
            0
        }
        Err(e) => {
            say!(
                "error: proxmox: the guest was destroyed, creating it again failed: {e}; `groundwork apply` creates it"
            );
            1
        }
    }
}

fn forget_host_cmd(out: &mut Out, host: &str, file: Option<&Path>, state: Option<&Path>) -> i32 {
    let (_, loaded) = match load_site(file, None) {
        Ok(site) => site,
        Err(code) => return code,
    };
    let a = &loaded.answers;
    let (address, port, name) = forget_target(host, a);
    let dir = StateDir::for_site(state, &a.site.name);
    let path = dir.known_hosts_path();
    let entry = crate::ssh::host_field(&address, port);
    let who = match &name {
        Some(n) => format!("host {n} ({entry})"),
        None => entry.clone(),
    };
    if !dir.root.exists() {
        out.println(&format!("nothing to forget for {who}: the state directory {} does not exist", dir.root.display()));
        return 0;
    }
    let _lock = match dir.lock(Access::Exclusive) {
        Ok(l) => l,
        Err(e) => {
            say!("error: {e}");
            return 2;
        }
    };
    let done = match crate::ssh::forget_host(&path, &address, port) {
        Ok(d) => d,
        Err(e) => {
            say!("error: {}: {e}", path.display());
            return 2;
        }
    };
    if done.changed() {
        out.println(&forgot_line(&done, &who, &entry, &path));
    } else {
        let hint = if name.is_none() && !a.hosts.iter().any(|h| h.address.to_string() == address) {
            format!(
                " (`{host}` is not a host name in {})",
                file.map_or(crate::LAB_EXAMPLE.0.to_string(), |f| f.display().to_string())
            )
        } else {
            String::new()
        };
        out.println(&format!("nothing recorded for {who} in {}{hint}", path.display()));
    }
    for k in &done.kept {
        say!("note: {}:{}: {}", path.display(), k.line, k.message);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn forget_targets() {
        let a = answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        let ns1 = a.hosts.iter().find(|h| h.name == "ns1").unwrap();
        let addr = ns1.address.to_string();
        assert_eq!(forget_target("ns1", &a), (addr.clone(), ns1.ssh_port, Some("ns1".into())));
        assert_eq!(forget_target(&addr, &a).2.as_deref(), Some("ns1"));
        assert_eq!(forget_target("[10.1.2.3]:2222", &a), ("10.1.2.3".into(), 2222, None));
        assert_eq!(forget_target("10.1.2.3", &a), ("10.1.2.3".into(), 22, None));
    }
}
