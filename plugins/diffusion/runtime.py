"""Loading diffusers pipeline folders and running their parts (imports torch and diffusers; loaded
only by the components' ``setup()``).

Loaded parts (text encoders, UNet, VAE) are kept once per process and shared by every component
that reads the same folder with the same dtype and device, so the three-piece chain holds one copy
of the model, as the one-step component does. A UNet with speed options is its own copy. Each
component gets its own scheduler, which holds state while it samples.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import threading
import warnings
from pathlib import Path

import torch

from loom.core import ConfigError, Embedding, Image, InputError, Latent, WeightsError

from .adapters import for_pipeline as adapter_plan
from .sampling import edit_strength, make_scheduler

_parts: dict[tuple, object] = {}
_lock = threading.Lock()

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off")


def is_path_like(name: str) -> bool:
    """Whether a ``model``/``controlnet`` value is meant as a path rather than an ``ORG/NAME`` hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or name.endswith((".safetensors", ".ckpt"))


def cached_hub_folder(name: str, marker: str) -> Path | None:
    """The Hugging Face cache's folder of hub id ``name`` if it holds the file ``marker``; never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(name, local_files_only=True, allow_patterns=[marker]))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / marker).is_file() else None


def resolve_model(model: str, download: bool = False) -> Path:
    """The local folder of ``model`` (a folder with model_index.json, or a hub id in the Hugging
    Face cache), or a WeightsError that says where Loom looked and how to get the model."""
    path = Path(model).expanduser()
    if path.exists():
        if path.is_dir() and (path / "model_index.json").is_file():
            return path.resolve()
        hint = ""
        if path.is_dir() and (path / "config.json").is_file():
            family = json.loads((path / "config.json").read_text()).get("family")
            if family == "diffusion":
                hint = (
                    " It is a trained Loom diffusion folder: use the 'diffusion' component with weights: this folder."
                )
            else:
                hint = " A single model's folder is not enough: the pipeline folder holds model_index.json and one subfolder per part."
        elif path.is_file():
            hint = (
                " A single-file checkpoint (.safetensors/.ckpt) must first be converted to a pipeline folder, e.g. "
                "diffusers' StableDiffusionPipeline.from_single_file(path).save_pretrained(folder)."
            )
        raise WeightsError(
            f"{str(path.resolve())!r} is not a diffusers pipeline folder: it holds no model_index.json.{hint}"
        )
    looks_like_path = is_path_like(model)
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    if not looks_like_path:
        folder = cached_hub_folder(model, "model_index.json")
        if folder is not None:
            return folder
        if download and not _offline():
            from diffusers import DiffusionPipeline

            try:
                return Path(DiffusionPipeline.download(model))
            except Exception as err:  # network and hub errors come in many classes
                raise WeightsError(
                    f"downloading {model!r} from the Hugging Face hub failed: {type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}"
                ) from None
    why = "HF_HUB_OFFLINE=1" if _offline() else "download: false"
    raise WeightsError(
        f"diffusers model {model!r} is not on this machine: Loom looked for a folder {str(path.resolve())!r} and "
        f"for the hub id in the Hugging Face cache {cache!r} ({why}, so nothing was downloaded). Get it with "
        f"`huggingface-cli download {model if not looks_like_path else 'ORG/NAME'}` on a machine with internet "
        "(or set download: true), or give model: a local folder that holds model_index.json."
    )


def model_index(folder: Path) -> dict:
    return json.loads((folder / "model_index.json").read_text())


def torch_dtype(config, device: str) -> torch.dtype:
    if config.dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return DTYPES[config.dtype]


@contextlib.contextmanager
def quiet_loading():
    """diffusers and transformers without their loading progress bars, advice and deprecation
    notes: Loom shows its own progress and turns failures into one WeightsError."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    states = [(mod, mod.get_verbosity(), mod.is_progress_bar_enabled()) for mod in (dlog, tlog)]
    for mod, _, _ in states:
        mod.set_verbosity_error()
        mod.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*torchvision.*")
            yield
    finally:
        for mod, level, bar in states:
            mod.set_verbosity(level)
            if bar:
                mod.enable_progress_bar()


def _wrap_load_error(folder: Path, err: Exception) -> WeightsError:
    first = str(err).splitlines()[0] if str(err) else ""
    return WeightsError(f"the diffusers pipeline in {str(folder)!r} could not be loaded: {type(err).__name__}: {first}")


def load_pipeline(config, device: str, skip=(), sampling=None, safety_checker: bool = True, adapters=(), step=""):
    """A diffusers pipeline for ``config.model`` with the parts in ``skip`` left out, its scheduler
    and UNet set up from ``sampling`` (scheduler name, speed options, CPU offload), and the LoRA
    ``adapters`` (:mod:`.adapters`) loaded into the parts they change, each such part its own copy
    (shared only with steps that load the same adapter files at the same scales). ``step`` names
    the step in errors."""
    from diffusers import DiffusionPipeline

    folder = resolve_model(config.model, config.download)
    dtype = torch_dtype(config, device)
    index = model_index(folder)
    offload = getattr(sampling, "cpu_offload", "none")
    if offload != "none":
        if importlib.util.find_spec("accelerate") is None:
            raise ConfigError(f"cpu_offload: {offload} needs the 'accelerate' package: pip install accelerate")
        if not device.startswith("cuda"):
            raise ConfigError(
                f"cpu_offload: {offload} moves parts to a GPU as they run; device is {device!r} (use cuda)"
            )
    variant = None
    if sampling is not None:
        variant = (sampling.attention, sampling.channels_last, sampling.compile_unet, sampling.fuse_qkv)
    skipped = set(skip)
    if not safety_checker:
        skipped |= {"safety_checker", "feature_extractor"}
    loras = None
    if adapters:
        loaded = [n for n, v in index.items() if isinstance(v, list) and v[0] is not None and n not in skipped]
        with quiet_loading():
            loras = adapter_plan(step or "diffusers", adapters, folder, index, loaded)
    with _lock:
        given, fresh = {}, []
        for name, value in index.items():
            if name.startswith("_") or not isinstance(value, list) or value[0] is None or name == "scheduler":
                continue
            if name in skipped:
                given[name] = None
                continue
            key = (str(folder), name, str(dtype), device, variant if name == "unet" else None)
            if loras is not None and loras.touches(name):
                key += (loras.signature(name),)
            if offload == "none" and key in _parts:
                given[name] = _parts[key]
            else:
                fresh.append((name, key))
        try:
            with quiet_loading():
                pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True, **given)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise _wrap_load_error(folder, err) from None
        if offload == "none":
            pipe.to(device)
        for name, key in fresh:
            if loras is not None and loras.touches(name):
                with quiet_loading():
                    loras.load(name, getattr(pipe, name))
            if name == "unet" and sampling is not None:
                pipe.unet = speed_up(pipe.unet, sampling)
            if offload == "none":
                _parts[key] = getattr(pipe, name)
    if sampling is not None:
        pipe.scheduler = make_scheduler(pipe.scheduler, sampling.scheduler)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def speed_up(unet, sampling):
    """The UNet with the speed options of ``sampling`` applied (attention, memory format,
    fused projections, torch.compile)."""
    if sampling.attention == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    # diffusers' default attention already is torch's scaled_dot_product_attention
    if sampling.fuse_qkv:
        unet.fuse_qkv_projections()
    if sampling.channels_last:
        unet.to(memory_format=torch.channels_last)
    if sampling.compile_unet != "none":
        unet = torch.compile(
            unet, mode=None if sampling.compile_unet == "default" else sampling.compile_unet, fullgraph=True
        )
    return unet


def _on_step(component, steps: int):
    def callback(pipe, i, t, tensors):
        component.report_progress(i + 1, getattr(pipe, "num_timesteps", None) or steps, "denoising step")
        return tensors

    return callback


def _sampling_kwargs(component, generators) -> dict:
    cfg = component.config
    return dict(
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance_scale,
        height=cfg.height,
        width=cfg.width,
        generator=list(generators),
        callback_on_step_end=_on_step(component, cfg.steps),
    )


def text_to_image(component, pipe, prompts: list[str], generators: list, image=None, mask=None) -> Image:
    """The whole pipeline on prompts; item i's initial latents come from ``generators[i]``. With
    ``image`` (and ``mask``): diffusers' image-to-image (inpainting) pipeline on the same parts."""
    cfg = component.config
    check_request(component, pipe, image, mask)
    negative = [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt else None
    prompt = dict(prompt=list(prompts), negative_prompt=negative)
    if image is not None:
        return Image(edit(component, pipe, generators, image, mask, "pt", **prompt).float().cpu())
    out = pipe(**prompt, output_type="pt", **_sampling_kwargs(component, generators))
    return Image(out.images.float().cpu())


def _unet_config(unet):
    # a compiled UNet keeps its config on the module it wraps
    return getattr(unet, "config", getattr(getattr(unet, "_orig_mod", None), "config", None))


def check_request(component, pipe, image: Image | None, mask: Image | None) -> None:
    """A one-line InputError unless this folder's UNet can do what the request asks: text-to-image
    and image-to-image need a 4-channel UNet, inpainting a 4-channel (diffusers' blended path)
    or a 9-channel one (an inpainting model, which needs an image and a mask)."""
    step, folder = component.step_name, component.config.model
    channels = _unet_config(pipe.unet).in_channels
    check_images(step, image, mask)
    if channels == 9 and mask is None:
        raise InputError(
            f"{step}: {folder!r} holds an inpainting model (its UNet takes 9 channels): give an image and a mask "
            "(white = repaint)"
        )
    if image is not None and channels not in (4, 9):
        raise InputError(
            f"{step}: the UNet in {folder!r} takes {channels} input channels; Loom edits images with text-to-image "
            "(4-channel) and inpainting (9-channel) UNets only: use another folder"
        )


def check_images(step: str, image: Image | None, mask: Image | None) -> None:
    """A one-line InputError unless a request's image and mask can go together: RGB batches, no
    mask without an image, a mask of the image's size."""
    for what, given in (("image", image), ("mask", mask)):
        if given is not None:
            check_pixels(step, what, given)
    if mask is None:
        return
    if image is None:
        raise InputError(
            f"{step}: a mask was given without an image: give the image it marks too (image=…, or --image)"
        )
    if mask.pixels.shape[-2:] != image.pixels.shape[-2:]:
        (mh, mw), (ih, iw) = mask.pixels.shape[-2:], image.pixels.shape[-2:]
        raise InputError(
            f"{step}: the mask is {mw}×{mh} pixels but the image is {iw}×{ih}: give a mask of the image's size"
        )


def check_pixels(step: str, what: str, images: Image) -> None:
    """An InputError unless ``images`` is a well-formed batch of RGB images."""
    problem = images.problem() or (None if images.pixels.shape[1] == 3 else f"{images.pixels.shape[1]} channels")
    if problem:
        raise InputError(f"{step}: the {what} is not a batch of RGB images in [0, 1] ({problem})")


def edit_size(component, factor: int, image: Image) -> tuple[int, int]:
    """(height, width) of an edit: the config's, else the image's rounded down to a multiple of the
    VAE's ``factor`` (diffusers' rule); the image is resized to it."""
    cfg = component.config
    h, w = image.pixels.shape[-2:]
    height, width = (
        getattr(cfg, "height", None) or h // factor * factor,
        getattr(cfg, "width", None) or w // factor * factor,
    )
    if not height or not width:
        raise InputError(
            f"{component.step_name}: the image is {w}×{h} pixels, smaller than the {factor}-pixel blocks this VAE "
            "encodes: give a larger image"
        )
    return height, width


def resized(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``pixels`` (B×C×H×W in [0, 1]) at height × width, antialiased bilinear (unchanged if already that size)."""
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    out = torch.nn.functional.interpolate(pixels, size=(height, width), mode="bilinear", antialias=True)
    return out.clamp(0, 1)


def _edit_pipe(component, pipe, inpaint: bool):
    """diffusers' image-to-image or inpainting pipeline sharing ``pipe``'s parts and scheduler."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    cache = component.__dict__.setdefault("_edit_pipes", {})
    if inpaint not in cache:
        with quiet_loading():
            cache[inpaint] = (AutoPipelineForInpainting if inpaint else AutoPipelineForImage2Image).from_pipe(pipe)
        cache[inpaint].set_progress_bar_config(disable=True)
    return cache[inpaint]


def edit(component, pipe, generators: list, image: Image, mask: Image | None, output_type: str, **prompt):
    """Images (``output_type`` "pt") or scaled latents ("latent") from diffusers' image-to-image
    pipeline, or its inpainting one with ``mask`` (white = repaint; diffusers binarizes it at 0.5).
    When ``strength`` leaves no denoising step (steps × strength < 1), where diffusers raises, the
    result is the image's VAE round trip: its latents, sampled with the item's generator."""
    cfg = component.config
    inpaint = mask is not None
    runner = _edit_pipe(component, pipe, inpaint)
    height, width = edit_size(component, runner.vae_scale_factor, image)
    pixels = resized(image.pixels, height, width)
    strength = edit_strength(cfg.strength, inpaint)
    if int(cfg.steps * strength) == 0:  # diffusers' own count of the steps left
        xl = _is_xl(runner)
        latents = vae_encode(runner.vae, pixels, generators, xl)
        return latents if output_type == "latent" else vae_decode(runner.vae, runner.image_processor, xl, latents)
    kwargs = dict(
        image=pixels,
        strength=strength,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance_scale,
        generator=list(generators),
        callback_on_step_end=_on_step(component, cfg.steps),
        output_type=output_type,
    )
    if inpaint:
        kwargs.update(mask_image=resized(mask.pixels.mean(1, keepdim=True), height, width), height=height, width=width)
    with quiet_loading():  # SDXL's pipelines note each float32 cast of their VAE
        return runner(**prompt, **kwargs).images


def _is_xl(pipe_or_name) -> bool:
    name = pipe_or_name if isinstance(pipe_or_name, str) else type(pipe_or_name).__name__
    return "XL" in name


def encode(component, pipe, prompts: list[str]) -> Embedding:
    """Prompt embeddings and negative embeddings, exactly as the pipeline computes them."""
    cfg = component.config
    negative = [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt else None
    device = pipe._execution_device
    with torch.no_grad():
        if "pooled_prompt_embeds" in inspect.signature(pipe.encode_prompt).parameters:
            tokens, negative_tokens, pooled, negative_pooled = pipe.encode_prompt(
                prompt=list(prompts),
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=negative,
            )
        else:
            tokens, negative_tokens = pipe.encode_prompt(list(prompts), device, 1, True, negative_prompt=negative)
            pooled = negative_pooled = None
    # The UNet attends to every one of the 77 positions (padding included), so all count as real.
    mask = torch.ones(tokens.shape[:2])

    def out(t):
        return None if t is None else t.float().cpu()

    return Embedding(
        tokens=out(tokens),
        mask=mask,
        encoder=f"diffusers:{cfg.model}",
        pooled=out(pooled),
        negative_tokens=out(negative_tokens),
        negative_mask=mask.clone(),
        negative_pooled=out(negative_pooled),
    )


def denoise(component, pipe, emb: Embedding, generators: list, image=None, mask=None) -> Latent:
    """Latents for the embeddings: the pipeline's own loop, stopped before the VAE (with ``image``
    and ``mask``: the image-to-image or inpainting loop, as in :func:`edit`)."""
    cfg = component.config
    check_request(component, pipe, image, mask)
    width = _unet_config(pipe.unet).cross_attention_dim
    if isinstance(width, int) and emb.tokens.shape[-1] != width:
        raise InputError(
            f"sd-denoiser: this UNet attends to {width}-wide token embeddings, got {emb.tokens.shape[-1]}-wide ones "
            f"from {emb.encoder!r}; use sd-text-encoder with the same model"
        )
    guided = cfg.guidance_scale > 1
    if guided and emb.negative_tokens is None:
        raise InputError(
            f"sd-denoiser: guidance_scale {cfg.guidance_scale} needs negative embeddings, but the embeddings from "
            f"{emb.encoder!r} carry none; use sd-text-encoder, or set guidance_scale: 1"
        )
    kwargs = dict(prompt_embeds=emb.tokens, negative_prompt_embeds=emb.negative_tokens if guided else None)
    if _is_xl(pipe):
        if emb.pooled is None or (guided and emb.negative_pooled is None):
            raise InputError(
                f"sd-denoiser: an SDXL UNet needs pooled embeddings, and the embeddings from {emb.encoder!r} carry none"
            )
        kwargs.update(
            pooled_prompt_embeds=emb.pooled, negative_pooled_prompt_embeds=emb.negative_pooled if guided else None
        )
    device = pipe._execution_device
    kwargs = {k: None if v is None else v.to(device) for k, v in kwargs.items()}
    if image is not None:
        latents = edit(component, pipe, generators, image, mask, "latent", **kwargs)
    else:
        latents = pipe(output_type="latent", **kwargs, **_sampling_kwargs(component, generators)).images
    return Latent(latents.float().cpu(), space=f"diffusers:{cfg.model}")


def load_vae(config, device: str):
    """(vae, image processor, pipeline class name) for ``config.model``, shared like the other parts."""
    import diffusers
    from diffusers.image_processor import VaeImageProcessor

    folder = resolve_model(config.model, config.download)
    dtype = torch_dtype(config, device)
    index = model_index(folder)
    if not isinstance(index.get("vae"), list) or index["vae"][0] is None:
        raise WeightsError(f"the diffusers pipeline in {str(folder)!r} has no vae")
    key = (str(folder), "vae", str(dtype), device, None)
    with _lock:
        if key not in _parts:
            cls = getattr(diffusers, index["vae"][1])
            try:
                with quiet_loading():
                    _parts[key] = cls.from_pretrained(
                        str(folder), subfolder="vae", torch_dtype=dtype, local_files_only=True
                    ).to(device)
            except (OSError, ValueError) as err:
                raise _wrap_load_error(folder, err) from None
        vae = _parts[key]
    processor = VaeImageProcessor(vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))
    return vae, processor, index.get("_class_name", "")


def decode(component, latents: Latent) -> Image:
    """Images from scaled latents, as the pipeline's last stage makes them."""
    vae = component.vae
    if not latents.space.startswith("diffusers:"):
        raise InputError(
            f"sd-vae-decode takes the scaled latents of a diffusers pipeline (space 'diffusers:...'), "
            f"got latents of space {latents.space!r}"
        )
    if latents.tensor.shape[1] != vae.config.latent_channels:
        raise InputError(
            f"sd-vae-decode: this VAE takes {vae.config.latent_channels}-channel latents, got {latents.tensor.shape[1]}"
        )
    return Image(vae_decode(vae, component.processor, _is_xl(component.pipeline_class), latents.tensor).float().cpu())


@contextlib.contextmanager
def _float32(vae, needed: bool):
    """The VAE in float32 while the block runs, when ``needed`` (SDXL's VAE overflows in float16)."""
    if needed:
        vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        if needed:
            vae.to(dtype=torch.float16)


def _upcast(vae, xl: bool) -> bool:
    return xl and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)


def _latent_stats(vae, xl: bool, x: torch.Tensor):
    """(mean, std) of an SDXL VAE's latents, shaped to broadcast over ``x``; None when it has none."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if not xl or mean is None or std is None:
        return None
    shape = (1, x.shape[1], 1, 1)
    return torch.tensor(mean).view(shape).to(x.device, x.dtype), torch.tensor(std).view(shape).to(x.device, x.dtype)


def vae_decode(vae, processor, xl: bool, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] from scaled latents, as the pipelines' last stage makes them."""
    upcast = _upcast(vae, xl)
    x = latents.to(vae.device, torch.float32 if upcast else vae.dtype)
    scale, stats = vae.config.scaling_factor, _latent_stats(vae, xl, x)
    with torch.no_grad(), _float32(vae, upcast):
        x = x * stats[1] / scale + stats[0] if stats else x / scale
        image = vae.decode(x, return_dict=False)[0]
        return processor.postprocess(image, output_type="pt")


def vae_encode(vae, pixels: torch.Tensor, generators: list, xl: bool, mode: str = "sample") -> torch.Tensor:
    """Scaled latents of images in [0, 1] (sides multiples of the VAE's factor), as diffusers'
    image-to-image pipelines make them: item i's posterior sample is drawn from ``generators[i]``
    (``mode`` "mode": the posterior's mode, which draws nothing)."""
    upcast = _upcast(vae, xl)
    x = (2.0 * pixels - 1.0).to(vae.device, torch.float32 if upcast else vae.dtype)
    with torch.no_grad(), _float32(vae, upcast):
        posteriors = [vae.encode(x[i : i + 1]).latent_dist for i in range(len(x))]
        z = torch.cat([p.mode() if mode == "mode" else p.sample(generator=g) for p, g in zip(posteriors, generators)])
    scale, stats = vae.config.scaling_factor, _latent_stats(vae, xl, z)
    return (z - stats[0]) * scale / stats[1] if stats else z * scale


def encode_image(component, images: Image, generators: list) -> Latent:
    """sd-vae-encode: scaled latents of images, resized to multiples of the VAE's factor."""
    vae = component.vae
    check_pixels(component.step_name, "image", images)
    height, width = edit_size(component, component.processor.config.vae_scale_factor, images)
    pixels = resized(images.pixels, height, width)
    latents = vae_encode(vae, pixels, generators, _is_xl(component.pipeline_class), component.config.latent)
    return Latent(latents.float().cpu(), space=f"diffusers:{component.config.model}")
