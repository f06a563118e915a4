"""Training a LoRA adapter for the Shapes diffusion model: ``loom train lora --base diffusion``.

The base model (the shipped one, or a folder ``loom train diffusion`` wrote) is frozen; peft adds
low-rank matrices to its UNet's attention projections (``targets``), and only those train, on the
same denoising loss as the model itself (:func:`.training.denoising_loss`, without an EMA: a
few hundred steps on a few dozen images). The output folder is an adapter:

    adapter.safetensors   the LoRA weights in the diffusers layout (``unet.<module>.lora_A/B.weight``),
                          what ``adapters: [{path: FOLDER}]`` loads
    config.json           ``"family": "lora"``, the base it was trained on, rank and targets, the run
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from loom.core import InputError
from loom.core.files import atomic_path, write_json_atomic
from loom.core.training import Trainer, TrainerOptions
from loom.plugins.common.training import warmup_cosine

from .shapes import ShapesDiffusionModel, noise_schedule
from .training import denoising_loss, update

#: The adapter's weights file in its folder.
ADAPTER_NAME = "adapter.safetensors"
#: The name peft gives the adapter while it trains.
_TRAINING = "loom"


class LoraOptions(TrainerOptions):
    batch_size: int = Field(16, ge=1, description="images per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate of the LoRA weights")
    base: str | None = Field(None, description="the diffusion folder the adapter is for; None: the shipped model")
    rank: int = Field(8, ge=1, le=256, description="rank of each low-rank update")
    targets: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        min_length=1,
        description="the UNet's modules that get an update (attention projections by default)",
    )
    cond_dropout: float = Field(
        0.1, ge=0.0, le=1.0, description="share of captions replaced by the empty condition (for guidance)"
    )
    sample_steps: int = Field(20, ge=1, description="denoising steps for the sample grid")


def base_folder(base: str | None) -> Path:
    """The Shapes diffusion folder ``base`` names: a trained folder, or None / "diffusion" for the shipped one."""
    from . import ShapesDiffusion

    if base in (None, "diffusion"):
        return ShapesDiffusion.default_weights
    folder = Path(base)
    if not (folder / "config.json").is_file():
        raise InputError(
            f"--base {base!r} is neither 'diffusion' nor a folder `loom train diffusion` wrote (no config.json there)"
        )
    return folder


class LoraTrainer(Trainer):
    family = "lora"
    Options = LoraOptions

    def __init__(self, options: LoraOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        from peft import LoraConfig

        self.base = base_folder(options.base)
        self.model = ShapesDiffusionModel.from_folder(self.base).requires_grad_(False)
        self.model.unet.train()
        lora = LoraConfig(r=options.rank, lora_alpha=options.rank, target_modules=list(options.targets))
        try:
            self.model.unet.add_adapter(lora, adapter_name=_TRAINING)
        except ValueError as err:
            raise InputError(f"targets {options.targets}: {str(err).splitlines()[0]}") from None
        self.params = [p for p in self.model.unet.parameters() if p.requires_grad]
        self.schedule = noise_schedule(self.model.cfg)
        self.opt = torch.optim.AdamW(self.params, lr=options.lr, weight_decay=0.0)

    def step(self, batch, progress: float) -> dict[str, float]:
        o = self.options
        lr = warmup_cosine(o.lr, progress, floor=0.1)
        loss = denoising_loss(self.model, self.schedule, batch, self.generator, o.cond_dropout)
        update(self.opt, self.params, loss, lr)
        return {"loss": loss.item(), "lr": lr}

    def lora_weights(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors in the diffusers layout (``unet.`` + peft's module names)."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.model.unet, adapter_name=_TRAINING)
        return {f"unet.{k}": v.detach().contiguous().clone() for k, v in state.items()}

    def state(self) -> dict:
        return {"lora": self.lora_weights(), "opt": self.opt.state_dict()}

    def load_state(self, state: dict) -> None:
        from peft import set_peft_model_state_dict

        weights = {k.removeprefix("unet."): v for k, v in state["lora"].items()}
        set_peft_model_state_dict(self.model.unet, weights, adapter_name=_TRAINING)
        self.opt.load_state_dict(state["opt"])

    def export(self, folder: Path, training: dict) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / ADAPTER_NAME) as tmp:
            save_file(self.lora_weights(), str(tmp), metadata={"format": "pt"})
        o = self.options
        # the shipped model by its name, so that the folder says the same on every machine
        base = "diffusion" if o.base in (None, "diffusion") else str(self.base)
        adapter = {"base": base, "base_family": "diffusion", "rank": o.rank, "targets": list(o.targets)}
        write_json_atomic(folder / "config.json", {"family": self.family, "adapter": adapter, "training": training})

    def sample(self, tokens, mask, pooled, generators):
        self.model.unet.eval()
        try:
            return self.model.generate(tokens, mask, pooled, generators, steps=self.options.sample_steps)
        finally:
            self.model.unet.train()
