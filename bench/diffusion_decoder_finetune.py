"""Does more decoder training lift a latent Shapes diffusion model's autoencoder ceiling?

    .venv/bin/python bench/diffusion_decoder_finetune.py FOLDER [STEPS] [LR] [EDGE_WEIGHT]

Trains only the autoencoder's decoder (the encoder frozen, so the latents the UNet learnt stay
the same) on Shapes images (dataset seed 0, batch 32, the training's edge-weighted L1), and
prints the ceiling (``autoencoder_ceiling`` of ``bench/diffusion_denoise.py``: ShapesEval on the
reconstructions of 200 real images) before and every 300 steps. Nothing is written.

Measured on the shipped model (``plugins/diffusion/weights``, STEPS 1500, LR 1e-4, EDGE_WEIGHT 20,
one thread): 0.91 before, 0.91 at 300 steps, 0.92 at 600 and 900, while the weighted L1 fell from
0.12 to about 0.10: more decoder training is not the way to lift the ceiling (shape, the only
attribute below 1.0, stays there).
"""

import sys
import time

import torch
from diffusion_denoise import autoencoder_ceiling  # bench/, beside this script

from loom.plugins.common.nn import edge_weights
from loom.plugins.diffusion import shapes
from loom.plugins.shapes import ShapesDataset

folder = sys.argv[1]
steps, lr, edge_weight = (
    int(sys.argv[2]) if len(sys.argv) > 2 else 1500,
    float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4,
    float(sys.argv[4]) if len(sys.argv) > 4 else 20.0,
)
m = shapes.ShapesDiffusionModel.from_folder(folder)
vae = m.vae
if vae is None:
    sys.exit(f"{folder} is a folded-pixel model: it has no autoencoder")


def ceiling() -> tuple[float, dict]:
    vae.eval()
    r = autoencoder_ceiling(m).to_dict()
    return r["whole_prompt"], r["per_attribute"]


print("before", ceiling(), flush=True)
vae.requires_grad_(False)
params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
for p in params:
    p.requires_grad_(True)
opt = torch.optim.Adam(params, lr=lr)
data = ShapesDataset(seed=0)
started = time.time()
for step in range(1, steps + 1):
    x, _ = data.arrays((step * 32) % 20000, 32)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    vae.decoder.train()
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    loss = ((vae.decode(z).sample - x).abs() * edge_weights(x, edge_weight)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0:
        print(step, round(loss.item(), 4), f"{(time.time() - started) / step:.2f} s/step", flush=True)
    if step % 300 == 0:
        print("step", step, ceiling(), flush=True)
