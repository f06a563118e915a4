"""Loom's one training workflow, for every generator family (``loom train FAMILY``).

The family supplies a :class:`loom.core.training.Trainer`; this module supplies the rest: data
(Shapes or a captioned folder for an image family; Sounds, as log-mel spectrograms, for a family
whose trainer declares ``modality = "sounds"``), caption encoding (once, cached), the step loop with a progress bar,
checkpoints at intervals and on Ctrl-C, ``--resume``, a sample grid and a loss curve.

An output folder, as training goes::

    config.json, model.safetensors   the generator (``loom generate --generator FOLDER``)
    checkpoint/                      trainer state + RNG state + progress, for --resume
    samples.png, loss.png            fixed prompts and seeds; the loss so far
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from loom.core import InputError
from loom.core.files import atomic_path
from loom.core.training import (
    Trainer,
    TrainingBatch,
    load_state,
    save_state,
    write_json_atomic,
)

#: Captions are padded to this many tokens for training (Shapes captions are far shorter).
CAPTION_TOKENS = 32
CHECKPOINT = "checkpoint"
SNAPSHOTS = "snapshots"


def cache_dir() -> Path:
    """Where encoded captions are kept between runs: ``$LOOM_CACHE`` or ``~/.cache/loom``."""
    return Path(os.environ.get("LOOM_CACHE") or Path.home() / ".cache" / "loom")


def encode_captions(captions: list[str], batch_size: int = 128, progress: bool = True, cache: "Path | None" = None):
    """(tokens fp16, mask, pooled) for ``captions`` through the default text encoder.

    With ``cache`` (a folder), the encodings are kept in a safetensors file named by a hash of the
    captions, so a second run on the same data skips the minutes of encoding."""
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    path = None
    if cache is not None:
        digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]
        path = Path(cache) / f"captions-{CAPTION_TOKENS}-{digest}.safetensors"
        if path.is_file():
            t = load_file(str(path))
            return t["tokens"], t["mask"], t["pooled"]

    from loom.core import Text
    from loom.plugins.text_encoder import TextEncoder

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
        # a temporary name of its own, as two runs started together both write this file
        with atomic_path(path) as tmp:
            save_file(dict(zip(("tokens", "mask", "pooled"), result)), str(tmp))
    return result


def trainer_class(family: str) -> type[Trainer]:
    """The Trainer of the registered generator ``family``, or an error listing the trainable ones."""
    from loom.core import get_registry

    registry = get_registry()
    entry = registry.get(family)
    target = getattr(entry.cls, "trainer", None)
    if target is None:
        trainable = sorted(e.name for e in registry.components("generator") if getattr(e.cls, "trainer", None))
        raise InputError(f"{family!r} cannot be trained: it declares no trainer (trainable: {', '.join(trainable) or 'none'})")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def training_data(family: str, cls: type[Trainer], data: str, pool: int | None, seed: int, progress: bool = False):
    """The dataset ``family`` trains on: Sounds for a sound family, Shapes or a folder for an
    image family; an InputError when the data does not fit the family."""
    from loom.data import FolderData, ShapesData, SoundsData

    if cls.modality == "sounds":
        if data != "sounds":
            raise InputError(f"{family!r} trains on sounds: give --data sounds (got --data {data!r})")
        return SoundsData(cls.shape(), pool=pool or 12000, seed=seed, progress=progress)
    if data == "sounds":
        from loom.core import get_registry

        sound = sorted(
            e.name for e in get_registry().components("generator")
            if getattr(e.cls, "trainer", None) and e.cls.output_type.kind == "Audio"
        )
        raise InputError(
            f"{family!r} trains on images (--data shapes or a folder of captioned images), not sounds; "
            f"train a sound family on --data sounds ({', '.join(sound) or 'none installed'})"
        )
    if data == "shapes":
        return ShapesData(cls.image_size, pool=pool or 24000, seed=seed)
    return FolderData(data, cls.image_size)


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step and save; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(
    family: str,
    data: str = "shapes",
    *,
    steps: int | None = None,
    minutes: float | None = None,
    out: "str | Path | None" = None,
    resume: "str | Path | None" = None,
    init: "str | Path | None" = None,
    seed: int = 0,
    options: dict | None = None,
    pool: int | None = None,
    checkpoint_every: int = 500,
    keep_every: int | None = None,
    progress: bool = True,
    command: str | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> Path:
    """Train ``family`` and return its output folder (a loadable generator).

    ``data``: "shapes" or a folder of captioned images for an image family; "sounds" for a sound
    family (one whose trainer declares ``modality = "sounds"``). ``pool``: how many Shapes scenes
    (default 24,000) or Sounds clips (default 12,000) to draw captions and samples from. Stop after ``steps`` steps, after
    ``minutes`` minutes, whichever first (default 3000 steps). ``resume``: a folder an earlier run
    wrote; it continues there with that run's data, options and seed, up to ``steps`` in total.
    ``init``: a folder an earlier run of the same family wrote; a new run starts from its
    checkpoint (weights, averages and optimiser state) with its own options, data, seed and
    ``steps``, so a model can be fine-tuned with another loss weight or on other data. Options
    that change the architecture are refused. A trained folder without a checkpoint (a shipped
    default) gives only its weights, for families whose trainer has ``load_generator``.
    ``keep_every``: also keep the generator as it was every that many steps, as a loadable
    folder ``snapshots/step-NNNNNN`` (a GAN's quality swings between checkpoints, so the best one
    can be chosen afterwards on validation prompts with ``loom eval snapshots``). A resumed run keeps
    the setting it started with unless given another.
    ``on_step(step, losses)`` is called after every step (tests use it to interrupt).
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    started = time.time()
    # Subnormal floats appear as images' flat regions saturate and make CPU steps ~4× slower.
    torch.set_flush_denormal(True)

    if resume is not None and init is not None:
        raise InputError("--resume continues a run and --init starts a new one from a run; give one of them")
    if resume is not None:
        folder = Path(resume)
        ckpt = _checkpoint_folder(folder)
        progress_record = json.loads((ckpt / "progress.json").read_text())
        if progress_record["family"] != family:
            raise InputError(f"{str(folder)!r} is a {progress_record['family']!r} run; resume it with `loom train {progress_record['family']} --resume {folder}`")
        if out is not None and Path(out).resolve() != folder.resolve():
            raise InputError("--resume continues in the folder it names; leave out --out")
        seed, data, pool = progress_record["seed"], progress_record["data"], progress_record.get("pool", pool)
        options = progress_record["options"]
        steps = steps if steps is not None else progress_record["planned_steps"]
        # a run planned by time keeps its time plan (and so its learning-rate schedule) on resume
        minutes = minutes if minutes is not None else progress_record.get("planned_minutes")
        # the record names the command that started the run, and each that resumed it
        resumed = progress_record.get("resumed", []) + ([command] if command else [])
        command = progress_record.get("command") or command
        init_from = progress_record.get("init_from")
        keep_every = keep_every if keep_every is not None else progress_record.get("keep_every")
    else:
        resumed, init_from = [], None
        if init is not None:
            init_ckpt, init_record = _init_source(Path(init))
            if init_record["family"] != family:
                raise InputError(f"--init {str(init)!r} is a {init_record['family']!r} run, not {family!r}")
        folder = Path(out or f"loom-{family}")
        if (folder / "config.json").exists() or (folder / CHECKPOINT).exists():
            raise InputError(
                f"{str(folder)!r} already holds a trained model; continue it with --resume {folder}, "
                f"or give another --out (nothing there was changed)"
            )
        progress_record = None
    if steps is None and minutes is None:
        steps = 3000

    cls = trainer_class(family)
    try:
        opts = cls.Options.model_validate(options or {})
    except Exception as err:
        raise InputError(f"invalid training options for {family!r}: {err}") from None

    # Data first: bad data fails here, before the output folder is touched.
    dataset = training_data(family, cls, data, pool, seed, progress)
    pool = getattr(dataset, "pool", pool)
    tokens, mask, pooled = encode_captions(dataset.captions, progress=progress, cache=cache_dir())
    sample_text = encode_captions(dataset.sample_prompts(), progress=False)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    trainer = cls(opts, gen)
    rng = np.random.default_rng(seed + 1)
    losses: list[dict] = []
    done, elapsed_before = 0, 0.0
    if progress_record is not None:
        state = load_state(ckpt)
        trainer.load_state(state["trainer"])
        gen.set_state(state["torch_rng"])
        rng.bit_generator.state = progress_record["numpy_rng"]
        losses, done, elapsed_before = progress_record["losses"], progress_record["step"], progress_record["seconds"]
    elif init is not None:
        try:
            if init_ckpt is not None:
                trainer.load_state(load_state(init_ckpt)["trainer"])
            else:
                trainer.load_generator(Path(init))
        except (RuntimeError, KeyError, ValueError) as err:
            first = str(err).strip().splitlines()[0]
            raise InputError(
                f"--init {str(init)!r}: its checkpoint does not fit these options ({first}); "
                f"change only options that keep the architecture (loss weights, lr, ...)"
            ) from None
        trainer.check_init()
        # the commands that made the starting point, so the chain can be rerun
        init_from = {"folder": str(init), **{k: init_record.get(k) for k in ("command", "resumed", "init_from", "seed", "data", "pool", "step")},
                     "minutes": round(init_record.get("seconds", 0) / 60, 2),
                     # and where the start's other parts came from (a diffusion UNet's unet_from)
                     **{k: v for k, v in init_record.items() if k.endswith("_from") and k != "init_from" and v}}
        if init_ckpt is None:
            init_from["weights_only"] = True
    folder.mkdir(parents=True, exist_ok=True)

    def record() -> dict:
        main = main_loss(losses)
        k = max(1, min(50, len(main) // 3))
        return {
            "command": command,
            "resumed": resumed,
            **({"init_from": init_from} if init_from else {}),
            **trainer.origins(),
            "seed": seed,
            "data": dataset.describe(),
            "steps": done,
            "options": opts.model_dump(),
            "first_loss": round(float(np.mean(main[:k])), 4) if main else None,
            "final_loss": round(float(np.mean(main[-k:])), 4) if main else None,
            "minutes": round((elapsed_before + time.time() - started) / 60, 2),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        }

    def checkpoint() -> None:
        tmp = folder / f".{CHECKPOINT}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_state({"trainer": trainer.state(), "torch_rng": gen.get_state()}, tmp)
        write_json_atomic(tmp / "progress.json", {
            "family": family, "command": command, "resumed": resumed, "init_from": init_from, **trainer.origins(), "seed": seed, "data": data, "pool": pool, "options": opts.model_dump(),
            "keep_every": keep_every,
            "planned_steps": steps, "planned_minutes": minutes, "step": done, "seconds": elapsed_before + time.time() - started,
            "numpy_rng": rng.bit_generator.state, "losses": losses,
        })
        _swap_in(tmp, folder / CHECKPOINT)
        trainer.export(folder, record())
        _write_samples(trainer, sample_text, folder / "samples.png")
        _write_loss_curve(losses, folder / "loss.png", family)

    def fraction() -> float:
        parts = []
        if steps:
            parts.append(done / steps)
        if minutes:
            parts.append((elapsed_before + time.time() - started) / (minutes * 60))
        return min(1.0, max(parts))

    total = steps if steps else None
    with _StopFlag() as stop, tqdm(total=total, initial=done, desc=f"training {family}", unit="step", disable=not progress) as bar:
        while fraction() < 1.0 and not stop.requested:
            idx = torch.randint(len(dataset), (opts.batch_size,), generator=gen)
            images = dataset.images(idx.tolist(), rng)
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()
            batch = TrainingBatch(x, tokens[idx].float(), mask[idx], pooled[idx], [dataset.captions[i] for i in idx.tolist()])
            parts = trainer.step(batch, fraction())
            losses.append({k: round(float(v), 5) for k, v in parts.items()})
            done += 1
            bar.update(1)
            if done % 10 == 0:
                recent = losses[-50:]
                bar.set_postfix({k: f"{np.mean([e[k] for e in recent if k in e]):.3g}" for k in parts})
            if on_step is not None:
                on_step(done, parts)
            if keep_every and done % keep_every == 0:
                snapshot = folder / SNAPSHOTS / f"step-{done:06d}"
                snapshot.mkdir(parents=True, exist_ok=True)
                trainer.export(snapshot, record())
            if done % checkpoint_every == 0:
                checkpoint()
        checkpoint()
    if stop.requested:
        print(f"stopped at step {done}; continue with: loom train {family} --resume {folder}", file=sys.stderr)
    return folder


def main_loss(losses: list[dict]) -> list[float]:
    """The loss a run is summarised and plotted by: the first key of the latest step, over the
    steps that report it (a family that trains in phases reports other keys earlier)."""
    if not losses:
        return []
    key = next(iter(losses[-1]))
    return [e[key] for e in losses if key in e]


def _init_source(folder: Path) -> "tuple[Path | None, dict]":
    """What ``--init FOLDER`` starts from: a run's checkpoint (weights and optimiser state) when the
    folder has one, else the trained generator in it (``config.json`` + weights, as shipped or
    copied without ``checkpoint/``), and the record of how that was made, in the checkpoint's keys."""
    if (folder / CHECKPOINT).exists() or (folder / f".{CHECKPOINT}.old").exists():
        ckpt = _checkpoint_folder(folder)
        return ckpt, json.loads((ckpt / "progress.json").read_text())
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(f"--init {str(folder)!r} holds neither a training checkpoint ({CHECKPOINT}/) nor a trained generator "
                         "(config.json); give a folder `loom train` wrote")
    raw = json.loads(config.read_text())
    training = raw.get("training") or {}
    return None, {"family": raw.get("family"), **training, "step": training.get("steps"),
                  "seconds": 60 * (training.get("minutes") or 0)}


def _checkpoint_folder(folder: Path) -> Path:
    ckpt = folder / CHECKPOINT
    if not (ckpt / "progress.json").is_file():
        old = folder / f".{CHECKPOINT}.old"  # a crash between the two renames in _swap_in
        if (old / "progress.json").is_file():
            return old
        raise InputError(f"{str(folder)!r} holds no training checkpoint to resume ({CHECKPOINT}/progress.json)")
    return ckpt


def _swap_in(new: Path, target: Path) -> None:
    """Replace folder ``target`` by ``new`` so that a complete checkpoint exists at every moment."""
    old = target.with_name(f".{CHECKPOINT}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _write_samples(trainer: Trainer, text, path: Path) -> None:
    import numpy as np
    import torch

    from loom.core.files import atomic_path

    tokens, mask, pooled = text
    gens = [torch.Generator().manual_seed(i) for i in range(len(tokens))]
    with torch.no_grad():
        images = trainer.sample(tokens.float(), mask, pooled, gens)
    if images.shape[1] == 1:
        # one channel: a log-mel spectrogram, drawn as a spectrogram is read (low frequencies at the bottom)
        images = images.flip(2).expand(-1, 3, -1, -1)
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    n, h, w, _ = pixels.shape
    cols = min(4, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, cols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = img
    from PIL import Image

    scale = max(1, 128 // h)
    im = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _write_loss_curve(losses: list[dict], path: Path, title: str) -> None:
    """A plain line plot of the first loss (log scale, smoothed), drawn with PIL."""
    import numpy as np
    from PIL import Image, ImageDraw

    from loom.core.files import atomic_path

    if not losses:
        return
    name = next(iter(losses[-1]))
    y = np.array(main_loss(losses), dtype=float)
    steps_shown = len(y)
    k = max(1, len(y) // 100)
    y = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y
    logy = np.log10(np.maximum(y, 1e-8))
    w, h, m = 640, 360, 50
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([m, 20, w - 20, h - m], outline="black")
    lo, hi = float(logy.min()), float(logy.max())
    hi = hi if hi > lo else lo + 1
    xs = m + (np.arange(len(logy)) / max(1, len(logy) - 1)) * (w - 20 - m)
    ys = (h - m) - (logy - lo) / (hi - lo) * (h - m - 20)
    if len(xs) > 1:
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=(35, 75, 215), width=2)
    d.text((m, 4), f"{title}: {name} (log scale, smoothed) over {steps_shown} of {len(losses)} steps", fill="black")
    d.text((4, 20), f"{10**hi:.3g}", fill="black")
    d.text((4, h - m - 10), f"{10**lo:.3g}", fill="black")
    d.text((m, h - m + 6), str(len(losses) - steps_shown), fill="black")
    d.text((w - 60, h - m + 6), str(len(losses)), fill="black")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")

