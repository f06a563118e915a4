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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loom.checkpoints import load_state, save_state
from loom.core import InputError
from loom.core.files import atomic_path, write_json_atomic
from loom.core.training import Trainer, TrainingBatch

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
            try:
                t = load_file(str(path))
                return t["tokens"], t["mask"], t["pooled"]
            except Exception:  # a damaged or foreign cache file is a miss: encode again and replace it
                pass

    from loom.core import Text, get_registry

    # through the registry, as the SDK reaches every plugin (the encoder's module is the plugin's business)
    encoder = get_registry().get("text-encoder").cls(max_length=CAPTION_TOKENS).load()
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


#: ``loom train lora``: an adapter of the generator the ``base`` option names (a registered name or
#: a trained folder; default :data:`ADAPTER_BASE`), trained by that generator's ``adapter_trainer``.
ADAPTER_FAMILY = "lora"
ADAPTER_BASE = "diffusion"


def trainer_class(family: str, options: dict | None = None) -> type[Trainer]:
    """The Trainer of the registered generator ``family`` (for :data:`ADAPTER_FAMILY`, of the
    ``base`` in ``options``), or an error listing the trainable ones."""
    from loom.core import get_registry

    registry = get_registry()
    if family == ADAPTER_FAMILY:
        return _adapter_trainer(registry, (options or {}).get("base") or ADAPTER_BASE)
    entry = registry.get(family)
    target = getattr(entry.cls, "trainer", None)
    if target is None:
        trainable = sorted(e.name for e in registry.components("generator") if getattr(e.cls, "trainer", None))
        raise InputError(
            f"{family!r} cannot be trained: it declares no trainer (trainable: {', '.join(trainable) or 'none'})"
        )
    return _imported(target)


def _adapter_trainer(registry, base: str) -> type[Trainer]:
    """The adapter trainer of the generator ``base`` names, or its trained folder's family."""
    from loom.api import generator_step  # a name or a trained folder, read by the one rule

    name = generator_step(base)["component"]
    target = getattr(registry.get(name).cls, "adapter_trainer", None)
    if target is None:
        able = sorted(e.name for e in registry.components("generator") if getattr(e.cls, "adapter_trainer", None))
        raise InputError(
            f"--base {base!r}: no adapter can be trained for it (adapters train for: {', '.join(able) or 'none'})"
        )
    return _imported(target)


def _imported(target) -> type[Trainer]:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def training_data(family: str, cls: type[Trainer], data: str, pool: int | None, seed: int, progress: bool = False):
    """The dataset ``family`` trains on: the registered world named ``data`` when its modality is
    the family's (Shapes, Sounds, a plugin's), or else, for an image family, a folder of captioned
    images; an InputError when the data does not fit the family."""
    from loom.core import get_registry
    from loom.core.world import MODALITIES
    from loom.data import FolderData

    registry = get_registry()
    worlds = registry.worlds()
    world = worlds.get(data)
    if world is not None and world.modality == cls.modality:
        return world.training_data(cls.shape(), pool, seed, progress)
    fitting = " or ".join(n for n, w in worlds.items() if w.modality == cls.modality)
    if cls.modality != "images":  # only an image family reads a folder
        raise InputError(
            f"{family!r} trains on {cls.modality}: give --data {fitting or '(no world installed)'} (got --data {data!r})"
        )
    if world is not None:
        families = sorted(
            e.name
            for e in registry.components("generator")
            if getattr(e.cls, "trainer", None) and e.cls.output_type.kind == MODALITIES[world.modality]
        )
        raise InputError(
            f"{family!r} trains on images (--data {fitting + ' or ' if fitting else ''}a folder of captioned images), "
            f"not {world.modality}; train a {world.modality.removesuffix('s')} family on --data {data} "
            f"({', '.join(families) or 'none installed'})"
        )
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
    import torch

    run = TrainingRun(
        family,
        data,
        steps=steps,
        minutes=minutes,
        out=out,
        resume=resume,
        init=init,
        seed=seed,
        options=options,
        pool=pool,
        checkpoint_every=checkpoint_every,
        keep_every=keep_every,
        progress=progress,
        command=command,
        on_step=on_step,
    )
    # Subnormal floats appear as images' flat regions saturate and make CPU steps ~4× slower. The flag is the
    # process's: set back to torch's default after the run, so that the caller's own float math keeps subnormals.
    torch.set_flush_denormal(True)
    try:
        run.plan()
        run.prepare_data()
        run.build()
        run.loop()
    finally:
        torch.set_flush_denormal(False)
    return run.folder


@dataclass
class TrainingRun:
    """One run of :func:`train` (its arguments, as it documents them), in phases called in order:
    :meth:`plan` (a fresh folder, ``resume`` or ``init``; every refusal comes before anything is
    written), :meth:`prepare_data`, :meth:`build` (the trainer: fresh, resumed or initialised),
    :meth:`loop` (the steps, with snapshots and checkpoints; each :meth:`checkpoint` also runs
    :meth:`export`)."""

    family: str
    data: str = "shapes"
    steps: int | None = None
    minutes: float | None = None
    out: "str | Path | None" = None
    resume: "str | Path | None" = None
    init: "str | Path | None" = None
    seed: int = 0
    options: dict | None = None
    pool: int | None = None
    checkpoint_every: int = 500
    keep_every: int | None = None
    progress: bool = True
    command: str | None = None
    on_step: Callable[[int, dict], None] | None = None

    def __post_init__(self) -> None:
        # the clock starts before data and captions are prepared: --minutes counts them
        self.started = time.time()
        self.folder: Path = Path()
        self.resumed: list = []  # the commands that resumed this run
        self.init_from: dict | None = None  # how the --init starting point was made
        self.previous: dict | None = None  # the progress record of the run being resumed
        self.resume_checkpoint: Path | None = None
        self.init_checkpoint: Path | None = None
        self.init_record: dict = {}
        self.losses: list[dict] = []
        self.done = 0
        self.elapsed_before = 0.0  # seconds the resumed run had trained

    # -- plan ---------------------------------------------------------------------------------
    def plan(self) -> None:
        """Settle the folder, data, options and seed (a resumed run's own), the step or time plan
        and the validated trainer options."""
        if self.resume is not None and self.init is not None:
            raise InputError("--resume continues a run and --init starts a new one from a run; give one of them")
        if self.resume is not None:
            self._plan_resume(Path(self.resume))
        else:
            self._plan_new()
        if self.steps is None and self.minutes is None:
            self.steps = 3000
        self.trainer_type = trainer_class(self.family, self.options)
        try:
            self.opts = self.trainer_type.Options.model_validate(self.options or {})
        except Exception as err:
            raise InputError(f"invalid training options for {self.family!r}: {err}") from None

    def _plan_resume(self, folder: Path) -> None:
        self.resume_checkpoint = _checkpoint_folder(folder)
        record = json.loads((self.resume_checkpoint / "progress.json").read_text())
        if record["family"] != self.family:
            raise InputError(
                f"{str(folder)!r} is a {record['family']!r} run; resume it with `loom train {record['family']} --resume {folder}`"
            )
        if self.out is not None and Path(self.out).resolve() != folder.resolve():
            raise InputError("--resume continues in the folder it names; leave out --out")
        self.folder, self.previous = folder, record
        self.seed, self.data, self.pool = record["seed"], record["data"], record.get("pool", self.pool)
        self.options = record["options"]
        self.steps = self.steps if self.steps is not None else record["planned_steps"]
        # a run planned by time keeps its time plan (and so its learning-rate schedule) on resume
        self.minutes = self.minutes if self.minutes is not None else record.get("planned_minutes")
        # the record names the command that started the run, and each that resumed it
        self.resumed = record.get("resumed", []) + ([self.command] if self.command else [])
        self.command = record.get("command") or self.command
        self.init_from = record.get("init_from")
        self.keep_every = self.keep_every if self.keep_every is not None else record.get("keep_every")

    def _plan_new(self) -> None:
        if self.init is not None:
            self.init_checkpoint, self.init_record = _init_source(Path(self.init))
            if self.init_record["family"] != self.family:
                raise InputError(
                    f"--init {str(self.init)!r} is a {self.init_record['family']!r} run, not {self.family!r}"
                )
        self.folder = Path(self.out or f"loom-{self.family}")
        if (self.folder / "config.json").exists() or (self.folder / CHECKPOINT).exists():
            raise InputError(
                f"{str(self.folder)!r} already holds a trained model; continue it with --resume {self.folder}, "
                f"or give another --out (nothing there was changed)"
            )

    # -- data ---------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """The dataset and its encoded captions (cached between runs), and the sample prompts'.
        Bad data fails here, before the output folder is touched."""
        self.dataset = training_data(self.family, self.trainer_type, self.data, self.pool, self.seed, self.progress)
        self.pool = getattr(self.dataset, "pool", self.pool)
        self.tokens, self.mask, self.pooled = encode_captions(
            self.dataset.captions, progress=self.progress, cache=cache_dir()
        )
        self.sample_text = encode_captions(self.dataset.sample_prompts(), progress=False)

    # -- build --------------------------------------------------------------------------------
    def build(self) -> None:
        """The seeded trainer and random streams, restored from the resumed run or started from
        ``init``; then the output folder."""
        import numpy as np
        import torch

        torch.manual_seed(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.trainer = self.trainer_type(self.opts, self.generator)
        self.rng = np.random.default_rng(self.seed + 1)
        if self.previous is not None:
            self._restore()
        elif self.init is not None:
            self._start_from_init()
        self.folder.mkdir(parents=True, exist_ok=True)

    def _restore(self) -> None:
        state = load_state(self.resume_checkpoint)
        self.trainer.load_state(state["trainer"])
        self.generator.set_state(state["torch_rng"])
        self.rng.bit_generator.state = self.previous["numpy_rng"]
        self.losses, self.done = self.previous["losses"], self.previous["step"]
        self.elapsed_before = self.previous["seconds"]

    def _start_from_init(self) -> None:
        try:
            if self.init_checkpoint is not None:
                self.trainer.load_state(load_state(self.init_checkpoint)["trainer"])
            else:
                self.trainer.load_generator(Path(self.init))
        except (RuntimeError, KeyError, ValueError) as err:
            first = str(err).strip().splitlines()[0]
            raise InputError(
                f"--init {str(self.init)!r}: its checkpoint does not fit these options ({first}); "
                f"change only options that keep the architecture (loss weights, lr, ...)"
            ) from None
        self.trainer.check_init()
        self.init_from = self._init_origin()

    def _init_origin(self) -> dict:
        """The commands that made the starting point, so the chain can be rerun."""
        source = self.init_record
        origin = {
            "folder": str(self.init),
            **{k: source.get(k) for k in ("command", "resumed", "init_from", "seed", "data", "pool", "step")},
            "minutes": round(source.get("seconds", 0) / 60, 2),
            # and where the start's other parts came from (a diffusion UNet's unet_from)
            **{k: v for k, v in source.items() if k.endswith("_from") and k != "init_from" and v},
        }
        if self.init_checkpoint is None:
            origin["weights_only"] = True
        return origin

    # -- loop ---------------------------------------------------------------------------------
    def loop(self) -> None:
        """Step until the plan is done or Ctrl-C asks to stop, then checkpoint (a second Ctrl-C
        aborts without one)."""
        import numpy as np
        from tqdm.auto import tqdm

        total = self.steps if self.steps else None
        with (
            _StopFlag() as stop,
            tqdm(
                total=total, initial=self.done, desc=f"training {self.family}", unit="step", disable=not self.progress
            ) as bar,
        ):
            while self.fraction() < 1.0 and not stop.requested:
                parts = self.step()
                bar.update(1)
                if self.done % 10 == 0:
                    recent = self.losses[-50:]
                    bar.set_postfix({k: f"{np.mean([e[k] for e in recent if k in e]):.3g}" for k in parts})
                self._after_step(parts)
            self.checkpoint()
        if stop.requested:
            print(
                f"stopped at step {self.done}; continue with: loom train {self.family} --resume {self.folder}",
                file=sys.stderr,
            )

    def step(self) -> dict:
        """One optimisation step on a random batch; its losses are added to the run's."""
        import torch

        idx = torch.randint(len(self.dataset), (self.opts.batch_size,), generator=self.generator)
        images = self.dataset.images(idx.tolist(), self.rng)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()
        captions = [self.dataset.captions[i] for i in idx.tolist()]
        batch = TrainingBatch(x, self.tokens[idx].float(), self.mask[idx], self.pooled[idx], captions)
        parts = self.trainer.step(batch, self.fraction())
        self.losses.append({k: round(float(v), 5) for k, v in parts.items()})
        self.done += 1
        return parts

    def _after_step(self, parts: dict) -> None:
        if self.on_step is not None:
            self.on_step(self.done, parts)
        if self.keep_every and self.done % self.keep_every == 0:
            self.snapshot()
        if self.done % self.checkpoint_every == 0:
            self.checkpoint()

    def fraction(self) -> float:
        """How far the run is, from 0 to 1: by steps, by time, or the further of the two."""
        parts = []
        if self.steps:
            parts.append(self.done / self.steps)
        if self.minutes:
            parts.append(self.seconds() / (self.minutes * 60))
        return min(1.0, max(parts))

    def seconds(self) -> float:
        """Seconds trained, resumed runs' included."""
        return self.elapsed_before + time.time() - self.started

    # -- checkpoint and export ----------------------------------------------------------------
    def checkpoint(self) -> None:
        """Save what resuming needs, swapped in whole so that a complete checkpoint exists at
        every moment; then export."""
        tmp = self.folder / f".{CHECKPOINT}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_state({"trainer": self.trainer.state(), "torch_rng": self.generator.get_state()}, tmp)
        write_json_atomic(tmp / "progress.json", self.progress_record())
        _swap_in(tmp, self.folder / CHECKPOINT)
        self.export()

    def export(self) -> None:
        """The loadable generator with its training record, the sample grid and the loss curve."""
        self.trainer.export(self.folder, self.record())
        _write_samples(self.trainer, self.sample_text, self.folder / "samples.png")
        _write_loss_curve(self.losses, self.folder / "loss.png", self.family)

    def snapshot(self) -> None:
        """The generator as it is now, kept as ``snapshots/step-NNNNNN`` (``keep_every``)."""
        folder = self.folder / SNAPSHOTS / f"step-{self.done:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        self.trainer.export(folder, self.record())

    def progress_record(self) -> dict:
        """The checkpoint's ``progress.json``: what ``resume`` and ``init`` read back."""
        return {
            "family": self.family,
            "command": self.command,
            "resumed": self.resumed,
            "init_from": self.init_from,
            **self.trainer.origins(),
            "seed": self.seed,
            "data": self.data,
            "pool": self.pool,
            "options": self.opts.model_dump(),
            "keep_every": self.keep_every,
            "planned_steps": self.steps,
            "planned_minutes": self.minutes,
            "step": self.done,
            "seconds": self.seconds(),
            "numpy_rng": self.rng.bit_generator.state,
            "losses": self.losses,
        }

    def record(self) -> dict:
        """The training record exported with the generator (``config.json``'s ``training``)."""
        import numpy as np
        import torch

        main = main_loss(self.losses)
        k = max(1, min(50, len(main) // 3))
        return {
            "command": self.command,
            "resumed": self.resumed,
            **({"init_from": self.init_from} if self.init_from else {}),
            **self.trainer.origins(),
            "seed": self.seed,
            "data": self.dataset.describe(),
            "steps": self.done,
            "options": self.opts.model_dump(),
            "first_loss": round(float(np.mean(main[:k])), 4) if main else None,
            "final_loss": round(float(np.mean(main[-k:])), 4) if main else None,
            "minutes": round(self.seconds() / 60, 2),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        }


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
        raise InputError(
            f"--init {str(folder)!r} holds neither a training checkpoint ({CHECKPOINT}/) nor a trained generator "
            "(config.json); give a folder `loom train` wrote"
        )
    raw = json.loads(config.read_text())
    training = raw.get("training") or {}
    return None, {
        "family": raw.get("family"),
        **training,
        "step": training.get("steps"),
        "seconds": 60 * (training.get("minutes") or 0),
    }


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
