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
const DIM: &str = "\x1b[2m";
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

    /// A line for `-vv` (each virsh process bkt starts).
    pub fn trace(&self, text: &str) {
        eprintln!("{}", Self::paint(self.color_err, DIM, text));
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

// ---- sync and status ---------------------------------------------------------------

use crate::plan::{Action, CaptureEntry, DiskCreation, Outcome, Summary, SyncPlan, VmResult};
use crate::vm::planner::{State, StatusRow};

impl Printer {
    fn style(&self, on_stdout: bool, style: &str, text: &str) -> String {
        Self::paint(
            if on_stdout {
                self.color_out
            } else {
                self.color_err
            },
            style,
            text,
        )
    }

    /// The plan, a line per VM and a line per change. A plan that changes nothing is one
    /// line (each unchanged VM too with `-v`).
    pub fn plan(&self, plan: &SyncPlan) {
        for vm in &plan.vms {
            for warning in &vm.warnings {
                self.warning(&format!("VM {}: {warning}", vm.name));
            }
        }
        if !plan.changes_anything() && !plan.has_errors() && self.verbosity < 1 {
            let n = plan.vms.len();
            println!(
                "{}",
                match n {
                    0 => "nothing to do: no VMs to sync".to_string(),
                    1 => "nothing to do: 1 VM in sync".to_string(),
                    n => format!("nothing to do: {n} VMs in sync"),
                }
            );
            return;
        }
        for vm in &plan.vms {
            let name = &vm.name;
            match &vm.action {
                Action::Create {
                    create_disk,
                    autostart,
                    ..
                } => {
                    println!("{} create {name}", self.style(true, GREEN, "+"));
                    if let Some(disk) = create_disk {
                        println!("    {}", disk_line(disk));
                    }
                    if *autostart {
                        println!("    autostart: on");
                    }
                }
                Action::Update {
                    changes,
                    create_disk,
                    pending_reboot,
                    notes,
                    ..
                } => {
                    println!("{} update {name}", self.style(true, YELLOW_BOLD, "~"));
                    if let Some(disk) = create_disk {
                        println!("    {}", disk_line(disk));
                    }
                    for change in changes {
                        println!("    {change}");
                    }
                    if *pending_reboot {
                        println!(
                            "    note: {name} is running; the new definition takes effect at its next boot"
                        );
                    }
                    for note in notes {
                        println!("    note: {note}");
                    }
                }
                Action::Unchanged => {
                    if self.verbosity >= 0 {
                        println!("= unchanged {name}");
                    }
                }
                Action::Error { message } => {
                    println!(
                        "{} error {name}: {message}",
                        self.style(true, RED_BOLD, "!")
                    );
                }
            }
        }
    }

    /// The failures of a carried-out plan and the summary line.
    pub fn results(&self, results: &[VmResult]) {
        for r in results {
            if let Outcome::Failed { message } = &r.outcome {
                eprintln!(
                    "{} VM {}: {message}",
                    self.style(false, RED_BOLD, "error:"),
                    r.name
                );
            }
        }
        println!("{}", summary_line(&Summary::of_results(results)));
    }

    /// The summary of a plan that was not carried out.
    pub fn dry_run_summary(&self, plan: &SyncPlan) {
        let s = Summary::of_plan(plan);
        println!(
            "dry run: {} to create, {} to update, {} unchanged, {} failed; nothing was changed",
            s.created, s.updated, s.unchanged, s.failed
        );
    }

    /// A message about what happened (stderr); `-q` silences it.
    pub fn note(&self, text: &str) {
        if self.verbosity >= 0 {
            eprintln!("{text}");
        }
    }

    /// What capture wrote (or would write), field by field, and its summary line.
    pub fn capture(&self, entries: &[CaptureEntry]) {
        let (mut added, mut changed, mut unchanged, mut skipped) = (0, 0, 0, 0);
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        for entry in entries {
            match entry {
                CaptureEntry::Added { name, def } => {
                    added += 1;
                    println!("{} add {name}", self.style(true, GREEN, "+"));
                    if let Some(fields) = serde_json::to_value(def)
                        .ok()
                        .as_ref()
                        .and_then(|v| v.as_object())
                    {
                        for (field, value) in fields {
                            println!("    {field}: {value}");
                        }
                    }
                }
                CaptureEntry::Changed { name, changes } => {
                    changed += 1;
                    println!("{} change {name}", self.style(true, YELLOW_BOLD, "~"));
                    for (field, old, new) in changes {
                        println!("    {field}: {} -> {}", shown(old), shown(new));
                    }
                }
                CaptureEntry::Unchanged { name } => {
                    unchanged += 1;
                    if self.verbosity >= 1 {
                        println!("= unchanged {name}");
                    }
                }
                CaptureEntry::Skipped { name, reasons } => {
                    skipped += 1;
                    println!(
                        "{} skip {name}: {}",
                        self.style(true, RED_BOLD, "!"),
                        reasons.join("; ")
                    );
                }
            }
        }
        let total = added + changed + unchanged;
        println!(
            "captured {total} VM{}: {added} added, {changed} changed, {unchanged} unchanged; skipped {skipped}",
            if total == 1 { "" } else { "s" }
        );
    }

    pub fn status(&self, rows: &[StatusRow]) {
        let sync: Vec<String> = rows.iter().map(sync_column).collect();
        let name_width = rows
            .iter()
            .map(|r| r.name.chars().count())
            .chain([4])
            .max()
            .unwrap_or(4);
        let state_width = 7;
        println!("{:name_width$}  {:state_width$}  SYNC", "NAME", "STATE");
        for (row, sync) in rows.iter().zip(sync) {
            let state = format!("{:state_width$}", row.state.to_string());
            let state = match row.state {
                State::Running => self.style(true, GREEN, &state),
                State::Stopped => state,
                State::Missing => self.style(true, RED_BOLD, &state),
            };
            let sync = match row.in_sync {
                Some(false) => self.style(true, YELLOW_BOLD, &sync),
                _ => sync,
            };
            println!("{:name_width$}  {state}  {sync}", row.name);
        }
    }
}

/// `create disk PATH (N GiB, qcow2)`, and the storage pool that will hold it.
fn disk_line(disk: &DiskCreation) -> String {
    let mut line = format!(
        "create disk {} ({} GiB, {})",
        disk.path, disk.size_gb, disk.format
    );
    if let Some(pool) = &disk.pool {
        line.push_str(&format!(" in storage pool {pool}"));
    }
    line
}

fn sync_column(row: &StatusRow) -> String {
    match (row.managed, row.in_sync) {
        (false, _) => "unmanaged".to_string(),
        (true, None) => "-".to_string(),
        (true, Some(true)) => "in sync".to_string(),
        (true, Some(false)) => format!("drift: {}", row.drift.join(", ")),
    }
}

pub fn summary_line(s: &Summary) -> String {
    format!(
        "{} created, {} updated, {} unchanged, {} failed",
        s.created, s.updated, s.unchanged, s.failed
    )
}

/// Writes `value` as one line of JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string(value).expect("plain data serializes")
    );
}

// ---- downloads -----------------------------------------------------------------------

use std::time::Instant;

use crate::vm::iso;

/// `1.5 GiB`, `612.0 MiB`, `512 bytes`.
pub fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A download's progress bar on stderr. It is drawn only on a terminal (and not with `-q`),
/// at most ten times a second, and erased when the download ends; anywhere else it is
/// silent, so that logs and pipes get the result lines only.
pub struct ProgressBar {
    printer: Printer,
    label: String,
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Printer {
    pub fn progress_bar(&self, label: &str) -> ProgressBar {
        ProgressBar {
            printer: *self,
            label: label.to_string(),
            enabled: self.verbosity >= 0 && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            drawn: false,
        }
    }

    /// An error line on stderr, for one failure among several (the command's own error
    /// comes at the end).
    pub fn failure(&self, text: &str) {
        eprintln!("{} {text}", Self::paint(self.color_err, RED_BOLD, "error:"));
    }
}

impl ProgressBar {
    /// Erases the bar.
    pub fn finish(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
        }
    }

    fn line(&self, done: u64, total: Option<u64>) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = format!("{}/s", size((done as f64 / seconds) as u64));
        match total.filter(|t| *t > 0) {
            Some(total) => {
                const WIDTH: usize = 30;
                let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (fraction * WIDTH as f64) as usize;
                format!(
                    "{}  [{}{}]  {:3.0}%  {} / {}  {rate}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(WIDTH - filled),
                    fraction * 100.0,
                    size(done),
                    size(total)
                )
            }
            None => format!("{}  {}  {rate}", self.label, size(done)),
        }
    }
}

impl iso::Progress for ProgressBar {
    fn update(&mut self, done: u64, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let complete = total == Some(done);
        if !complete
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
        {
            return;
        }
        self.last_draw = Some(now);
        eprint!("\r\x1b[K{}", self.line(done, total));
        self.drawn = true;
    }

    fn note(&mut self, text: &str) {
        self.finish();
        self.printer.note(text);
    }
}
