"""Loom: a plugin-based generation SDK.

    import loom

    result = loom.generate("a red circle on a blue background", seed=1)
    result.images[0].save("circle.png")          # or: loom.save(result, "circle.png")

    pipeline = loom.Pipeline.from_spec("chain.yaml")
    result = pipeline.run(["a small green square in the top left on a white background"], seed=7)

Attributes load on first use, so ``import loom`` (and the ``loom`` command) start fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # the contract
    "hookimpl": "loom.core.hookspecs",
    "PipelineSpec": "loom.core.pipeline",
    "Result": "loom.core.pipeline",
    "Text": "loom.core.data",
    "Embedding": "loom.core.data",
    "Latent": "loom.core.data",
    "Image": "loom.core.data",
    "Audio": "loom.core.data",
    "Encoder": "loom.core.component",
    "Generator": "loom.core.component",
    "Postprocessor": "loom.core.component",
    "ComponentConfig": "loom.core.component",
    "Capabilities": "loom.core.component",
    "World": "loom.core.world",
    "PLUGIN_API": "loom.core.hookspecs",
    "LoomError": "loom.core.errors",
    "get_registry": "loom.core.plugins",
    "CancelToken": "loom.core.pipeline",
    "Cancelled": "loom.core.errors",
    # the app developer's calls
    "Pipeline": "loom.chains",
    "generate": "loom.api",
    "default_spec": "loom.api",
    "pipeline_for": "loom.api",
    "save": "loom.api",
    "reproduce": "loom.api",
    "read_record": "loom.outputs",
    "write": "loom.outputs",
    "read_audio": "loom.outputs",
    "DEFAULT_GENERATOR": "loom.api",
    "train": "loom.training",
    "batch": "loom.batch_jobs",
    "BatchReport": "loom.batch_jobs",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'loom' has no attribute {name!r}")


def __dir__():
    return __all__
