"""Components that each break one promise of the component contract (and a few that keep all of
them), for testing that the conformance kit fails exactly the check a component breaks. At
module level so that the kit's fresh-interpreter import probe can import them."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from loom.core import (
    AdapterOptions,
    Capabilities,
    ComponentConfig,
    Embedding,
    Generator,
    Image,
    InputError,
    Postprocessor,
    Text,
    WeightsError,
    hookimpl,
)


class Brighten(Postprocessor):
    """Keeps every promise: a per-pixel map with a bounded option, which declares that it ignores its seeds."""

    capabilities = Capabilities(uses_seed=False)

    class Config(ComponentConfig):
        amount: float = Field(0.1, ge=0.0, le=1.0)

    input_type = Image
    output_type = Image

    def run(self, inputs, generators):
        return Image((inputs.pixels + self.config.amount).clamp(0, 1))


class NonDeterministic(Brighten):
    """Draws noise from torch's global RNG instead of the per-item generators."""

    def run(self, inputs, generators):
        import torch

        return Image((inputs.pixels + 0.1 * torch.rand(inputs.pixels.shape)).clamp(0, 1))


class DeclaredRandom(NonDeterministic):
    """The same, but honest about it: the determinism checks are skipped with the reason."""

    capabilities = Capabilities(deterministic=False)


class WrongOutputType(Brighten):
    """Declares Image but returns Text."""

    def run(self, inputs, generators):
        return Text(["oops"] * len(inputs))


class BatchDependent(Brighten):
    """Normalises each batch by its own mean, so an item's output depends on its neighbours."""

    micro_batch = None

    def run(self, inputs, generators):
        px = inputs.pixels
        return Image((px - px.mean() + 0.5).clamp(0, 1))


class AcceptsAnything(Brighten):
    """Its Config lets unknown options through."""

    class Config(ComponentConfig):
        model_config = ConfigDict(extra="allow", frozen=True)
        amount: float = Field(0.1, ge=0.0, le=1.0)


class BadDefault(Brighten):
    """Its default violates its own bound (pydantic does not validate defaults by itself)."""

    class Config(ComponentConfig):
        amount: float = Field(2.0, ge=0.0, le=1.0)


class EagerWeights(Brighten):
    """Reads its weights file when built instead of in setup()."""

    class Config(ComponentConfig):
        weights: str

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        if not Path(self.config.weights).is_file():
            raise WeightsError(f"no weights file {self.config.weights!r}")
        self.blob = Path(self.config.weights).read_bytes()

    def run(self, inputs, generators):
        return Image(inputs.pixels)


class Projector(Generator):
    """Embedding → image through a fixed projection. Keeps every promise, and declares weights
    with a folder format that round-trips."""

    capabilities = Capabilities(has_weights=True, weights_option="weights")

    class Config(ComponentConfig):
        weights: str | None = None
        size: int = Field(8, ge=2, le=32)

    input_type = Embedding
    output_type = Image

    def setup(self):
        import torch

        if self.config.weights:
            from safetensors.torch import load_file

            if not (Path(self.config.weights) / "model.safetensors").is_file():
                raise WeightsError(f"{self.config.weights!r} holds no model.safetensors")
            self.weight = load_file(str(Path(self.config.weights) / "model.safetensors"))["weight"]
        else:
            self.weight = torch.randn(32, 3 * self.config.size**2, generator=torch.Generator().manual_seed(0))

    def save_weights(self, folder):
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.contiguous()}, str(Path(folder) / "model.safetensors"))
        return Path(folder)

    def run(self, inputs, generators):
        import torch

        if inputs.pooled is None or inputs.pooled.shape[-1] != self.weight.shape[0]:
            raise InputError(f"Projector needs {self.weight.shape[0]}-wide pooled embeddings")
        s = self.config.size
        noise = torch.stack([torch.rand(3, s, s, generator=g) for g in generators])
        mix = (inputs.pooled @ self.weight).view(-1, 3, s, s).sigmoid()
        return Image((noise + mix) / 2)


class LossyWeights(Projector):
    """Its saved folder does not hold the weights it ran with."""

    def save_weights(self, folder):
        self.weight = self.weight * 2
        path = super().save_weights(folder)
        self.weight = self.weight / 2
        return path


class BareErrors(Projector):
    """Lets torch's shape error escape on embeddings of the wrong width."""

    def run(self, inputs, generators):
        import torch

        s = self.config.size
        noise = torch.stack([torch.rand(3, s, s, generator=g) for g in generators])
        return Image((noise + (inputs.pooled @ self.weight).view(-1, 3, s, s).sigmoid()) / 2)


class IgnoresSeed(Projector):
    """Declares nothing about seeds, but draws its noise from one fixed generator instead of its own."""

    def run(self, inputs, generators):
        import torch

        return super().run(inputs, [torch.Generator().manual_seed(0) for _ in generators])


class SecretlySeeded(Brighten):
    """Declares that it ignores its seeds, but adds seeded noise."""

    def run(self, inputs, generators):
        import torch

        noise = torch.stack([torch.rand(inputs.pixels.shape[1:], generator=g) for g in generators])
        return Image((inputs.pixels + 0.1 * noise).clamp(0, 1))


class UnboundedSize(Projector):
    """Its ``size`` takes any int, so -1 reaches torch."""

    class Config(ComponentConfig):
        weights: str | None = None
        size: int = 8


class GPUOnly(Brighten):
    capabilities = Capabilities(devices=("cuda",))


class Blend(Generator):
    """Keeps every promise of a step that takes images: it blends the image it is given for each
    prompt with that item's seeded noise, only where the optional mask is white (everywhere without one)."""

    class Config(ComponentConfig):
        amount: float = Field(0.5, ge=0.0, le=1.0)

    input_type = Text
    output_type = Image
    takes = {"image": Image, "mask": Image}
    optional = frozenset({"mask"})

    def run(self, inputs, generators, image, mask=None):
        import torch

        noise = torch.stack([torch.rand(image.pixels.shape[1:], generator=g) for g in generators])
        where = self.config.amount * (1.0 if mask is None else mask.pixels.mean(1, keepdim=True))
        return Image(image.pixels * (1 - where) + noise * where)


class CrashesWithoutImage(Blend):
    """Declares its image optional, then reads it unconditionally: a bare KeyError when it is not given."""

    optional = frozenset({"image", "mask"})

    def run(self, inputs, generators, **given):
        return super().run(inputs, generators, given["image"], given.get("mask"))


class AcceptsAnyInput(Blend):
    """Skips the check of its named inputs that Component.__call__ makes, so a missing or stray one reaches run()."""

    def _check_given(self, given, n):
        pass


class VagueRefusal(Blend):
    """Refuses a request that lacks its image, but without saying which input is missing."""

    def _check_given(self, given, n):
        if "image" not in given:
            raise InputError("VagueRefusal: something is missing from this request")
        super()._check_given(given, n)


class IgnoresStrayInputs(Brighten):
    """Takes no named input, yet accepts any and ignores it, so a misspelt one (``imgae=``) passes unnoticed."""

    def _check_given(self, given, n):
        pass

    def run(self, inputs, generators, **ignored):
        return super().run(inputs, generators)


class FirstImageForAll(Blend):
    """Blends every item with the first item's image, so an item's output depends on its neighbours' inputs."""

    def run(self, inputs, generators, image, mask=None):
        return super().run(inputs, generators, image.take([0] * len(image)), mask)


class SmallImagesOnly(Blend):
    """Refuses images of any size but 8×8 (as a step whose model has one size might), and ignores
    masks: the kit's 16×16 example images fail it, 8×8 ones passed with ``given=`` pass."""

    def run(self, inputs, generators, image, mask=None):
        if tuple(image.pixels.shape[-2:]) != (8, 8):
            raise InputError(f"SmallImagesOnly takes 8×8 images, got {tuple(image.pixels.shape[-2:])}")
        return super().run(inputs, generators, image)


@hookimpl
def loom_register_components(register):
    register("brighten", Brighten)
    register("projector", Projector)
    register("blend", Blend)


# -- adapters ---------------------------------------------------------------------------------


class Tinted(Postprocessor):
    """Keeps the adapter promises: each LoRA adapter (modules of its one layer, ``tint``) shifts the
    pixels by its scale times the sum of its weights, and an adapter for another module is refused."""

    capabilities = Capabilities(uses_seed=False)
    input_type = Image
    output_type = Image
    MODULES = {"tint"}

    class Config(AdapterOptions):
        pass

    def setup(self) -> None:
        from safetensors.torch import load_file

        self.shift = 0.0
        for adapter in self.config.adapters:
            tensors = load_file(adapter.file())
            stray = sorted({k.split(".lora", 1)[0] for k in tensors} - self.MODULES)
            if stray and self.checks_modules:
                raise WeightsError(f"adapter {adapter.path!r} changes module {stray[0]!r}, which this model lacks")
            if self.applies:
                self.shift += adapter.scale * float(sum(t.sum() for t in tensors.values()))

    checks_modules = True
    applies = True

    def run(self, inputs, generators):
        return Image((inputs.pixels * 0.5 + 0.25 + 0.1 * self.shift).clamp(0, 1))


class IgnoresAdapters(Tinted):
    """Takes the option and never loads the adapters."""

    applies = False


class TakesAnyModule(Tinted):
    """Loads an adapter for a module it does not have without a word."""

    checks_modules = False


def write_tint_adapter(path: Path) -> str:
    """A LoRA file for :class:`Tinted`'s one module."""
    import torch
    from safetensors.torch import save_file

    save_file(
        {"tint.lora_A.weight": torch.full((2, 4), 0.5), "tint.lora_B.weight": torch.full((4, 2), 0.25)}, str(path)
    )
    return str(path)
