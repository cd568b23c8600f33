//! The command line: `groundwork validate | schema | probe | wizard | plan`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::answers::{self, Report};
use crate::probe::{self, preflight};
use crate::state::{Secrets, StateDir};
use crate::wizard;

#[derive(Parser, Debug)]
#[command(name = "groundwork", version, about = "Bootstrap a bare-metal site: DNS, DHCP, LDAP, databases, k3s, GitOps", long_about = None)]
pub struct Cli {
    /// State directory (secrets, known_hosts, journal, logs).
    /// Default: $XDG_STATE_HOME/groundwork/<site>
    #[arg(long, global = true, value_name = "DIR")]
    pub state: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check answer files offline: types, keys and the rules across sections.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// One JSON document with every problem (file, line, column, field, message).
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the answer file.
    Schema {
        /// Write it to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Facts about this machine; with --for, judge it against its roles (preflight).
    Probe {
        #[arg(long)]
        json: bool,
        /// Answer file whose roles this machine should carry.
        #[arg(long = "for", value_name = "FILE")]
        for_file: Option<PathBuf>,
    },
    /// Ask for the answers at a terminal and write the answer file (0600).
    Wizard {
        #[arg(long, value_name = "FILE", default_value = "groundwork.toml")]
        out: PathBuf,
    },
    /// Show which roles land on which host, in which order, and why; with --live, connect
    /// and show the steps that would change, with diffs (a dry run).
    Plan {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Compare with the live hosts over SSH (changes nothing).
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Check every service the way a client would; a table, or --json. Exit 1 on a failure.
    Verify {
        /// Answer file; without it, the bundled lab example.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
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
        #[command(flatten)]
        engine: EngineArgs,
    },
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

/// Run the CLI and return the process exit code (0 ok, 1 problems found, 2 could not run).
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files, json } => validate(&files, json),
        Command::Schema { out } => schema(out.as_deref()),
        Command::Probe { json, for_file } => probe_cmd(json, for_file.as_deref()),
        Command::Wizard { out } => wizard_cmd(&out, cli.state.as_deref()),
        Command::Plan { file, json, live, engine } => {
            if live {
                let opts = engine_options(&engine, true, json);
                engine_cmd(file.as_deref(), cli.state.as_deref(), opts, true)
            } else {
                plan_cmd(file.as_deref(), json)
            }
        }
        Command::Verify { file, json } => verify_cmd(file.as_deref(), cli.state.as_deref(), json),
        Command::Apply { file, yes, json, engine } => {
            let opts = engine_options(&engine, false, json);
            engine_cmd(file.as_deref(), cli.state.as_deref(), opts, yes)
        }
    }
}

fn color() -> bool {
    console::colors_enabled_stderr()
}

fn print_report(r: &Report) {
    eprint!("{}", r.render(color()));
}

fn validate(files: &[PathBuf], json: bool) -> i32 {
    let mut failed = 0;
    let mut docs = Vec::new();
    for f in files {
        match answers::load_file(f) {
            Ok(l) => {
                let roles: usize = l.answers.hosts.iter().map(|h| h.roles.len()).sum();
                if json {
                    docs.push(serde_json::json!({"file": f.display().to_string(), "ok": true, "problems": []}));
                } else {
                    let n = l.answers.hosts.len();
                    println!(
                        "{}: ok (site `{}`, {n} host{}, {roles} role assignment{})",
                        f.display(),
                        l.answers.site.name,
                        if n == 1 { "" } else { "s" },
                        if roles == 1 { "" } else { "s" },
                    );
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
        println!("{}", serde_json::to_string_pretty(&docs).expect("json"));
    }
    i32::from(failed > 0)
}

fn schema(out: Option<&Path>) -> i32 {
    let text = answers::schema::json();
    match out {
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => {
                println!("wrote {}", p.display());
                0
            }
            Err(e) => {
                eprintln!("error: {}: {e}", p.display());
                2
            }
        },
        None => {
            print!("{text}");
            0
        }
    }
}

fn probe_cmd(json: bool, for_file: Option<&Path>) -> i32 {
    let facts = probe::probe();
    let verdict = match for_file {
        Some(f) => match answers::load_file(f) {
            Ok(l) => Some(preflight::judge(&facts, &l.answers)),
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
            None => serde_json::to_value(&facts).expect("json"),
        };
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        print!("{}", facts.render());
        if let Some(v) = &verdict {
            print!("{}", v.render());
        }
    }
    match verdict {
        Some(v) if v.worst() == preflight::Level::Fail => 1,
        _ => 0,
    }
}

fn wizard_cmd(out: &Path, state: Option<&Path>) -> i32 {
    let Some(mut prompter) = wizard::terminal::TerminalPrompter::new() else {
        eprintln!(
            "error: `groundwork wizard` asks its questions at a terminal, and this is not one.\n\
             For an unattended run, write an answer file (examples: wizard/examples/) and use\n\
             `groundwork validate FILE`, then `groundwork plan FILE` / `groundwork apply FILE`."
        );
        return 2;
    };
    if out.exists() {
        eprintln!(
            "error: {} exists; the wizard does not overwrite an answer file (choose another --out)",
            out.display()
        );
        return 2;
    }
    let defaults = wizard::Defaults::from_facts(&probe::probe());
    println!("groundwork wizard: Enter keeps the [default]. Ctrl-C stops without writing anything.");
    let answers = match wizard::run(&mut prompter, &defaults) {
        Ok(a) => a,
        Err(wizard::WizardError::Cancelled) => {
            eprintln!("cancelled; nothing was written");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {e}; nothing was written");
            return 2;
        }
    };
    let text = wizard::render(&answers);
    // The file is checked exactly as `validate` will read it.
    if let Err(r) = answers::load_str(&out.display().to_string(), &text) {
        print_report(&r);
        eprintln!("the answers above do not validate; nothing was written");
        return 1;
    }
    println!("\n{}", console::style("Summary").bold());
    print!("{text}");
    println!("\n{}", crate::plan::build(&answers).render());
    match dialoguer::Confirm::new()
        .with_prompt(format!("Write {}?", out.display()))
        .default(true)
        .interact()
    {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("nothing was written");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {e}; nothing was written");
            return 2;
        }
    }
    write_answers_and_secrets(out, &text, state, &answers)
}

fn write_answers_and_secrets(
    out: &Path,
    text: &str,
    state: Option<&Path>,
    a: &answers::Answers,
) -> i32 {
    if let Err(e) = crate::state::write_private(out, text.as_bytes(), 0o600) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return 2;
    }
    println!("wrote {} (mode 0600)", out.display());
    let dir = StateDir::for_site(state, &a.site.name);
    let result = dir
        .ensure()
        .map_err(|e| format!("{}: {e}", dir.root.display()))
        .and_then(|()| {
            let path = dir.secrets_path();
            let mut s = Secrets::load(&path).map_err(|e| e.to_string())?;
            let made = s.ensure_for(a);
            s.save(&path).map_err(|e| e.to_string())?;
            Ok((path, made))
        });
    match result {
        Ok((path, made)) => {
            if made.is_empty() {
                println!("secrets: {} already holds everything (nothing generated)", path.display());
            } else {
                println!(
                    "secrets: generated {} into {} (mode 0600): {}",
                    made.len(),
                    path.display(),
                    made.join(", ")
                );
            }
            println!("next: groundwork validate {0} && groundwork plan {0}", out.display());
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            eprintln!("error: secrets: {e}");
            2
        }
    }
}

fn load_or_lab(file: Option<&Path>) -> Result<answers::Loaded, i32> {
    let loaded = match file {
        Some(f) => answers::load_file(f),
        None => answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1),
    };
    loaded.map_err(|r| {
        print_report(&r);
        1
    })
}

fn engine_options(e: &EngineArgs, dry_run: bool, json: bool) -> crate::engine::Options {
    crate::engine::Options {
        dry_run,
        json,
        playbooks: e.playbooks.clone(),
        hosts: e.hosts.clone(),
    }
}

/// `apply` and `plan --live`. An apply without --yes shows the dry run first and asks.
fn engine_cmd(file: Option<&Path>, state: Option<&Path>, opts: crate::engine::Options, yes: bool) -> i32 {
    let loaded = match load_or_lab(file) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let a = &loaded.answers;
    let dir = StateDir::for_site(state, &a.site.name);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    if file.is_none() {
        eprintln!("(no FILE given: the bundled lab example, {})", crate::LAB_EXAMPLE.0);
    }
    if !opts.dry_run && !yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("error: apply asks before changing hosts, and there is no terminal to ask at; add --yes");
            return 2;
        }
        let dry = crate::engine::Options { dry_run: true, ..opts.clone() };
        match rt.block_on(crate::engine::run(a, &dir, &dry)) {
            Ok(o) if !o.ok => return 1,
            Ok(o) if o.changed == 0 => {
                eprintln!("nothing to change");
                return 0;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
        match dialoguer::Confirm::new().with_prompt("Apply these changes?").default(false).interact() {
            Ok(true) => {}
            _ => {
                eprintln!("nothing was changed");
                return 1;
            }
        }
    }
    match rt.block_on(crate::engine::run(a, &dir, &opts)) {
        Ok(o) => i32::from(!o.ok),
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn verify_cmd(file: Option<&Path>, state: Option<&Path>, json: bool) -> i32 {
    let loaded = match load_or_lab(file) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let a = &loaded.answers;
    let dir = StateDir::for_site(state, &a.site.name);
    let secrets_path = dir.secrets_path();
    if !secrets_path.exists() {
        eprintln!(
            "error: {} does not exist: verify checks what `groundwork apply` laid down, with its secrets",
            secrets_path.display()
        );
        return 2;
    }
    let secrets = match Secrets::load(&secrets_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let rows = rt.block_on(crate::verify::verify(a, &secrets, &dir));
    let redactor = crate::engine::context::Redactor::new(&secrets);
    if json {
        let doc = crate::verify::to_json(&rows);
        println!("{}", redactor.redact(&serde_json::to_string_pretty(&doc).expect("json")));
    } else {
        print!("{}", redactor.redact(&crate::verify::render_table(&rows)));
    }
    i32::from(!crate::verify::all_ok(&rows))
}

fn plan_cmd(file: Option<&Path>, json: bool) -> i32 {
    let loaded = match load_or_lab(file) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let plan = crate::plan::build(&loaded.answers);
    if json {
        println!("{}", serde_json::to_string_pretty(&plan).expect("json"));
    } else {
        if file.is_none() {
            println!("(no FILE given: the bundled lab example, {})\n", crate::LAB_EXAMPLE.0);
        }
        print!("{}", plan.render());
    }
    0
}
