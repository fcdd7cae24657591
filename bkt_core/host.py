"""The plugin host: one :class:`pluggy.PluginManager` per :class:`Host`.

Plugins come from the entry-point group ``bkt``, found through a per-user index
(:mod:`bkt_core.plugin_index`; blocked names are skipped before they are imported, and one
that fails to import is recorded and reported, not fatal) and from the
``plugins`` an embedder passes, registered after them. Then the plugins declare their own hooks
(:func:`~bkt_core.hookspecs.bkt_add_hookspecs`), every hook implementation is checked against
the declared hooks, and an unknown hook is an error naming its plugin.

Every hook implementation is called through a guard (:meth:`Host._guard`) that keeps the plugin
contract (:mod:`bkt_core.contract`): its result is checked against the hook's declared type (the
host's hook modules' ``RESULTS`` tables merged), and whatever it raises (``SystemExit`` and
``KeyboardInterrupt`` too) or a run past the per-hook time limit becomes a
:class:`~bkt_core.errors.PluginError` naming the plugin and the hook.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from bkt_core import hookspecs
from bkt_core.cache import hook_caching
from bkt_core.contract import BadResult, HookTimeout, Watch, checked_result
from bkt_core.errors import BktError, PluginError, Signalled, UsageError

if TYPE_CHECKING:
    import click

    from bkt_core.diagnostics import Problem
    from bkt_core.manifest import ManifestSource
    from bkt_core.plan import CaptureReport, StatusReport, SyncPlan, SyncReport
    from bkt_core.plugin_info import PluginInfo
    from bkt_core.process import CommandRunner
    from bkt_core.subsystem import Subsystem

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "HOOK_TIMEOUT_ENV",
    "Host",
    "PluginInfo",
    "disabled_from_env",
    "hook_timeout_from_env",
    "plugin_module",
]

#: The distribution bkt_core ships in: the plugins it registers under the ``bkt`` entry-point
#: group are bkt's own, which speak as bkt (their errors are not prefixed with the plugin's name).
DISTRIBUTION = "bkt"
DISABLE_ENV = "BKT_DISABLE_PLUGINS"
HOOK_TIMEOUT_ENV = "BKT_HOOK_TIMEOUT"

#: Seconds one call of one hook implementation may take. Generous: a post-sync hook may run
#: virsh, whose own processes time out after a minute; the limit is for a hook that hangs.
DEFAULT_HOOK_TIMEOUT = 300.0
# What the process's interval timer can hold: a limit outside is no limit at all (above) or
# one that would fire before the hook even starts (below).
HOOK_TIMEOUT_RANGE = (0.01, 1e6)


def disabled_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """The plugin names listed in ``$BKT_DISABLE_PLUGINS`` (comma-separated)."""
    value = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return [name.strip() for name in value.split(",") if name.strip()]


def hook_timeout_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """The per-hook time limit ``$BKT_HOOK_TIMEOUT`` asks for, in seconds (``0``: none);
    :data:`DEFAULT_HOOK_TIMEOUT` when it is unset or empty. Raises :class:`UsageError`."""
    value = (os.environ if environ is None else environ).get(HOOK_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_HOOK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    low, high = HOOK_TIMEOUT_RANGE
    if not (math.isfinite(seconds) and (seconds == 0 or low <= seconds <= high)):
        raise UsageError(
            f"{HOOK_TIMEOUT_ENV} must be a number of seconds from {low:g} to {high:.0f} "
            f"(0: no limit), not {value!r}"
        )
    return seconds or None


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, quicker to register a module: pluggy looks each of a module's names
    up with :func:`inspect.getattr_static` (several microseconds each), and bkt's own plugins
    are modules of some 300 names in all (their imports, constants, classes), loaded by every
    command. A name that certainly carries no hook marker is skipped before that lookup; any
    other is pluggy's to decide, as before."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        if _no_marker(plugin, name):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def parse_hookspec_opts(self, module_or_class: Any, name: str) -> Any:
        if _no_marker(module_or_class, name):
            return None
        return super().parse_hookspec_opts(module_or_class, name)


def _no_marker(namespace: object, name: str) -> bool:
    """Whether ``name`` of ``namespace`` is certainly neither a hook implementation nor a
    hook specification: ``namespace`` is a module whose own value of ``name`` is a plain
    function without any attribute (the markers are attributes), a class, or not callable
    at all (pluggy looks only at routines). Any other callable (a builtin, a method, a
    compiled function) and any static or class method is pluggy's to decide."""
    if not isinstance(namespace, types.ModuleType):
        return False
    value = vars(namespace).get(name, _ABSENT)
    if value is _ABSENT:
        return False
    if type(value) is types.FunctionType:
        return not vars(value)
    if isinstance(value, staticmethod | classmethod):  # descriptors pluggy binds itself
        return False
    return isinstance(value, type) or not callable(value)


_ABSENT = object()


def _listing(
    name: str,
    distribution: str | None,
    version: str | None,
    hooks: tuple[str, ...],
    status: str = "active",
    error: str | None = None,
) -> dict[str, Any]:
    """The fields of plugin ``name``'s :class:`PluginInfo`, made only when :meth:`Host.plugins`
    is asked for (:mod:`bkt_core.plugin_info`)."""
    return {
        "name": name,
        "distribution": distribution,
        "version": version,
        "hooks": hooks,
        "status": status,
        "error": error,
    }


def __getattr__(name: str) -> Any:
    # PluginInfo, imported on first use (bkt_core.plugin_info says why).
    if name == "PluginInfo":
        from bkt_core.plugin_info import PluginInfo

        return PluginInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plugin_module(plugin: object) -> str:
    """The name of the module ``plugin`` (a module, a class or an instance) is defined in
    ("" when it has none)."""
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    owner = plugin if isinstance(plugin, type) else type(plugin)
    return getattr(owner, "__module__", "") or ""


def _module_file(plugin: object) -> tuple[str | None, str]:
    """The file of the module ``plugin`` (a module, a class or an instance) is defined in,
    and its qualified name there."""
    if isinstance(plugin, types.ModuleType):
        return getattr(plugin, "__file__", None), ""
    owner = plugin if isinstance(plugin, type) else type(plugin)
    module = sys.modules.get(plugin_module(plugin))
    return getattr(module, "__file__", None), getattr(owner, "__qualname__", "")


class Host:
    """bkt as a library: plugins, subsystems and the operations the CLI is built on.

    ``manifest_dir`` holds the manifests (one file per subsystem); ``uri`` is the libvirt
    URI (None: virsh's own default); ``plugins`` are plugin objects or modules registered after the
    entry points (``entry_points=False`` loads none, for a fully explicit host);
    ``disabled`` names plugins to block. ``runner`` replaces the process runner (tests),
    ``trace`` receives a line for every process started (``-vv``). With ``strict=False``
    a plugin that implements an unknown hook is unregistered and recorded in :attr:`invalid`
    instead of raising. ``hook_timeout`` is the seconds one call of a hook implementation
    may take (None: no limit); it is enforced with ``SIGALRM`` in the main thread only.
    ``cache=False`` finds the entry points by reading every installed distribution instead
    of the per-user index (:mod:`bkt_core.plugin_index`), validates every manifest instead
    of taking it from the cache of validated manifests (:mod:`bkt_core.manifest_cache`),
    and writes neither.
    Nothing here prints.
    """

    def __init__(
        self,
        manifest_dir: str | os.PathLike[str] = "manifests",
        *,
        uri: str | None = None,
        plugins: Sequence[object] = (),
        entry_points: bool = True,
        disabled: Iterable[str] = (),
        runner: CommandRunner | None = None,
        trace: Callable[[str], None] | None = None,
        strict: bool = True,
        hook_timeout: float | None = DEFAULT_HOOK_TIMEOUT,
        cache: bool = True,
    ) -> None:
        self.manifest_dir = Path(manifest_dir)
        self.uri = uri
        self.trace = trace
        self._runner = runner
        self._explicit = tuple(plugins)
        self._entry_points = entry_points
        self._disabled = frozenset(disabled)
        self._pm: pluggy.PluginManager | None = None
        self._infos: dict[str, dict[str, Any]] = {}
        #: Whether the entry points may come from the per-user index (and refresh it).
        self.cache = cache
        #: Why a cache (the index of entry points, a validated manifest:
        #: :mod:`bkt_core.manifest_cache`) could not be used or written (``-v`` prints them).
        self.cache_notes: list[str] = []
        self._subsystems: dict[str, Subsystem] | None = None
        self._strict = strict
        low, high = HOOK_TIMEOUT_RANGE
        if hook_timeout is not None and not low <= hook_timeout <= high:
            raise ValueError(f"hook_timeout must be None or from {low:g} to {high:.0f} seconds")
        self.hook_timeout = hook_timeout
        #: While :meth:`call_tolerant` runs: its hook and the failures of its implementations.
        self._tolerating: tuple[str, list[BktError]] | None = None
        #: Plugins that failed to import: reported, not fatal (they are simply not there).
        self.load_failures: list[PluginError] = []
        #: Plugins that implement an unknown hook: fatal unless ``strict=False`` (``bkt
        #: plugins`` uses that to still list them); they are unregistered.
        self.invalid: list[PluginError] = []
        #: The contract of every declared hook: what its results may be, and whether bkt
        #: calls it implementation by implementation (bkt_core's, then each added module's).
        self._results: dict[str, tuple[str, str]] = dict(hookspecs.RESULTS)
        self._one_by_one: set[str] = set(hookspecs.CALLED_ONE_BY_ONE)
        self._spec_modules: list[object] = [hookspecs]
        #: The manager while _build() fills it, for add_hookspecs().
        self._building: pluggy.PluginManager | None = None

    # -- plugins -------------------------------------------------------------------------

    @property
    def pluginmanager(self) -> pluggy.PluginManager:
        """The pluggy manager, built on first use (while it is built, for the plugins'
        :func:`~bkt_core.hookspecs.bkt_add_hookspecs`, the one being built)."""
        if self._building is not None:
            return self._building
        if self._pm is None:
            self._pm = self._build()
        return self._pm

    def _build(self) -> pluggy.PluginManager:
        pm = _PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for name in self._disabled:
            pm.set_blocked(name)
        if self._entry_points:
            self._load_entry_points(pm)
        for entry in self._explicit:
            if isinstance(entry, tuple):
                name, plugin = entry
            else:
                plugin = entry
                name = getattr(plugin, "bkt_plugin_name", None) or _default_name(plugin)
            if pm.is_blocked(name):
                self._infos[name] = _listing(name, None, None, (), status="disabled")
                continue
            self._register(pm, plugin, name, None, None)
        self._building = pm
        try:
            with self._naming():
                self._call(pm, "bkt_add_hookspecs", host=self)
        finally:
            self._building = None
        self._check_pending(pm)
        return pm

    def add_hookspecs(self, module: types.ModuleType | type) -> None:
        """Declare the hooks of ``module`` (functions marked with :data:`bkt_core.hookspec`),
        as a plugin does from :func:`~bkt_core.hookspecs.bkt_add_hookspecs`: they join the
        plugin manager, and the module's ``RESULTS`` and ``CALLED_ONE_BY_ONE`` (same format as
        :mod:`bkt_core.hookspecs`'s) join this host's contract checks. Adding a module twice
        changes nothing. An implementation, registered earlier, whose arguments the new
        specification does not have is a :class:`PluginError` naming its plugin."""
        pm = self.pluginmanager
        if any(added is module for added in self._spec_modules):
            return
        try:
            pm.add_hookspecs(module)
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or _default_name(exc.plugin)
            raise PluginError(name, "", str(exc).replace(f"Plugin {name!r}\n", "")) from exc
        self._spec_modules.append(module)
        self._results.update(getattr(module, "RESULTS", {}))
        self._one_by_one.update(getattr(module, "CALLED_ONE_BY_ONE", ()))

    def _load_entry_points(self, pm: pluggy.PluginManager) -> None:
        # The entry points come from the per-user index when no distribution changed since
        # it was written (bkt_core.plugin_index): importlib.metadata, and reading every
        # installed distribution, only when one did.
        from bkt_core.plugin_index import entry_points, load

        for ep in entry_points(use_cache=self.cache, notes=self.cache_notes):
            if pm.is_blocked(ep.name) or ep.name in self._disabled:
                # Blocked by name: its module is never imported.
                self._infos[ep.name] = _listing(
                    ep.name, ep.distribution, ep.version, (), status="disabled"
                )
                continue
            if pm.has_plugin(ep.name):
                continue
            try:
                plugin = load(ep.value)
            # Any import failure of a third-party module, sys.exit() at import included.
            except (Exception, SystemExit) as exc:
                error = PluginError(
                    ep.name,
                    "",
                    f"cannot be loaded: {type(exc).__name__}: {exc}",
                    hint=f"pass --disable-plugin {ep.name} to run without it",
                )
                error.__cause__ = exc
                self.load_failures.append(error)
                self._infos[ep.name] = _listing(
                    ep.name, ep.distribution, ep.version, (), status="failed", error=str(exc)
                )
                continue
            self._register(pm, plugin, ep.name, ep.distribution, ep.version)

    def _register(
        self,
        pm: pluggy.PluginManager,
        plugin: object,
        name: str,
        dist: str | None,
        version: str | None,
    ) -> None:
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(name, "", str(exc).replace(f"Plugin {name!r}\n", "")) from exc
        except ValueError as exc:  # a second plugin under one name
            raise PluginError(name, "", f"cannot be registered: {exc}") from exc
        callers = pm.get_hookcallers(plugin) or ()
        for caller in callers:
            for impl in caller.get_hookimpls():
                # A wrapper's result is the wrapped one's; its own failures are blamed by call().
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    impl.function = self._guard(name, caller.name, impl.function)  # type: ignore[misc]
        hooks = tuple(sorted(caller.name for caller in callers))
        self._infos[name] = _listing(name, dist, version, hooks)

    def _guard(
        self, plugin: str, hook_name: str, function: Callable[..., Any]
    ) -> Callable[..., Any]:
        """``function``, plugin's implementation of ``hook_name``, held to the plugin contract:
        its result is checked (an iterable is returned as a tuple, read under the time limit),
        and anything it raises, ``SystemExit`` and ``KeyboardInterrupt`` included, or a run
        past :attr:`hook_timeout`, is a :class:`PluginError` naming both. A :class:`BktError`
        it raises on purpose passes unchanged, as does a real SIGINT or SIGTERM."""

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return self._run_guarded(plugin, hook_name, function, args, kwargs)
            except BktError as exc:
                if self._tolerating is None or self._tolerating[0] != hook_name:
                    raise
                self._tolerating[1].append(exc)
                return None

        return guarded

    def _run_guarded(
        self,
        plugin: str,
        hook_name: str,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        watch = Watch.start(self.hook_timeout)
        # The plugin asks bkt_core.cache.cache_enabled() whether this host uses caches.
        caching = hook_caching.set(self.cache)
        try:
            return checked_result(self._results, hook_name, function(*args, **kwargs))
        except BktError as exc:
            if exc.plugin is None:  # the innermost plugin raised it (hooks may nest)
                exc.plugin, exc.hook = plugin, hook_name
            raise
        except Signalled:
            if watch is not None and watch.sigint_was_default:
                # The embedder's Ctrl-C, as Python would have raised it.
                raise KeyboardInterrupt from None
            raise
        except HookTimeout:
            raise PluginError(
                plugin,
                hook_name,
                f"did not return within {self.hook_timeout:g} s",
                hint=f"{HOOK_TIMEOUT_ENV}=SECONDS sets the limit (0: none); "
                f"--disable-plugin {plugin} runs without the plugin",
            ) from None
        except BadResult as exc:
            raise PluginError(plugin, hook_name, str(exc)) from None
        except BaseException as exc:
            raise self.failure(plugin, hook_name, exc) from exc
        finally:
            hook_caching.reset(caching)
            if watch is not None:
                watch.stop()

    def _check_pending(self, pm: pluggy.PluginManager) -> None:
        # pluggy's check_pending names the plugin object; say which plugin, by name, instead.
        # Wrappers are refused where bkt calls the implementations one by one (so that each
        # result and failure has its plugin): there a wrapper would silently never run.
        for hook_name, caller in vars(pm.hook).items():
            if not isinstance(caller, pluggy.HookCaller):
                continue
            for impl in caller.get_hookimpls():
                hint = None
                if not caller.has_spec() and not impl.opts.get("optionalhook"):
                    problem = f"implements {hook_name}, which is not a bkt hook"
                    if self._disabled:
                        # Most likely the hook of a blocked plugin's subsystem (vm's
                        # bkt_disk_plan, ...), not a misspelt one.
                        problem = f"implements {hook_name}, which no active plugin declares"
                        hint = (
                            "is the plugin that declares it blocked? (blocked: "
                            f"{', '.join(sorted(self._disabled))}); pass --disable-plugin "
                            f"{impl.plugin_name} too to run without it"
                        )
                elif hook_name in self._one_by_one and (impl.wrapper or impl.hookwrapper):
                    problem = f"wraps {hook_name}, whose implementations bkt calls one by one"
                else:
                    continue
                self._invalid(pm, impl.plugin_name, problem, hint)

    def _invalid(
        self, pm: pluggy.PluginManager, name: str, problem: str, hint: str | None = None
    ) -> None:
        error = PluginError(
            name,
            "",
            problem,
            hint=hint
            or f"pass --disable-plugin {name} to run without it; "
            "`bkt plugins` lists the hooks each plugin implements",
        )
        if self._strict:
            raise error
        self.invalid.append(error)
        if pm.has_plugin(name):
            pm.unregister(name=name)
        self._infos[name] = {**self._infos[name], "status": "invalid", "error": error.message}

    @property
    def hookspec_modules(self) -> tuple[object, ...]:
        """The modules that declare this host's hooks: :mod:`bkt_core.hookspecs`, then each
        one a plugin added with :meth:`add_hookspecs`."""
        self.pluginmanager  # noqa: B018  (building the manager adds the plugins' modules)
        return tuple(self._spec_modules)

    def distribution_of(self, name: str) -> tuple[str | None, str | None]:
        """The name and version of the distribution plugin ``name`` came from, as
        :meth:`plugins` lists them; (None, None) for a plugin it does not list or whose
        distribution is unknown. Makes no :class:`PluginInfo` (the manifest cache asks on
        every command)."""
        self.pluginmanager  # noqa: B018  (building the manager fills the listing)
        fields = self._infos.get(name)
        if fields is None:
            return None, None
        return fields["distribution"], fields["version"]

    def plugin_identity(self) -> list[list[Any]]:
        """What the code of the active plugins is, as the caches that depend on it key on
        it: for each, in registration order, its name, distribution and version, the file of
        the module it is defined in, its qualified name there, and that file's
        :func:`~bkt_core.cache.file_signature` (an edited plugin, or an installed, removed or
        upgraded one, gives another identity)."""
        from bkt_core.cache import file_signature

        identity: list[list[Any]] = []
        for name, plugin in self.pluginmanager.list_name_plugin():
            if plugin is None:  # blocked
                continue
            distribution, version = self.distribution_of(name)
            file, qualname = _module_file(plugin)
            identity.append([name, distribution, version, file, qualname, file_signature(file)])
        return identity

    def plugins(self) -> list[PluginInfo]:
        """Every plugin: registered ones, then blocked and failed ones, by name."""
        from bkt_core.plugin_info import PluginInfo

        self.pluginmanager  # noqa: B018  (building the manager fills the listing)
        infos = [PluginInfo(**fields) for fields in self._infos.values()]
        return sorted(infos, key=lambda i: (i.status != "active", i.name))

    # -- calling hooks ---------------------------------------------------------------------

    # The typed methods below are the way bkt calls its host-level hooks; a subsystem's own
    # hooks have a facade of their own (the VM subsystem's: bkt_vm_plugin.hooks.VmHooks). The
    # generic call/collect/each under them take the hook by name, for those facades only.

    def add_cli_commands(self, cli: click.Group) -> list[BktError]:
        """Call :func:`~bkt_core.hookspecs.bkt_cli_commands` with the root group ``cli``. A
        plugin whose commands fail is skipped and the others still add theirs (its broken
        command must not take ``bkt plugins`` and ``--disable-plugin`` down with it); returns
        the failures."""
        return [self.named(exc) for exc in self.call_tolerant("bkt_cli_commands", cli=cli)]

    def manifest_fields(self, subsystem: str) -> list[tuple[str, Mapping[str, tuple[Any, Any]]]]:
        """Every plugin's :func:`~bkt_core.hookspecs.bkt_manifest_fields` for ``subsystem``,
        each with the name of the plugin that declares them, in pluggy's order."""
        with self._naming():
            return self.collect("bkt_manifest_fields", subsystem=subsystem)

    def validate_manifest(
        self, subsystem: str, document: Mapping[str, Any], home: str | None
    ) -> list[Problem]:
        """Every plugin's :func:`~bkt_core.hookspecs.bkt_validate_manifest` problems with the
        raw ``document`` of a ``subsystem`` manifest, in pluggy's order."""
        problems: list[Problem] = []
        with self._naming():
            found = self.collect(
                "bkt_validate_manifest", subsystem=subsystem, document=document, home=home
            )
        for _plugin, some in found:
            problems.extend(some)
        return problems

    def manifest_cache_keys(self, subsystem: str) -> list[str]:
        """Every plugin's :func:`~bkt_core.hookspecs.bkt_manifest_cache_key` for ``subsystem``
        (None left out), in pluggy's order: part of the key of the cache of validated
        manifests (:mod:`bkt_core.manifest_cache`)."""
        with self._naming():
            found = self.collect("bkt_manifest_cache_key", subsystem=subsystem)
        return [key for _plugin, key in found]

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a hook as pluggy does (wrappers, firstresult); a plugin's exception becomes a
        :class:`PluginError` naming it. A :class:`BktError` a plugin raises on purpose (a
        refusal with a message for the user) passes through unchanged. For facades."""
        return self._call(self.pluginmanager, hook_name, **kwargs)

    def _call(self, pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Any:
        caller: pluggy.HookCaller = getattr(pm.hook, hook_name)
        try:
            return caller(**kwargs)
        except (BktError, Signalled, KeyboardInterrupt):
            raise
        except BaseException as exc:  # a wrapper's own failure: the implementations are guarded
            raise self._blame(pm, hook_name, exc) from exc

    def call_tolerant(self, hook_name: str, **kwargs: Any) -> list[BktError]:
        """Call a hook as :meth:`call` does, but an implementation that fails is skipped and
        the others still run; returns the failures. For facades."""
        failures: list[BktError] = []
        self._tolerating = (hook_name, failures)
        try:
            self.call(hook_name, **kwargs)
        except BktError as exc:  # a wrapper failed
            failures.append(exc)
        finally:
            self._tolerating = None
        return failures

    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call each implementation of a collecting hook in pluggy's order and pair each
        non-None result with the name of the plugin that returned it. For facades."""
        caller: pluggy.HookCaller = getattr(self.pluginmanager.hook, hook_name)
        results: list[tuple[str, Any]] = []
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            if result is not None:
                results.append((impl.plugin_name, result))
        return results

    def each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Callable[[], Any]]]:
        """The implementations of a hook one by one, for facades that isolate failures per
        plugin: yields (plugin name, a call with these arguments)."""
        caller: pluggy.HookCaller = getattr(self.pluginmanager.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            yield (
                impl.plugin_name,
                functools.partial(impl.function, **{name: kwargs[name] for name in impl.argnames}),
            )

    def manifest_sources(
        self, subsystem: str, manifest_dir: Path, file_name: str
    ) -> list[ManifestSource]:
        """The documents that make up ``subsystem``'s manifest: ``file_name`` in
        ``manifest_dir`` when it exists, then as each implementation of
        :func:`~bkt_core.hookspecs.bkt_manifest_sources` makes them, in pluggy's order (each
        gets the previous one's result). Raises ManifestError or OperationError for a file
        that cannot be read or is not JSON, PluginError for a failing plugin."""
        from bkt_core.manifest import ManifestSource

        base = ManifestSource.read(Path(manifest_dir) / file_name)
        sources: tuple[ManifestSource, ...] = () if base is None else (base,)
        caller: pluggy.HookCaller = self.pluginmanager.hook.bkt_manifest_sources
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            arguments = {
                "subsystem": subsystem,
                "manifest_dir": Path(manifest_dir),
                "file_name": file_name,
                "sources": sources,
            }
            # The guard checked the result: None or a tuple of ManifestSource.
            with self._naming():
                result: Any = impl.function(**{name: arguments[name] for name in impl.argnames})
            if result is not None:
                sources = tuple(result)
        return list(sources)

    def named(self, exc: BktError) -> BktError:
        """``exc`` as bkt reports it. Raised on purpose by a hook implementation (the guard
        records which: :attr:`BktError.plugin`, :attr:`BktError.hook`) of a plugin that is not
        one of bkt's own, it becomes an error naming them, ``plugin NAME in HOOK: MESSAGE``,
        with the same hint: a :class:`PluginError`, or for a :class:`ManifestError` a
        ManifestError with the same positions. Otherwise (bkt's own plugins speak as bkt,
        and an error raised outside any hook or already naming its plugin) ``exc`` itself."""
        from bkt_core.errors import ManifestError

        plugin, hook = exc.plugin, exc.hook
        if isinstance(exc, PluginError) or plugin is None or hook is None:
            return exc
        if self.pluginmanager.get_plugin(plugin) is None or self.is_own_plugin(plugin):
            return exc
        error: BktError
        if isinstance(exc, ManifestError):
            error = ManifestError(
                f"plugin {plugin} in {hook}: {exc.message}",
                diagnostics=exc.diagnostics,
                hint=exc.hint,
            )
            error.plugin, error.hook = plugin, hook
        else:
            error = PluginError(plugin, hook, exc.message, hint=exc.hint)
        error.__cause__ = exc
        return error

    def is_own_plugin(self, name: str) -> bool:
        """Whether plugin ``name`` is one of bkt's own (defined in bkt_core or in a package
        that bkt's distribution registers plugins from): its refusals speak as bkt, without
        naming a plugin."""
        plugin = self.pluginmanager.get_plugin(name)
        return plugin is not None and _is_own(plugin)

    @contextlib.contextmanager
    def _naming(self) -> Iterator[None]:
        """Re-raises a :class:`BktError` from the hooks called in the block as
        :meth:`named` says."""
        try:
            yield
        except BktError as exc:
            error = self.named(exc)
            if error is exc:
                raise
            raise error from exc

    def blame(self, hook_name: str, exc: BaseException) -> PluginError:
        """The :class:`PluginError` for ``exc``, raised while ``hook_name`` ran: the plugin is
        the one whose implementation is nearest the top of the traceback."""
        return self._blame(self.pluginmanager, hook_name, exc)

    def _blame(self, pm: pluggy.PluginManager, hook_name: str, exc: BaseException) -> PluginError:
        caller: pluggy.HookCaller = getattr(pm.hook, hook_name)
        owners = {
            getattr(impl.function, "__wrapped__", impl.function).__code__: impl.plugin_name
            for impl in caller.get_hookimpls()
        }
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code in owners:
                return self.failure(owners[tb.tb_frame.f_code], hook_name, exc)
            tb = tb.tb_next
        return self.failure("(unknown)", hook_name, exc)

    @staticmethod
    def failure(plugin: str, hook_name: str, exc: BaseException) -> PluginError:
        said = str(exc)
        error = PluginError(plugin, hook_name, type(exc).__name__ + (f": {said}" if said else ""))
        error.__cause__ = exc
        return error

    # -- subsystems ------------------------------------------------------------------------

    def runner(self) -> CommandRunner:
        """The process runner every subsystem uses."""
        if self._runner is None:
            from bkt_core.process import SubprocessRunner

            self._runner = SubprocessRunner()
        return self._runner

    def subsystems(self) -> dict[str, Subsystem]:
        """Every registered subsystem by name, in registration order."""
        if self._subsystems is None:
            found: dict[str, Subsystem] = {}
            owners: dict[str, str] = {}
            # The facade of bkt_subsystems: each subsystem is checked for a duplicate name.
            with self._naming():
                contributed = self.collect("bkt_subsystems", host=self)
            for plugin, result in contributed:
                for subsystem in result:
                    if subsystem.name in found:
                        raise PluginError(
                            plugin,
                            "bkt_subsystems",
                            f"subsystem {subsystem.name!r} is already provided by plugin "
                            f"{owners[subsystem.name]}",
                        )
                    found[subsystem.name] = subsystem
                    owners[subsystem.name] = plugin
            self._subsystems = found
        return self._subsystems

    def subsystem(self, name: str) -> Subsystem:
        try:
            return self.subsystems()[name]
        except KeyError:
            known = ", ".join(self.subsystems()) or "none"
            raise UsageError(
                f"no subsystem named {name!r} (registered: {known})",
                hint="`bkt plugins` lists the plugins; is the plugin that provides it blocked?",
            ) from None

    # -- the embedding API -------------------------------------------------------------------

    # Each takes the name of the subsystem to work on first (``host.plan("vm")``).

    def validate(self, subsystem: str) -> int:
        """Load and validate ``subsystem``'s manifest; the number of entries. Raises
        ManifestError."""
        return self.subsystem(subsystem).validate()

    def plan(self, subsystem: str, names: Sequence[str] = ()) -> SyncPlan:
        """What ``sync`` would do to ``subsystem`` (only ``names``; none: all)."""
        return self.subsystem(subsystem).plan(names)

    def sync(
        self, subsystem: str, names: Sequence[str] = (), *, dry_run: bool = False
    ) -> SyncReport:
        """Sync ``subsystem`` with its manifest (only ``names``; none: all)."""
        return self.subsystem(subsystem).sync(names, dry_run=dry_run)

    def status(
        self, subsystem: str, names: Sequence[str] = (), *, all: bool = False
    ) -> StatusReport:
        """The status of ``subsystem``'s entries (``all``: unmanaged ones too)."""
        return self.subsystem(subsystem).status(names, all=all)

    def capture(
        self,
        subsystem: str,
        names: Sequence[str] = (),
        *,
        all: bool = False,
        dry_run: bool = False,
    ) -> CaptureReport:
        """Write what exists of ``subsystem`` back into its manifest."""
        return self.subsystem(subsystem).capture(names, all=all, dry_run=dry_run)

    def schema(self, subsystem: str) -> dict[str, Any]:
        """The JSON Schema of ``subsystem``'s manifest."""
        return self.subsystem(subsystem).schema()

    def manifest_keys(self) -> dict[str, str]:
        """Each subsystem's name by the key of its manifest (``bkt schema KEY``)."""
        return {subsystem.manifest_key: name for name, subsystem in self.subsystems().items()}


def _is_own(plugin: object) -> bool:
    """Whether ``plugin`` (a module, a class or an instance) is defined in bkt_core or in a
    package bkt's own distribution registers plugins from."""
    if isinstance(plugin, types.ModuleType):
        module = plugin.__name__
    else:
        found = getattr(plugin, "__module__", None)
        module = found if isinstance(found, str) else type(plugin).__module__
    return module.partition(".")[0] in _own_packages()


@functools.cache
def _own_packages() -> frozenset[str]:
    """The top-level packages of bkt_core and of the plugins that bkt's distribution
    registers (read once, from the entry points the host loads plugins from, when an error
    needs it). Run from a source tree that is not installed, only bkt_core is known."""
    from bkt_core.plugin_index import entry_points

    own = {__name__.partition(".")[0]}
    own.update(
        ep.value.partition(":")[0].partition(".")[0]
        for ep in entry_points()
        if ep.distribution == DISTRIBUTION
    )
    return frozenset(own)


def _default_name(plugin: object) -> str:
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or type(plugin).__name__
