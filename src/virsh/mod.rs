//! The only place that spawns processes (`virsh`, and later `qemu-img`).
//!
//! Every caller gets a [`Runner`] handed to it: [`SystemRunner`] runs real processes, and
//! unit tests of error paths substitute a scripted one. Each call has a timeout, so that a
//! hung libvirtd ends in a clear error instead of a hung tool, and each failure carries the
//! command line, the exit status and what the program printed on stderr.
//!
//! Speed comes from [`Virsh::batch`]: a virsh process costs a spawn and a connection (about
//! 15 ms), a command inside one costs well under a millisecond, so reading or defining N
//! domains is one process, not N.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

pub mod qemu_img;

/// How long one virsh process may take unless a caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished process left behind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a process gave no [`Output`].
#[derive(Debug)]
pub enum RunError {
    Spawn(std::io::Error),
    TimedOut,
}

/// Runs one program to completion.
pub trait Runner {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<Output, RunError>;
}

/// Runs real processes, with `LC_ALL=C` so that what they print does not depend on the
/// user's language.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<Output, RunError> {
        let mut child = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            // Debug switches that would mix libvirt's log lines into what we parse.
            .env_remove("VIRSH_DEBUG")
            .env_remove("LIBVIRT_DEBUG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(RunError::Spawn)?;
        // Feed stdin and drain both pipes on threads: a child that fills one pipe while we
        // wait on another would otherwise never finish.
        let feeder = match (child.stdin.take(), stdin) {
            (Some(mut pipe), Some(text)) => {
                let text = text.to_owned();
                Some(std::thread::spawn(move || {
                    let _ = pipe.write_all(text.as_bytes());
                }))
            }
            _ => None,
        };
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = match child.wait_timeout(timeout).map_err(RunError::Spawn)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::TimedOut);
            }
        };
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }
        Ok(Output {
            code: status.code(),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `program` with `args` through `runner`; `argv` is how messages show the command.
fn launch(
    runner: &dyn Runner,
    program: &str,
    args: &[String],
    argv: &[String],
    timeout: Duration,
) -> Result<Output, Error> {
    runner
        .run(program, args, None, timeout)
        .map_err(|e| match e {
            RunError::TimedOut => Error::TimedOut {
                argv: argv.to_vec(),
                timeout,
            },
            RunError::Spawn(source) => Error::Spawn {
                program: program.into(),
                source,
            },
        })
}

impl Output {
    /// The stdout of a run that exited 0, or its failure as an [`Error`].
    fn checked(self, argv: Vec<String>) -> Result<String, Error> {
        if self.code == Some(0) {
            Ok(self.stdout)
        } else {
            Err(Error::Failed {
                argv,
                code: self.code,
                stderr: self.stderr,
            })
        }
    }
}

/// A failed virsh (or qemu-img) call.
#[derive(Debug)]
pub enum Error {
    /// The program could not be started at all.
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// It did not finish within its time and was killed.
    TimedOut {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// It ran and failed.
    Failed {
        argv: Vec<String>,
        code: Option<i32>,
        stderr: String,
    },
    /// It succeeded but printed something we cannot read.
    Unexpected { argv: Vec<String>, output: String },
}

impl Error {
    /// What virsh said, without its `error: ` prefixes, on one line.
    pub fn message(&self) -> String {
        match self {
            Error::Failed { stderr, .. } => stderr
                .lines()
                .map(|l| l.trim().trim_start_matches("error: ").trim())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(": "),
            other => other.to_string(),
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Spawn { source, program } if source.kind() == std::io::ErrorKind::NotFound => {
                Some(format!(
                    "install {program} (Debian: apt-get install libvirt-clients)"
                ))
            }
            Error::Failed { stderr, .. }
                if stderr.contains("failed to connect to the hypervisor")
                    || stderr.contains("Failed to connect socket") =>
            {
                Some("start libvirtd (or virtqemud), or pass --connect qemu:///session".into())
            }
            Error::TimedOut { .. } => {
                Some("is libvirtd hung? `virsh version` should answer at once".into())
            }
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn { program, source } => write!(f, "cannot run {program}: {source}"),
            Error::TimedOut { argv, timeout } => write!(
                f,
                "`{}` did not finish within {} s and was stopped",
                argv.join(" "),
                timeout.as_secs()
            ),
            Error::Failed { argv, code, .. } => {
                let status = match code {
                    Some(c) => format!("exit status {c}"),
                    None => "killed by a signal".into(),
                };
                write!(
                    f,
                    "`{}` failed ({status}): {}",
                    argv.join(" "),
                    self.message()
                )
            }
            Error::Unexpected { argv, output } => {
                write!(
                    f,
                    "`{}` printed {output:?}, which bkt cannot read",
                    argv.join(" ")
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// virsh, on one connection URI (or virsh's own default, which honours `LIBVIRT_DEFAULT_URI`).
pub struct Virsh<'r> {
    runner: &'r dyn Runner,
    connect: Option<String>,
    timeout: Duration,
    trace: Option<&'r dyn Fn(&str)>,
}

/// The outcome of one command of a [`Virsh::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The command, for messages.
    pub argv: Vec<String>,
    pub stdout: String,
    /// What it printed on stderr; `None` when it succeeded.
    pub error: Option<String>,
}

impl Reply {
    /// The stdout of a command that succeeded, or its failure as an [`Error`].
    pub fn into_result(self) -> Result<String, Error> {
        match self.error {
            None => Ok(self.stdout),
            Some(stderr) => Err(Error::Failed {
                argv: self.argv,
                code: None,
                stderr,
            }),
        }
    }
}

/// virsh refuses a command line longer than this (its own limit is 128 KiB); longer batches
/// are split into several processes.
const MAX_BATCH_BYTES: usize = 100 * 1024;

impl<'r> Virsh<'r> {
    pub fn new(runner: &'r dyn Runner, connect: Option<&str>) -> Virsh<'r> {
        Virsh {
            runner,
            connect: connect.map(str::to_owned),
            timeout: DEFAULT_TIMEOUT,
            trace: None,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Virsh<'r> {
        self.timeout = timeout;
        self
    }

    /// Calls `trace` with each virsh command line before it runs (for `-vv`).
    pub fn with_trace(mut self, trace: &'r dyn Fn(&str)) -> Virsh<'r> {
        self.trace = Some(trace);
        self
    }

    /// The connection URI, if one was given.
    pub fn connect(&self) -> Option<&str> {
        self.connect.as_deref()
    }

    /// Runs virsh with `args`. The returned argv (for messages) shows a batch's command line
    /// as `<N commands>`; the trace shows each command of it.
    fn spawn(
        &self,
        args: Vec<String>,
        batch: &[Vec<String>],
    ) -> Result<(Output, Vec<String>), Error> {
        let mut full: Vec<String> = vec!["-q".into()];
        if let Some(uri) = &self.connect {
            full.extend(["-c".to_string(), uri.clone()]);
        }
        full.extend(args);
        let mut argv: Vec<String> = std::iter::once("virsh".to_string())
            .chain(full.iter().cloned())
            .collect();
        if !batch.is_empty() {
            argv.pop();
            let n = batch.len();
            argv.push(format!("<{n} command{}>", if n == 1 { "" } else { "s" }));
        }
        if let Some(trace) = self.trace {
            trace(&argv.join(" "));
            for command in batch {
                trace(&format!("  {}", command.join(" ")));
            }
        }
        let out = launch(self.runner, "virsh", &full, &argv, self.timeout)?;
        Ok((out, argv))
    }

    /// Runs one virsh command; its stdout on success.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let (out, argv) = self.spawn(args.iter().map(|a| a.to_string()).collect(), &[])?;
        out.checked(argv)
    }

    /// Runs many virsh commands in as few virsh processes as the command-line limit allows
    /// (one, for any batch bkt makes of a few hundred VMs), and returns each command's own
    /// reply, in order. A failed command does not stop the ones after it.
    ///
    /// How: the commands go to virsh as one `;`-separated line, each argument single-quoted
    /// by virsh's own rules, and before each command two `echo`s print a unique marker on
    /// stdout and on stderr. virsh flushes after every write, so each stream splits at its
    /// markers into per-command pieces; a command failed exactly when its stderr piece is not
    /// empty. An error of the whole process (no connection, a line virsh cannot parse, so
    /// that nothing ran) is the `Err`.
    pub fn batch(&self, commands: &[Vec<String>]) -> Result<Vec<Reply>, Error> {
        let mut replies = Vec::with_capacity(commands.len());
        let mut start = 0;
        while start < commands.len() {
            let nonce = nonce();
            let mut line = String::new();
            let mut end = start;
            while end < commands.len() {
                let mut part = format!(
                    "echo -- {m} ; echo --err -- {m} ; {}",
                    commands[end]
                        .iter()
                        .map(|a| quote(a))
                        .collect::<Vec<_>>()
                        .join(" "),
                    m = marker(&nonce, end)
                );
                part.push_str(" ; ");
                if end > start && line.len() + part.len() > MAX_BATCH_BYTES {
                    break;
                }
                line.push_str(&part);
                end += 1;
            }
            let (out, argv) = self.spawn(vec![line], &commands[start..end])?;
            let first = marker(&nonce, start);
            if !out.stdout.contains(&first) {
                // Nothing ran: virsh could not connect or refused the whole line.
                return Err(Error::Failed {
                    argv,
                    code: out.code,
                    stderr: out.stderr,
                });
            }
            for (i, command) in commands.iter().enumerate().take(end).skip(start) {
                let stdout = piece(&out.stdout, &marker(&nonce, i), &marker(&nonce, i + 1));
                let stderr = piece(
                    &out.stderr,
                    &format!("error: {}\n", marker(&nonce, i)),
                    &format!("error: {}\n", marker(&nonce, i + 1)),
                );
                let mut full = vec!["virsh".to_string()];
                full.extend(command.iter().cloned());
                replies.push(Reply {
                    argv: full,
                    stdout: stdout.unwrap_or_default().to_string(),
                    error: match stderr {
                        Some("") => None,
                        Some(text) => Some(text.to_string()),
                        // The marker never came: virsh stopped before this command.
                        None => Some("virsh ended before this command ran".to_string()),
                    },
                });
            }
            start = end;
        }
        Ok(replies)
    }
}

/// Quotes one argument for virsh's command parser: inside single quotes everything is
/// literal (`;`, `#`, `\`, newlines), and a single quote is closed, escaped and reopened.
pub fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn marker(nonce: &str, i: usize) -> String {
    format!("@@bkt-{nonce}-{i}@@")
}

/// A token that no domain XML or virsh message will contain by chance.
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The text between `open` and the next `close` (or the end); `None` when `open` is absent.
fn piece<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let rest = &text[start..];
    Some(rest.find(close).map_or(rest, |end| &rest[..end]))
}

/// A domain's state as `virsh domstate` prints it (with `LC_ALL=C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Suspended,
}

impl DomainState {
    pub fn parse(text: &str) -> Option<DomainState> {
        Some(match text.trim() {
            "no state" => DomainState::NoState,
            "running" => DomainState::Running,
            "idle" | "blocked" => DomainState::Blocked,
            "paused" => DomainState::Paused,
            "in shutdown" => DomainState::ShuttingDown,
            "shut off" => DomainState::ShutOff,
            "crashed" => DomainState::Crashed,
            "pmsuspended" => DomainState::Suspended,
            _ => return None,
        })
    }

    /// Whether the domain has a running QEMU process (what `start` and `stop` care about).
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            DomainState::ShutOff | DomainState::Crashed | DomainState::NoState
        )
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainState::NoState => "no state",
            DomainState::Running => "running",
            DomainState::Blocked => "blocked",
            DomainState::Paused => "paused",
            DomainState::ShuttingDown => "in shutdown",
            DomainState::ShutOff => "shut off",
            DomainState::Crashed => "crashed",
            DomainState::Suspended => "pmsuspended",
        })
    }
}

impl Virsh<'_> {
    /// The names of every domain libvirt has, active or not.
    pub fn domain_names(&self) -> Result<Vec<String>, Error> {
        let out = self.run(&["list", "--all", "--name"])?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The state of domain `name`.
    pub fn domain_state(&self, name: &str) -> Result<DomainState, Error> {
        let out = self.run(&["domstate", "--domain", name])?;
        DomainState::parse(&out).ok_or_else(|| Error::Unexpected {
            argv: vec!["virsh".into(), "domstate".into(), name.into()],
            output: out.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Answers each call with the next scripted result and remembers what was asked.
    struct Scripted {
        answers: RefCell<Vec<Result<Output, RunError>>>,
        calls: RefCell<Vec<Vec<String>>>,
    }

    impl Runner for Scripted {
        fn run(
            &self,
            program: &str,
            args: &[String],
            _: Option<&str>,
            _: Duration,
        ) -> Result<Output, RunError> {
            let mut call = vec![program.to_string()];
            call.extend(args.iter().cloned());
            self.calls.borrow_mut().push(call);
            self.answers.borrow_mut().remove(0)
        }
    }

    fn scripted(answer: Result<Output, RunError>) -> Scripted {
        Scripted {
            answers: RefCell::new(vec![answer]),
            calls: RefCell::new(vec![]),
        }
    }

    #[test]
    fn connection_failure_names_the_command_and_hints() {
        let runner = scripted(Ok(Output {
            code: Some(1),
            stdout: String::new(),
            stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n".into(),
        }));
        let virsh = Virsh::new(&runner, Some("qemu:///system"));
        let err = virsh.run(&["version"]).unwrap_err();
        assert_eq!(
            runner.calls.borrow()[0],
            ["virsh", "-q", "-c", "qemu:///system", "version"]
        );
        assert_eq!(
            err.to_string(),
            "`virsh -q -c qemu:///system version` failed (exit status 1): failed to connect to the hypervisor: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("start libvirtd (or virtqemud), or pass --connect qemu:///session")
        );
    }

    #[test]
    fn missing_virsh_and_timeouts_are_clear() {
        let runner = scripted(Err(RunError::Spawn(std::io::ErrorKind::NotFound.into())));
        let err = Virsh::new(&runner, None).run(&["list"]).unwrap_err();
        assert!(err.to_string().starts_with("cannot run virsh: "));
        assert!(err.hint().unwrap().contains("libvirt-clients"));

        let runner = scripted(Err(RunError::TimedOut));
        let err = Virsh::new(&runner, None)
            .with_timeout(Duration::from_secs(5))
            .run(&["list"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`virsh -q list` did not finish within 5 s and was stopped"
        );
    }

    /// Plays virsh: runs the marker echos and the scripted commands of a batch line the way
    /// virsh -q prints them.
    struct FakeVirsh;

    impl Runner for FakeVirsh {
        fn run(
            &self,
            _: &str,
            args: &[String],
            _: Option<&str>,
            _: Duration,
        ) -> Result<Output, RunError> {
            let line = args.last().unwrap();
            let (mut stdout, mut stderr) = (String::new(), String::new());
            for command in line.split(" ; ").filter(|c| !c.is_empty()) {
                if let Some(m) = command.strip_prefix("echo --err -- ") {
                    stderr.push_str(&format!("error: {m}\n"));
                } else if let Some(m) = command.strip_prefix("echo -- ") {
                    stdout.push_str(m);
                } else if command == "'domstate' 'gone'" {
                    stderr.push_str("error: failed to get domain 'gone'\n");
                } else {
                    stdout.push_str(&format!("ran {command}\n"));
                }
            }
            Ok(Output {
                code: Some(0),
                stdout,
                stderr,
            })
        }
    }

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn batch_splits_each_command_reply_even_after_a_failure() {
        let virsh = Virsh::new(&FakeVirsh, None);
        let replies = virsh
            .batch(&[
                cmd(&["domstate", "a"]),
                cmd(&["domstate", "gone"]),
                cmd(&["list", "--name"]),
            ])
            .unwrap();
        let got: Vec<(String, Option<String>)> =
            replies.into_iter().map(|r| (r.stdout, r.error)).collect();
        assert_eq!(
            got,
            [
                ("ran 'domstate' 'a'\n".to_string(), None),
                (
                    String::new(),
                    Some("error: failed to get domain 'gone'\n".to_string())
                ),
                ("ran 'list' '--name'\n".to_string(), None),
            ]
        );
    }

    #[test]
    fn a_batch_that_never_ran_is_one_error() {
        let runner = scripted(Ok(Output {
            code: Some(1),
            stdout: String::new(),
            stderr: "error: failed to connect to the hypervisor\n".into(),
        }));
        let err = Virsh::new(&runner, Some("qemu:///system"))
            .batch(&[cmd(&["list"]), cmd(&["list"])])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`virsh -q -c qemu:///system <2 commands>` failed (exit status 1): failed to connect to the hypervisor"
        );
        assert!(err.hint().is_some());
    }

    #[test]
    fn quoting_keeps_every_argument_whole() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a;b #c\nd"), "'a;b #c\nd'");
    }

    #[test]
    fn system_runner_kills_a_process_past_its_time() {
        let result = SystemRunner.run("sleep", &["30".into()], None, Duration::from_millis(200));
        assert!(matches!(result, Err(RunError::TimedOut)));
    }

    #[test]
    fn system_runner_feeds_stdin_and_separates_streams() {
        let script = "cat; echo oops >&2; exit 3".to_string();
        let out = SystemRunner
            .run(
                "sh",
                &["-c".into(), script],
                Some("hello\n"),
                DEFAULT_TIMEOUT,
            )
            .unwrap();
        assert_eq!(
            out,
            Output {
                code: Some(3),
                stdout: "hello\n".into(),
                stderr: "oops\n".into()
            }
        );
    }
}
