"""``loom new-plugin``: write a ready plugin package (pyproject with the entry point, a module that
states the plugin API version and registers one component, a conformance test, a README)."""

from __future__ import annotations

import re
from pathlib import Path

from loom.core.errors import InputError
from loom.core.hookspecs import PLUGIN_API

KINDS = ("encoder", "generator", "postprocessor")
_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")

PYPROJECT = """[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A Loom plugin: the {name} {kind}."
readme = "README.md"
requires-python = ">=3.10"
# Written for Loom plugin API {api} (stated as LOOM_PLUGIN_API in {module}/__init__.py, which
# Loom reads at discovery); any Loom that offers plugin API {major}.x with x >= {minor} runs it.
dependencies = ["loom"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This entry point is how Loom finds the plugin: group "loom", plugin name = the module with the hooks.
[project.entry-points.loom]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
"""

HEADER = '''"""{title}

Registered with Loom through the ``loom`` entry point in pyproject.toml. Heavy libraries (torch)
are imported inside ``setup()``/``run()`` only, so ``loom plugins`` and chain checks stay fast.
"""

from __future__ import annotations

'''

FOOTER = """

@loom.hookimpl
def loom_register_components(register):
    register("{name}", {cls})
"""

POSTPROCESSOR = '''from typing import Literal

import loom
from loom.core import Capabilities, ComponentConfig, Image, InputError, Postprocessor
from pydantic import Field

#: The plugin API this plugin was written for; Loom refuses it, by name, if it cannot serve it.
LOOM_PLUGIN_API = "{api}"

COLOURS = {{"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}}


class {cls}(Postprocessor):
    """Blends every image towards a colour."""

    description = "image → image tinted towards a colour"
    # What the component promises; `loom.testing` checks each promise (see the plugin guide).
    capabilities = Capabilities(deterministic=True, uses_seed=False, batchable=True, devices=("cpu",), has_weights=False)

    class Config(ComponentConfig):
        amount: float = Field(0.2, ge=0.0, le=1.0, description="0: unchanged, 1: solid colour")
        colour: Literal["red", "green", "blue"] = "red"

    input_type = Image
    output_type = Image
    # A per-pixel map: an item's output cannot depend on its batch, so batches run whole.
    micro_batch = None

    def run(self, inputs: Image, generators: list) -> Image:
        import torch

        if inputs.pixels.shape[1] != 3:
            raise InputError(f"{name} takes RGB images (B×3×H×W), got {{tuple(inputs.pixels.shape)}}")
        colour = torch.tensor(COLOURS[self.config.colour], dtype=inputs.pixels.dtype).view(1, 3, 1, 1)
        return Image(torch.lerp(inputs.pixels, colour, self.config.amount))
'''

ENCODER = '''import loom
from loom.core import Capabilities, ComponentConfig, Embedding, Encoder, Text
from pydantic import Field

#: The plugin API this plugin was written for; Loom refuses it, by name, if it cannot serve it.
LOOM_PLUGIN_API = "{api}"


class {cls}(Encoder):
    """Encodes prompts byte by byte through a fixed table (replace it with your model)."""

    description = "prompts → byte embeddings"
    # What the component promises; `loom.testing` checks each promise (see the plugin guide).
    capabilities = Capabilities(deterministic=True, uses_seed=False, batchable=True, devices=("cpu",), has_weights=False)

    class Config(ComponentConfig):
        dim: int = Field(32, ge=4, le=1024, description="width of each token vector")
        max_length: int = Field(32, ge=1, le=512, description="tokens per prompt; every prompt is padded to it")

    input_type = Text
    output_type = Embedding

    def setup(self) -> None:
        import torch

        # Stands in for loading weights: a table that is the same in every process.
        self.table = torch.randn(256, self.config.dim, generator=torch.Generator().manual_seed(0))

    def run(self, inputs: Text, generators: list) -> Embedding:
        import torch

        # Fixed-length padding: a prompt's tokens must not depend on its batch-mates' lengths.
        length = self.config.max_length
        ids = torch.zeros(len(inputs), length, dtype=torch.long)
        mask = torch.zeros(len(inputs), length)
        for i, text in enumerate(inputs.items):
            data = list(text.encode("utf-8"))[:length]
            ids[i, : len(data)] = torch.tensor(data, dtype=torch.long)
            mask[i, : len(data)] = 1.0
        tokens = self.table[ids] * mask[..., None]
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return Embedding(tokens=tokens, mask=mask, encoder="{name}", pooled=torch.nn.functional.normalize(pooled, dim=-1))
'''

GENERATOR = '''import loom
from loom.core import Capabilities, ComponentConfig, Embedding, Generator, Image, InputError
from pydantic import Field

#: The plugin API this plugin was written for; Loom refuses it, by name, if it cannot serve it.
LOOM_PLUGIN_API = "{api}"


class {cls}(Generator):
    """Paints each prompt as a colour (a fixed projection of its sentence vector) plus seeded
    noise (replace it with your model)."""

    description = "text embedding → image of one colour with noise"
    # What the component promises; `loom.testing` checks each promise (see the plugin guide).
    capabilities = Capabilities(deterministic=True, batchable=True, devices=("cpu",), has_weights=False)

    class Config(ComponentConfig):
        size: int = Field(32, ge=8, le=1024, description="image side in pixels")
        noise: float = Field(0.1, ge=0.0, le=1.0, description="share of per-item noise")

    input_type = Embedding
    output_type = Image

    def run(self, inputs: Embedding, generators: list) -> Image:
        import torch

        if inputs.pooled is None:
            raise InputError("{name} needs embeddings with a pooled sentence vector")
        size = self.config.size
        projection = torch.randn(inputs.pooled.shape[-1], 3, generator=torch.Generator().manual_seed(0))
        colour = torch.sigmoid(inputs.pooled.float() @ projection).view(-1, 3, 1, 1)
        # Each item's randomness comes from its own generator, so its image does not depend on its batch.
        noise = torch.stack([torch.rand(3, size, size, generator=g) for g in generators])
        return Image((colour * (1 - self.config.noise) + noise * self.config.noise).clamp(0, 1))
'''

TEST = '''"""Loom's conformance kit on this plugin: one test per (component, check).
`pytest -k seed_determinism` runs one check; a failure names the component, the check and the contract."""

import {module}
from loom.testing import conformance_tests

test_conformance = conformance_tests({module})
'''

README = """# {dist}

A [Loom](https://github.com/) plugin: the `{name}` {kind} ({types}). Written for Loom plugin API {api}.

```bash
pip install -e '.[test]'    # Loom finds it through the `loom` entry point; [test] brings pytest
loom plugins --check        # lists `{name}`, its plugin API version and its requirements
pytest                      # Loom's conformance kit: one test per (component, check)
```

Next steps: replace the body of `run()` in `{module}/__init__.py` with your model (load weights in
`setup()`, never at import), keep `Config` and `capabilities` honest, and rerun `pytest`. To
publish: `python -m build` and upload the wheel; users `pip install {dist}`.
"""

TEMPLATES = {
    "postprocessor": (POSTPROCESSOR, "Image → Image"),
    "encoder": (ENCODER, "Text → Embedding"),
    "generator": (GENERATOR, "Embedding → Image"),
}


def write_plugin(name: str, kind: str = "postprocessor", directory: "str | Path | None" = None) -> Path:
    """Write the package for plugin ``name`` (its component has the same name) and return its folder."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"plugin name {name!r} must be lower-case letters, digits and '-', starting with a letter (e.g. 'blur')"
        )
    if kind not in KINDS:
        raise InputError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    name = name.removeprefix("loom-") or name
    dist = f"loom-{name}"
    module = dist.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-"))
    folder = Path(directory) if directory else Path(dist)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{str(folder)!r} already exists and is not empty; choose another folder")
    body, types = TEMPLATES[kind]
    major, minor = PLUGIN_API.split(".")
    fill = dict(
        name=name, dist=dist, module=module, cls=cls, kind=kind, types=types, api=PLUGIN_API, major=major, minor=minor
    )
    files = {
        "pyproject.toml": PYPROJECT.format(**fill),
        f"{module}/__init__.py": HEADER.format(title=f"The {name} {kind} for Loom ({types}).")
        + body.format(**fill)
        + FOOTER.format(**fill),
        f"tests/test_{module}.py": TEST.format(**fill),
        "README.md": README.format(**fill),
    }
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    return folder
