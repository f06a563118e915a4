"""Plugin discovery and the registry of components and worlds.

Plugins come through the ``loom`` entry-point group, Loom's own included. One that fails in any way (even
``sys.exit``) or needs a plugin API this Loom lacks (:mod:`.hookspecs`) is reported by name; the rest keep working.
``LOOM_PLUGINS=text-encoder,vae`` loads only the plugins named (``""``: none)."""

from __future__ import annotations

import difflib
import os
import re
import time
import traceback
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Iterable, Mapping, cast

import pluggy

from . import hookspecs
from .component import ROLES, Component
from .data import Data
from .errors import ConfigError, PluginError, UnknownComponentError, UnknownWorldError
from .hookspecs import PLUGIN_API
from .world import MODALITIES, World

ENTRY_POINT_GROUP = "loom"
ENV_VAR = "LOOM_PLUGINS"
SLOW_IMPORT_VAR = "LOOM_SLOW_IMPORT_S"  # a plugin slower to import than this (default 1 s) is warned about
FIRST_PARTY = "loom"  # the distribution of Loom's own plugins, whose component names win a bare name
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_API = re.compile(r"^(\d+)\.(\d+)$")
#: The module attribute in which a plugin states the plugin API version it was written for.
API_ATTRIBUTE = "LOOM_PLUGIN_API"


def api_problem(asked: Any, offered: str = PLUGIN_API) -> str | None:
    """Why a plugin for plugin API ``asked`` cannot run on ``offered`` (it needs its MAJOR, at least its MINOR)."""
    match = _API.fullmatch(asked) if isinstance(asked, str) else None
    if match is None:
        return f"its {API_ATTRIBUTE} = {asked!r} is not a version like '1.0'"
    major, minor = (int(x) for x in match.groups())
    have_major, have_minor = (int(x) for x in cast("re.Match[str]", _API.fullmatch(offered)).groups())
    if major != have_major:
        return f"it was written for Loom plugin API {asked}, but this Loom offers plugin API {offered}"
    if minor > have_minor:
        return f"it was written for Loom plugin API {asked}, newer than the plugin API {offered} this Loom offers (upgrade Loom)"
    return None


class PluginWarning(UserWarning):
    """A plugin problem Loom works around: a name clash, a failing run hook, a slow import."""


def _failure(err: BaseException) -> str:
    """``err`` as a plugin's own failure; Ctrl-C belongs to the user, so it goes on up."""
    if isinstance(err, KeyboardInterrupt):
        raise err
    return f"{type(err).__name__}: {err}"


@dataclass
class PluginInfo:
    """What ``loom plugins`` shows about one plugin."""

    name: str
    source: str
    distribution: str | None = None
    version: str | None = None
    components: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    worlds: list[str] = field(default_factory=list)  # registered through loom_register_worlds
    api: str | None = None  # the plugin API version it states it was written for (None: it does not say)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class ComponentEntry:
    """A registered component class and the plugin that registered it."""

    name: str
    cls: type[Component]
    plugin: str
    plugin_version: str | None

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"


class Registry:
    """The loaded plugins and the components and worlds they registered, by name."""

    def __init__(self) -> None:
        self.plugins: dict[str, PluginInfo] = {}
        self._entries: dict[str, ComponentEntry] = {}  # by qualified name
        self._by_name: dict[str, list[ComponentEntry]] = {}
        self._worlds: dict[str, tuple[World, str]] = {}  # name -> (world, plugin)
        # one pluggy manager per plugin: each hook call reaches one plugin, so its failure is its own
        self._managers: dict[str, pluggy.PluginManager] = {}

    # -- loading ------------------------------------------------------------------------------
    def add_plugin(
        self, plugin: Any, name: str, distribution: str | None = None, version: str | None = None
    ) -> PluginInfo:
        """Register a plugin object (a module or any object with hook implementations) and collect the components and
        worlds it registers. Failures are recorded on the returned PluginInfo."""
        source = getattr(plugin, "__name__", repr(plugin))
        info = self.plugins.setdefault(name, PluginInfo(name, source, distribution, version))
        asked = getattr(plugin, API_ATTRIBUTE, None)
        if asked is not None:
            info.api = str(asked)
            if problem := api_problem(asked):
                made_by = f" ({' '.join(x for x in (distribution, version) if x)})" if distribution else ""
                info.errors.append(f"plugin {name!r}{made_by} was not loaded: {problem}")
                return info
        if name in self._managers:
            info.errors.append(f"a plugin named {name!r} is already registered; this one was skipped")
            return info
        manager = pluggy.PluginManager("loom")
        manager.add_hookspecs(hookspecs)
        try:
            manager.register(plugin, name=name)
        except BaseException as err:  # pluggy rejects malformed hook implementations
            info.errors.append(f"could not register hooks: {_failure(err)}")
            return info
        self._managers[name] = manager
        registrars = {"loom_register_components": self._register, "loom_register_worlds": self._register_world}
        for hook, registrar in registrars.items():
            try:
                getattr(manager.hook, hook)(register=lambda *a, _add=registrar, **k: _add(info, *a, **k))
            except BaseException as err:
                info.errors.append(f"{hook} failed: {_failure(err)}")
        return info

    def _register(self, info: PluginInfo, name: str, cls: Any, aliases: Iterable[str] = ()) -> None:
        where = f"plugin {info.name!r}"
        if not isinstance(cls, type) or not issubclass(cls, Component) or cls.role not in ROLES:
            raise PluginError(f"{where}: {name!r} ({cls!r}) is not an Encoder, Generator or Postprocessor subclass")
        for t in (cls.input_type, cls.output_type, *dict(cls.takes).values()):
            if not (isinstance(t, type) and issubclass(t, Data)) or t is Data:
                raise PluginError(f"{where}: {cls.__name__} declares {t!r} as a data type; use a loom.core.data type")
        for n in (name, *aliases):
            if not isinstance(n, str) or not _NAME.fullmatch(n):
                raise PluginError(f"{where}: component name {n!r} must be lower-case letters, digits, '-' or '_'")
            entry = ComponentEntry(n, cls, info.name, info.version)
            if entry.qualified_name in self._entries:
                raise PluginError(f"{where}: registers {n!r} twice")
            self._entries[entry.qualified_name] = entry
            self._by_name.setdefault(n, []).append(entry)
            info.components.append(n)
            if len(self._by_name[n]) > 1:  # told once, as the clash arises
                warnings.warn(self._clash(n), PluginWarning, stacklevel=2)

    def _clash(self, name: str) -> str:
        found = self._by_name[name]
        ours = [e.qualified_name for e in found if self.is_first_party(e)]
        meaning = f"a bare {name!r} means Loom's own {ours[0]}; " if len(ours) == 1 else ""
        names = ", ".join(e.qualified_name for e in found)
        return f"component {name!r} is registered by plugins {[e.plugin for e in found]}; {meaning}name one of {names}"

    def _register_world(self, info: PluginInfo, world: Any) -> None:
        where = f"plugin {info.name!r}"
        if not isinstance(world, World):
            raise PluginError(f"{where}: {world!r} registered as a world is not a loom.core.World instance")
        if not isinstance(world.name, str) or not _NAME.fullmatch(world.name):
            raise PluginError(f"{where}: world name {world.name!r} must be lower-case letters, digits, '-' or '_'")
        if world.modality not in MODALITIES:
            raise PluginError(
                f"{where}: world {world.name!r} has modality {world.modality!r}; use one of {', '.join(MODALITIES)}"
            )
        if world.name in self._worlds:
            raise PluginError(
                f"{where}: world {world.name!r} is already registered by plugin {self._worlds[world.name][1]!r}"
            )
        self._worlds[world.name] = (world, info.name)
        info.worlds.append(world.name)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> ComponentEntry:
        """The component called ``name`` (or ``plugin:name``)."""
        if name in self._entries:
            return self._entries[name]
        found = self._by_name.get(name, [])
        ours = [e for e in found if self.is_first_party(e)]
        if len(found) == 1 or len(ours) == 1:  # a bare name another plugin registers too means Loom's own
            return (ours or found)[0]
        if len(found) > 1:
            choices = ", ".join(e.qualified_name for e in found)
            raise UnknownComponentError(f"component {name!r} is registered by several plugins; name one of: {choices}")
        known = sorted(self._by_name)
        hint = difflib.get_close_matches(name, known, n=1)
        msg = f"no component named {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}"
        msg += f"; registered components: {', '.join(known) or 'none'}"
        broken = [p.name for p in self.plugins.values() if not p.ok]
        msg += f"; plugins that failed to load: {', '.join(broken)} (run `loom plugins`)" if broken else ""
        raise UnknownComponentError(msg)

    def is_first_party(self, entry: ComponentEntry) -> bool:
        return self.plugins[entry.plugin].distribution == FIRST_PARTY

    def components(self, role: str | None = None) -> list[ComponentEntry]:
        entries = sorted(self._entries.values(), key=lambda e: (e.cls.role, e.name))
        return [e for e in entries if role is None or e.cls.role == role]

    def world(self, name: str) -> World:
        """The world called ``name``, or an error naming the registered ones."""
        if name in self._worlds:
            return self._worlds[name][0]
        hint = difflib.get_close_matches(name, list(self._worlds), n=1)
        raise UnknownWorldError(
            f"no world named {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
            f"registered worlds: {', '.join(sorted(self._worlds)) or 'none'} (run `loom plugins`)"
        )

    def worlds(self) -> dict[str, World]:
        """Every registered world, by name."""
        return {name: self._worlds[name][0] for name in sorted(self._worlds)}

    # -- run hooks ----------------------------------------------------------------------------
    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a run hook on every plugin; a plugin's failure (even ``sys.exit``) is a warning, not the run's end."""
        for name, manager in self._managers.items():
            try:
                getattr(manager.hook, hook)(**kwargs)
            except BaseException as err:
                warnings.warn(f"plugin {name!r} failed in {hook}: {_failure(err)}", PluginWarning, stacklevel=2)


def discover(env: Mapping[str, str] | None = None) -> Registry:
    """A new registry holding every plugin installed under the ``loom`` entry-point group."""
    env = os.environ if env is None else env
    try:
        registry, slow = Registry(), float(env.get(SLOW_IMPORT_VAR, 1))
    except ValueError:
        raise ConfigError(f"{SLOW_IMPORT_VAR}={env[SLOW_IMPORT_VAR]!r} is not a number of seconds, like 2.5") from None
    wanted = {n.strip() for n in env[ENV_VAR].split(",") if n.strip()} if ENV_VAR in env else None
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and ep.name not in wanted:
            continue
        dist_name, version = (ep.dist.name, ep.dist.version) if ep.dist is not None else (None, None)
        if ep.name in registry.plugins:
            registry.plugins[ep.name].errors.append(f"{dist_name} also declares a plugin named {ep.name!r}; skipped")
            continue
        start = time.perf_counter()
        try:
            plugin = ep.load()
        except BaseException as err:
            last = traceback.extract_tb(err.__traceback__)[-1]
            error = f"import failed: {_failure(err)} ({last.filename}:{last.lineno})"
            registry.plugins[ep.name] = PluginInfo(ep.name, ep.value, dist_name, version, errors=[error])
            continue
        if (seconds := time.perf_counter() - start) > slow:  # every loom command pays: name who, for its author
            made_by = f"plugin {ep.name!r} ({dist_name} {version})"
            warnings.warn(f"{made_by} took {seconds:.1f} s to import (over {SLOW_IMPORT_VAR}={slow:g})", PluginWarning)
        registry.add_plugin(plugin, ep.name, dist_name, version)
    return registry


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, discovered on first use."""
    global _registry
    if _registry is None:
        _registry = discover()
    return _registry
