"""loom.core: the contract every Loom plugin and app builds on, importing no torch at import time: data types
(:mod:`.data`), components (:class:`Encoder`, :class:`Generator`, :class:`Postprocessor`, each with a pydantic
:class:`ComponentConfig`, which :class:`AdapterOptions` gives LoRA ``adapters``), hooks (:mod:`.hookspecs`, implemented with :data:`hookimpl`), worlds (:class:`World`),
discovery (:func:`get_registry`, entry-point group ``loom``), pipelines (:class:`Pipeline`) and :data:`PLUGIN_API`,
the version of all of these."""

from .adapters import Adapter, AdapterOptions
from .component import Capabilities, Component, ComponentConfig, Encoder, Generator, Postprocessor
from .data import DATA_TYPES, Audio, Data, Embedding, Image, Latent, Text
from .errors import (
    Cancelled,
    ConfigError,
    InputError,
    LoomError,
    PluginError,
    ProvenanceError,
    SpecError,
    TypeMismatchError,
    UnknownComponentError,
    UnknownWorldError,
    WeightsError,
)
from .hookspecs import PLUGIN_API, hookimpl, hookspec
from .pipeline import CancelToken, Pipeline, PipelineSpec, Result, StepSpec
from .plugins import ComponentEntry, PluginInfo, Registry, discover, get_registry
from .world import World

# fmt: off
__all__ = [
    "Adapter", "AdapterOptions", "Audio", "CancelToken", "Cancelled", "Capabilities", "Component", "ComponentConfig", "ComponentEntry", "ConfigError", "DATA_TYPES", "Data",
    "Embedding", "Encoder", "Generator", "Image", "InputError", "Latent", "LoomError", "PLUGIN_API", "Pipeline",
    "PipelineSpec", "PluginError", "PluginInfo", "Postprocessor", "ProvenanceError", "Registry",
    "Result", "SpecError", "StepSpec", "Text", "TypeMismatchError", "UnknownComponentError",
    "UnknownWorldError", "WeightsError", "World", "discover", "get_registry", "hookimpl", "hookspec",
]
# fmt: on
