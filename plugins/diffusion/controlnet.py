"""The ``sd-controlnet`` step's work: finding and loading a diffusers ControlNetModel folder, checking
that it fits the Stable Diffusion folder it steers, and running diffusers' own ControlNet pipeline
(``StableDiffusionControlNetPipeline``, ``StableDiffusionXLControlNetPipeline`` for SDXL) on the
parts already loaded. Imports torch and diffusers: loaded only by the step's ``setup()``.

The ControlNet is kept once per process, like the pipeline parts of :mod:`.runtime`, and shared by
every step that reads the same folder with the same dtype and device.
"""

from __future__ import annotations

import json
from pathlib import Path

from loom.core import ConfigError, Image, InputError, WeightsError

from . import runtime

#: What a ControlNetModel folder's config.json names as its class.
CONTROLNET_CLASS = "ControlNetModel"
#: The weights files fetched for a hub id with ``download: true``, in order of preference.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def load(component):
    """The ControlNet pipeline of ``component`` (an ``sd-controlnet`` step): its ControlNet is found
    and loaded first (a missing or broken one fails before the larger base model loads), then the
    base pipeline's parts (shared with the other diffusers steps), and the two are checked to fit."""
    cfg, step = component.config, component.step_name
    folder = resolve_controlnet(step, cfg.controlnet, cfg.download)
    controlnet = load_controlnet(step, folder, runtime.torch_dtype(cfg, component.device), component.device)
    pipe = component.load_pipeline(sampling=cfg, safety_checker=cfg.safety_checker)
    check_fits(component, pipe, controlnet)
    return controlnet_pipeline(pipe, controlnet)


def resolve_controlnet(step: str, name: str, download: bool = False) -> Path:
    """The local folder of the ControlNet ``name`` (a folder whose config.json names a ControlNetModel,
    or a hub id in the Hugging Face cache), or a one-line WeightsError naming the folder and the fix."""
    path = Path(name).expanduser()
    if path.exists():
        return _check_controlnet_folder(step, path)
    looks_like_path = runtime.is_path_like(name)
    from huggingface_hub import constants

    if not looks_like_path:
        folder = runtime.cached_hub_folder(name, "config.json")
        if folder is not None:
            return _check_controlnet_folder(step, folder)
        if download and not runtime._offline():
            return _check_controlnet_folder(step, _download(step, name))
    why = "HF_HUB_OFFLINE=1" if runtime._offline() else "download: false"
    raise WeightsError(
        f"{step}: ControlNet {name!r} is not on this machine: Loom looked for a folder {str(path.resolve())!r} and for "
        f"the hub id in the Hugging Face cache {constants.HF_HUB_CACHE!r} ({why}, so nothing was downloaded). Give "
        "controlnet: a local diffusers ControlNetModel folder (config.json and weights), or get it with "
        f"`huggingface-cli download {name if not looks_like_path else 'ORG/NAME'}` on a machine with internet "
        "(or set download: true)"
    )


def _download(step: str, name: str) -> Path:
    """The ControlNet ``name`` fetched from the hub into the cache: its config and one weights file."""
    from huggingface_hub import snapshot_download

    try:
        for weights in WEIGHT_FILES:
            folder = Path(snapshot_download(name, allow_patterns=["config.json", weights]))
            if (folder / weights).is_file():
                break
        return folder
    except Exception as err:  # network and hub errors come in many classes
        first = str(err).splitlines()[0] if str(err) else ""
        raise WeightsError(
            f"{step}: downloading ControlNet {name!r} from the Hugging Face hub failed: {type(err).__name__}: {first}"
        ) from None


def _check_controlnet_folder(step: str, path: Path) -> Path:
    """``path`` resolved, if its config.json names a ControlNetModel; otherwise a WeightsError saying what it is."""
    where = repr(str(path.resolve()))
    if path.is_file():
        raise WeightsError(
            f"{step}: {where} is a file, not a diffusers ControlNetModel folder: convert a single-file checkpoint "
            "first, e.g. diffusers' ControlNetModel.from_single_file(path).save_pretrained(folder)"
        )
    config = path / "config.json"
    if not config.is_file():
        hint = ""
        if (path / "model_index.json").is_file():
            inner = path / "controlnet" / "config.json"
            hint = (
                f": it is a pipeline folder; its ControlNet is {str(inner.parent.resolve())!r}"
                if inner.is_file()
                else ": it is a pipeline folder (give it as model:, and controlnet: a ControlNetModel folder)"
            )
        raise WeightsError(f"{step}: {where} is not a diffusers ControlNetModel folder: it holds no config.json{hint}")
    try:
        kind = json.loads(config.read_text()).get("_class_name")
    except (ValueError, AttributeError, OSError):
        kind = None
    if kind != CONTROLNET_CLASS:
        what = f"a {kind}'s" if isinstance(kind, str) else "not a diffusers model's"
        raise WeightsError(
            f"{step}: {where} is not a diffusers ControlNetModel folder: its config.json is {what} (give controlnet: "
            "a folder saved by ControlNetModel.save_pretrained)"
        )
    return path.resolve()


def load_controlnet(step: str, folder: Path, dtype, device: str):
    """The ControlNetModel in ``folder`` on ``device`` in ``dtype``, loaded once per process."""
    from diffusers import ControlNetModel

    key = (str(folder), "controlnet", str(dtype), device, None)
    with runtime._lock:
        if key not in runtime._parts:
            try:
                with runtime.quiet_loading():
                    model = ControlNetModel.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
            except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
                first = str(err).splitlines()[0].strip() if str(err) else ""
                raise WeightsError(
                    f"{step}: the ControlNet in {str(folder)!r} could not be loaded: {type(err).__name__}: {first}"
                ) from None
            runtime._parts[key] = model.to(device)
        return runtime._parts[key]


def check_fits(component, pipe, controlnet) -> None:
    """A one-line ConfigError unless ``controlnet`` was made for a UNet like ``pipe``'s: a text-to-image
    (4-channel) UNet with the same widths, text width and SDXL-ness, and a control encoder that
    shrinks images by the VAE's factor."""
    step, cfg = component.step_name, component.config
    unet = runtime._unet_config(pipe.unet)
    if unet.in_channels != 4:
        raise ConfigError(
            f"{step}: the UNet in {cfg.model!r} takes {unet.in_channels} input channels; {step} steers text-to-image "
            "(4-channel) UNets only: use a text-to-image folder"
        )
    net = controlnet.config
    pairs = [
        ("block widths", tuple(net.block_out_channels), tuple(unet.block_out_channels)),
        ("text width", net.cross_attention_dim, unet.cross_attention_dim),
        ("added conditioning", net.addition_embed_type, unet.addition_embed_type),
        ("control image factor", 2 ** (len(net.conditioning_embedding_out_channels) - 1), pipe.vae_scale_factor),
    ]
    for what, theirs, ours in pairs:
        if theirs != ours:
            raise ConfigError(
                f"{step}: the ControlNet in {cfg.controlnet!r} does not fit the model {cfg.model!r} ({what}: "
                f"{theirs} against {ours}): use a ControlNet made for this model (SD 1.x, 2.x or XL)"
            )


def controlnet_pipeline(pipe, controlnet):
    """diffusers' ControlNet pipeline (SD or SDXL, as ``pipe`` is) on ``pipe``'s parts and scheduler."""
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    cls = StableDiffusionXLControlNetPipeline if runtime._is_xl(pipe) else StableDiffusionControlNetPipeline
    with runtime.quiet_loading():
        runner = cls.from_pipe(pipe, controlnet=controlnet)
    runner.set_progress_bar_config(disable=True)
    return runner


def control_size(component, factor: int, control: Image) -> tuple[int, int]:
    """(height, width) of the output: the config's, else the control's rounded down to a multiple of
    the VAE's ``factor``; diffusers resizes the control to it (nearest neighbour, as for any tensor)."""
    cfg = component.config
    h, w = control.pixels.shape[-2:]
    height, width = cfg.height or h // factor * factor, cfg.width or w // factor * factor
    if not height or not width:
        raise InputError(
            f"{component.step_name}: the control is {w}×{h} pixels, smaller than the {factor}-pixel blocks this "
            "VAE encodes: give a larger control image (or set width and height)"
        )
    return height, width


def generate(component, runner, prompts: list[str], generators: list, control: Image) -> Image:
    """Images for ``prompts``, each steered by its item of ``control`` (RGB in [0, 1]) at the step's
    conditioning scale; item i's latents (and an ancestral sampler's noise) come from ``generators[i]``."""
    cfg = component.config
    runtime.check_pixels(component.step_name, "control", control)
    control_size(component, runner.vae_scale_factor, control)
    negative = [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt else None
    out = runner(
        prompt=list(prompts),
        negative_prompt=negative,
        image=control.pixels,
        controlnet_conditioning_scale=cfg.conditioning_scale,
        output_type="pt",
        **runtime._sampling_kwargs(component, generators),
    )
    return Image(out.images.float().cpu())


def save(component, folder: "str | Path") -> Path:
    """The loaded ControlNet written into ``folder`` (what option ``controlnet`` reads back)."""
    folder = Path(folder)
    component.pipe.controlnet.save_pretrained(str(folder))
    return folder
