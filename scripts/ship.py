"""Ship a trained run as a family's default weights.

    .venv/bin/python scripts/ship.py FAMILY RUN_FOLDER [--to FOLDER]

Loads the run's generator (config.json + model.safetensors), writes it into the family's
default folder (``weights/``; ``sound_weights/`` for a sound family such as vae-sound) through
the family's model's ``save`` (float16 weights), and writes ``TRAINING.md`` there with the command,
seed and numbers from the run's training record, so that every shipped checkpoint says how it was made.

``--to FOLDER`` writes the same files into FOLDER instead: a stage of a training chain that is not
the default yet (not as good as it) but must outlast the session's ``runs/``, so the next run can
start from it with ``--init FOLDER``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    to = None
    if len(args) == 4 and args[2] == "--to":
        args, to = args[:2], Path(args[3])
    if len(args) != 2:
        sys.exit(__doc__)
    family, run = args[0], Path(args[1])
    from loom.core import get_registry
    from loom.core.files import write_json_atomic

    cls = get_registry().get(family).cls
    model = cls.model_class().from_folder(run)
    target = to or Path(cls.default_weights)
    model.save(target)
    training = json.loads((target / "config.json").read_text())["training"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    size = sum(f.stat().st_size for f in target.glob("*.safetensors")) / 1e6
    if cls.output_type.kind == "Audio":
        quality = f"`loom eval sounds --generator {family}` and `python bench/families.py --world sounds`"
    else:
        quality = f"`loom eval shapes --generator {family}` and `python bench/families.py`"
    if _fill_start(training.get("init_from")):
        config = json.loads((target / "config.json").read_text())
        write_json_atomic(target / "config.json", {**config, "training": training})
    resumed = _resumes(training.get("resumed")) + _origins(training) + _picked(run)
    (target / "TRAINING.md").write_text(
        f"""# How these {family} weights were made

```bash
{training["command"]}
```
{resumed}
- seed {training["seed"]}, {training["steps"]} steps, data: `{json.dumps(training["data"])}`
- options: `{json.dumps(training["options"])}`
- loss (first key of the family's losses) from {training["first_loss"]} to {training["final_loss"]}
- {training["minutes"]} minutes on {training["machine"]}
- shipped from `{run}` with `python scripts/ship.py {family} {run}{f" --to {to}" if to else ""}` at commit {commit or "?"}:
  float16 weights, {size:.1f} MB

Quality: {quality} (numbers in README.md).
"""
    )
    print(f"shipped {run} as {target} ({size:.1f} MB)")


def _resumes(commands: list[str] | None) -> str:
    return "".join(f"\nresumed with `{c}`\n" for c in commands or [])


def _fill_start(start: dict | None) -> bool:
    """Records written before ``init_from`` kept its run's minutes, or its origins (``unet_from``),
    lack them: read them from the start's own folder where it is still here, so bench/families.py
    can add up the chain and TRAINING.md names every part's origin."""
    changed = False
    while start:
        folder = Path(start["folder"])
        progress, config = folder / "checkpoint" / "progress.json", folder / "config.json"
        if start.get("minutes") is None and progress.is_file():
            start["minutes"] = round(json.loads(progress.read_text())["seconds"] / 60, 2)
            changed = True
        if "unet_from" not in start and config.is_file():
            record = json.loads(config.read_text()).get("training") or {}
            # the folder's record is the start only if it is the same run at the same step
            if (
                record.get("unet_from")
                and record.get("command") == start.get("command")
                and record.get("steps") == start.get("step")
            ):
                start["unet_from"] = record["unet_from"]
                changed = True
        start = start.get("init_from")
    return changed


def _picked(run: Path) -> str:
    """For a snapshot chosen with `loom eval snapshots`: how it was chosen."""
    picked = run.parent / "picked.json"
    if run.parent.name != "snapshots" or not picked.is_file():
        return ""
    record = json.loads(picked.read_text())
    scores = ", ".join(f"{name} {score:.3f}" for name, score in record["whole"].items())
    return (
        f"\nchosen among the run's snapshots with `loom eval snapshots {record['run']} -n {record['n']} --seed {record['seed']}` "
        f"(validation prompts, not the evaluation ones); whole-prompt scores: {scores}\n"
    )


def _origin(start: dict | None, lead: str | None = None, step: str = "step") -> str:
    """For a run started with --init: the commands that made its starting point, and theirs.
    ``lead`` says what was taken from it (default: its whole state, or its weights alone);
    ``step`` is the record's key for the start's step count."""
    if not start:
        return ""
    took = f", {start['minutes']} min" if start.get("minutes") is not None else ""
    # a shipped folder is overwritten by the next ship: say what it held
    if lead is None:
        lead = "started from the weights (no optimiser state) of " if start.get("weights_only") else "started from "
    return (
        f"\n{lead}`{start['folder']}` at its step {start[step]} (seed {start['seed']}{took}), made by\n\n"
        f"```bash\n{start['command']}\n```\n{_resumes(start.get('resumed'))}" + _origins(start)
    )


def _origins(record: dict) -> str:
    """How a run's starting weights were made: the teacher a distilled model learnt from and started as
    (``teacher_from``), the UNet a diffusion run took with -O unet_init (``unet_from``; both keep the
    training record's ``steps``), then its --init start."""
    return (
        _origin(record.get("teacher_from"), lead="distilled from (and started as) the teacher ", step="steps")
        + _origin(record.get("unet_from"), lead="its UNet started from the UNet of ", step="steps")
        + _origin(record.get("init_from"))
    )


if __name__ == "__main__":
    main()
