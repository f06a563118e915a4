"""Where a distilled Shapes diffusion image's time goes: warm per-image milliseconds at batch 32 of the
text encoder, one UNet call, the autoencoder's decoder, and the whole 1- and 2-step sampling (the
shipped ``diffusion-fast`` weights, plain-torch networks), medians of 5 rounds.

    .venv/bin/python bench/diffusion_fast_breakdown.py
"""

import statistics
import time

import torch

from loom.core import Text, get_registry
from loom.plugins.diffusion import FastShapesDiffusion
from loom.plugins.diffusion.shapes import PlainShapesDiffusionModel

te = get_registry().get("text-encoder").cls()
te.setup()
m = PlainShapesDiffusionModel.from_folder(FastShapesDiffusion.default_weights)
prompts = Text([f"a small red circle in the top left on a blue background number {i}" for i in range(32)])


def t(f, n=5):
    f()
    xs = []
    for _ in range(n):
        s = time.perf_counter()
        f()
        xs.append(time.perf_counter() - s)
    return statistics.median(xs) / 32 * 1000


emb = te.run(prompts, [])
x = torch.randn(32, 8, 16, 16)
tt = torch.full((32,), 999)
with torch.no_grad():
    print("text encoder ms/image", round(t(lambda: te.run(prompts, [])), 2))
    print("unet call ms/image", round(t(lambda: m(x, tt, emb.tokens, emb.mask, emb.pooled)), 2))
    print("decode ms/image", round(t(lambda: m.unfold(x)), 2))
    for s in (1, 2):
        print(
            s,
            "steps generate ms/image",
            round(
                t(
                    lambda: m.generate(
                        emb.tokens,
                        emb.mask,
                        emb.pooled,
                        [torch.Generator().manual_seed(i) for i in range(32)],
                        steps=s,
                        scheduler="ddim-trailing",
                        guidance_scale=1.0,
                    )
                ),
                2,
            ),
        )
    ml = m.to(memory_format=torch.channels_last)
    print(
        "channels_last decode ms/image", round(t(lambda: ml.unfold(x.contiguous(memory_format=torch.channels_last))), 2)
    )
    print(
        "channels_last unet ms/image",
        round(t(lambda: ml(x.contiguous(memory_format=torch.channels_last), tt, emb.tokens, emb.mask, emb.pooled)), 2),
    )
