"""Can an AutoencoderKL of a given shape carry Shapes' objects? Overfit it on 8 real images.

    .venv/bin/python bench/diffusion_autoencoder.py WIDTHS LATENT_CHANNELS LR [STEPS]
    .venv/bin/python bench/diffusion_autoencoder.py 16,32,64,64 16 3e-4     # 8×8×16 latents
    .venv/bin/python bench/diffusion_autoencoder.py 16,32,64 8 3e-4         # 16×16×8 (the default)

Trains the Shapes diffusion family's autoencoder (``loom.plugins.diffusion.shapes.build_autoencoder``,
seed 0, L1 on posterior means as the trainer does) on the same 8 images (dataset seed 99) and
prints every 50 steps the L1 over all pixels and over the pixels that differ from the image's
corner colour (the objects). Flat backgrounds are learnt first; an autoencoder that cannot bring
the object pixels down here cannot carry them in training either.
"""

import sys

import torch

from loom.plugins.diffusion.shapes import build_autoencoder
from loom.plugins.shapes import ShapesDataset

widths, latent, lr = [int(c) for c in sys.argv[1].split(",")], int(sys.argv[2]), float(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 300
x, _ = ShapesDataset(seed=99).arrays(0, 8)
x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 * 2 - 1
objects = (x - x[:, :, :1, :1]).abs().amax(1) > 0.1
torch.manual_seed(0)
ae = build_autoencoder({"block_out_channels": widths, "latent_channels": latent})
opt = torch.optim.Adam(ae.parameters(), lr)
for step in range(1, steps + 1):
    error = (ae.decode(ae.encode(x).latent_dist.mode()).sample - x).abs()
    loss = error.mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0:
        print(f"step {step}: L1 {loss.item():.4f}, on object pixels {error.mean(1)[objects].mean().item():.4f}", flush=True)
