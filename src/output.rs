//! The only printer. stdout carries results that could be piped; stderr carries messages.
//! Colour only where allowed: `--color always`, or `auto` on a terminal without NO_COLOR.

use std::io::IsTerminal;

use crate::cli::ColorChoice;
use crate::error::{Error, format_diagnostic};

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// -1 with `-q`, 0 normally, N with N times `-v`.
    pub verbosity: i8,
    color_out: bool,
    color_err: bool,
}

const RED_BOLD: &str = "\x1b[1;31m";
const YELLOW_BOLD: &str = "\x1b[1;33m";
const CYAN_BOLD: &str = "\x1b[1;36m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

impl Printer {
    pub fn new(choice: ColorChoice, verbose: u8, quiet: bool) -> Printer {
        let allowed = |terminal: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        Printer {
            verbosity: if quiet { -1 } else { verbose.min(3) as i8 },
            color_out: allowed(std::io::stdout().is_terminal()),
            color_err: allowed(std::io::stderr().is_terminal()),
        }
    }

    fn paint(on: bool, style: &str, text: &str) -> String {
        if on {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// A result line on stdout; `-q` silences it.
    pub fn success(&self, text: &str) {
        if self.verbosity >= 0 {
            println!("{}", Self::paint(self.color_out, GREEN, text));
        }
    }

    /// Data on stdout, printed whatever the verbosity.
    pub fn data(&self, text: &str) {
        print!("{text}");
    }

    pub fn warning(&self, text: &str) {
        if self.verbosity >= 0 {
            eprintln!(
                "{} {text}",
                Self::paint(self.color_err, YELLOW_BOLD, "warning:")
            );
        }
    }

    /// An error with everything the user needs: each manifest diagnostic on its own line,
    /// and a hint when there is one.
    pub fn error(&self, error: &Error) {
        if let Error::ManifestInvalid { file, diagnostics } = error {
            for d in diagnostics {
                eprintln!("{}", format_diagnostic(file, d));
            }
        }
        eprintln!(
            "{} {error}",
            Self::paint(self.color_err, RED_BOLD, "error:")
        );
        if let Some(hint) = error.hint() {
            eprintln!("{} {hint}", Self::paint(self.color_err, CYAN_BOLD, "hint:"));
        }
    }
}
