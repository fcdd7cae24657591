//! The command line, as clap types. No logic and no defaults of the manifest live here.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bkt",
    version,
    about = "Declarative libvirt virtual machines: describe them in manifests/vms.json, then sync, capture and check them.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding vms.json [default: $BKT_MANIFEST_DIR, else ./manifests]
    #[arg(short = 'C', long, value_name = "DIR", global = true)]
    pub manifest_dir: Option<PathBuf>,

    /// libvirt connection URI, passed to virsh as `-c URI` [default: virsh's own]
    #[arg(short = 'c', long, value_name = "URI", global = true)]
    pub connect: Option<String>,

    /// Say more: -v lists unchanged VMs too, -vv also traces every virsh process
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Say less
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// When to use colour
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal and NO_COLOR is not set
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage libvirt virtual machines
    #[command(subcommand)]
    Vm(VmCommand),
    /// Sync every subsystem (today: vm) with its manifest
    Sync {
        #[command(flatten)]
        dry_run: DryRunArgs,
    },
    /// Capture every subsystem (today: vm) into its manifest
    Capture {
        /// Print what would change and write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the status of every subsystem (today: vm)
    Status,
    /// Print the JSON Schema of a manifest
    Schema {
        #[arg(value_enum)]
        manifest: SchemaName,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create and update libvirt domains to match vms.json
    Sync {
        /// Only these VMs (default: every VM in the manifest)
        names: Vec<String>,
        #[command(flatten)]
        dry_run: DryRunArgs,
        /// Print the plan and the results as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write what libvirt has back into vms.json
    Capture {
        /// Only these domains, added to the manifest when it does not have them
        names: Vec<String>,
        /// Also every libvirt domain that the manifest does not have yet
        #[arg(long)]
        all: bool,
        /// Print what would change and write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show which VMs run, are stopped or missing, and which drifted from vms.json
    Status {
        /// Only these VMs (manifest VMs, or libvirt domains)
        names: Vec<String>,
        /// Also list libvirt domains that the manifest does not describe
        #[arg(long)]
        all: bool,
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check vms.json and report every problem in it
    Validate,
    /// Download a VM's URL ISO sources into the ISO cache (sync never downloads)
    FetchIso {
        /// The manifest VM whose URL sources to fetch
        name: String,
    },
    /// Start a VM (already running is success)
    Start {
        name: String,
        /// Act on a libvirt domain that the manifest does not describe
        #[arg(long)]
        unmanaged: bool,
    },
    /// Shut a VM down gracefully, waiting for it (already stopped is success)
    Stop {
        name: String,
        /// Power it off at once (virsh destroy) instead of asking the guest
        #[arg(long)]
        force: bool,
        /// How long to wait for the guest to shut down
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
        /// Act on a libvirt domain that the manifest does not describe
        #[arg(long)]
        unmanaged: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaName {
    /// vms.json
    Vms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct DryRunArgs {
    /// Print the plan and change nothing
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Print the plan, change nothing, and exit 1 when anything would change
    #[arg(long)]
    pub check: bool,
}
