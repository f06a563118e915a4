"""The decoder-adapter prototype behind docs/adapters.md ("A concept the autoencoder never saw").

    python bench/concept_decoder_prototype.py STEPS     # 0: the shipped autoencoder as it is

Trains a LoRA (rank 8) of the Shapes diffusion model's autoencoder decoder for STEPS steps on the 64
star images of ``ConceptDataset("star", seed=0)``, then prints how often ShapesEval reads 40 encoded
and decoded ground-truth renders right (stars, and the world's own shapes), and the whole-prompt rate
of 50 star and 50 templated prompts drawn with the UNet LoRA in runs/lora-star plus this decoder
LoRA. With STEPS 0 the decoder LoRA is untrained (its lora_B is zero): the reconstruction rates are
the shipped autoencoder's.
"""

import sys
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

from loom.core import Text
from loom.evaluation import shapes_prompts
from loom.plugins.diffusion import ShapesDiffusion
from loom.plugins.diffusion.shapes import ShapesDiffusionModel
from loom.plugins.shapes.evaluate import ShapesEval
from loom.plugins.shapes.world import ConceptDataset, ShapesDataset, sample_concept_prompts
from loom.plugins.text_encoder import TextEncoder

torch.manual_seed(0)
STEPS = int(sys.argv[1])
cfg = LoraConfig(r=8, lora_alpha=8, target_modules=["conv1", "conv2", "conv_in", "conv_out", "conv"])
m = ShapesDiffusionModel.from_folder(ShapesDiffusion.default_weights).eval().requires_grad_(False)
dec = m.vae.decoder
inject_adapter_in_model(cfg, dec, adapter_name="d")
params = [p for n, p in dec.named_parameters() if "lora_" in n]
for p in params:
    p.requires_grad_(True)
ds = ConceptDataset("star", seed=0)
items = [ds.item(i) for i in range(64)]
x = torch.tensor(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255
opt = torch.optim.AdamW(params, lr=1e-3)
with torch.no_grad():
    lat = m.vae.encode(x * 2 - 1).latent_dist.mean
t = time.time()
for step in range(STEPS):
    lr = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / STEPS)))
    for g in opt.param_groups:
        g["lr"] = lr
    idx = torch.randint(0, 64, (16,))
    loss = torch.nn.functional.mse_loss(m.vae.decode(lat[idx]).sample, x[idx] * 2 - 1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0:
        print(step, loss.item(), round(time.time() - t), flush=True)
state = get_peft_model_state_dict(dec, adapter_name="d")
save_file({k: v.contiguous() for k, v in state.items()}, "runs/decoder-lora.safetensors")
ev = ShapesEval()


def recon(ds):
    ti = [ds.item(i) for i in range(40)]
    xt = torch.tensor(np.stack([it.image for it in ti])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        y = m.unfold(m.fold(xt))
    y = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return np.mean([ev.evaluate(y[i], ti[i].caption).correct for i in range(40)])


print(
    "recon star", recon(ConceptDataset("star", seed=5, everyday=False)), "old", recon(ShapesDataset(seed=5)), flush=True
)

enc = TextEncoder().load()
step = ShapesDiffusion(adapters=[{"path": "runs/lora-star", "scale": 1.0}]).load()
step.model.vae.decoder = dec

for name, prompts in (
    ("star", [c for c, _ in sample_concept_prompts(50, "star", 1234, "templated")]),
    ("old", [c for c, _ in shapes_prompts(50, 1234, "templated")]),
):
    out = []
    for i in range(0, 50, 25):
        e = enc(Text(prompts[i : i + 25]), seed=0)
        out.append(step(e, seed=list(range(i, i + 25))).to_numpy())
    imgs = np.concatenate(out)
    print("generated", name, np.mean([ev.evaluate(imgs[i], prompts[i]).correct for i in range(50)]), flush=True)
