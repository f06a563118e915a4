"""The encoder + decoder adapter prototype behind docs/adapters.md ("A concept the autoencoder never saw").

    python bench/concept_autoencoder_prototype.py STEPS CONCEPT [RANK] [LOSS]    # e.g. 300 star 8 edge

A decoder-only LoRA cannot make a star's latents differ from a pentagon's. This trains a LoRA (rank RANK, default
8) on both the encoder and the decoder of the shipped Shapes diffusion model's autoencoder, for STEPS steps of 8
images of CONCEPT (``ConceptDataset(CONCEPT, seed=0)``, 64 of them) plus 8 fresh images of the world (so that the
old shapes keep their reconstruction), then prints how often ShapesEval reads 40 encoded and decoded ground-truth
renders right: the concept's (``seed=5``) and the world's. Writes the LoRA to
/tmp/proto/ae-CONCEPT-STEPS-RANK-LOSS.safetensors.
LOSS is ``mse`` (the default, plain pixel MSE) or ``edge``: the L1 weighted up near edges that trained the
autoencoder itself (``edge_weights(x, 20)``), under which a star's points are not a rounding error.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

from loom.plugins.common.nn import edge_weights
from loom.plugins.diffusion import ShapesDiffusion
from loom.plugins.diffusion.shapes import ShapesDiffusionModel
from loom.plugins.shapes.evaluate import ShapesEval
from loom.plugins.shapes.world import ConceptDataset, ShapesDataset

torch.manual_seed(0)
STEPS = int(sys.argv[1])
CONCEPT = sys.argv[2]
RANK = int(sys.argv[3]) if len(sys.argv) > 3 else 8
LOSS = sys.argv[4] if len(sys.argv) > 4 else "mse"
T = ["conv1", "conv2", "conv_in", "conv_out", "conv"]
m = ShapesDiffusionModel.from_folder(ShapesDiffusion.default_weights).eval().requires_grad_(False)
for part in (m.vae.encoder, m.vae.decoder):
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=T), part, adapter_name="d")
params = [p for n, p in m.vae.named_parameters() if "lora_" in n]
for p in params:
    p.requires_grad_(True)
print("params", sum(p.numel() for p in params))


def arr(items):
    return torch.tensor(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255


ds = ConceptDataset(CONCEPT, seed=0)
x = arr([ds.item(i) for i in range(64)])
old = ShapesDataset(seed=77)
opt = torch.optim.AdamW(params, lr=1e-3)


def recon_loss(xb):
    d = m.vae.encode(xb * 2 - 1).latent_dist.mean
    y, target = m.vae.decode(d).sample, xb * 2 - 1
    if LOSS == "edge":
        return ((y - target).abs() * edge_weights(target, 20.0)).mean()
    return torch.nn.functional.mse_loss(y, target)


t = time.time()
for step in range(STEPS):
    lr = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / STEPS)))
    for g in opt.param_groups:
        g["lr"] = lr
    idx = torch.randint(0, 64, (8,))
    xo = arr([old.item(step * 8 + j) for j in range(8)])
    loss = recon_loss(x[idx]) + recon_loss(xo)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 25 == 0:
        print(step, round(loss.item(), 5), round(time.time() - t), flush=True)
Path("/tmp/proto").mkdir(exist_ok=True)
save_file(
    {
        f"{p}.{k}": v.contiguous()
        for p, mod in (("encoder", m.vae.encoder), ("decoder", m.vae.decoder))
        for k, v in get_peft_model_state_dict(mod, adapter_name="d").items()
    },
    f"/tmp/proto/ae-{CONCEPT}-{STEPS}-{RANK}-{LOSS}.safetensors",
)
ev = ShapesEval()


def recon(ds):
    ti = [ds.item(i) for i in range(40)]
    with torch.no_grad():
        y = m.unfold(m.fold(arr(ti)))
    y = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return np.mean([ev.evaluate(y[i], ti[i].caption).correct for i in range(40)])


m.eval()
print(
    "recon",
    CONCEPT,
    recon(ConceptDataset(CONCEPT, seed=5, everyday=False)),
    "old",
    recon(ShapesDataset(seed=5)),
    round(time.time() - t),
    flush=True,
)
