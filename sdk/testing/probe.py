"""Run by the conformance kit in a fresh interpreter (``python -m loom.testing.probe JOB``):
import a plugin, register it and build one component, then report which heavy libraries got
imported (and from where) and which weight files got opened. A fresh interpreter is the only
honest measure: in the test process torch is long imported."""

from __future__ import annotations

import importlib
import json
import sys
import traceback

#: Libraries that belong in ``setup()``, never in import, registration or construction.
HEAVY = (
    "torch",
    "torchaudio",
    "torchvision",
    "transformers",
    "diffusers",
    "safetensors",
    "tensorflow",
    "jax",
    "onnxruntime",
)
#: Files that hold weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack")
#: Printed before the JSON report, so that a plugin printing to stdout cannot garble it.
MARKER = "LOOM-PROBE "


class ImportWatcher:
    """A meta-path finder that finds nothing: it only notes where each heavy library was first imported."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in HEAVY and top not in self.first:
            frames = [
                f
                for f in traceback.extract_stack()[:-1]
                if not f.filename.startswith("<") and "importlib" not in f.filename and f.filename != __file__
            ]
            self.first[top] = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        return None


def main(job: dict) -> dict:
    watcher = ImportWatcher()
    opened: list[str] = []

    def on_event(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            path = args[0].decode() if isinstance(args[0], bytes) else args[0]
            if path.lower().endswith(WEIGHT_SUFFIXES):
                opened.append(path)

    sys.meta_path.insert(0, watcher)
    sys.addaudithook(on_event)
    report: dict = {"error": None}
    try:
        if job.get("plugin_module"):
            from loom.core.plugins import Registry

            info = Registry().add_plugin(importlib.import_module(job["plugin_module"]), "probe")
            if info.errors:
                report["error"] = f"registering the plugin failed: {'; '.join(info.errors)}"
        target = importlib.import_module(job["module"])
        for part in job["qualname"].split("."):
            target = getattr(target, part)
        target(job["config"])
    except Exception as err:
        report["error"] = f"{type(err).__name__}: {err}"
    report["heavy"] = {name: where for name, where in watcher.first.items() if name in sys.modules}
    report["opened"] = opened
    return report


if __name__ == "__main__":
    print(MARKER + json.dumps(main(json.loads(sys.argv[1]))))
