"""The ``bkt`` command line: rich-click glue over :class:`~bkt_core.Host`.

Only :func:`main` and the console script (:func:`console_main`, which ends its process
without Python's teardown: :func:`_end_process`) exit, and errors are mapped to exit codes
here alone (:mod:`bkt_core.errors`). A command line run again unchanged runs the command it
ran before without click, when nothing that command depends on changed
(:func:`run_command`, :func:`_replay`).
``bkt --version`` is answered before anything else is imported, and no plugin is imported
for it. Global flags may stand before or after the subcommand: :func:`hoist_globals` moves
them to the front before click parses. A shell's completion request (``$_BKT_COMPLETE``) is
answered by plain click (:func:`completion_class`), never by the help renderer.
"""

from __future__ import annotations

import os
import sys

# Not `typing.TYPE_CHECKING`: `bkt --version` must not pay for importing typing (and re).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from pathlib import Path
    from typing import Any, TypeGuard, TypeVar

    import click
    from click.shell_completion import CompletionItem, ShellComplete

    from bkt_core.errors import BktError
    from bkt_core.host import Host
    from bkt_core.output import Color, Printer

__all__ = [
    "COMPLETE_VAR",
    "Cli",
    "build_cli",
    "command_body",
    "hoist_globals",
    "main",
    "pass_cli",
    "resolve_manifest_dir",
    "run_command",
]

#: The environment variable through which a shell asks for completions (click's protocol:
#: ``bash_complete``, ``zsh_complete``, ``fish_complete``, or ``SHELL_source`` for the script).
COMPLETE_VAR = "_BKT_COMPLETE"

#: Global options that take a value, and those that do not.
_VALUE_OPTIONS = {"-C", "--manifest-dir", "-c", "--connect", "--color", "--disable-plugin"}
_FLAG_OPTIONS = {"-v", "--verbose", "-q", "--quiet", "--no-cache"}
_GLOBAL_OPTIONS = _VALUE_OPTIONS | _FLAG_OPTIONS


def version() -> str:
    # The package's own attribute, which pyproject.toml takes the distribution's version
    # from: reading the installed metadata would cost more than the rest of `--version`.
    from bkt_core import __version__

    return __version__


def hoist_globals(argv: Sequence[str]) -> list[str]:
    """``argv`` with every global option (and its value) moved before the first command, so
    that ``bkt vm sync -C dir`` means ``bkt -C dir vm sync``. Stops at ``--``."""
    hoisted, rest = split_globals(argv)
    return hoisted + rest


def split_globals(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The global options of ``argv`` (with their values), and the rest, each in order."""
    hoisted: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest += [arg, *args]
            break
        if arg in _VALUE_OPTIONS:
            hoisted += [arg, *[value for value in [next(args, None)] if value is not None]]
        elif arg.split("=", 1)[0] in _VALUE_OPTIONS or arg[:2] in ("-C", "-c"):
            hoisted.append(arg)  # --connect=URI, -CDIR
        elif arg in _FLAG_OPTIONS or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"}):
            hoisted.append(arg)
        else:
            rest.append(arg)
    return hoisted, rest


#: The long form of each short global option.
_LONG_FORMS = {"-C": "--manifest-dir", "-c": "--connect", "-q": "--quiet", "-v": "--verbose"}


def long_forms(args: Sequence[str]) -> list[str]:
    """``args`` (global options hoisted) with each short global option that stands before
    the command spelled long: ``-C DIR`` as ``--manifest-dir DIR``, ``-vv`` as ``--verbose
    --verbose``. It means the same to click, which tries every option as a long one first
    and, for a short one, builds its "did you mean" suggestions (importing difflib) before
    it falls back. A ``-C`` or ``-c`` without its value is left as written: click's error
    names the option as the user gave it."""
    out: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        arg = tokens[i]
        if arg == "--" or not arg.startswith("-"):
            return out + tokens[i:]
        if arg in ("-C", "-c") and i + 1 < len(tokens):
            out += [_LONG_FORMS[arg], tokens[i + 1]]
            i += 2
            continue
        if arg in _VALUE_OPTIONS and i + 1 < len(tokens):
            out += [arg, tokens[i + 1]]
            i += 2
            continue
        if arg == "-q":
            out.append("--quiet")
        elif len(arg) > 1 and set(arg[1:]) == {"v"}:
            out += ["--verbose"] * (len(arg) - 1)
        else:
            out.append(arg)
        i += 1
    return out


def resolve_manifest_dir(option: str | None) -> Path:
    """The directory of the manifests: ``-C DIR``, else ``$BKT_MANIFEST_DIR``, else
    ``./manifests``."""
    from pathlib import Path

    return Path(option or os.environ.get("BKT_MANIFEST_DIR") or "manifests")


def _cache_in(argv: Sequence[str]) -> bool:
    """Whether bkt may use its caches: not with ``--no-cache`` among the global options of
    ``argv`` (hoisted or not) nor with ``$BKT_NO_CACHE`` set."""
    from bkt_core.cache import cache_enabled

    return "--no-cache" not in split_globals(argv)[0] and cache_enabled()


def _disabled_in(argv: Sequence[str]) -> list[str]:
    names: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--disable-plugin" and i + 1 < len(argv):
            names.append(argv[i + 1])
        elif arg.startswith("--disable-plugin="):
            names.append(arg.split("=", 1)[1])
    return names


class Cli:
    """What every command gets: the host, the printer, and the global options as parsed
    (``options``: by their parameter names, as :func:`run_command` remembers them). (A plain
    class: ``dataclasses`` would cost ``bkt --version`` several milliseconds.)"""

    __slots__ = ("host", "options", "printer", "remembering", "repeatable")

    def __init__(
        self, host: Host, printer: Printer, options: Mapping[str, object] | None = None
    ) -> None:
        self.host = host
        self.printer = printer
        self.options = dict(options or {})
        #: Whether :func:`run_command` may remember what this command runs (the first body
        #: it runs), and whether it did.
        self.repeatable = True
        self.remembering = False


if TYPE_CHECKING:
    F = TypeVar("F", bound=Callable[..., Any])


def pass_cli(f: F) -> F:
    """Decorate a click command so that it receives the :class:`Cli` as first argument."""
    import click

    return click.pass_obj(f)  # type: ignore[return-value]


def command_body(body: F) -> F:
    """Mark ``body`` as the whole work of a command once its options are parsed, which
    :func:`run_command` may run again without click: only a function so marked is ever run
    from what a record remembers (as only virsh is started early from one)."""
    body.__bkt_command_body__ = True  # type: ignore[attr-defined]
    return body


def _is_command_body(body: object) -> TypeGuard[Callable[..., None]]:
    import types

    return isinstance(body, types.FunctionType) and (
        getattr(body, "__bkt_command_body__", False) is True
    )


def run_command(app: Cli, body: Callable[..., None], **params: Any) -> None:
    """Run a command whose whole work, once click has parsed its options, is
    ``body(app, **params)``: a function marked with :func:`command_body`, of a module that
    does not import click, its parameters plain values (strings, numbers, booleans, None,
    tuples of strings).

    The command line's record (:mod:`bkt_core.prestart`) then remembers it, with the global
    options and the code it depends on; when that command line runs again unchanged, in the
    same environment and with the same plugins and code (:func:`_replay`), bkt runs
    ``body`` with them without importing click or building the command line, which is most
    of what a warm ``bkt vm status`` would otherwise spend besides its own work."""
    if app.repeatable or app.remembering:
        from bkt_core import prestart

        # The first body a command runs is remembered (None: it cannot run again without
        # click); a second one means the command is not one body's work, and nothing is.
        invocation = _invocation(app, body, params) if app.repeatable else None
        app.repeatable, app.remembering = False, True
        prestart.remember(invocation)
    body(app, **params)


#: The version of what :func:`run_command` remembers.
_INVOCATION_FORMAT = 1


def _invocation(app: Cli, body: Callable[..., None], params: Mapping[str, Any]) -> object:
    """What :func:`run_command` remembers of ``body(app, **params)``, run by a command click
    parsed; None when it could not be run again from it:

    - ``app`` may not remember (a command within a command; a plugin's commands failed);
    - ``body`` is not a function marked with :func:`command_body` that its module names, in
      a module of bkt's or of a plugin's (:func:`_runnable_module`);
    - an option or parameter is not a plain value, or was not given on the command line
      nor left to its constant default: a prompt's answer, an environment variable, what a
      callback or a file-system check made of it; or a group between bkt and the command
      has a callback or options of its own, which a run without click would skip;
    - no click command is running;
    - a file of the code it depends on changed in the last moments (a second change within
      its timestamp's granularity would not be seen)."""
    if not (
        app.repeatable
        and _is_command_body(body)
        and _runnable_module(app.host, body.__module__)
        and _resolve(body.__module__, body.__qualname__) is body
    ):
        return None
    if set(app.options) != set(_OPTION_TYPES) or not all(
        map(_plain, [*app.options.values(), *params.values()])
    ):
        return None
    click = sys.modules.get("click")
    context = click.get_current_context(silent=True) if click is not None else None
    if context is None or not _parsed_from_argv(click, context):
        return None
    callback = context.command.callback
    if callback is None:
        return None
    # The code the parse came from (the command's click definitions, bkt's global options,
    # click itself) and the body's own: a changed module of a source checkout, or another
    # click, is seen without a new version of bkt or of a plugin.
    import time

    from bkt_core.cache import file_signature
    from bkt_core.manifest_cache import RACY_SECONDS

    recent_ns = time.time_ns() - int(RACY_SECONDS * 1e9)
    code = []
    for name in sorted({body.__module__, callback.__module__, __name__, "click"}):
        file = getattr(sys.modules.get(name), "__file__", None)
        signature = file_signature(file) if isinstance(file, str) else None
        if signature is None or signature[0] >= recent_ns:
            return None
        code.append([name, file, signature])
    return {
        "format": _INVOCATION_FORMAT,
        "body": [body.__module__, body.__qualname__],
        "options": {k: _jsonable(v) for k, v in app.options.items()},
        "params": {k: _jsonable(v) for k, v in params.items()},
        "code": code,
        "plugins": app.host.plugin_identity(),
    }


def _parsed_from_argv(click: Any, context: click.Context) -> bool:
    """Whether every value of ``context`` (a running command) and of the groups above it
    comes from the command line or a constant default, through a type that only converts
    text, with no callback; and whether no group between bkt and the command has a
    callback or options: what a run without click may skip."""
    from click.core import ParameterSource

    plain_types = (
        click.types.StringParamType,
        click.types.BoolParamType,
        click.types.IntParamType,
        click.types.FloatParamType,
        click.Choice,
    )
    contexts = []
    ctx: click.Context | None = context
    while ctx is not None:
        contexts.append(ctx)
        ctx = ctx.parent
    for depth, ctx in enumerate(contexts):
        command = ctx.command
        if 0 < depth < len(contexts) - 1 and (
            command.callback is not None or command.params or ctx.params
        ):
            return False
        if getattr(command, "_result_callback", None) is not None:
            return False
        for param in command.params:
            if not param.expose_value:
                continue  # --version, --help: eager, and answered before any command
            source = ctx.get_parameter_source(param.name or "")
            if (
                source not in (ParameterSource.COMMANDLINE, ParameterSource.DEFAULT)
                or param.callback is not None
                or getattr(param, "prompt", None)
                or callable(param.default)
                or not isinstance(param.type, plain_types)
            ):
                return False
    return True


def _runnable_module(host: Host, name: str) -> bool:
    """Whether module ``name`` is bkt's own or in the package of an active plugin: the only
    modules a remembered command is imported from."""
    from bkt_core.host import plugin_module

    owners = ["bkt_core"]
    for _name, plugin in host.pluginmanager.list_name_plugin():
        module = plugin_module(plugin) if plugin is not None else ""  # None: blocked
        if module:
            owners.append(module.split(".")[0])
    return any(name == owner or name.startswith(owner + ".") for owner in owners)


def _plain(value: object) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(item, str) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _resolve(module_name: str, qualname: str) -> object:
    """The object ``qualname`` names in module ``module_name`` (imported), else None."""
    import importlib

    try:
        found: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    # Whatever importing a module raises (TypeError: a relative module name): a record
    # that names it is refused, not a traceback.
    except Exception:
        return None
    return found


def _replay(host: Host, on_ready: Callable[[Cli], None]) -> Callable[[], None] | None:
    """The command this command line ran the last time (:func:`run_command`), ready to run
    again without click, when the record of the command line remembers one and everything
    it depends on is as it was: the plugins (bkt's own version among them), the code of the
    body, of its click definitions and of bkt's global options. (The record itself is of
    this very command line, working directory, user and environment:
    :func:`bkt_core.prestart.remembered`.) Else None, and ``-v`` says why."""
    from bkt_core import prestart

    invocation = prestart.remembered()
    if invocation is None:
        return None
    try:
        body, options, params = _check_invocation(invocation, host)
    except ValueError as exc:
        host.cache_notes.append(f"the command this command line ran before {exc}: parsed again")
        return None

    def replay() -> None:
        app = _setup(host, options, None, on_ready)
        prestart.remember(invocation)
        body(app, **params)

    return replay


def _check_invocation(
    invocation: object, host: Host
) -> tuple[Callable[..., None], dict[str, Any], dict[str, Any]]:
    """The body, global options and parameters of a remembered ``invocation``; ValueError
    saying why it cannot run again."""
    if not isinstance(invocation, dict) or invocation.get("format") != _INVOCATION_FORMAT:
        raise ValueError("is not one this version of bkt remembers")
    body_name, options, params, code = (
        invocation.get(k) for k in ("body", "options", "params", "code")
    )
    if not (
        isinstance(body_name, list)
        and len(body_name) == 2
        and all(isinstance(part, str) for part in body_name)
        and isinstance(options, dict)
        and isinstance(params, dict)
        and all(isinstance(k, str) for k in params)
        and isinstance(code, list)
        and code
        and all(
            isinstance(row, list) and len(row) == 3 and all(isinstance(v, str) for v in row[:2])
            for row in code
        )
    ):
        raise ValueError("is not one this version of bkt remembers")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    if set(options) != set(_OPTION_TYPES) or not all(
        isinstance(options[k], allowed) and not (bool in allowed) ^ isinstance(options[k], bool)
        for k, allowed in _OPTION_TYPES.items()
    ):
        raise ValueError("has global options this version of bkt does not have")
    if options["color"] not in _COLORS or not all(
        map(_plain, [*options.values(), *params.values()])
    ):
        raise ValueError("has values this version of bkt does not give")
    if invocation.get("plugins") != host.plugin_identity():
        raise ValueError("ran with other plugins")
    from bkt_core.cache import file_signature

    for _name, file, signature in code:
        if signature is None or file_signature(file) != signature:
            raise ValueError(f"ran other code ({file} changed)")
    body = (
        _resolve(*body_name) if _runnable_module(host, body_name[0]) else None
    )  # imported only from bkt's or a plugin's package
    if not _is_command_body(body) or [body.__module__, body.__qualname__] != body_name:
        raise ValueError(f"runs {'.'.join(body_name)}, which is not a function bkt runs")
    for name, file, _ in code:
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__file__", None) != file:
            raise ValueError(f"ran other code ({name} is now {loaded.__file__})")
    import inspect

    try:
        inspect.signature(body).bind(None, **params)
    except TypeError as exc:
        raise ValueError(
            f"gives {'.'.join(body_name)} parameters it does not take ({exc})"
        ) from None
    return body, options, params


def build_cli(
    host: Host,
    on_ready: Callable[[Cli], None] | None = None,
    warn: Callable[[BktError], None] | None = None,
) -> click.Group:
    """The root command group, with bkt's own commands and every plugin's. ``on_ready`` gets
    the :class:`Cli` once the global options are parsed. A plugin whose ``bkt_cli_commands``
    fails is passed to ``warn`` (default: raised) and the other commands are still there, so
    that ``bkt plugins`` and ``--disable-plugin`` work whatever a plugin does."""
    cli = _root_group(host, on_ready)
    _add_core_commands(cli, host)
    for failure in host.add_cli_commands(cli):
        plugin = getattr(failure, "plugin", None)
        if plugin and not failure.hint:
            failure.hint = f"pass --disable-plugin {plugin} to run without it"
        if warn is None:
            raise failure
        warn(failure)
    return cli


def _root_group(host: Host, on_ready: Callable[[Cli], None] | None) -> click.Group:
    """The ``bkt`` group alone: its global options (:func:`_global_options`), which set up
    ``host`` and the printer before any command runs."""
    import click

    @click.pass_context
    def cli(ctx: click.Context, /, **options: Any) -> None:
        ctx.obj = _setup(host, options, ctx.invoked_subcommand, on_ready)

    # Applied as decorators are, the last first, so that help lists them in this order.
    for option in reversed(_global_options(host)):
        cli = option(cli)
    return click.group(
        name="bkt",
        context_settings={"help_option_names": ["-h", "--help"]},
        help="Declarative libvirt VMs: make libvirt match manifests/vms.json, and back.",
    )(cli)


#: The values of ``--color``.
_COLORS = ("auto", "always", "never")

#: The parameters of the global options (:func:`_global_options`), each with the types its
#: value may have.
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "manifest_dir": (str, type(None)),
    "connect": (str, type(None)),
    "verbose": (int,),
    "quiet": (bool,),
    "color": (str,),
    "disabled": (tuple,),
    "no_cache": (bool,),
}


def _setup(
    host: Host,
    options: Mapping[str, Any],
    command: str | None,
    on_ready: Callable[[Cli], None] | None,
) -> Cli:
    """What the global ``options`` (parsed) set up before ``command`` runs: ``host`` and
    the printer, as the :class:`Cli` of the command."""
    from bkt_core.errors import UsageError
    from bkt_core.output import Printer

    if options["quiet"] and options["verbose"]:
        raise UsageError("-q and -v cannot be used together")
    if host.invalid and command != "plugins":
        raise host.invalid[0]
    printer = Printer(-1 if options["quiet"] else min(options["verbose"], 3), options["color"])
    host.manifest_dir = resolve_manifest_dir(options["manifest_dir"])
    host.uri = options["connect"]
    # The plugins were found before this parse (_run_cli read --no-cache itself); what the
    # commands cache from here on follows it too.
    host.cache = host.cache and not options["no_cache"]
    host.trace = printer.trace
    app = Cli(host, printer, options)
    if on_ready is not None:
        on_ready(app)
    return app


def _global_options(host: Host) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The options of ``bkt`` itself, in the order help lists them (``--disable-plugin``
    completes the names of ``host``'s plugins)."""
    import click

    return [
        click.version_option(
            version(), "-V", "--version", prog_name="bkt", message="%(prog)s %(version)s"
        ),
        click.option(
            "-C",
            "--manifest-dir",
            metavar="DIR",
            shell_complete=_complete_directory,
            help="Where vms.json lives. [default: $BKT_MANIFEST_DIR, else ./manifests]",
        ),
        click.option(
            "-c",
            "--connect",
            metavar="URI",
            shell_complete=_complete_uri,
            help="libvirt URI for virsh. [default: virsh's own]",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            # A counter takes no value: without an empty metavar the help would show its type
            # (INTEGER RANGE), as if `-v 2` were the way to write it.
            metavar="",
            help="Say more; repeat for more: -v lists unchanged VMs too, -vv also traces every "
            "virsh process.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Say less: only data and errors."),
        click.option(
            "--color",
            type=click.Choice(_COLORS),
            default="auto",
            show_default=True,
            help="Colour when the stream is a terminal and NO_COLOR is not set (auto).",
        ),
        click.option(
            "--disable-plugin",
            "disabled",
            metavar="NAME",
            multiple=True,
            shell_complete=lambda _ctx, _param, incomplete: [
                info.name for info in host.plugins() if info.name.startswith(incomplete)
            ],
            help="Do not load this plugin (repeatable; also $BKT_DISABLE_PLUGINS=a,b).",
        ),
        click.option(
            "--no-cache",
            is_flag=True,
            help="Neither read nor write bkt's caches (also $BKT_NO_CACHE=1).",
        ),
    ]


def _complete_directory(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    # Type "dir": the shell completes directory names itself.
    return [CompletionItem(incomplete, type="dir")]


#: The libvirt URIs offered for ``--connect``: the local QEMU daemon's two.
_LOCAL_URIS = ("qemu:///system", "qemu:///session")


def _complete_uri(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    return [uri for uri in _LOCAL_URIS if uri.startswith(incomplete)]


def _add_core_commands(cli: click.Group, host: Host) -> None:
    import click

    @cli.command(help="Print the JSON Schema of a manifest (with the installed plugins' fields).")
    @click.argument("subsystem", type=_manifest_key_choice(host))
    @pass_cli
    def schema(app: Cli, subsystem: str) -> None:
        import json

        name = app.host.manifest_keys()[subsystem]
        app.printer.data(json.dumps(app.host.schema(name), indent=2, ensure_ascii=False))

    @cli.command(help="List the plugins: name, distribution, version and hooks.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
    @pass_cli
    def plugins(app: Cli, as_json: bool) -> None:
        from bkt_core.output import to_json

        infos = app.host.plugins()
        if as_json:
            app.printer.data(to_json({"plugins": [i.to_json() for i in infos]}))
            return
        rows = [
            (
                i.name,
                i.distribution or "-",
                i.version or "-",
                i.status if i.status != "active" else ", ".join(i.hooks) or "-",
            )
            for i in infos
        ]
        header = ("NAME", "DISTRIBUTION", "VERSION", "HOOKS")
        widths = [max(len(r[k]) for r in [header, *rows]) for k in range(3)]
        for row in [header, *rows]:
            app.printer.data(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
                + "  "
                + row[3]
            )

    @cli.command(help="Print a shell completion script: bkt completions bash|zsh|fish.")
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    @click.pass_context
    def completions(ctx: click.Context, shell: str) -> None:
        completion = completion_class(shell)
        assert completion is not None  # click ships all three
        root = ctx.find_root().command
        script = completion(root, {}, "bkt", COMPLETE_VAR).source()
        ctx.obj.printer.data(script)

    for verb, doc in (
        ("sync", "Sync every subsystem (today: vm) with its manifest."),
        ("status", "Show the status of every subsystem (today: vm)."),
        ("capture", "Capture every subsystem (today: vm) into its manifest."),
    ):
        _add_every_subsystem(cli, verb, doc)


def _manifest_key_choice(host: Host) -> click.Choice[str]:
    """The choice of ``bkt schema``: the key of each registered subsystem's manifest
    (:meth:`Host.manifest_keys`, ``vms``), asked for only when the argument is parsed,
    completed or shown in help, so that building the command line runs no subsystem."""
    import click

    class ManifestKey(click.Choice[str]):
        def __init__(self) -> None:
            super().__init__((), case_sensitive=True)

        @property
        def choices(self) -> tuple[str, ...]:
            return tuple(host.manifest_keys())

        @choices.setter
        def choices(self, _value: object) -> None:
            pass  # click's __init__ sets them: they are the host's

        def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
            return "|".join(self.choices)

    return ManifestKey()


def _add_every_subsystem(cli: click.Group, verb: str, doc: str) -> None:
    import click

    def run(app: Cli, dry_run: bool = False, check: bool = False) -> None:
        """Every subsystem in turn, all of them even after a failure; the first failure
        decides the exit status and the later ones are printed as they happen. A subsystem
        whose command group has no ``every_subsystem`` handler prints its report as JSON."""
        from bkt_core.errors import BktError, OperationError

        # Each subsystem's handler may run its own body (run_command): the command runs
        # them all, which none of them alone could run again.
        app.repeatable = False
        first: BktError | None = None
        for name, subsystem in app.host.subsystems().items():
            command = cli.commands.get(name)
            handler = getattr(command, "every_subsystem", None) if command else None
            try:
                if handler is not None:
                    # The subsystem's own command group says how to print its results.
                    handler(app, verb, dry_run=dry_run, check=check)
                else:
                    options = {"dry_run": dry_run or check} if verb != "status" else {}
                    report = getattr(subsystem, verb)(**options)
                    app.printer.json(report.to_json())
                    if check and report.plan.changes_anything:
                        raise OperationError(
                            f"{name} does not match its manifest",
                            hint="`bkt sync` makes these changes",
                        )
            except BktError as exc:
                if first is None:
                    first = exc
                else:
                    report_error(app.printer, exc)
        if first is not None:
            raise first

    if verb == "sync":

        @cli.command(name=verb, help=doc)
        @click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
        @click.option(
            "--check", is_flag=True, help="Like --dry-run; exit 1 if anything would change."
        )
        @pass_cli
        def sync(app: Cli, dry_run: bool, check: bool) -> None:
            run(app, dry_run=dry_run, check=check)

    elif verb == "capture":

        @cli.command(name=verb, help=doc)
        @click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
        @pass_cli
        def capture(app: Cli, dry_run: bool) -> None:
            run(app, dry_run=dry_run)

    else:

        @cli.command(name=verb, help=doc)
        @pass_cli
        def status(app: Cli) -> None:
            run(app)


def report_error(printer: Printer, exc: BaseException) -> None:
    from bkt_core.errors import ManifestError

    if isinstance(exc, ManifestError):
        for diagnostic in exc.diagnostics:
            printer.diagnostic(str(diagnostic))
    printer.error(str(exc))
    hint = getattr(exc, "hint", None)
    if hint:
        printer.hint(hint)
    if printer.verbosity >= 1 and exc.__cause__ is not None:
        import traceback

        printer.err.write("".join(traceback.format_exception(exc.__cause__)))


#: The cyclic garbage collector's first threshold in the ``bkt`` process (Python's is 700).
GC_THRESHOLD = 100_000


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bkt`` with ``argv`` and return its exit status; with no ``argv``, run it with
    ``sys.argv[1:]`` and exit with its status (:func:`sys.exit`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-V"]) or wants_version(hoist_globals(args)):
        sys.stdout.write(f"bkt {version()}\n")
        return _exit(0, argv)
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:
        return _exit(_complete(instruction), argv)
    return _exit(_run(args), argv)


def console_main() -> None:
    """The ``bkt`` console script: :func:`main` with this process's arguments, in a process
    that is the command and ends with it (:func:`_end_process`)."""
    global _exit_code
    import gc

    _register_end_process()
    # Its imports and plugins make some 40 000 objects that live until the end: at Python's
    # pace, a collection every 700 new objects, the cyclic collector spends about 5 ms of
    # every status or sync finding nothing to free. It still runs, at a slower pace, so that
    # a long command does not pile up garbage cycles.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    _exit_code = main(sys.argv[1:])
    sys.exit(_exit_code)


def wants_version(args: Sequence[str]) -> bool:
    """Whether ``args`` (global options hoisted) ask for the version before any command, as
    in ``bkt -C DIR --version``: answered without building the CLI, so that no plugin runs."""
    tokens = iter(args)
    for arg in tokens:
        if arg in ("-V", "--version"):
            return True
        if arg in _VALUE_OPTIONS:
            next(tokens, None)
        elif arg == "--" or not arg.startswith("-"):
            return False
    return False


def _exit(code: int, argv: Sequence[str] | None) -> int:
    if argv is None:
        sys.exit(code)
    return code


#: The exit status of the console script's command (:func:`console_main`), for
#: :func:`_end_process`.
_exit_code: int | None = None


def _register_end_process() -> None:
    global _end_process_is_last
    import atexit

    # Exit handlers run the last registered first: this one runs last only when none was
    # registered before it (a .pth file's, such as coverage's, may have been).
    count = getattr(atexit, "_ncallbacks", None)
    _end_process_is_last = count is not None and count() == 0
    atexit.register(_end_process)


#: Whether :func:`_end_process` is the first exit handler registered, so the last one run.
_end_process_is_last = False


def _end_process() -> None:
    """The last exit handler of the ``bkt`` process (:func:`console_main`): once its output
    is flushed, end it.

    Python's way out of :func:`sys.exit` joins the other threads, runs the exit handlers
    (a plugin's too: this one is registered before any plugin loads, so it runs last), and
    flushes the standard streams; then it tears the interpreter down, freeing every module
    and object one by one, some 15 ms of a warm status of 60 VMs that nothing of the command
    needs. So this handler flushes and ends the process there. It leaves the usual way to
    Python when the exit is not the command's end (an uncaught exception), when a handler
    registered before it would run after it, or when a stream cannot be flushed (Python
    reports that, and exits 120, as ever)."""
    code = _exit_code
    if code is None or not _end_process_is_last:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _complete(instruction: str) -> int:
    """Answer a shell's completion request (``SHELL_complete``: the candidates for the word
    under the cursor, from ``COMP_WORDS``/``COMP_CWORD``; ``SHELL_source``: the script).

    Plain click answers it, never the help renderer. Nothing but the answer is printed: a
    warning or a traceback would land in the user's command line, so any failure (a broken
    plugin, a missing variable) is exit status 1 and no candidates."""
    try:
        from bkt_core.host import Host, disabled_from_env

        shell, _, request = instruction.partition("_")
        completion_type = completion_class(shell)
        if completion_type is None or request not in ("complete", "source"):
            return 1
        completion = completion_type(None, {}, "bkt", COMPLETE_VAR)  # type: ignore[arg-type]
        # `--disable-plugin NAME` earlier on the line keeps NAME's commands out, as it would
        # when the command runs.
        line = completion.get_completion_args()[0] if request == "complete" else []
        host = Host(
            disabled=[*disabled_from_env(), *_disabled_in(line)],
            strict=False,
            cache=_cache_in(line),
        )
        completion.cli = build_cli(host)
        answer = completion.complete() if request == "complete" else completion.source()
        sys.stdout.write(answer + "\n" if request == "complete" else answer)
        sys.stdout.flush()
    except (Exception, KeyboardInterrupt):  # see the docstring; ^C while the shell waits
        return 1
    return 0


#: What click's bash script passes, and what bkt's passes besides: the line up to the cursor.
_BASH_WORDS = 'COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD'
_BASH_LINE = 'COMP_LINE="${COMP_LINE:0:COMP_POINT}"'
#: How click's fish script splits `type,value<TAB>help`, and how bkt's does: at the first
#: comma only, so that a help text with a comma is not cut short.
_FISH_SPLIT = 'string split "," $completion'
_FISH_SPLIT_ONCE = 'string split --max 1 "," $completion'


def completion_class(shell: str) -> type[ShellComplete] | None:
    """Click's completion for ``shell``, taught that global options may stand anywhere (as
    :func:`hoist_globals` lets them when a command runs), for bash that a word may hold a
    ``:`` (``-c qemu:///system``), and for fish that a help text may hold a comma."""
    from click.shell_completion import get_completion_class, split_arg_string

    base = get_completion_class(shell)
    if base is None:
        return None

    class Completion(base):  # type: ignore[misc,valid-type]
        def source(self) -> str:
            script: str = super().source()
            if self.name == "bash":
                script = script.replace(_BASH_WORDS, f"{_BASH_WORDS} {_BASH_LINE}")
            elif self.name == "fish":
                script = script.replace(_FISH_SPLIT, _FISH_SPLIT_ONCE)
            return script

        def get_completion_args(self) -> tuple[list[str], str]:
            # bash splits words at `:` as well as at blanks (COMP_WORDBREAKS), so its
            # COMP_WORDS has `qemu : ///system` for one URI; the line itself does not.
            line = os.environ.get("COMP_LINE") if self.name == "bash" else None
            if line is None:
                return super().get_completion_args()  # type: ignore[no-any-return]
            args = split_arg_string(line)[1:]
            incomplete = args.pop() if args and not line[-1:].isspace() else ""
            return args, incomplete

        def complete(self) -> str:
            args, incomplete = self.get_completion_args()
            items = self.get_completions(args, incomplete)
            if self.name == "bash" and ":" in incomplete:
                _after_last_colon(items, incomplete)
            return "\n".join(self.format_completion(item) for item in items)

        def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
            return _globals_anywhere(super().get_completions, args, incomplete)

    return Completion


def _after_last_colon(items: list[CompletionItem], incomplete: str) -> None:
    """``items`` cut as bash wants them for a word that holds a ``:``: bash replaces only
    what follows the word's last ``:``."""
    cut = incomplete.rindex(":") + 1
    for item in items:
        if item.value.startswith(incomplete[:cut]):
            item.value = item.value[cut:]


def _globals_anywhere(
    complete: Callable[[list[str], str], list[CompletionItem]], args: list[str], incomplete: str
) -> list[CompletionItem]:
    """Click's completions (``complete``) for ``incomplete`` after ``args``, with the global
    options hoisted: the value of a global option wherever it stands, and after a command
    its own options first, then the global ones."""
    hoisted, rest = split_globals(args)
    if "--" not in args:
        # The value of a global option, wherever it stands: the root completes it.
        if args and args[-1] in _VALUE_OPTIONS:
            return complete(split_globals(args[:-1])[0] + args[-1:], incomplete)
        if "=" in incomplete and incomplete.split("=", 1)[0] in _VALUE_OPTIONS:
            return complete(hoisted, incomplete)
    items = complete(hoisted + rest, incomplete)
    if incomplete.startswith("-") and "--" not in args and rest:
        seen = {item.value for item in items}
        items += [
            item
            for item in complete(hoisted, incomplete)
            if item.value not in seen and item.value in _GLOBAL_OPTIONS
        ]
    return items


def wants_help(args: Sequence[str], groups: Callable[[], Collection[str]] = tuple) -> bool:
    """Whether ``args`` (global options hoisted) ask for help: ``-h``/``--help``, ``bkt``
    alone, or one of the ``groups`` alone (a subsystem's command group, ``bkt vm``; asked for
    only then). Only then is rich-click loaded to draw it (about 17 ms that the other commands
    do not pay); parsing and running commands need plain click only."""
    positional: list[str] = []
    tokens = iter(args)
    for arg in tokens:
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            return True
        if arg in _VALUE_OPTIONS:
            next(tokens, None)
        elif not arg.startswith("-"):
            positional.append(arg)
    if not positional:
        return True
    return (
        len(positional) == 1
        and positional[0] not in _CORE_COMMANDS
        and (positional[0] in groups())
    )


#: The commands of bkt itself, none of them a group: alone, each one runs.
_CORE_COMMANDS = frozenset({"schema", "plugins", "completions", "sync", "status", "capture"})


def _subsystem_names(host: Host) -> Collection[str]:
    """The names of ``host``'s subsystems, each the name of its command group; none when a
    plugin fails to give them (the command that needs them reports it)."""
    from bkt_core.errors import BktError

    try:
        return host.subsystems().keys()
    except BktError:
        return ()


def _use_rich_click() -> None:
    """Make every click command draw its help with rich-click (its documented ``patch``),
    before the commands are defined."""
    import rich_click
    from rich_click.patch import patch

    rich_click.rich_click.USE_MARKDOWN = False
    rich_click.rich_click.SHOW_ARGUMENTS = True
    patch()


def _on_signal(signum: int, frame: object) -> None:
    from bkt_core.errors import Signalled

    raise Signalled(signum)


def _run(args: list[str]) -> int:
    import signal

    # SIGINT and SIGTERM raise Signalled, so that on the way out every `finally` runs: child
    # processes are killed and temporary files removed, and the exit status says which.
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    except ValueError:  # not the main thread (main() called by an embedder): leave them
        pass
    from bkt_core import prestart

    began = False
    try:
        # First of all: what this command line started last time starts now, and reads
        # libvirt while bkt loads (bkt_core.prestart).
        began = prestart.begin(args, enabled=_cache_in(args))
        return _run_cli(args, began)
    finally:
        try:
            if began:
                prestart.end()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _run_cli(args: list[str], began: bool = False) -> int:
    """Run the command of ``args`` (global options anywhere); ``began``: this call began the
    command (:func:`bkt_core.prestart.begin`), which alone may run it again from what its
    command line remembered, or remember it (not a command run within a command)."""
    from bkt_core.host import Host, disabled_from_env, hook_timeout_from_env
    from bkt_core.output import Printer

    args = hoist_globals(args)
    rich = wants_help(args)
    if rich:
        _use_rich_click()
    verbosity = sum(a.count("v") for a in args if a.startswith("-v") or a == "--verbose")
    fallback = Printer(verbosity if "-q" not in args else -1, _color_in(args))
    printers = [fallback]
    #: Plugins whose commands could not be added: a command line that warns of them is not
    #: run again without building it (the warning would be missing).
    build_failures: list[BktError] = []

    def warn(failure: BktError) -> None:
        fallback.warning(str(failure))
        if failure.hint:
            fallback.hint(failure.hint)
        if fallback.verbosity >= 1 and failure.__cause__ is not None:
            import traceback

            fallback.err.write("".join(traceback.format_exception(failure.__cause__)))

    def warn_building(failure: BktError) -> None:
        build_failures.append(failure)
        warn(failure)

    def on_ready(app: Cli) -> None:
        printers.append(app.printer)
        app.repeatable = began and not build_failures

    try:
        host = Host(
            disabled=[*disabled_from_env(), *_disabled_in(args)],
            strict=False,
            hook_timeout=hook_timeout_from_env(),
            cache=_cache_in(args),
        )
        for failure in host.load_failures if host.pluginmanager else ():
            warn(failure)
        shown = 0

        def show_cache_notes() -> None:
            # Why a cache could not be used or written: only -v says (a cache only saves time).
            nonlocal shown
            from bkt_core import prestart

            notes = [*host.cache_notes[shown:], *prestart.drain_notes()]
            if printers[-1].verbosity >= 1:
                for note in notes:
                    printers[-1].note(note)
            shown = len(host.cache_notes)

        # What this command line ran the last time, when nothing it depends on changed,
        # runs again without click (run_command).
        replay = _replay(host, on_ready) if began and not rich else None
        show_cache_notes()
        try:
            if replay is not None:
                replay()
                return 0
            # A subsystem's command group alone asks for its help; which names those are,
            # the plugins (now loaded, their commands not yet built) say.
            if not rich and wants_help(args, lambda: _subsystem_names(host)):
                _use_rich_click()
            cli = build_cli(host, on_ready, warn_building)
            cli.main(long_forms(args), prog_name="bkt", standalone_mode=False)
        finally:
            # Before an error is reported: the notes of the manifest cache come while a
            # command runs.
            show_cache_notes()
    except BaseException as exc:
        code = _exit_status(exc, fallback, printers[-1])
        if code is None:
            raise
        return code
    return 0


def _exit_status(exc: BaseException, fallback: Printer, printer: Printer) -> int | None:
    """The exit status of a command that raised ``exc``, once reported (``fallback`` prints
    what comes before the command's own printer); None for an exception that is a bug."""
    from bkt_core.errors import EXIT_FAILURE, EXIT_USAGE, BktError, Signalled

    # click is not imported when the command ran without it (_replay).
    click = sys.modules.get("click")
    if click is not None:
        if isinstance(exc, click.exceptions.Exit):
            return int(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            fallback.error("aborted")
            return EXIT_FAILURE
        if isinstance(exc, click.ClickException):
            exc.show()
            return EXIT_USAGE
    if isinstance(exc, BktError):
        report_error(printer, exc)
        return exc.exit_code
    if isinstance(exc, Signalled):
        fallback.error("interrupted" if exc.exit_code == 130 else "terminated")
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        fallback.error("interrupted")
        return 130
    if isinstance(exc, BrokenPipeError):
        return EXIT_FAILURE
    return None


def _color_in(args: Sequence[str]) -> Color:
    for i, arg in enumerate(args):
        if arg == "--color" and i + 1 < len(args) and args[i + 1] in ("always", "never"):
            return args[i + 1]  # type: ignore[return-value]
        if arg in ("--color=always", "--color=never"):
            return arg.split("=", 1)[1]  # type: ignore[return-value]
    return "auto"
