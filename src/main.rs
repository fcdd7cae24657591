//! `bkt`: parse the command line, run the command, and turn its outcome into an exit code.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use bkt::cli::{Cli, Command, DryRunArgs, SchemaName, Shell, VmCommand};
use bkt::error::Error;
use bkt::manifest::vm;
use bkt::output::Printer;
use bkt::subsystem::{self, Context, DryRun, Subsystem, VmSubsystem};
use bkt::virsh::{SystemRunner, Virsh};
use bkt::vm::commands;
use bkt::vm::ops::{self, StartOutcome, StopMode, StopOutcome};

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
    let trace = |line: &str| printer.trace(line);
    let mut virsh = Virsh::new(&SystemRunner, cli.global.connect.as_deref());
    if printer.verbosity >= 2 {
        virsh = virsh.with_trace(&trace);
    }
    let ctx = Context {
        manifest_dir: &manifest_dir,
        runner: &SystemRunner,
        virsh: &virsh,
        printer,
    };
    match &cli.command {
        Command::Vm(VmCommand::Sync {
            names,
            dry_run,
            json,
        }) => commands::sync(&ctx, names, dry_run_mode(dry_run), *json),
        Command::Vm(VmCommand::Status { names, all, json }) => {
            commands::status(&ctx, names, *all, *json)
        }
        Command::Sync { dry_run } => {
            every_subsystem(printer, |s| s.sync(&ctx, dry_run_mode(dry_run)))
        }
        Command::Vm(VmCommand::Capture {
            names,
            all,
            dry_run,
        }) => commands::capture(&ctx, names, *all, *dry_run),
        Command::Capture { dry_run } => every_subsystem(printer, |s| s.capture(&ctx, *dry_run)),
        Command::Status => every_subsystem(printer, |s| s.status(&ctx)),
        Command::Vm(VmCommand::Validate) => {
            let n = VmSubsystem.validate(&manifest_dir)?;
            printer.success(&format!("ok: {n} VM{}", if n == 1 { "" } else { "s" }));
            Ok(())
        }
        Command::Vm(VmCommand::FetchIso { name }) => commands::fetch_iso(&ctx, name),
        Command::Vm(VmCommand::Start { name, unmanaged }) => {
            check_name(&manifest_dir, &virsh, name, *unmanaged)?;
            match ops::start(&virsh, name)? {
                StartOutcome::Started => printer.success(&format!("{name}: started")),
                StartOutcome::AlreadyActive(state) => {
                    printer.success(&format!("{name}: already {state}"))
                }
            }
            Ok(())
        }
        Command::Vm(VmCommand::Stop {
            name,
            force,
            timeout,
            unmanaged,
        }) => {
            check_name(&manifest_dir, &virsh, name, *unmanaged)?;
            let mode = StopMode {
                force: *force,
                timeout: Duration::from_secs(*timeout),
                poll: Duration::from_millis(250),
            };
            let what = match ops::stop(&virsh, name, mode)? {
                StopOutcome::ShutDown => "shut down",
                StopOutcome::Destroyed => "powered off (destroyed)",
                StopOutcome::AlreadyStopped => "already stopped",
            };
            printer.success(&format!("{name}: {what}"));
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

/// Refuses a VM that the manifest does not describe, unless `--unmanaged` asks for a libvirt
/// domain by name, and a VM that libvirt does not have. The manifest is validated first: a
/// broken manifest changes nothing.
fn check_name(
    manifest_dir: &Path,
    virsh: &Virsh,
    name: &str,
    unmanaged: bool,
) -> Result<(), Error> {
    let manifest = vm::load(manifest_dir)?;
    let in_manifest = manifest.vms.contains_key(name);
    let in_libvirt = virsh.domain_names()?.iter().any(|n| n == name);
    match (in_manifest || unmanaged, in_libvirt) {
        (true, true) => Ok(()),
        (true, false) => Err(Error::NoSuchDomain {
            name: name.into(),
            in_manifest,
        }),
        (false, in_libvirt) => Err(Error::NotInManifest {
            name: name.into(),
            file: manifest_dir.join(vm::FILE_NAME),
            in_libvirt,
        }),
    }
}

fn dry_run_mode(args: &DryRunArgs) -> DryRun {
    match (args.dry_run, args.check) {
        (_, true) => DryRun::Check,
        (true, false) => DryRun::On,
        (false, false) => DryRun::Off,
    }
}

/// Runs `action` for every registered subsystem, all of them even when one fails; the
/// first failure decides the exit code, the others are printed as they happen.
fn every_subsystem(
    printer: &Printer,
    action: impl Fn(&dyn Subsystem) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut first = None;
    for s in subsystem::registry() {
        if let Err(e) = action(s.as_ref()) {
            match first {
                None => first = Some(e),
                Some(_) => printer.error(&e),
            }
        }
    }
    first.map_or(Ok(()), Err)
}
