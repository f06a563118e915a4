"""How well a Shapes diffusion model denoises real images at a few noise levels, against a trivial
denoiser (the mean of each 4×4 patch of the folded pixels).

    .venv/bin/python bench/diffusion_denoise.py FOLDER

Prints, per timestep t, the MSE of the model's x0 estimate (from its v prediction), of the noisy
input rescaled, and (for t = 200, 500, 800) of the patch-mean denoiser, on 8 dataset images.
"""

import sys

import torch

from loom.core import Pipeline
from loom.plugins.diffusion import shapes
from loom.plugins.shapes import ShapesDataset

m = shapes.load(sys.argv[1])
sched = shapes.noise_schedule(m.cfg)
x, caps = ShapesDataset(seed=5).arrays(0, 8)
x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
e = Pipeline.from_spec({"steps": [{"component": "text-encoder"}]}).run(caps, seed=0, progress=False).output
x0 = m.fold(x)
g = torch.Generator().manual_seed(0)
ac = sched.alphas_cumprod
for t in [10, 50, 200, 500, 800, 990]:
    noise = torch.randn(x0.shape, generator=g)
    tt = torch.full((8,), t)
    xt = sched.add_noise(x0, noise, tt)
    with torch.no_grad():
        v = m(xt, tt, e.tokens, e.mask, e.pooled)
    a, s = ac[t].sqrt(), (1 - ac[t]).sqrt()
    print(t, "model x0 mse", ((a * xt - s * v - x0) ** 2).mean().item(), "input mse", ((xt / a - x0) ** 2).mean().item())
for t in [200, 500, 800]:
    noise = torch.randn(x0.shape, generator=g)
    xt = sched.add_noise(x0, noise, torch.full((8,), t))
    y = (xt / ac[t].sqrt()).view(8, 3, 16, 16, 16).mean(2, keepdim=True).expand(8, 3, 16, 16, 16).reshape(x0.shape)
    print(t, "patch-mean mse", ((y - x0) ** 2).mean().item())
