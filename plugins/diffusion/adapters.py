"""Loading LoRA adapters (the ``adapters`` option, :class:`loom.core.adapters.Adapter`) into
diffusers models: a Stable Diffusion pipeline's UNet and text encoders (:func:`for_pipeline`, used by
:func:`.runtime.load_pipeline`) and the Shapes diffusion model's UNet and autoencoder decoder
(:func:`load_into_unet`).
Imports torch, diffusers and peft: loaded only at setup.

Each file is read once, with safetensors (never pickle), and hashed. Its layout is found and converted
by diffusers' own ``lora_state_dict`` (kohya's ``lora_unet_…``/``lora_te_…`` keys with their
``.alpha`` become diffusers' keys and network alphas; the diffusers/PEFT layout, keys under
``unet.``/``text_encoder.``, stays), each part takes it through diffusers' own
``load_lora_into_unet``/``load_lora_into_text_encoder`` as a named peft adapter, and the scales are
set as ``pipe.set_adapters(names, adapter_weights=scales)`` sets them: Loom with adapters is diffusers'
``load_lora_weights`` + ``set_adapters``. A UNet adapter as peft saves it alone
(``unet.save_lora_adapter``: keys with no part prefix) is read as the UNet's.

The Shapes model's adapters may also change its autoencoder's decoder (keys ``decoder.<module>.lora_A/B.weight``,
alpha = rank, as ``loom train lora -O decoder_targets=...`` writes them): a concept its autoencoder never saw (a
star) cannot be drawn by a UNet adapter alone. Those are loaded with peft directly (diffusers has no loader
for them), each file a named adapter at its scale.

Before a part takes an adapter, every module the adapter changes must be in it with the sizes its
weights have: an adapter made for another model is refused naming a missing module, never half loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from loom.core import WeightsError

#: What a pipeline part is called in messages.
PART_NAMES = {
    "unet": "UNet",
    "text_encoder": "text encoder",
    "text_encoder_2": "second text encoder",
    "decoder": "autoencoder's decoder",
}
#: The key prefix of an adapter's tensors for the Shapes model's autoencoder decoder.
DECODER = "decoder"


@dataclass(frozen=True)
class LoraFile:
    """One adapter file as diffusers reads it: ``tensors`` keyed by part (``unet.…``, ``text_encoder.…``;
    kohya's converted), kohya's network ``alphas``, the LoRA config diffusers keeps in the file's header
    (``metadata``), the file's SHA-256 and the adapter's scale."""

    path: str
    sha256: str
    scale: float
    tensors: dict
    alphas: dict | None
    metadata: dict | None
    #: the autoencoder decoder's tensors (peft keys, ``<module>.lora_A.weight``), set apart before diffusers reads the rest
    decoder: dict = field(default_factory=dict)

    @property
    def parts(self) -> set[str]:
        return {key.split(".", 1)[0] for key in self.tensors} | ({DECODER} if self.decoder else set())


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _part(name: str) -> str:
    return PART_NAMES.get(name, name)


def _safetensors(where: str, data: bytes) -> tuple[dict, dict]:
    """(tensors, the header's ``__metadata__``) of a safetensors file's bytes, or a WeightsError."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as err:
        raise WeightsError(f"{where} is not a whole safetensors file ({_first_line(err)})") from None
    return tensors, header


def read(step: str, adapter: Any, loader: type, unet_config: Any = None) -> LoraFile:
    """The adapter's file read, hashed and converted by ``loader`` (a diffusers pipeline class),
    or a one-line WeightsError naming the file: missing, not safetensors, not a LoRA, or with
    tensors that belong to no part of ``loader``'s pipelines."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

    path = str(adapter.file())
    where = f"{step}: adapter {path!r}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{where} does not exist: give the path of a LoRA .safetensors file") from None
    except OSError as err:
        raise WeightsError(f"{where} cannot be read ({err.strerror or err})") from None
    tensors, header = _safetensors(where, data)
    if not tensors:
        raise WeightsError(f"{where} holds no tensors: it is not a LoRA adapter")
    prefix = f"{DECODER}."
    decoder = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
    tensors = {key: value for key, value in tensors.items() if not key.startswith(prefix)}
    if not tensors:  # a decoder-only adapter: nothing for diffusers to read
        return LoraFile(path, hashlib.sha256(data).hexdigest(), float(adapter.scale), {}, None, None, decoder)
    try:
        metadata = json.loads(header[LORA_ADAPTER_METADATA_KEY]) if LORA_ADAPTER_METADATA_KEY in header else None
        # diffusers' own layout detection and kohya conversion (it edits the dict it is given)
        extra = {} if unet_config is None else {"unet_config": unet_config}
        state, alphas = loader.lora_state_dict(dict(tensors), **extra)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise WeightsError(
            f"{where} is in no LoRA layout Loom reads (diffusers/PEFT or kohya): {_first_line(err)}"
        ) from None
    stray = next((key for key in state if "lora" not in key), None)
    if stray is not None:
        raise WeightsError(
            f"{where} is not a LoRA adapter: its tensor {stray!r} is no LoRA weight (a LoRA's tensors are "
            "lora_A/lora_B, lora.down/lora.up or kohya's lora_down/lora_up)"
        )
    known = list(loader._lora_loadable_modules)
    if not {key.split(".", 1)[0] for key in state} & set(known):  # a UNet's adapter as peft saves it alone
        state = {f"unet.{key}": value for key, value in state.items()}
        metadata = {f"unet.{key}": value for key, value in metadata.items()} if metadata else None
    stray = next((key for key in state if key.split(".", 1)[0] not in known), None)
    if stray is not None:
        raise WeightsError(
            f"{where}: its tensor {stray!r} belongs to no part Loom loads adapters into "
            f"(its keys start with {', '.join(k + '.' for k in known)})"
        )
    sha256 = hashlib.sha256(data).hexdigest()
    return LoraFile(path, sha256, float(adapter.scale), state, alphas or None, metadata, decoder)


class AdapterPlan:
    """The adapters of one step, read and converted: which parts each changes, and loading them."""

    def __init__(self, step: str, loader: type, files: list[LoraFile]):
        self.step, self.loader, self.files = step, loader, files

    def touches(self, part: str) -> bool:
        """Whether an adapter changes ``part`` (then the part is its own copy, not the shared one)."""
        return any(part in f.parts for f in self.files)

    def signature(self, part: str) -> tuple:
        """What ``part`` with these adapters is: each changing adapter's file SHA-256 and scale, in order."""
        return tuple((f.sha256, f.scale) for f in self.files if part in f.parts)

    def load(self, part: str, module: Any) -> None:
        """Load every adapter that changes ``part`` into ``module`` as a named peft adapter (``loom_0``, ``loom_1``,
        … by position in the list) and set their scales; a WeightsError, before anything loads, for an adapter that
        does not fit."""
        from diffusers.loaders.lora_base import set_adapters_for_text_encoder

        chosen = [(f"loom_{i}", f) for i, f in enumerate(self.files) if part in f.parts]
        if not chosen:
            return
        for _, f in chosen:
            check_fits(self.step, f, part, module)
        for name, f in chosen:
            try:
                if part == "unet":
                    self.loader.load_lora_into_unet(f.tensors, f.alphas, module, adapter_name=name, metadata=f.metadata)
                else:
                    self.loader.load_lora_into_text_encoder(
                        f.tensors, f.alphas, module, prefix=part, adapter_name=name, metadata=f.metadata
                    )
            except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as err:
                raise WeightsError(
                    f"{self.step}: adapter {f.path!r} could not be loaded into the {_part(part)}: {_first_line(err)}"
                ) from None
        names, scales = [name for name, _ in chosen], [f.scale for _, f in chosen]
        if part == "unet":
            module.set_adapters(names, scales)
        else:
            set_adapters_for_text_encoder(names, module, scales)


def for_pipeline(step: str, adapters: Iterable, folder: Path, index: dict, loaded: Iterable[str]) -> AdapterPlan:
    """The plan for a diffusers pipeline folder (``index``: its model_index.json) whose parts ``loaded``
    are loaded: each adapter must change at least one of them (an adapter for parts this step does
    not load belongs on the step that loads them)."""
    import diffusers
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin

    name = index.get("_class_name", "")
    loader = getattr(diffusers, name, None) if name else None
    if loader is None or not hasattr(loader, "load_lora_into_unet") or not hasattr(loader, "lora_state_dict"):
        raise WeightsError(
            f"{step}: the pipeline in {str(folder)!r} ({name or 'no class'}) takes no LoRA adapters: leave adapters empty"
        )
    unet_config = None
    config_file = folder / "unet" / "config.json"
    if issubclass(loader, StableDiffusionXLLoraLoaderMixin) and config_file.is_file():
        # as diffusers' SDXL loader does: kohya's SDXL block names are mapped with the UNet's layout
        unet_config = SimpleNamespace(**json.loads(config_file.read_text()))
    files = [read(step, adapter, loader, unet_config) for adapter in adapters]
    targets = [p for p in loader._lora_loadable_modules if p in set(loaded)]
    for f in files:
        if f.decoder:
            raise WeightsError(
                f"{step}: adapter {f.path!r} holds weights for an autoencoder's decoder, which only the Shapes "
                "`diffusion` step takes adapters for"
            )
        if not f.parts & set(targets):
            has = " and ".join(_part(p) for p in sorted(f.parts))
            runs = " and ".join(_part(p) for p in targets) or "no part adapters change"
            raise WeightsError(
                f"{step}: adapter {f.path!r} holds weights for the {has} only, and this step runs the {runs}: "
                f"list it on the step that runs the {has}"
            )
    return AdapterPlan(step, loader, files)


def load_into_unet(step: str, unet: Any, adapters: Iterable, decoder: Any = None) -> list[LoraFile]:
    """Load ``adapters`` into a diffusers UNet2DConditionModel that stands alone (the Shapes diffusion
    model's) and into its autoencoder's ``decoder`` (None: a model without one): the adapters must hold
    weights for those only. Every adapter is checked against both before either changes. Returns the files read."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    files = [read(step, adapter, StableDiffusionLoraLoaderMixin) for adapter in adapters]
    takes = {"unet"} | ({DECODER} if decoder is not None else set())
    for f in files:
        others = sorted(f.parts - takes)
        if others:
            raise WeightsError(
                f"{step}: adapter {f.path!r} holds weights for a {_part(others[0])}; this model takes adapters "
                f"for its {' and '.join(_part(p) for p in sorted(takes, reverse=True))} only"
            )
        if f.decoder:
            check_fits(step, f, DECODER, decoder)
    AdapterPlan(step, StableDiffusionLoraLoaderMixin, files).load("unet", unet)
    # at scale 0 a decoder adapter is left out: peft's wrapped convolutions alone move the output by ~1e-6
    load_decoder(step, decoder, [f for f in files if f.decoder and f.scale != 0])
    return files


def load_decoder(step: str, decoder: Any, files: list[LoraFile]) -> None:
    """Each file's decoder tensors into ``decoder`` as a named peft adapter (rank from its weights, alpha =
    rank, ``loom_0``, … by position) at its scale; every adapter checked to fit (:func:`check_fits`) first."""
    if not files:
        return
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    chosen = [(f"loom_{i}", f) for i, f in enumerate(files)]
    for name, f in chosen:
        targets = sorted({key.partition(".lora_")[0] for key in f.decoder})
        rank = next(v.shape[0] for k, v in f.decoder.items() if ".lora_A." in k)
        try:
            config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
            inject_adapter_in_model(config, decoder, adapter_name=name)
            set_peft_model_state_dict(decoder, f.decoder, adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as err:
            raise WeightsError(
                f"{step}: adapter {f.path!r} could not be loaded into the {_part(DECODER)}: {_first_line(err)}"
            ) from None
    for layer in decoder.modules():
        if isinstance(layer, LoraLayer):
            here = [(name, f) for name, f in chosen if name in layer.scaling]
            layer.set_adapter([name for name, _ in here])
            for name, f in here:
                layer.set_scale(name, f.scale)


def without_adapters(model: Any) -> Any:
    """A copy of ``model`` with every LoRA layer taken out (diffusers' own ``unload_lora`` rule): its
    weights as trained, which is what a saved folder holds (the adapters stay an option)."""
    import copy

    from diffusers.utils import recurse_remove_peft_layers

    clone = copy.deepcopy(model)
    recurse_remove_peft_layers(clone)
    return clone


# -- does an adapter fit a part? -------------------------------------------------------------------


def _peft_keys(f: LoraFile, part: str, module: Any) -> dict:
    """The adapter's tensors for ``part`` keyed as peft keys them inside ``module`` (``….to_q.lora_A.weight``),
    by the conversions diffusers' loaders apply before loading."""
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    if part == DECODER:
        return dict(f.decoder)  # written by peft: its own keys
    prefix = f"{part}."
    state = {key[len(prefix) :]: value for key, value in f.tensors.items() if key.startswith(prefix)}
    if part == "unet":
        return state if "lora_A" in next(iter(state)) else convert_unet_state_dict_to_peft(state)
    state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(state))
    if not hasattr(module, "text_model"):  # transformers' flattened CLIPTextModel (diffusers does the same)
        state = {key.removeprefix("text_model."): value for key, value in state.items()}
    return state


def _features(layer: Any, kind: str) -> int | None:
    """How many inputs (``kind`` "A": what lora_A reads) or outputs ("B": what lora_B writes) ``layer`` has."""
    names = ("in_features", "in_channels") if kind == "A" else ("out_features", "out_channels")
    return next((getattr(layer, n) for n in names if isinstance(getattr(layer, n, None), int)), None)


def check_fits(step: str, f: LoraFile, part: str, module: Any) -> None:
    """A one-line WeightsError unless every module the adapter changes in ``part`` is in ``module`` (by
    name, or as the end of a name, peft's rule) with the sizes the adapter's weights have."""
    try:
        keys = _peft_keys(f, part, module)
    except (ValueError, KeyError) as err:  # diffusers cannot place these keys
        raise WeightsError(
            f"{step}: adapter {f.path!r} could not be read for the {_part(part)}: {_first_line(err)}"
        ) from None
    modules = dict(module.named_modules())
    found, missing = {}, []
    for key in sorted(keys):
        name = key.partition(".lora_")[0]
        layer = modules.get(name)
        if layer is None:  # peft's rule: a name may be the end of the module's full name
            layer = next((m for n, m in modules.items() if n.endswith(f".{name}")), None)
        if layer is None and name not in missing:
            missing.append(name)
        found[key] = layer
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(
            f"{step}: adapter {f.path!r} does not fit this {_part(part)}: it changes module {missing[0]!r}{more}, "
            f"which the {_part(part)} does not have (an adapter made for another model?)"
        )
    for key, layer in found.items():
        name, _, kind = key.partition(".lora_")
        side, tensor = kind[:1], keys[key]
        want = _features(getattr(layer, "base_layer", layer), side) if side in ("A", "B") and tensor.ndim >= 2 else None
        got = None if want is None else tensor.shape[1 if side == "A" else 0]
        if want is not None and got != want:
            what = "inputs" if side == "A" else "outputs"
            raise WeightsError(
                f"{step}: adapter {f.path!r} does not fit this {_part(part)}: its module {name!r} has {want} {what}, "
                f"the adapter's weights for it {got} (an adapter made for another model?)"
            )
