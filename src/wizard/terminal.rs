//! Prompts at a real terminal (dialoguer).

use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input};

use super::{Prompter, Question, WizardError};

pub struct TerminalPrompter {
    theme: ColorfulTheme,
}

impl TerminalPrompter {
    /// `None` when stdin or stdout is not a terminal.
    pub fn new() -> Option<TerminalPrompter> {
        let term = console::Term::stdout();
        if term.is_term() && console::Term::stderr().is_term() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            Some(TerminalPrompter { theme: ColorfulTheme::default() })
        } else {
            None
        }
    }
}

fn io(e: dialoguer::Error) -> WizardError {
    match e {
        dialoguer::Error::IO(e) if e.kind() == std::io::ErrorKind::Interrupted => WizardError::Cancelled,
        other => WizardError::Io(other.to_string()),
    }
}

impl Prompter for TerminalPrompter {
    fn say(&mut self, text: &str) {
        println!("\n{}", console::style(text).bold());
    }

    fn ask(&mut self, q: &Question<'_>) -> Result<String, WizardError> {
        let check = q.check;
        let mut input = Input::<String>::with_theme(&self.theme)
            .with_prompt(q.prompt)
            .allow_empty(true)
            .validate_with(|s: &String| -> Result<(), String> { check(s.trim()) });
        if let Some(d) = &q.default
            && !d.is_empty()
        {
            input = input.default(d.clone());
        }
        loop {
            let value = input.clone().interact_text().map_err(io)?.trim().to_string();
            // dialoguer hands back a default without validating it; check it like typed text.
            match check(&value) {
                Ok(()) => return Ok(value),
                Err(e) => eprintln!("{} {e}", console::style("✘").red()),
            }
        }
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, WizardError> {
        Confirm::with_theme(&self.theme).with_prompt(prompt).default(default).interact().map_err(io)
    }
}
