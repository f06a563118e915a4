"""How well a Shapes diffusion model denoises real images at a few noise levels, and (for a latent
model) what its autoencoder alone can reach.

    .venv/bin/python bench/diffusion_denoise.py FOLDER

Prints, per timestep t, the MSE of the model's x0 estimate (from its v prediction) and of the
noisy input rescaled, on 8 dataset images, in the space the UNet diffuses. For a folded-pixel
model it adds, for t = 200, 500, 800, a trivial denoiser (the mean of each 4×4 patch). For a
latent model it adds the autoencoder's ceiling: ShapesEval on its reconstructions of 200 real
images (dataset seed 99), which no sampling can beat, and the objects whose shape it misread.
"""

import collections
import sys

import numpy as np
import torch

from loom.chains import Pipeline
from loom.plugins.diffusion import shapes
from loom.plugins.shapes import ShapesDataset, ShapesEval, parse_caption

#: The real images (and their captions) the autoencoder's ceiling is measured on.
CEILING_IMAGES, CEILING_PROMPTS = ShapesDataset(seed=99).arrays(0, 200)


def autoencoder_ceiling(m):
    """ShapesEval report on a latent model's reconstructions of the 200 ceiling images."""
    with torch.no_grad():
        rec = torch.cat(
            [
                m.unfold(m.fold(torch.from_numpy(CEILING_IMAGES[i : i + 50]).permute(0, 3, 1, 2).float() / 255))
                for i in range(0, 200, 50)
            ]
        ).clamp(0, 1)
    imgs = (rec.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return ShapesEval().evaluate_many(list(imgs), CEILING_PROMPTS)


def main() -> None:
    m = shapes.ShapesDiffusionModel.from_folder(sys.argv[1])
    sched = shapes.noise_schedule(m.cfg)
    x, caps = ShapesDataset(seed=5).arrays(0, 8)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    e = Pipeline.from_spec({"steps": [{"component": "text-encoder"}]}).run(caps, seed=0, progress=False).output
    with torch.no_grad():
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
        print(
            t,
            "model x0 mse",
            ((a * xt - s * v - x0) ** 2).mean().item(),
            "input mse",
            ((xt / a - x0) ** 2).mean().item(),
        )
    if m.vae is None:
        for t in [200, 500, 800]:
            noise = torch.randn(x0.shape, generator=g)
            xt = sched.add_noise(x0, noise, torch.full((8,), t))
            y = (
                (xt / ac[t].sqrt())
                .view(8, 3, 16, 16, 16)
                .mean(2, keepdim=True)
                .expand(8, 3, 16, 16, 16)
                .reshape(x0.shape)
            )
            print(t, "patch-mean mse", ((y - x0) ** 2).mean().item())
    else:
        report = autoencoder_ceiling(m)
        print("autoencoder ceiling (ShapesEval on reconstructions of 200 real images):", report.to_dict())
        # which objects the reconstructions lose: (asked shape, size) -> what was read instead
        misses = collections.Counter()
        for score, caption in zip(report.scores, CEILING_PROMPTS):
            for asked, seen in zip(parse_caption(caption).objects, score.detected[1:]):
                if seen.get("shape") != asked.shape:
                    misses[(asked.shape, asked.size, "read as", seen.get("shape"))] += 1
        print("objects whose shape was misread:", dict(misses.most_common()))


if __name__ == "__main__":
    main()
