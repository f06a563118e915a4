"""Diffusion through diffusers: real Stable Diffusion folders as Loom components, and Loom's own
Shapes diffusion family.

Components (all registered by this plugin):

- ``stable-diffusion`` (Text → Image): a whole diffusers text-to-image pipeline (SD 1.x, SD 2.x,
  SDXL; any folder with ``model_index.json``, or a hub id in the Hugging Face cache) in one step.
  Given a request's ``image`` it does image-to-image, given ``image`` and ``mask`` inpainting
  (diffusers' own img2img and inpainting pipelines on the same parts; ``strength`` sets how much).
- ``sd-text-encoder`` (Text → Embedding), ``sd-denoiser`` (Embedding → Latent, also taking
  ``image``/``mask``) and ``sd-vae-decode`` (Latent → Image): the same folder as three typed
  pieces, so a chain can swap one of them. The three-step chain gives the same image as the
  one-step component. ``sd-vae-encode`` (Image → Latent) turns images into the latents they use.
- ``sd-controlnet`` (Text → Image, taking ``control``): a pipeline folder steered by a diffusers
  ControlNet folder and a control image (diffusers' ControlNet pipelines; :mod:`.controlnet`).
- ``diffusion`` (Embedding → Image): a small text-conditional UNet trained by ``loom train
  diffusion`` on Shapes, conditioned on the ``text-encoder`` step's token embeddings; it edits
  (DiffEdit, SDEdit) and repaints given ``image`` and ``mask``.

``stable-diffusion``, ``sd-text-encoder``, ``sd-denoiser``, ``sd-controlnet`` and ``diffusion`` take LoRA ``adapters``
(``[{path, scale}]``, loaded at setup into the parts each step runs; see :mod:`.adapters` and
docs/adapters.md).

This module imports no torch or diffusers: they load in ``setup()`` (see :mod:`.runtime`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from loom.core import (
    Capabilities,
    ComponentConfig,
    Embedding,
    Encoder,
    Generator,
    Image,
    Latent,
    Postprocessor,
    Text,
    WeightsError,
    hookimpl,
)
from loom.core.adapters import AdapterOptions
from loom.plugins.common import DEVICES, WEIGHTS_NAME, check_embeddings, weights_validator
from loom.plugins.common import check_folder as check_trained_folder

# SCHEDULERS is read from here too (tests, benches): the scheduler names are part of the plugin's face
from .sampling import SCHEDULERS, SHAPES_GUIDANCE, SchedulerName, edit_strength, strength_option  # noqa: F401

#: The plugin API this plugin is written for (see loom.core.hookspecs): it reports denoising
#: steps through Component.report_progress and carries negative embeddings (both 1.1); its
#: denoising steps take a request's image and mask (``takes``, 1.5).
LOOM_PLUGIN_API = "1.7"

#: The hub id used when no ``model`` is given; loaded from the local Hugging Face cache.
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def _runtime():
    # imported here: it imports torch and diffusers
    from . import runtime

    return runtime


class ModelOptions(ComponentConfig):
    """Where the diffusers pipeline comes from, and where it runs."""

    model: str = Field(
        DEFAULT_MODEL, description="diffusers pipeline folder (with model_index.json) or a hub id in the HF cache"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: float16 on cuda, float32 on cpu"
    )
    device: str = Field(
        "auto", pattern=f"^(auto|{DEVICES})$", description="auto (cuda if there is one), cpu, cuda, cuda:1, mps"
    )
    download: bool = Field(False, description="fetch from the hub when not in the cache (never when HF_HUB_OFFLINE=1)")


class SamplingOptions(ComponentConfig):
    """How the denoising loop runs."""

    scheduler: SchedulerName = Field("default", description="sampler; default: the folder's own")
    steps: int = Field(25, ge=1, le=1000, description="denoising steps")
    guidance_scale: float = Field(7.5, ge=0.0, le=100.0, description="classifier-free guidance; ≤ 1 turns it off")
    width: int | None = Field(None, ge=8, le=8192, description="pixels, a multiple of 8; default: the model's")
    height: int | None = Field(None, ge=8, le=8192, description="pixels, a multiple of 8; default: the model's")
    batch_size: int = Field(1, ge=1, le=64, description="items per denoising call (padded to a fixed shape)")
    cpu_offload: Literal["none", "model", "sequential"] = Field(
        "none", description="diffusers' CPU offload (needs accelerate and cuda)"
    )
    # speed options
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa", description="torch scaled_dot_product_attention, or the plain math"
    )
    channels_last: bool = Field(False, description="UNet in channels_last memory format")
    compile_unet: Literal["none", "default", "reduce-overhead", "max-autotune"] = Field(
        "none", description="torch.compile mode for the UNet"
    )
    fuse_qkv: bool = Field(False, description="fused query/key/value projections in the UNet")
    strength: float | None = strength_option()

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value):
        if value is not None and value % 8:
            raise ValueError(f"{value} is not a multiple of 8 (try {value - value % 8 or 8})")
        return value

    @model_validator(mode="after")
    def _fuse_needs_sdpa(self):
        if self.fuse_qkv and self.attention != "sdpa":
            raise ValueError("fuse_qkv works with attention: sdpa only")
        # diffusers fuses the attention projections from the base weights: the adapters would be left out
        if self.fuse_qkv and getattr(self, "adapters", None):
            raise ValueError("fuse_qkv would leave the adapters out of the fused projections: set fuse_qkv: false")
        return self


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _Diffusers:
    """Shared by the components that read a diffusers folder: loading, devices, dtypes."""

    config: ModelOptions
    #: pipeline parts this component does not need (not loaded)
    skip: ClassVar[tuple[str, ...]] = ()
    micro_batch: int | None
    #: the registered name, which its errors start with
    step_name: ClassVar[str]

    def _init_batch(self) -> None:
        # items per run() call: a fixed shape keeps an item's result the same in any batch
        self.micro_batch = getattr(self.config, "batch_size", 1)

    @property
    def device(self) -> str:
        return _resolve_device(self.config.device)

    def load_pipeline(self, **kwargs):
        adapters = getattr(self.config, "adapters", ())  # LoRA adapters, on the steps that take them
        return _runtime().load_pipeline(
            self.config, self.device, skip=self.skip, adapters=adapters, step=self.step_name, **kwargs
        )


_CAPS = Capabilities(has_weights=True, devices=("cpu", "cuda", "mps"))
_SEEDLESS = _CAPS.model_copy(update={"uses_seed": False})  # the text encoder and the VAE decoder draw nothing
#: the request inputs the denoising steps take: an image to start from, and a mask of what to repaint
_EDITS = {"image": Image, "mask": Image}


class StableDiffusion(_Diffusers, Generator):
    """A diffusers text-to-image pipeline in one step: prompts in, images out."""

    description = "prompt (+ image, mask) → image with a diffusers pipeline folder (SD 1.x/2.x/XL), one step"
    capabilities = _CAPS
    input_type = Text
    output_type = Image
    takes = _EDITS
    optional = frozenset(_EDITS)
    step_name = "stable-diffusion"

    class Config(ModelOptions, SamplingOptions, AdapterOptions):
        negative_prompt: str = Field("", description="what to steer away from (with guidance_scale > 1)")
        safety_checker: bool = Field(True, description="run the folder's safety checker, if it has one")

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self._init_batch()

    def setup(self) -> None:
        self.pipe = self.load_pipeline(sampling=self.config, safety_checker=self.config.safety_checker)

    def run(self, inputs: Text, generators: list, image: Image | None = None, mask: Image | None = None) -> Image:
        return _runtime().text_to_image(self, self.pipe, inputs.items, generators, image, mask)


class SDTextEncoder(_Diffusers, Encoder):
    """The text encoder(s) of a diffusers pipeline folder: prompt embeddings and the negative
    (unconditional) embeddings that classifier-free guidance needs."""

    description = "prompt → CLIP embeddings (+ negative) from a diffusers pipeline folder"
    capabilities = _SEEDLESS
    input_type = Text
    output_type = Embedding
    step_name = "sd-text-encoder"
    skip = ("unet", "vae", "safety_checker", "feature_extractor", "image_encoder")

    class Config(ModelOptions, AdapterOptions):
        negative_prompt: str = Field("", description="encoded as each item's negative embedding")
        batch_size: int = Field(1, ge=1, le=256, description="prompts per encoder call")

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self._init_batch()

    def setup(self) -> None:
        self.pipe = self.load_pipeline()

    def run(self, inputs: Text, generators: list) -> Embedding:
        return _runtime().encode(self, self.pipe, inputs.items)


class SDDenoiser(_Diffusers, Generator):
    """The UNet and scheduler of a diffusers pipeline folder: embeddings in, latents out (the
    scaled latents the UNet works in; ``sd-vae-decode`` turns them into images)."""

    description = "embeddings (+ image, mask) → latents with a diffusers pipeline's UNet and scheduler"
    capabilities = _CAPS
    input_type = Embedding
    output_type = Latent
    takes = _EDITS
    optional = frozenset(_EDITS)
    step_name = "sd-denoiser"
    skip = (
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "safety_checker",
        "feature_extractor",
        "image_encoder",
    )

    class Config(ModelOptions, SamplingOptions, AdapterOptions):
        pass

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self._init_batch()

    def setup(self) -> None:
        self.pipe = self.load_pipeline(sampling=self.config)

    def run(self, inputs: Embedding, generators: list, image: Image | None = None, mask: Image | None = None) -> Latent:
        return _runtime().denoise(self, self.pipe, inputs, generators, image, mask)


class SDVAEDecode(_Diffusers, Postprocessor):
    """The VAE decoder of a diffusers pipeline folder: latents (as ``sd-denoiser`` gives them) in,
    images out."""

    description = "latents → images with a diffusers pipeline's VAE"
    capabilities = _SEEDLESS
    input_type = Latent
    output_type = Image
    step_name = "sd-vae-decode"

    class Config(ModelOptions):
        batch_size: int = Field(1, ge=1, le=256, description="latents per decoder call")

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self._init_batch()

    def setup(self) -> None:
        self.vae, self.processor, self.pipeline_class = _runtime().load_vae(self.config, self.device)

    def run(self, inputs: Latent, generators: list) -> Image:
        return _runtime().decode(self, inputs)


class SDVAEEncode(_Diffusers, Encoder):
    """The VAE encoder of a diffusers pipeline folder: images in, the scaled latents ``sd-denoiser``
    works in out (each item's posterior sample drawn from its own seed, or the posterior's mode).
    Images are resized to multiples of the VAE's factor (8 for SD), rounding their sides down."""

    description = "images → latents with a diffusers pipeline's VAE"
    capabilities = _CAPS
    input_type = Image
    output_type = Latent
    step_name = "sd-vae-encode"

    class Config(ModelOptions):
        latent: Literal["sample", "mode"] = Field(
            "sample",
            description="sample: the posterior sample (seeded per item), as diffusers' img2img; mode: its mode",
        )
        batch_size: int = Field(1, ge=1, le=256, description="images per encoder call")

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self._init_batch()

    def setup(self) -> None:
        self.vae, self.processor, self.pipeline_class = _runtime().load_vae(self.config, self.device)

    def run(self, inputs: Image, generators: list) -> Latent:
        return _runtime().encode_image(self, inputs, generators)


class SDControlNet(_Diffusers, Generator):
    """A diffusers Stable Diffusion folder steered by a ControlNet: prompts and a request's ``control``
    picture (edges, depth, pose: what the ControlNet was trained on) in, images out, as diffusers'
    StableDiffusionControlNetPipeline (the SDXL one for an SDXL folder) makes them. The output has the
    control's size (sides rounded down to the VAE's factor) unless width and height are set."""

    description = "prompt + control image → image with a diffusers pipeline folder and a ControlNet (SD 1.x/2.x/XL)"
    capabilities = _CAPS.model_copy(update={"weights_option": "controlnet"})  # the record keeps its digests
    input_type = Text
    output_type = Image
    takes = {"control": Image}
    step_name = "sd-controlnet"
    skip = ("controlnet",)  # a ControlNet pipeline folder's own ControlNet: option controlnet names the one used

    class Config(ModelOptions, SamplingOptions, AdapterOptions):
        controlnet: str = Field(
            description="diffusers ControlNetModel folder (config.json + weights) or a hub id in the HF cache"
        )
        conditioning_scale: float = Field(
            1.0, ge=0.0, le=2.0, description="how strongly the control steers (0: not at all)"
        )
        negative_prompt: str = Field("", description="what to steer away from (with guidance_scale > 1)")
        safety_checker: bool = Field(True, description="run the folder's safety checker, if it has one")

        @model_validator(mode="after")
        def _draws_from_noise(self):
            if self.strength is not None:
                raise ValueError("strength is for image-to-image; sd-controlnet draws from noise (leave it unset)")
            return self

    def __init__(self, config=None, **options):
        super().__init__(config, **options)
        self._init_batch()

    def setup(self) -> None:
        from . import controlnet

        self.pipe = controlnet.load(self)

    def run(self, inputs: Text, generators: list, control: Image) -> Image:
        from . import controlnet

        return controlnet.generate(self, self.pipe, inputs.items, generators, control)

    def save_weights(self, folder: "str | Path") -> Path:
        from . import controlnet

        return controlnet.save(self, folder)


# -- Loom's own Shapes diffusion family --------------------------------------------------------


class ShapesDiffusion(Generator):
    """Text embedding → 64×64 image with a small UNet trained on Shapes (``loom train diffusion``),
    conditioned on the ``text-encoder`` step's token embeddings. Given a request's ``image`` it
    edits it (``edit``: DiffEdit or SDEdit), given ``image`` and ``mask`` it repaints the white part; images of any size
    are resized to 64×64 (antialiased) and the result is 64×64, as without an image."""

    description = "text embedding (+ image, mask) → 64×64 image (small diffusion UNet trained on Shapes)"
    #: the ``family`` of the folders it loads (config.json)
    family: ClassVar[str] = "diffusion"
    default_weights: ClassVar[Path] = Path(__file__).parent / "weights"
    # a typed prompt is completed first: on 100 underspecified validation prompts the shipped model
    # scored 0.94 through the completion and 0.48 without (docs/diffusion.md)
    prompt_completion = "complete-shapes-prompt"
    trainer = "loom.plugins.diffusion.training:DiffusionTrainer"
    #: what `loom train lora --base diffusion` trains: a LoRA adapter of the UNet
    adapter_trainer = "loom.plugins.diffusion.lora_training:LoraTrainer"
    capabilities = Capabilities(has_weights=True, weights_option="weights", devices=("cpu", "cuda"))
    input_type = Embedding
    output_type = Image
    takes = _EDITS
    optional = frozenset(_EDITS)
    micro_batch = 8

    class Config(AdapterOptions):
        weights: str | None = Field(None, description="trained folder; None for the shipped default")
        scheduler: SchedulerName = Field("dpm++2m", description="sampler")
        steps: int = Field(20, ge=1, le=1000, description="denoising steps")
        guidance_scale: float = Field(
            SHAPES_GUIDANCE, ge=0.0, le=20.0, description="classifier-free guidance; ≤ 1 turns it off"
        )
        device: str = Field("cpu", pattern=f"^({DEVICES})$", description="cpu, cuda, cuda:N or mps")
        strength: float | None = strength_option()
        edit: Literal["diffedit", "sdedit"] = Field(
            "diffedit",
            description="image-to-image without a mask: diffedit finds the region the prompt changes (at noise "
            "level strength) and redraws it, keeping the rest; sdedit noises the whole image to strength",
        )

        _weights_are_trained = weights_validator("diffusion")

    @classmethod
    def model_class(cls) -> type:
        """The model a trained folder holds (``from_folder``, ``save``; scripts/ship.py uses it)."""
        from .shapes import ShapesDiffusionModel

        return ShapesDiffusionModel

    def setup(self) -> None:
        folder = self.config.weights or self.default_weights
        if self.config.weights is None and not (Path(folder) / WEIGHTS_NAME).is_file():
            raise WeightsError(
                f"the shipped {self.family} weights are missing from this install ({folder}): reinstall "
                f"Loom, or train a model with `loom train {self.family} --out runs/{self.family}` and pass "
                f"weights: runs/{self.family} (or --generator runs/{self.family})"
            )
        folder = check_trained_folder(folder, self.family)
        from .shapes import PlainShapesDiffusionModel

        # peft's adapters load into diffusers' modules; without adapters the plain-torch networks (the
        # same outputs) spare a cold start the diffusers import
        model_class = self.model_class() if self.config.adapters else PlainShapesDiffusionModel
        self.model = model_class.from_folder(folder, self.config.device)
        if self.config.adapters:
            from .adapters import load_into_unet

            with _runtime().quiet_loading():
                decoder = self.model.vae.decoder if self.model.vae is not None else None
                load_into_unet("diffusion", self.model.unet, self.config.adapters, decoder)

    def save_weights(self, folder: "str | Path") -> Path:
        model = self.model
        if self.config.adapters:  # the folder keeps the trained weights; the adapters stay an option
            from .adapters import without_adapters

            model = without_adapters(model)
        return model.save(folder)

    def run(self, inputs: Embedding, generators: list, image: Image | None = None, mask: Image | None = None) -> Image:
        check_embeddings(inputs, self.model.cfg, "diffusion model")
        dev = self.config.device
        edit = self._edit(image, mask)
        pixels = self.model.generate(
            inputs.tokens.to(dev),
            inputs.mask.to(dev),
            inputs.pooled.to(dev),
            generators,
            steps=self.config.steps,
            scheduler=self.config.scheduler,
            guidance_scale=self.config.guidance_scale,
            progress=self._report,
            **edit,
        )
        return Image(pixels.float().cpu())

    def _report(self, done: int, total: int, unit: str, guess: Callable[[], Any]) -> None:
        """A denoising step done; its preview (on request) is the step's guess of the image, decoded."""
        self.report_progress(done, total, unit, preview=lambda: Image(guess().float().cpu()))

    def _edit(self, image: Image | None, mask: Image | None) -> dict:
        """The model's edit arguments for a request: the image and the mask (grey, white = repaint)
        at the model's size, antialiased, the strength and the method; none without an image."""
        runtime = _runtime()
        runtime.check_images("diffusion", image, mask)
        if image is None:
            return {}
        side, dev = self.model.cfg.image_size, self.config.device
        edit = {"image": runtime.resized(image.pixels, side, side).to(dev), "method": self.config.edit}
        if mask is not None:
            edit["repaint"] = runtime.resized(mask.pixels.mean(1, keepdim=True), side, side).to(dev)
        return {**edit, "strength": edit_strength(self.config.strength, mask is not None)}


class FastShapesDiffusion(ShapesDiffusion):
    """The Shapes diffusion model distilled to a few steps (``loom train diffusion-fast``,
    :mod:`.distill`): the teacher's guided DDIM steps learnt as 1, 2 or 4 unguided ones (2 by default),
    one UNet call each.
    Edits as ``diffusion`` does, by SDEdit by default: DiffEdit compares the prompt's prediction with
    the empty condition's, which a distilled model no longer learns."""

    description = "text embedding (+ image, mask) → 64×64 image in 1–4 steps (the Shapes diffusion model, distilled)"
    family: ClassVar[str] = "diffusion-fast"
    default_weights: ClassVar[Path] = Path(__file__).parent / "fast_weights"
    trainer = "loom.plugins.diffusion.distill:DistillTrainer"
    adapter_trainer = None

    class Config(ShapesDiffusion.Config):
        scheduler: SchedulerName = Field("ddim-trailing", description="sampler (the one it was distilled for)")
        steps: int = Field(2, ge=1, le=1000, description="denoising steps (it was distilled for 1, 2 and 4)")
        guidance_scale: float = Field(
            1.0, ge=0.0, le=20.0, description="classifier-free guidance; the teacher's is built in (≤ 1: none more)"
        )
        edit: Literal["diffedit", "sdedit"] = Field(
            "sdedit", description="image-to-image without a mask (see the diffusion step); sdedit by default"
        )

        _weights_are_trained = weights_validator("diffusion-fast")


@hookimpl
def loom_register_components(register):
    register("stable-diffusion", StableDiffusion)
    register("sd-text-encoder", SDTextEncoder)
    register("sd-denoiser", SDDenoiser)
    register("sd-vae-decode", SDVAEDecode)
    register("sd-vae-encode", SDVAEEncode)
    register("sd-controlnet", SDControlNet)
    register("diffusion", ShapesDiffusion)
    register("diffusion-fast", FastShapesDiffusion)
