"""The provenance record: what Loom writes beside every output so that ``loom reproduce`` can make
it again exactly. Its layout is made here; :mod:`loom.outputs` embeds it in files and reads it back.

A record is data: reading one never fetches, imports or runs anything it names. Before a record
(``loom reproduce``) or a prompts file's ``params`` (``loom batch``) is replayed, :func:`replay_problem`
and :func:`options_problem` say whether it is safe to: a spec is a mapping (never a path or text to
read), and no option names a Hugging Face hub id or ``download: true`` unless downloads were allowed.

A record keeps the SHA-256 of each step's weights files (:func:`weights_digests`), found by one rule
(:func:`weights_folder`): the folder named by the component's ``capabilities.weights_option``
config value, else its class's packaged ``default_weights`` folder. ``loom reproduce`` refuses a
step whose files now differ (:func:`weights_problem`). Weights found otherwise (a transformers or
diffusers model by hub id or folder) are not hashed. A step with LoRA adapters (a config option
``adapters`` of entries with ``path`` and ``scale``) keeps each adapter's path, SHA-256 and scale
(:func:`adapter_digests`), and ``loom reproduce`` refuses an adapter file that changed, by name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, Mapping

from loom.core import Data, Image, Text

#: Version of the record's layout.
RECORD_VERSION = 1


def digest(data: Data, index: int) -> str:
    """SHA-256 of item ``index`` alone (as ``take([index])`` holds it): every field, tensors by
    their shape and float32 values. A record keeps it for inputs that are not text, so that
    ``loom reproduce`` can check that an input given again is the one recorded."""
    item = data.take([index])
    h = hashlib.sha256(data.kind.encode())
    for f in fields(item):  # type: ignore[arg-type]
        value = getattr(item, f.name)
        h.update(f.name.encode())
        if hasattr(value, "detach"):
            array = value.detach().float().contiguous().cpu().numpy()
            h.update(repr(tuple(array.shape)).encode() + array.tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def loom_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loom")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def given_digests(given: Mapping[str, Data], index: int) -> dict:
    """What a record keeps of item ``index`` of each named input (image, mask): its kind, its :func:`digest` and, for
    an image, its size; never its pixels. ``loom reproduce --image FILE`` checks a file given again against it."""
    kept = {}
    for name, data in sorted(given.items()):
        kept[name] = {"kind": data.kind, "sha256": digest(data, index)}
        if isinstance(data, Image):
            kept[name].update(width=int(data.pixels.shape[-1]), height=int(data.pixels.shape[-2]))
    return kept


def run_record(pipeline, inputs: Data, facts: dict, given: "Mapping[str, Data] | None" = None) -> dict:
    """The record of one run of ``pipeline`` on ``inputs`` (and the named inputs ``given``, each of as many items);
    ``facts`` is what the engine recorded (``loom.core.Pipeline.provenance``: inputs, seeds, timings)."""
    return {
        "loom_record": RECORD_VERSION,
        "loom_version": loom_version(),
        "spec": pipeline.spec.model_dump(mode="json"),
        "components": [
            {
                "step": i + 1,
                "component": e.name,
                "plugin": e.plugin,
                "plugin_version": e.plugin_version,
                "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
                **({"weights": w} if (w := weights_digests(c)) is not None else {}),
                **({"adapters": a} if (a := adapter_digests(c)) else {}),
            }
            for i, (e, c) in enumerate(zip(pipeline.entries, pipeline.components))
        ],
        "inputs": facts["inputs"],
        # a non-text input is not kept (audio is large); its digest lets `loom reproduce
        # --input FILE` check that the input given again is the same
        **(
            {}
            if isinstance(inputs, Text)
            else {"input_kind": inputs.kind, "input_sha256": [digest(inputs, i) for i in range(len(inputs))]}
        ),
        # named inputs (image, mask) by digest and size, one mapping per item, checked by `loom reproduce --image`
        **({"given": [given_digests(given, i) for i in range(len(inputs))]} if given else {}),
        "seeds": facts["seeds"],
        "timings": facts["timings"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# -- weights -------------------------------------------------------------------------------------
#: Files of a weights folder whose SHA-256 a record keeps: the weights and the configs that shape them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".json")

# file digests by (path, inode, size, mtime, ctime): a folder is hashed once per process, not once per run
_file_hashes: dict[tuple[str, int, int, int, int], str] = {}


def weights_folder(component: Any) -> Path | None:
    """The folder ``component`` reads its weights from: the one its ``capabilities.weights_option``
    config value names, else its class's packaged ``default_weights`` folder; None when neither."""
    option = component.capabilities.weights_option
    named = getattr(component.config, option, None) if option else None
    folder = named or getattr(type(component), "default_weights", None)
    return Path(folder) if folder else None


def weights_digests(component: Any) -> dict[str, str] | None:
    """SHA-256 of each weights file (:data:`WEIGHT_SUFFIXES`) in :func:`weights_folder`, by its
    path inside the folder; None when the component has no such folder on this machine."""
    folder = weights_folder(component)
    if folder is None or not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    return {p.relative_to(folder).as_posix(): _file_sha256(p) for p in files}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _file_hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _file_hashes[key] = h.hexdigest()
    return _file_hashes[key]


def weights_problem(pipeline: Any, record: Mapping) -> str | None:
    """Why ``pipeline`` (built from ``record``'s spec) would not run on the weights the record was
    made with, or None. A step whose weights folder the spec names must have recorded digests; a
    packaged default without them (a record from an older Loom) is taken as it is installed. A
    step's adapter files must have the SHA-256 it recorded (:func:`adapters_problem`)."""
    listed = record.get("components")
    entries = [e for e in listed if isinstance(e, Mapping)] if isinstance(listed, list) else []
    recorded = {e.get("step"): e.get("weights") for e in entries}
    adapters = {e.get("step"): e.get("adapters") for e in entries}
    for step, (spec_step, component) in enumerate(zip(pipeline.spec.steps, pipeline.components), start=1):
        where, want, now = f"step {step} ({spec_step.component!r})", recorded.get(step), weights_digests(component)
        problem = adapters_problem(where, adapters.get(step), adapter_digests(component))
        if problem:
            return problem
        option = component.capabilities.weights_option
        named = bool(option and getattr(component.config, option, None))
        if want is None and now is not None and named:
            return f"{where}: the record keeps no SHA-256 of its weights folder {str(weights_folder(component))!r}"
        problem = None if want is None else _digests_problem(where, weights_folder(component), want, now or {})
        if problem:
            return problem
    return None


def _digests_problem(where: str, folder: Path | None, want: Any, now: dict[str, str]) -> str | None:
    if not isinstance(want, Mapping):
        return f"{where}: the record's weights digests are not a mapping of file → SHA-256"
    for name in sorted(set(want) | set(now)):
        file = str(Path(folder or ".") / name)
        if name not in now:
            return f"{where}: weights file {file!r}, recorded with SHA-256 {str(want[name])[:12]}…, is missing"
        if name not in want:
            return f"{where}: weights file {file!r} is not among the weights the record was made with"
        if now[name] != want[name]:
            return (
                f"{where}: weights file {file!r} is not the one the record was made with "
                f"(SHA-256 {now[name][:12]}…, recorded {str(want[name])[:12]}…)"
            )
    return None


# -- adapters ------------------------------------------------------------------------------------


def _adapter_file(adapter: Any) -> Path:
    # an adapter entry names its safetensors file (``file()``: a folder's adapter.safetensors), else ``path`` is it
    return Path(adapter.file()) if callable(getattr(adapter, "file", None)) else Path(adapter.path).expanduser()


def adapter_digests(component: Any) -> list[dict] | None:
    """Each LoRA adapter of ``component`` (its config's ``adapters``) as ``{"path", "sha256", "scale"}``, in
    order (``sha256`` None for a file that is not there); None when it has none."""
    entries = getattr(component.config, "adapters", None)
    if not entries:
        return None
    kept = []
    for adapter in entries:
        file = _adapter_file(adapter)
        sha256 = _file_sha256(file) if file.is_file() else None
        kept.append({"path": str(adapter.path), "sha256": sha256, "scale": float(adapter.scale)})
    return kept


def adapters_problem(where: str, want: Any, now: list[dict] | None) -> str | None:
    """Why a step's adapters (``now``, :func:`adapter_digests`) are not the ones its record keeps (``want``), or
    None: a file that is missing or has another SHA-256 is named."""
    if want is None:
        return f"{where}: the record keeps no SHA-256 of its adapter files" if now else None
    if not isinstance(want, list) or not all(isinstance(w, Mapping) for w in want):
        return f"{where}: the record's adapters are not a list of {{path, sha256, scale}}"
    now = now or []
    if len(want) != len(now):
        return f"{where}: the record keeps {len(want)} adapter(s), the spec names {len(now)}"
    for kept, found in zip(want, now):
        recorded = str(kept.get("sha256"))[:12]
        if found["sha256"] is None:
            return f"{where}: adapter file {found['path']!r}, recorded with SHA-256 {recorded}…, is missing"
        if found["sha256"] != kept.get("sha256"):
            return (
                f"{where}: adapter file {found['path']!r} is not the one the record was made with "
                f"(SHA-256 {found['sha256'][:12]}…, recorded {recorded}…)"
            )
    return None


# -- is it safe to replay? ------------------------------------------------------------------------
#: What a Hugging Face hub id looks like (``ORG/NAME``); an existing local path is not one.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def options_problem(options: Any, where: str, allow_download: bool = False) -> str | None:
    """Why one step's ``options`` (from a record's spec or a prompts file's ``params``) must not be
    replayed, or None: they are not a mapping, or (unless ``allow_download``) a value names a hub
    id that is no local path, or ``download`` is true."""
    if not isinstance(options, Mapping):
        return f"{where}: options must be a mapping, got {type(options).__name__}"
    if allow_download:
        return None
    for key, value in _leaves(options):
        if key == "download" and value is True:
            return f"{where}: option 'download' is true, which would fetch weights from the Hugging Face hub"
        if isinstance(value, str) and HUB_ID.fullmatch(value) and not Path(value).expanduser().exists():
            return (
                f"{where}: option {key!r} names the hub id {value!r}, which Loom would fetch from the Hugging Face hub"
            )
    return None


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(option name, value) of every scalar inside ``value``, nested mappings and lists included."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v, key)
    else:
        yield key, value


def replay_problem(spec: Any, allow_download: bool = False) -> str | None:
    """Why a record's ``spec`` must not be replayed, or None: it is not a mapping of steps (a path
    or text is never read), or a step's options fail :func:`options_problem`."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("steps"), list):
        return (
            f"its spec is a {type(spec).__name__}, not a mapping of steps (a record's spec is never read from a file)"
        )
    for i, step in enumerate(spec["steps"], start=1):
        if not isinstance(step, Mapping):
            return f"step {i} of its spec is a {type(step).__name__}, not a mapping"
        where = f"step {i} ({step.get('component')!r})"
        problem = options_problem(step.get("config") or {}, where, allow_download)
        if problem:
            return problem
    return None
