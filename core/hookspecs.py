"""Every hook a Loom plugin can implement. This file is the plugin author's reference.

A plugin is a module (or object) named by an entry point in the ``loom`` group::

    [project.entry-points.loom]
    my-plugin = "my_package.loom_plugin"

and implements any of the hooks below with ``@loom.hookimpl`` (the same marker as
``loom.core.hookimpl``). An implementation may take fewer arguments than the spec lists: pluggy
passes only the ones it names, so adding an argument to a hook breaks no plugin.

The plugin module states the plugin API version it was written for::

    LOOM_PLUGIN_API = "1.7"

Loom loads a plugin written for ``MAJOR.MINOR`` when Loom's :data:`PLUGIN_API` has the same
major version and a minor version at least as high; any other plugin is refused with a message
naming it, and every other plugin still loads. Hooks change by pluggy's rules: a minor version
may add hooks and add arguments to hooks (an implementation names only the arguments it uses);
removing or renaming a hook or an argument happens only in a new major version, after a minor
version that warns about it (``HookspecMarker(warn_on_impl=...)``).
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("loom")
hookimpl = pluggy.HookimplMarker("loom")

#: The plugin API this Loom offers: the hooks below, the component interfaces and the data types.
#: tests/test_plugin_api.py holds their recorded signatures and fails on an incompatible change
#: that comes without a major version bump.
PLUGIN_API = "1.7"
# 1.1: the loom_step_progress hook, Component.report_progress, Embedding.negative_* fields.
# 1.2: Audio.lengths (items of different lengths in one batch).
# 1.3: the loom_register_worlds hook and loom.core.World (training data and checkers as plugins).
# 1.4: Embedding.text, Capabilities.uses_seed, Data.problem() (outputs are checked at run time).
# 1.5: Component.takes/optional (named inputs such as image and mask, given to run as keyword arguments).
# 1.6: loom.core.Adapter and AdapterOptions (a component that takes LoRA adapters); CancelToken, Cancelled,
#      Pipeline.run(cancel=) and Pipeline.arun.
# 1.7: Component.report_progress(preview=) and Component.__call__(preview=); Pipeline.run(preview=, preview_every=).


@hookspec
def loom_register_components(register: Callable[..., None]) -> None:
    """Register the components this plugin provides. Called once per process, when Loom first needs the registry.

    :param register: call ``register(name, component_class, aliases=())`` once per component. ``name`` is lower-case
        letters, digits and ``-``; ``component_class`` subclasses :class:`~loom.core.Encoder`, :class:`~.Generator`
        or :class:`~loom.core.Postprocessor`. Loom validates both and reports a clash with another plugin's name; the
        component stays reachable as ``plugin:name``.

    Must not import torch or load weights: listing plugins and checking chains use this hook. Returns nothing.
    """


@hookspec
def loom_register_worlds(register: Callable[..., None]) -> None:
    """Register the worlds this plugin provides: procedural data a generator family trains on (``loom train FAMILY
    --data NAME``) with a checker that grades generators on it (``loom eval NAME``). Called once per process, when
    Loom first needs the registry. Added in plugin API 1.3.

    :param register: call ``register(world)`` once per world, with an instance of a :class:`loom.core.World`
        subclass; its ``name`` (lower-case letters, digits, ``-`` and ``_``) is what ``--data`` and ``loom eval``
        take. Loom validates it and refuses a name another plugin registered first.

    Must not import torch: listing plugins uses this hook. Returns nothing.
    """


@hookspec
def loom_pipeline_start(pipeline: Any, inputs: Any, seeds: list[int]) -> None:
    """Called when a pipeline run begins, after its components are loaded. Observational: the return value is ignored.

    :param pipeline: the :class:`loom.core.Pipeline` being run (``pipeline.spec`` is its spec).
    :param inputs: the input batch (a :mod:`loom.core.data` type).
    :param seeds: the list of per-item seeds.
    """


@hookspec
def loom_step_end(pipeline: Any, step: Any, index: int, output: Any, seconds: float) -> None:
    """Called after each step of a pipeline run has processed the whole batch. Observational: the return value is
    ignored; do not modify ``output`` in place.

    :param pipeline: the running :class:`loom.core.Pipeline`; ``step``: the :class:`loom.core.pipeline.StepSpec`
        that ran; ``index``: its 0-based position in the chain; ``output``: its output batch; ``seconds``: its run time.
    """


@hookspec
def loom_step_progress(pipeline: Any, step: Any, index: int, done: int, total: int, unit: str) -> None:
    """Called while a step is still working through its batch, each time its component reports progress finer than
    whole items (e.g. after every denoising step, from :meth:`loom.core.Component.report_progress`). Added in API 1.1.

    :param pipeline: the running :class:`loom.core.Pipeline`; ``step``: the running
        :class:`loom.core.pipeline.StepSpec`; ``index``: its 0-based position in the chain.
    :param done: units finished so far, counted over the step's whole batch.
    :param total: units the whole batch takes (``done == total`` when the step is about to end).
    :param unit: what is counted, e.g. ``"denoising step"``.

    Called often (once per unit): keep it cheap. Observational: the return value is ignored.
    """


@hookspec
def loom_pipeline_end(pipeline: Any, result: Any) -> None:
    """Called when a pipeline run has finished. Observational: the return value is ignored.

    :param pipeline: the :class:`loom.core.Pipeline` that ran; ``result``: its :class:`loom.core.pipeline.Result`.
    """
