"""Training Loom's shipped models on data Loom generates itself."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

#: Captions are encoded once per training run, padded to this many tokens (they are far shorter).
CAPTION_TOKENS = 32


def encode_captions(captions: list[str], batch_size: int = 128, progress: bool = True, cache: "Path | None" = None):
    """(tokens fp16, mask, pooled) for ``captions`` through the default text encoder.

    With ``cache`` (a folder), the encodings are kept in a safetensors file named by a hash of the
    captions, so a second run on the same scenes skips the minutes of encoding."""
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    path = None
    if cache is not None:
        digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]
        path = Path(cache) / f"captions-{digest}.safetensors"
        if path.is_file():
            t = load_file(str(path))
            return t["tokens"], t["mask"], t["pooled"]

    from loom.plugins.text_encoder import TextEncoder
    from loom.core import Text

    encoder = TextEncoder(max_length=CAPTION_TOKENS).load()
    tokens, masks, pooled = [], [], []
    with tqdm(total=len(captions), desc="encoding captions", unit="caption", disable=not progress, delay=1.0) as bar:
        for start in range(0, len(captions), batch_size):
            emb = encoder.run(Text(captions[start : start + batch_size]), [])
            tokens.append(emb.tokens.half())
            masks.append(emb.mask)
            pooled.append(emb.pooled)
            bar.update(len(emb))
    result = torch.cat(tokens), torch.cat(masks), torch.cat(pooled)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(dict(zip(("tokens", "mask", "pooled"), result)), str(path))
    return result


def train_vae(
    out: "str | Path" = "loom-vae",
    steps: int = 3000,
    seed: int = 0,
    batch_size: int = 64,
    pool: int = 24000,
    lr: float = 1e-3,
    progress: bool = True,
    command: str | None = None,
    cache: "str | Path | None" = None,
) -> Path:
    """Train the conditional VAE on Shapes and write ``config.json`` + ``model.safetensors`` to ``out``.

    ``pool`` scenes are drawn and captioned once (their captions encoded once); every step
    re-renders its scenes with fresh jitter. Ctrl-C saves the model trained so far.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from loom.plugins.shapes import caption, render, sample_scene
    from loom.plugins.vae.model import ConditionalVAE, VAEConfig, save

    started = time.time()
    # Subnormal floats appear as the images' flat regions saturate and make CPU steps ~4× slower.
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(pool)]
    captions = [caption(s, rng) for s in scenes]
    tokens, mask, pooled = encode_captions(captions, progress=progress, cache=cache)

    cfg = VAEConfig()
    model = ConditionalVAE(cfg).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    done = 0
    try:
        with tqdm(range(steps), desc="training vae", unit="step", disable=not progress) as bar:
            for step in bar:
                idx = torch.randint(pool, (batch_size,), generator=gen)
                images = np.stack([render(scenes[i], cfg.image_size, rng) for i in idx.tolist()])
                x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous(memory_format=torch.channels_last)
                loss, parts = model.loss(x, tokens[idx].float(), mask[idx], pooled[idx], generator=gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
                done = step + 1
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.1f}", **{k: f"{v:.1f}" for k, v in parts.items()})
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {done}: saving the model trained so far", file=sys.stderr)
    cfg.training = {
        "command": command,
        "seed": seed,
        "steps": done,
        "batch_size": batch_size,
        "pool": pool,
        "lr": lr,
        # mean loss over the first and the last stretch of steps (up to 50 each)
        "first_loss": round(float(np.mean(losses[: max(1, min(50, len(losses) // 3))])), 3) if losses else None,
        "final_loss": round(float(np.mean(losses[-max(1, min(50, len(losses) // 3)) :])), 3) if losses else None,
        "minutes": round((time.time() - started) / 60, 2),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    model.cfg = cfg
    return save(model.eval().to(memory_format=torch.contiguous_format), out)
