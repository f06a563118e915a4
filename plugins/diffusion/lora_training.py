"""Training a LoRA adapter for the Shapes diffusion model: ``loom train lora --base diffusion``.

The base model (the shipped one, or a folder ``loom train diffusion`` wrote) is frozen; peft adds
low-rank matrices to its UNet's attention projections (``targets``), and only those train, on the
same denoising loss as the model itself (:func:`.training.denoising_loss`, without an EMA: a
few hundred steps on a few dozen images). With ``decoder_targets`` the autoencoder's decoder gets
low-rank updates too, trained to redraw the batch's images from their latents: the autoencoder was
trained on the world's shapes only, and a new shape (a star) comes back from it as a blob that no
UNet adapter can sharpen. The output folder is an adapter:

    adapter.safetensors   the LoRA weights in the diffusers layout (``unet.<module>.lora_A/B.weight``),
                          and ``decoder.<module>.lora_A/B.weight`` with ``decoder_targets``: what
                          ``adapters: [{path: FOLDER}]`` loads
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
    decoder_targets: list[str] = Field(
        default_factory=list,
        description="the autoencoder decoder's modules that get an update too, e.g. [conv1, conv2, conv_in, conv_out, "
        "conv] (for a concept the autoencoder never saw); empty: the UNet only",
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
        self.decoder = self._decoder_adapter(options) if options.decoder_targets else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.schedule = noise_schedule(self.model.cfg)
        self.opt = torch.optim.AdamW(self.params, lr=options.lr, weight_decay=0.0)

    def _decoder_adapter(self, options: LoraOptions):
        """The autoencoder's decoder with a trainable LoRA on ``decoder_targets``."""
        from peft import LoraConfig, inject_adapter_in_model

        if self.model.vae is None:
            raise InputError("decoder_targets: this base model has no autoencoder (it diffuses pixels)")
        decoder = self.model.vae.decoder
        lora = LoraConfig(r=options.rank, lora_alpha=options.rank, target_modules=list(options.decoder_targets))
        try:
            inject_adapter_in_model(lora, decoder, adapter_name=_TRAINING)
        except ValueError as err:
            raise InputError(f"decoder_targets {options.decoder_targets}: {str(err).splitlines()[0]}") from None
        decoder.train()
        return decoder

    def step(self, batch, progress: float) -> dict[str, float]:
        o = self.options
        lr = warmup_cosine(o.lr, progress, floor=0.1)
        loss = denoising_loss(self.model, self.schedule, batch, self.generator, o.cond_dropout)
        parts = {"loss": loss.item()}
        if self.decoder is not None:
            redraw = self._redraw_loss(batch.images)
            parts["redraw"] = redraw.item()
            loss = loss + redraw
        update(self.opt, self.params, loss, lr)
        return {**parts, "lr": lr}

    def _redraw_loss(self, images: torch.Tensor) -> torch.Tensor:
        """How far the decoder's drawing of the images' latents is from the images (MSE in [-1, 1])."""
        vae = self.model.vae
        with torch.no_grad():
            latents = vae.encode(images * 2 - 1).latent_dist.mean
        return torch.nn.functional.mse_loss(vae.decode(latents).sample, images * 2 - 1)

    def lora_weights(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors in the diffusers layout (``unet.`` + peft's module names), and the decoder's
        (``decoder.`` + peft's module names) when it trains one."""
        from peft import get_peft_model_state_dict

        parts = {"unet": self.model.unet, "decoder": self.decoder}
        return {
            f"{part}.{k}": v.detach().contiguous().clone()
            for part, module in parts.items()
            if module is not None
            for k, v in get_peft_model_state_dict(module, adapter_name=_TRAINING).items()
        }

    def state(self) -> dict:
        return {"lora": self.lora_weights(), "opt": self.opt.state_dict()}

    def load_state(self, state: dict) -> None:
        from peft import set_peft_model_state_dict

        for part, module in (("unet", self.model.unet), ("decoder", self.decoder)):
            weights = {k[len(part) + 1 :]: v for k, v in state["lora"].items() if k.startswith(f"{part}.")}
            if module is not None:
                set_peft_model_state_dict(module, weights, adapter_name=_TRAINING)
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
        if o.decoder_targets:
            adapter["decoder_targets"] = list(o.decoder_targets)
        write_json_atomic(folder / "config.json", {"family": self.family, "adapter": adapter, "training": training})

    def sample(self, tokens, mask, pooled, generators):
        trained = [m for m in (self.model.unet, self.decoder) if m is not None]
        for module in trained:
            module.eval()
        try:
            return self.model.generate(tokens, mask, pooled, generators, steps=self.options.sample_steps)
        finally:
            for module in trained:
                module.train()
