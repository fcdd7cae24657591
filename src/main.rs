//! `bkt`: parse the command line, run the command, and turn its outcome into an exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use bkt::cli::{Cli, Command, SchemaName, Shell, VmCommand};
use bkt::error::Error;
use bkt::manifest::vm;
use bkt::output::Printer;
use bkt::subsystem::{Subsystem, VmSubsystem};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.global.color, cli.global.verbose, cli.global.quiet);
    match run(&cli, &printer) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            printer.error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(cli: &Cli, printer: &Printer) -> Result<(), Error> {
    let manifest_dir = vm::manifest_dir(cli.global.manifest_dir.as_deref());
    match &cli.command {
        Command::Vm(VmCommand::Validate) => {
            let n = VmSubsystem.validate(&manifest_dir)?;
            printer.success(&format!("ok: {n} VM{}", if n == 1 { "" } else { "s" }));
            Ok(())
        }
        Command::Schema {
            manifest: SchemaName::Vms,
        } => {
            printer.data(&vm::schema_text());
            Ok(())
        }
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "bkt", &mut std::io::stdout());
            Ok(())
        }
    }
}
