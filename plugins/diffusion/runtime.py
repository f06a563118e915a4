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

from .sampling import make_scheduler

_parts: dict[tuple, object] = {}
_lock = threading.Lock()

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off")


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
    looks_like_path = (
        model.startswith((".", "/", "~")) or model.count("/") != 1 or model.endswith((".safetensors", ".ckpt"))
    )

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = constants.HF_HUB_CACHE
    if not looks_like_path:
        try:
            folder = Path(snapshot_download(model, local_files_only=True, allow_patterns=["model_index.json"]))
            if (folder / "model_index.json").is_file():
                return folder
        except (LocalEntryNotFoundError, OSError, ValueError):
            pass
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


def load_pipeline(config, device: str, skip=(), sampling=None, safety_checker: bool = True):
    """A diffusers pipeline for ``config.model`` with the parts in ``skip`` left out, its scheduler
    and UNet set up from ``sampling`` (scheduler name, speed options, CPU offload)."""
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
    with _lock:
        given, fresh = {}, []
        for name, value in index.items():
            if name.startswith("_") or not isinstance(value, list) or value[0] is None or name == "scheduler":
                continue
            if name in skipped:
                given[name] = None
                continue
            key = (str(folder), name, str(dtype), device, variant if name == "unet" else None)
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


def text_to_image(component, pipe, prompts: list[str], generators: list) -> Image:
    """The whole pipeline on prompts; item i's initial latents come from ``generators[i]``."""
    cfg = component.config
    negative = [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt else None
    out = pipe(
        prompt=list(prompts), negative_prompt=negative, output_type="pt", **_sampling_kwargs(component, generators)
    )
    return Image(out.images.float().cpu())


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


def denoise(component, pipe, emb: Embedding, generators: list) -> Latent:
    """Latents for the embeddings: the pipeline's own loop, stopped before the VAE."""
    cfg = component.config
    unet = pipe.unet
    width = getattr(unet, "config", getattr(getattr(unet, "_orig_mod", None), "config", None)).cross_attention_dim
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
    out = pipe(output_type="latent", **kwargs, **_sampling_kwargs(component, generators))
    return Latent(out.images.float().cpu(), space=f"diffusers:{cfg.model}")


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
    x = latents.tensor.to(vae.device, vae.dtype)
    cfg = vae.config
    upcast = _is_xl(component.pipeline_class) and vae.dtype == torch.float16 and getattr(cfg, "force_upcast", False)
    with torch.no_grad():
        if upcast:  # as SDXL's pipeline does: its VAE overflows in float16
            vae.to(dtype=torch.float32)
            x = x.float()
        try:
            mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
            if _is_xl(component.pipeline_class) and mean is not None and std is not None:
                channels = x.shape[1]
                mean = torch.tensor(mean).view(1, channels, 1, 1).to(x.device, x.dtype)
                std = torch.tensor(std).view(1, channels, 1, 1).to(x.device, x.dtype)
                x = x * std / cfg.scaling_factor + mean
            else:
                x = x / cfg.scaling_factor
            image = vae.decode(x, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
        image = component.processor.postprocess(image, output_type="pt")
    return Image(image.float().cpu())
