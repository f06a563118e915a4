"""Can an AutoencoderKL of a given shape and loss carry Shapes' objects?

    .venv/bin/python bench/diffusion_autoencoder.py WIDTHS LATENT_CHANNELS LR [--images N] [--edge-weight W] [--steps S]

    # overfit 8 images: 8×8×16 latents against 16×16×8 (the default)
    .venv/bin/python bench/diffusion_autoencoder.py 16,32,64,64 16 3e-4
    .venv/bin/python bench/diffusion_autoencoder.py 16,32,64 8 3e-4
    # learn from 4,000 images, batches of 32: plain L1 against the trainer's edge-weighted L1
    .venv/bin/python bench/diffusion_autoencoder.py 16,32,64 8 3e-4 --images 4000 --edge-weight 0 --steps 300
    .venv/bin/python bench/diffusion_autoencoder.py 16,32,64 8 3e-4 --images 4000 --edge-weight 20 --steps 300

Trains the Shapes diffusion family's autoencoder (``build_autoencoder``, seed 0, L1 on posterior
means, pixels near an edge weighted 1 + W as the trainer does) and prints the L1 over all pixels
and over the object pixels (those that differ from the image's corner colour). With ``--images 8``
it trains on 8 real images (dataset seed 99) and reports on them every 50 steps; with more, it
draws batches of 32 from that many (dataset seed 1) and reports on 64 unseen images (seed 99)
every 100 steps. Flat backgrounds are learnt first: the object pixels are the ones to watch.
"""

import argparse

import torch

from loom.plugins.common.nn import edge_weights
from loom.plugins.diffusion.shapes import build_autoencoder
from loom.plugins.shapes import ShapesDataset

parser = argparse.ArgumentParser()
parser.add_argument("widths")
parser.add_argument("latent_channels", type=int)
parser.add_argument("lr", type=float)
parser.add_argument("--images", type=int, default=8)
parser.add_argument("--edge-weight", type=float, default=0.0)
parser.add_argument("--steps", type=int, default=300)
args = parser.parse_args()


def tensor(arrays):
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255 * 2 - 1


held_out = tensor(ShapesDataset(seed=99).arrays(0, 8 if args.images == 8 else 64)[0])
pool = held_out if args.images == 8 else tensor(ShapesDataset(seed=1).arrays(0, args.images)[0])
objects = (held_out - held_out[:, :, :1, :1]).abs().amax(1) > 0.1
every = 50 if args.images == 8 else 100
torch.manual_seed(0)
draw = torch.Generator().manual_seed(0)
ae = build_autoencoder(
    {"block_out_channels": [int(c) for c in args.widths.split(",")], "latent_channels": args.latent_channels}
)
opt = torch.optim.Adam(ae.parameters(), args.lr)
for step in range(1, args.steps + 1):
    x = pool if args.images == 8 else pool[torch.randint(args.images, (32,), generator=draw)]
    error = (ae.decode(ae.encode(x).latent_dist.mode()).sample - x).abs()
    loss = (error * edge_weights(x, args.edge_weight)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % every == 0:
        if args.images != 8:
            with torch.no_grad():
                error = (ae.decode(ae.encode(held_out).latent_dist.mode()).sample - held_out).abs()
        print(
            f"step {step}: L1 {error.mean().item():.4f}, on object pixels {error.mean(1)[objects].mean().item():.4f}",
            flush=True,
        )
