"""transformers' ``BertModel`` forward pass (eval, absolute positions, SDPA attention) in plain torch, and its fast
tokenizer through the ``tokenizers`` library alone.

Importing transformers takes seconds, most of a cold ``loom generate``. A BERT folder (config.json says
``model_type: bert``, with model.safetensors and tokenizer.json, as the packaged all-MiniLM-L6-v2) needs none of
it: the same weights, the same operations in the same order, so the same numbers (tests/test_text_encoder.py
compares both on many prompts, bit for bit). Anything else loads through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: What config.json must say for this module to stand in for transformers (anything else: transformers loads it).
SUPPORTED = {"model_type": "bert", "position_embedding_type": "absolute", "hidden_act": "gelu"}


def supported(folder: "str | Path") -> bool:
    """Whether ``folder`` holds a BERT this module runs: config.json as :data:`SUPPORTED`, model.safetensors and
    tokenizer.json."""
    folder = Path(folder)
    files = [folder / name for name in ("config.json", "model.safetensors", "tokenizer.json")]
    if not all(f.is_file() for f in files):
        return False
    try:
        config = json.loads(files[0].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # transformers then reads it, and a damaged file is named in its one-line error
    if not isinstance(config, dict):
        return False
    defaults = {"position_embedding_type": "absolute"}
    return all(config.get(key, defaults.get(key)) == value for key, value in SUPPORTED.items())


class Output:
    def __init__(self, last_hidden_state: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attention_out, self.attention_norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps)
        self.intermediate, self.output = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.heads, -1)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        scale = q.shape[-1] ** -0.5
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scale, is_causal=False)
        attended = attended.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous()
        x = self.attention_norm(self.attention_out(attended) + x)
        return self.output_norm(self.output(F.gelu(self.intermediate(x))) + x)


class Bert(nn.Module):
    """``BertModel``'s encoder without its pooler: token states for ``input_ids`` (B×L)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.words = nn.Embedding(config["vocab_size"], hidden, padding_idx=config.get("pad_token_id", 0))
        self.positions = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_types = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: Any = None) -> Output:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.norm(self.words(input_ids) + self.token_types(types) + self.positions(positions))
        n = input_ids.shape[1]
        mask = attention_mask.bool()[:, None, None, :].expand(-1, 1, n, -1)  # as transformers gives SDPA
        for layer in self.layers:
            x = layer(x, mask)
        return Output(x)

    @classmethod
    def from_folder(cls, folder: "str | Path", device: str = "cpu") -> "Bert":
        from safetensors.torch import load_file

        folder = Path(folder)
        model = cls(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        model.load_state_dict(renamed(load_file(str(folder / "model.safetensors"))))
        return model.to(device).eval()


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' BERT tensor names (with or without the ``bert.`` prefix) as :class:`Bert` names them; the
    pooler is left out."""
    names = {
        "embeddings.word_embeddings": "words",
        "embeddings.position_embeddings": "positions",
        "embeddings.token_type_embeddings": "token_types",
        "embeddings.LayerNorm": "norm",
        "attention.self.query": "query",
        "attention.self.key": "key",
        "attention.self.value": "value",
        "attention.output.dense": "attention_out",
        "attention.output.LayerNorm": "attention_norm",
        "intermediate.dense": "intermediate",
        "output.dense": "output",
        "output.LayerNorm": "output_norm",
        "encoder.layer.": "layers.",
    }
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.")
        if key.startswith("pooler.") or key.endswith("position_ids"):
            continue
        for old, new in names.items():
            key = key.replace(old, new)
        out[key] = value
    return out


class Tokenizer:
    """tokenizer.json through the ``tokenizers`` library, called as the two ways Loom calls a transformers tokenizer:
    ``tok(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")`` and
    ``tok(texts, truncation=False)["input_ids"]``. Truncation and padding are the library's own, as transformers
    sets them; a backend per ``max_length`` is made once, so that calls from several threads change nothing shared."""

    def __init__(self, folder: "str | Path") -> None:
        from tokenizers import Tokenizer as Backend

        self.backend = Backend.from_file(str(Path(folder) / "tokenizer.json"))
        self.backend.no_padding()
        self.backend.no_truncation()
        config_file = Path(folder) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        self.pad_token = config.get("pad_token", "[PAD]")
        self.pad_id = self.backend.token_to_id(self.pad_token) or 0
        self.padded: dict[int, Any] = {}

    def _padded(self, max_length: int) -> Any:
        if max_length not in self.padded:
            from tokenizers import Tokenizer as Backend

            backend = Backend.from_str(self.backend.to_str())
            backend.enable_truncation(max_length)
            backend.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=self.pad_token)
            self.padded[max_length] = backend
        return self.padded[max_length]

    def __call__(
        self,
        texts: list[str],
        padding: str | None = None,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict:
        fixed = padding == "max_length" and truncation and max_length
        backend = self._padded(max_length) if fixed else self.backend
        encodings = backend.encode_batch(list(texts))
        out = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        return {k: torch.tensor(v) for k, v in out.items()} if return_tensors == "pt" else out
