"""Loom's errors: each a :class:`LoomError` whose message names the thing at fault, its value and what is accepted."""


class LoomError(Exception):
    """Base class of every error Loom raises on purpose."""


class PluginError(LoomError):
    """A plugin failed to import, register, or clashed with another plugin."""


class UnknownComponentError(LoomError):
    """A component name that no loaded plugin registered."""


class UnknownWorldError(LoomError):
    """A world name (``--data``, ``loom eval``) that no loaded plugin registered."""


class ConfigError(LoomError):
    """A component or pipeline configuration value is invalid."""


class SpecError(LoomError):
    """A pipeline spec is malformed or its steps do not fit together."""


class TypeMismatchError(SpecError):
    """A step takes a data type that the step before it does not give."""


class InputError(LoomError):
    """Input data (prompt, seed, file) that a component or command cannot use."""


class WeightsError(LoomError):
    """Model weights are missing, unreadable or do not fit the component."""


class ProvenanceError(LoomError):
    """A file carries no Loom provenance record, or one that cannot be replayed."""


class Cancelled(LoomError):
    """A run stopped because its :class:`~loom.core.pipeline.CancelToken` was cancelled (nothing after that point ran)."""
