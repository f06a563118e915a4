"""The ``loom`` command line. Heavy libraries load inside commands, so ``loom --help`` is instant."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from loom.evaluation import EVAL_SEED, SPLITS, VALIDATION_SEED  # cheap: no torch


class LoomGroup(click.Group):
    """Turns Loom's own errors into one clear line and exit status 1, instead of a traceback, and
    Loom's warnings (a plugin problem it works around) into one ``warning: ...`` line each."""

    def invoke(self, ctx):
        import warnings

        from loom.core.errors import LoomError  # cheap: no torch

        with warnings.catch_warnings():  # restores Python's own display when the command ends
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except LoomError as err:
                click.secho(f"error: {err}", fg="red", err=True)
                ctx.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A :class:`loom.core.plugins.PluginWarning` as one line of Loom's (its source line means nothing
    to a user); any other library's warning as Python shows it."""
    import warnings

    from loom.core.plugins import PluginWarning

    if issubclass(category, PluginWarning):
        click.secho(f"warning: {message}", fg="yellow", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line), err=True, nl=False)


#: --control's help, on every command that takes one
CONTROL_HELP = "A control image (for a step that takes one, e.g. sd-controlnet)."


@click.group(cls=LoomGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loom")
def main() -> None:
    """Loom: typed, plugin-based generation chains with small offline defaults."""


#: A file that must exist (an input).
EXISTING_FILE = click.Path(exists=True, dir_okay=False)
PROMPTS_FILE_HELP = 'One prompt a line, or .jsonl: {"prompt", "seed", "id", "params"} a line.'


def choice_option(name: str, choices: list[str], help: str):
    """An option taking one of ``choices``, the first by default."""
    return click.option(name, type=click.Choice(choices), default=choices[0], show_default=True, help=help)


def output_file(help: str):
    """The ``-o/--output FILE`` option of a command that writes one file."""
    return click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help=help)


def completion_option(help: str):
    """``--complete/--as-typed``: whether a typed prompt goes through the generator's prompt completion."""
    return click.option("--complete/--as-typed", default=True, show_default=True, help=help)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True, help="Also check plugin API versions and requirements; exit 1 on a problem.")
@click.pass_context
def plugins(ctx, as_json: bool, check: bool) -> None:
    """List plugins, their versions, the components and worlds they register, and any that failed to load.

    With --check (imports no torch): each plugin's plugin API version, its requirements that
    what is installed does not meet (read from its package metadata), and component names that
    several plugins register."""
    import warnings

    from loom.core.hookspecs import PLUGIN_API
    from loom.core.plugins import PluginWarning, get_registry

    with warnings.catch_warnings():  # the listing names each clash itself, once, as a note below
        warnings.filterwarnings("ignore", "component '.*' is registered by plugins", PluginWarning)
        registry = get_registry()
    conflicts = {}
    if check:
        for dist in sorted({p.distribution for p in registry.plugins.values() if p.distribution}):
            conflicts[dist] = requirement_problems(dist)
    clashes = _clashes(registry)
    problems = any(not p.ok for p in registry.plugins.values()) or any(conflicts.values())
    if as_json:
        rows = [
            {**vars(p), **({"requirement_problems": conflicts.get(p.distribution, [])} if check else {})}
            for p in registry.plugins.values()
        ]
        click.echo(
            json.dumps(rows if not check else {"plugin_api": PLUGIN_API, "plugins": rows, "clashes": clashes}, indent=2)
        )
        if check and problems:
            ctx.exit(1)
        return
    if check:
        click.echo(f"Loom {_loom_version()} offers plugin API {PLUGIN_API}")
    if not registry.plugins:
        click.echo("no plugins loaded (is LOOM_PLUGINS set?)")
    for info in registry.plugins.values():
        version = f" {info.version}" if info.version else ""
        dist = f" ({info.distribution}{version})" if info.distribution else ""
        status = click.style("ok", fg="green") if info.ok else click.style("FAILED", fg="red")
        click.echo(f"{info.name}{dist}: {status}")
        if check:
            click.echo(
                f"  plugin API: {info.api or f'not stated (set LOOM_PLUGIN_API = {PLUGIN_API!r} in its module)'}"
            )
            if info.distribution:
                found = conflicts.get(info.distribution, [])
                click.echo("  requirements: " + ("met" if not found else click.style("; ".join(found), fg="red")))
        for name in info.components:
            entry = registry.get(f"{info.name}:{name}")
            cls = entry.cls
            click.echo(
                f"  {name:<16} {cls.role:<13} {cls.input_type.kind} → {cls.output_type.kind}"
                + (f"  {cls.description}" if cls.description else "")
            )
        for name in info.worlds:
            world = registry.world(name)
            click.echo(
                f"  {name:<16} {'world':<13} {world.modality}"
                + (f", graded by {world.checker}" if world.checker else "")
            )
        for err in info.errors:
            click.secho(f"  error: {err}", fg="red")
    for name, qualified in clashes.items():
        note = f"note: several plugins register {name!r}; name one of {', '.join(qualified)}"
        click.secho(note + _bare_name(registry, name), fg="yellow")
    if check and problems:
        ctx.exit(1)


def requirement_problems(distribution: str) -> list[str]:
    """The requirements of an installed distribution that what is installed does not meet
    (a plugin pinning another torch, a missing dependency), read from its metadata: nothing is
    imported."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        wanted = requires(distribution) or []
    except PackageNotFoundError:
        return [f"distribution {distribution!r} is not installed"]
    problems = []
    for line in wanted:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            problems.append(f"unreadable requirement {line!r}: {err}")
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra, or not for this platform
        try:
            have = version(req.name)
        except PackageNotFoundError:
            problems.append(f"needs {req}, which is not installed")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"needs {req}, but {req.name} {have} is installed")
    return problems


def _loom_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loom")
    except PackageNotFoundError:  # running from a source tree
        return "(source tree)"


def _clashes(registry) -> dict[str, list[str]]:
    """Component names registered by more than one plugin, each with its qualified names."""
    by_name: dict[str, list[str]] = {}
    for entry in registry.components():
        by_name.setdefault(entry.name, []).append(entry.qualified_name)
    return {name: sorted(names) for name, names in sorted(by_name.items()) if len(names) > 1}


def _bare_name(registry, name: str) -> str:
    """What a bare ``name`` that several plugins register means: Loom's own component, or nothing."""
    from loom.core.errors import LoomError

    try:
        return f"; a bare {name!r} means Loom's own {registry.get(name).qualified_name}"
    except LoomError:  # no first-party one among them: the name must be qualified
        return ""


@main.command("new-plugin")
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option(
    "--kind",
    type=click.Choice(["encoder", "generator", "postprocessor"]),
    default="postprocessor",
    show_default=True,
    help="The component the package starts with.",
)
def new_plugin(name: str, directory, kind: str) -> None:
    """Write a ready plugin package NAME (in DIRECTORY, default ./loom-NAME): pyproject with the
    entry point and plugin API version, one component, a conformance test, a README."""
    from loom.scaffold import write_plugin

    folder = write_plugin(name, kind, directory)
    click.echo(f"wrote {folder}")
    click.echo(f"next: pip install -e {folder} && loom plugins && pytest {folder}")


@main.command()
@click.argument("prompt", required=False)
@output_file("File to write: .png for an image chain, .wav or .flac for an audio chain.")
@click.option(
    "--prompt-audio",
    "prompt_audio",
    default=None,
    type=click.Path(dir_okay=False),
    help="A spoken prompt (WAV or FLAC) instead of PROMPT, heard by the spoken-prompt encoder.",
)
@click.option("--seed", type=int, default=None, help="Seed (default: random; recorded in the file).")
@click.option(
    "--generator",
    "generator",
    default=None,
    help="Generator name or trained folder (default: vae; gan-sound for a .wav or .flac output).",
)
@click.option("-n", "--count", type=click.IntRange(1), default=1, help="Outputs to make (seeds seed..seed+n-1).")
@click.option(
    "--size", type=click.IntRange(8, 8192), default=256, help="Longer side of an image in pixels (images only)."
)
@completion_option("Rewrite the prompt into a full caption first, for a generator that reads only those (vae, gan).")
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="An image to edit (for an editing step).")
@click.option("--mask", default=None, type=click.Path(dir_okay=False), help="A mask of --image: white = repaint.")
@click.option("--control", default=None, type=click.Path(dir_okay=False), help=CONTROL_HELP)
@click.option(
    "--strength", type=click.FloatRange(0, 1), default=None, help="How far an edit may move from --image (0 to 1)."
)
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    metavar="FILE[:SCALE]",
    help="A LoRA adapter (.safetensors file or `loom train lora` folder) at SCALE (default 1); repeatable.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def generate(
    prompt,
    output: str,
    prompt_audio,
    seed,
    generator,
    count: int,
    size: int,
    complete: bool,
    image,
    mask,
    control,
    strength,
    adapters: tuple[str, ...],
    quiet: bool,
) -> None:
    """Generate from PROMPT with GENERATOR: images as PNG, sounds as WAV or FLAC (the file type
    follows the chain's output); each file embeds its provenance record and is written as soon as
    it is made. With --prompt-audio the prompt is spoken: spoken-prompt encoder → GENERATOR →
    resize. With --image (and --mask) a generator that edits images starts from that picture; its
    record keeps their SHA-256 (reproduce with the same files). Requests over Loom's limits
    (docs/limits.md), and images that cannot be read, are refused before anything loads."""
    import loom
    from loom.api import output_paths
    from loom.core import InputError

    if (prompt is None) == (prompt_audio is None):
        raise InputError("give a PROMPT or --prompt-audio FILE (one of them)")
    result = loom.generate(
        prompt,
        seed,
        generator=generator,
        size=size,
        progress=not quiet,
        prompt_audio=prompt_audio,
        complete=complete,
        output=output,
        count=count,
        image=image,
        mask=mask,
        control=control,
        strength=strength,
        adapters=[adapter_option(a) for a in adapters],
    )
    for words in result.provenance.get("heard") or []:
        click.echo(f"heard: {json.dumps(words, ensure_ascii=False)}", err=True)  # stdout keeps to the paths
    for path in output_paths(output, len(result)):
        click.echo(str(path))


def adapter_option(given: str) -> dict:
    """``--adapter FILE[:SCALE]`` as an adapter entry: the part after the last colon is the scale when it is a number."""
    path, _, scale = given.rpartition(":")
    try:
        return {"path": path, "scale": float(scale)} if path else {"path": given}
    except ValueError:
        return {"path": given}


@main.command("run")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Folder for the outputs.")
@click.option("-p", "--prompt", "prompts", multiple=True, help="A prompt (repeatable).")
@click.option(
    "--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False), help="File with one prompt a line."
)
@click.option("--seed", type=int, default=None, help="Base seed (prompt i gets seed+i).")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["png", "wav", "flac"]),
    default=None,
    help="Output file type (default: png for an image chain, wav for an audio chain).",
)
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="An image for every prompt (edits).")
@click.option("--mask", default=None, type=click.Path(dir_okay=False), help="A mask of --image: white = repaint.")
@click.option("--control", default=None, type=click.Path(dir_okay=False), help=CONTROL_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def run_spec(spec: str, output_dir: str, prompts, prompts_file, seed, file_format, quiet: bool, **images) -> None:
    """Run the chain in SPEC (YAML or JSON) on prompts; writes DIR/0001.png (or .wav for an
    audio chain), ..., each as soon as it is made. --image, --mask and --control go to every
    prompt, for the steps that take them. Specs and requests over Loom's limits (docs/limits.md),
    and images that cannot be read, are refused before anything loads."""
    import loom
    from loom.api import run_in_chunks
    from loom.core import InputError, Text
    from loom.limits import current
    from loom.outputs import check_output_folder, format_for, read_images

    texts = list(prompts) + (read_prompts(prompts_file) if prompts_file else [])
    if not texts:
        raise InputError("no prompts: give --prompt TEXT (repeatable) or --prompts FILE")
    current().check("items", len(texts), f"{len(texts)} prompts")
    pipeline = loom.pipeline_for(spec)
    out = Path(output_dir)
    suffix = format_for(pipeline.output_type).suffix if file_format is None else "." + file_format
    format_for(pipeline.output_type, out / f"0001{suffix}")  # the suffix fits, before any weights load
    check_output_folder(out)
    if pipeline.input_type is not Text:
        raise InputError(f"{spec!r} takes {pipeline.input_type.kind} input, not prompts")
    given = pipeline.check_given(read_images(images), len(texts))
    paths = [out / f"{i + 1:04d}{suffix}" for i in range(len(texts))]
    run_in_chunks(pipeline, Text(texts), seed, paths, progress=not quiet, given=given)
    for path in paths:
        click.echo(str(path))


@main.command("batch")
@click.argument("chain", metavar="SPEC_OR_GENERATOR")
@click.option("--prompts", "prompts_file", required=True, type=EXISTING_FILE, help=PROMPTS_FILE_HELP)
@click.option(
    "-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Folder for outputs and manifest."
)
@choice_option("--engine", ["local", "ray"], "This process, or Ray Data (pip install 'loom[ray]').")
@click.option("--address", default=None, help="Ray cluster to join (default: start one for the job, stop it after).")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Items per run of the chain and per Ray task (outputs do not depend on it).",
)
@click.option(
    "--seeds",
    "--seed",
    "seeds",
    default="0",
    show_default=True,
    help="Base seed (item i gets BASE+i) or one seed per item, comma-separated; a JSONL seed wins.",
)
@click.option(
    "--workers", type=click.IntRange(1), default=None, help="Ray workers (default: one per CPU of the cluster)."
)
@click.option(
    "--worker-cpus",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="CPUs per Ray worker (also its torch threads).",
)
@click.option(
    "--worker-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True, help="GPUs per Ray worker."
)
@choice_option("--manifest", ["jsonl", "parquet"], "Manifest format (parquet needs pyarrow).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def batch_job(
    ctx,
    chain,
    prompts_file,
    output_dir,
    engine,
    address,
    batch_size,
    seeds,
    workers,
    worker_cpus,
    worker_gpus,
    manifest,
    quiet,
) -> None:
    """Run SPEC_OR_GENERATOR (a YAML/JSON chain, or a generator name or folder) on every prompt
    in a file: DIR/ID.png (DIR/ID.wav for an audio chain) each with its provenance record, and
    DIR/manifest.jsonl with one row per item. Rerun the same command to resume: valid outputs are
    skipped, missing, stale or damaged ones are made again.

    Exit status: 0 when every item has its output, 3 when the job finished but some items failed
    (see the manifest), 1 when an error stopped the job."""
    from loom.batch_jobs import EXIT_ITEMS_FAILED, batch

    report = batch(
        chain,
        prompts_file,
        output_dir,
        engine=engine,
        address=address,
        batch_size=batch_size,
        seeds=seeds,
        workers=workers,
        worker_cpus=worker_cpus,
        worker_gpus=worker_gpus,
        manifest=manifest,
        progress=not quiet,
    )
    for row in [r for r in report.rows if r["status"] == "failed"][:10]:
        click.secho(f"failed {row['id']}: {row['error']}", fg="red", err=True)
    if report.failed > 10:
        click.secho(f"... and {report.failed - 10} more failed items: see {report.manifest}", fg="red", err=True)
    if report.temp_files_removed:
        n = report.temp_files_removed
        click.echo(f"removed {n} temporary file{'s' if n > 1 else ''} left by an interrupted run")
    click.echo(report.summary())
    if report.failed:
        ctx.exit(EXIT_ITEMS_FAILED)


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@output_file("File to write (.png for images, .wav or .flac for sounds).")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The audio SOURCE was made from (a spoken prompt's WAV or FLAC): records keep only its digest.",
)
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="The image SOURCE was made from.")
@click.option("--mask", default=None, type=click.Path(dir_okay=False), help="The mask SOURCE was made with.")
@click.option(
    "--control", default=None, type=click.Path(dir_okay=False), help="The control image SOURCE was made with."
)
@click.option("--check", is_flag=True, help="Compare the output with SOURCE's pixels or samples; exit 1 if not same.")
@click.option("--allow-download", is_flag=True, help="Let the record name hub ids (fetched when not cached).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def reproduce(
    source: str, output: str, inputs: tuple[str, ...], check: bool, allow_download: bool, quiet: bool, **images
) -> None:
    """Regenerate SOURCE (a PNG, WAV or FLAC file Loom wrote) from its embedded record:
    identical pixels or samples. The record is checked first: it names no hub id (unless
    --allow-download), no more outputs than the items limit, and only the weights it recorded."""
    import loom
    from loom.outputs import format_for

    result = loom.reproduce(
        source,
        output,
        progress=not quiet,
        inputs=list(inputs) or None,
        allow_download=allow_download,
        check=check,
        **images,
    )
    click.echo(output)
    if check:  # a difference raised above: "error: differs from SOURCE: max diff …", exit 1
        click.echo(f"same {format_for(type(result.output)).values_name} as {source}")


@main.command()
@click.argument("family")
@click.option(
    "--data",
    default="shapes",
    show_default=True,
    help="A world (shapes, sounds, or a plugin's: see `loom plugins`) or a folder of images with captions.",
)
@click.option("--steps", type=click.IntRange(1), default=None, help="Steps in total (default 3000 unless --minutes).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this long.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder (default loom-FAMILY).")
@click.option(
    "--resume", type=click.Path(exists=True, file_okay=False), default=None, help="Continue the run in this folder."
)
@click.option(
    "--init",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Start a new run from this run's checkpoint, or from the weights of a trained folder (fine-tune).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per step (family default if unset).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (family default if unset).")
@click.option("--base", default=None, help="loom train lora: the generator or trained folder the adapter is for.")
@click.option("--rank", type=click.IntRange(1), default=None, help="loom train lora: rank of the adapter.")
@click.option("-O", "--option", "extra", multiple=True, metavar="KEY=VALUE", help="A family option (repeatable).")
@click.option(
    "--checkpoint-every", default=500, show_default=True, type=click.IntRange(1), help="Steps between checkpoints."
)
@click.option(
    "--keep-every",
    type=click.IntRange(1),
    default=None,
    help="Also keep the generator every N steps in snapshots/step-N (choose one with loom eval snapshots).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def train(family, data, batch_size, lr, base, rank, extra, quiet, **settings) -> None:
    """Train generator FAMILY (vae, ...) on a world (--data shapes, sounds, ...) or a folder of captioned images.

    A folder holds images with a same-name .txt caption each, or a metadata.jsonl with
    file_name and text per line. The output folder is a generator (--generator FOLDER) and a
    checkpoint: Ctrl-C saves it, --resume FOLDER continues it, and --init FOLDER starts a new
    run from it (to fine-tune with other options or data).

    FAMILY lora trains a LoRA adapter of --base (default: the shipped diffusion model) on the
    data: the output folder is an adapter (adapters: [{path: FOLDER, scale: 1.0}]).
    """
    import loom
    from loom.core import InputError

    options = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--option {item!r}: write KEY=VALUE")
        options[key] = yaml_value(value)
    if batch_size is not None:
        options["batch_size"] = batch_size
    if lr is not None:
        options["lr"] = lr
    for key, value in (("base", base), ("rank", rank)):
        if value is not None:
            if family != "lora":
                raise InputError(f"--{key} is for `loom train lora`; {family!r} has no {key}")
            options[key] = value
    if settings["resume"] and options:
        raise InputError("--resume keeps the run's own options; leave out --batch-size, --lr and --option")
    command = shlex.join(["loom", *sys.argv[1:]])
    # the other options (steps, minutes, out, resume, init, seed, checkpoint_every, keep_every) are loom.train's own
    folder = loom.train(family, data, options=options or None, progress=not quiet, command=command, **settings)
    if family == "lora":
        click.echo(f"wrote {folder}; load it with the step option adapters: [{{path: {folder}, scale: 1.0}}]")
    else:
        click.echo(f"wrote {folder}; generate with --generator {folder}")


def yaml_value(text: str):
    """'0.5' → 0.5, 'true' → True, 'abc' → 'abc' (YAML scalars, as in a spec)."""
    import yaml

    return yaml.safe_load(text)


def echo_report(title: str, data: dict, whole: str) -> None:
    """An evaluation report (``EvalReport.to_dict()``) as lines, each score beside its chance rate."""
    click.echo(title)
    chances = data.get("chance", {})
    # a whole prompt's chance is small: one more digit
    rows = [(name, score, chances.get(name), 3) for name, score in data["per_attribute"].items()]
    rows.append((whole, data["whole_prompt"], chances.get("whole_prompt"), 4))
    for name, score, chance, digits in rows:
        shown = "  n/a" if score is None else f"{score:.3f}"
        click.echo(f"  {name:<13} {shown}" + (f"   (chance {chance:.{digits}f})" if chance is not None else ""))


class WorldCommands(click.Group):
    """``loom eval WORLD`` for every registered world (one command, named by the world), beside
    the group's own commands (``snapshots``)."""

    def list_commands(self, ctx):
        from loom.core import get_registry

        return [*get_registry().worlds(), *super().list_commands(ctx)]

    def get_command(self, ctx, name):
        found = super().get_command(ctx, name)
        if found is not None or name.startswith("-"):
            return found
        import copy

        from loom.core import get_registry

        world = get_registry().world(name)  # an unknown world: one line naming the registered ones
        command = copy.copy(eval_world)
        command.short_help = f"Grade a generator with {world.checker or 'the checker'} of the {name} world."
        return command


@main.group("eval", cls=WorldCommands)
def evaluate() -> None:
    """Measure generators with the checkers of the registered worlds (loom eval WORLD), grade their
    edits of Shapes scenes (loom eval edits), or choose among a run's snapshots (loom eval snapshots RUN)."""


@click.command("WORLD")
@click.option(
    "--generator",
    default=None,
    help="Generator name or trained folder (default: vae for an image world, gan-sound for a sound world).",
)
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False), help="One prompt a line.")
@click.option("-n", "count", default=200, show_default=True, type=click.IntRange(1), help="Fresh prompts per split.")
@click.option(
    "--split",
    type=click.Choice(["all", *SPLITS]),
    default="all",
    show_default=True,
    help="Score one split of fresh prompts only.",
)
@completion_option("Through the generator's prompt completion, as `loom generate` runs it, or on prompts as typed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def eval_world(ctx, generator, prompts_file, count, split, complete, as_json) -> None:
    """Grade a generator with the world's checker (ShapesEval, SoundsEval, a plugin's).

    Per attribute and whole prompt on templated prompts and on prompts that leave attributes
    unsaid, seen and unseen combinations, the world's own subsets (Shapes: one and two objects),
    and how evenly it spreads what a prompt leaves open. With --prompts: those prompts only."""
    from loom.core import get_registry
    from loom.evaluation import default_generator, evaluate_world, world_report

    world = get_registry().world(ctx.info_name)
    generator = generator or default_generator(world)
    prompts = read_prompts(prompts_file) if prompts_file else None
    one = {} if split == "all" else {"split": split, "n": count}
    word = world.prompt_word
    echo_world(
        world.checker,
        generator + ("" if complete else f", {word}s as typed"),
        prompts or one,
        as_json,
        f"whole {word}",
        lambda: evaluate_world(world, generator, prompts=prompts, progress=not as_json, complete=complete, **one),
        lambda: world_report(world, generator, n=count, progress=not as_json, complete=complete),
    )


def echo_world(checker: str, name: str, prompts, as_json: bool, whole: str, scored, report) -> None:
    """``scored()``'s report where ``prompts`` (given prompts, or one split's options) is set,
    or else the world's whole ``report()``: as JSON or as lines."""
    data = scored().to_dict() if prompts else report()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif prompts:
        echo_report(f"{checker} on {data['n']} prompts (generator: {name})", data, whole)
    else:
        echo_splits(f"{checker} of {name}", data, whole)


def echo_splits(title: str, data: dict, whole: str) -> None:
    """A world's report (each split, its subsets, diversity) as lines, chance beside each score."""
    click.echo(title)
    for split in SPLITS:
        part = data[split]
        echo_report(f"{split} prompts ({part['n']}):", part, whole)
        # the world's subsets, then seen and unseen combinations: each a {"n", "whole_prompt"}
        for key, sub in part.items():
            if isinstance(sub, dict) and set(sub) == {"n", "whole_prompt"} and sub["whole_prompt"] is not None:
                click.echo(f"    {key.replace('_', ' '):<11} {sub['whole_prompt']:.3f}  ({sub['n']} prompts)")
    div = data["diversity"]
    spreads = ", ".join(f"{a} {v:.3f}" for a, v in div["per_attribute"].items())
    click.echo(
        f"diversity of what {div['prompts']} prompts leave open, {div['seeds']} seeds each: "
        f"{div['diversity']:.3f} (least even of {spreads}; 1.0 = as even as the world, 0 = always the same)"
    )


@evaluate.command("edits")
@click.option(
    "--generator", default=None, help="Generator name or trained folder that edits images (default: diffusion)."
)
@click.option("-n", "count", default=100, show_default=True, type=click.IntRange(1), help="Tasks of each kind.")
@click.option("--seed", default=EVAL_SEED, show_default=True, type=click.IntRange(0), help="Seed of the tasks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, with each task's verdict.")
def eval_edits(generator, count, seed, as_json) -> None:
    """Grade a generator's edits of Shapes scenes with ShapesEval, each score beside its chance.

    recolour: one object's colour changed by the prompt, image-to-image; repaint: another object
    prompted into a masked cell; keep: the repaints leave what lies outside the mask as it was."""
    from loom.evaluation import evaluate_edits

    data = evaluate_edits(generator, n=count, seed=seed, progress=not as_json)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"edits of the {data['world']} world (generator: {data['generator']}; tasks seed {data['seed']}):")
    for name, part in data.items():
        if isinstance(part, dict) and "score" in part:
            shown = "  n/a" if part["score"] is None else f"{part['score']:.3f}"
            chance = "" if part.get("chance") is None else f"   (chance {part['chance']:.3f})"
            click.echo(f"  {name:<9} {shown}{chance}   {part['n']} tasks: {part['about']}")


@evaluate.command("snapshots")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("-n", "count", default=200, show_default=True, type=click.IntRange(1), help="Validation prompts to draw.")
@click.option(
    "--seed",
    default=VALIDATION_SEED,
    show_default=True,
    type=int,
    help="Seed of the validation prompts (not the evaluation seed).",
)
def eval_snapshots(run, count, seed) -> None:
    """Choose among the snapshots a run kept (loom train --keep-every) on validation prompts.

    Scores each RUN/snapshots/step-N and the run's final export with its world's checker, writes
    RUN/snapshots/picked.json and prints the best folder. Report the chosen one's quality with
    `loom eval WORLD --generator FOLDER`, whose prompts it was not chosen by.
    """
    from loom.evaluation import evaluate_snapshots

    click.echo(f"whole-prompt score on {count} validation prompts (seed {seed}):")
    result = evaluate_snapshots(run, n=count, seed=seed)
    click.echo(
        f"best: {result['best']} ({result['whole'][Path(result['best']).name]:.3f}); "
        f"measure it with `loom eval {result['world']} --generator {result['best']}`"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (not loopback: needs --token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--workers", type=click.IntRange(1), default=1, show_default=True, help="Jobs run at once (on different chains)."
)
@click.option(
    "--token",
    envvar="LOOM_SERVE_TOKEN",
    default=None,
    help="Every /v1 request must send Authorization: Bearer TOKEN (or set LOOM_SERVE_TOKEN).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    default="loom-serve",
    show_default=True,
    help="Folder of the job queue (SQLite) and the outputs.",
)
@click.option(
    "--queue-limit", type=click.IntRange(1), default=64, show_default=True, help="Most jobs queued or running."
)
def serve(host: str, port: int, workers: int, token, data: str, queue_limit: int) -> None:
    """Serve generation over HTTP: a job API (/v1, schema at /openapi.json) and a web page (/). Jobs and outputs live in
    --data and survive a restart. Binds 127.0.0.1 unless told otherwise; any other address needs --token."""
    import uvicorn

    from loom.serve import create_app, is_loopback

    if not is_loopback(host) and not token:
        raise click.ClickException(f"--host {host} is reachable from other machines: give --token TOKEN as well")
    app = create_app(data, token=token, workers=workers, queue_limit=queue_limit)
    uvicorn.run(app, host=host, port=port, log_level="info")


def read_prompts(path: str) -> list[str]:
    from loom.batch_jobs import read_prompts_text
    from loom.core import InputError

    lines = [line.strip() for line in read_prompts_text(path).splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise InputError(f"prompts file {path!r} holds no prompts (one prompt a line)")
    return prompts


if __name__ == "__main__":  # pragma: no cover
    main()
