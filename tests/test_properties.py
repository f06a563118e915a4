"""Property tests (hypothesis): specs, prompts files, configs and records made at random never give
anything but a result or a :class:`~loom.core.errors.LoomError`: no traceback, no hang.

``LOOM_HYPOTHESIS_EXAMPLES`` sets the examples per property (default 200; CI uses the default).
Nothing here loads a model except the record property, which replays valid records on the tiny
fake chain of ``tests/fakes.py``.
"""

from __future__ import annotations

import json
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.core import LoomError, get_registry
from loom.core.component import validate_config

EXAMPLES = int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "200"))
#: No example database (tests write nothing into the checkout); no per-example deadline (the
#: machines are noisy), but a bounded count.
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Words a spec or record uses, so that random values often reach deep validation.
WORDS = ["steps", "component", "config", "version", "name", "size", "temperature", "text-encoder", "vae", "resize"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)  # a library in the suite sets flush-to-zero
    | st.sampled_from(WORDS)
    | st.text(max_size=20)
)
keys = st.sampled_from(WORDS) | st.text(string.ascii_letters + "-_:", max_size=12)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=30
)
steps = st.lists(
    st.fixed_dictionaries(
        {"component": st.sampled_from(["hash-encoder", "noise", "invert", "quieter", "nope"]) | st.text(max_size=8)},
        optional={"config": st.dictionaries(st.sampled_from(["size", "dim", "x"]), scalars, max_size=2) | scalars},
    ),
    max_size=4,
)
specs = json_values | st.fixed_dictionaries({"steps": steps}, optional={"version": scalars, "name": scalars})


def outcome(call, *args, **kwargs):
    """What ``call`` gives: its value, or the LoomError it raised (anything else fails the test)."""
    try:
        return call(*args, **kwargs)
    except LoomError as err:
        assert str(err).strip(), f"{type(err).__name__} with an empty message"
        return err


@PROPERTY
@given(spec=specs)
def test_random_specs_build_or_raise_loom_errors(spec):
    from fakes import fake_registry

    import loom

    outcome(loom.Pipeline.from_spec, spec, registry=fake_registry())


@PROPERTY
@given(text=st.text(max_size=300) | json_values.map(json.dumps))
def test_random_spec_text_builds_or_raises_loom_errors(text):
    from fakes import fake_registry

    import loom

    outcome(loom.Pipeline.from_spec, text, registry=fake_registry())


@PROPERTY
@given(
    body=st.binary(max_size=400)
    | st.lists(json_values.map(json.dumps), max_size=5).map(lambda lines: "\n".join(lines).encode()),
    suffix=st.sampled_from([".txt", ".jsonl"]),
)
def test_random_prompts_files_read_or_raise_loom_errors(tmp_path, body, suffix):
    from loom.batch_jobs import read_items

    path = tmp_path / f"prompts{suffix}"
    path.write_bytes(body)
    items = outcome(read_items, path)
    if not isinstance(items, LoomError):
        assert items and all(isinstance(item.prompt, str) for item in items)


def first_party_components():
    return [e for e in get_registry().components() if e.cls.__module__.startswith("loom.plugins.")]


@pytest.mark.parametrize("entry", first_party_components(), ids=lambda e: e.qualified_name)
@PROPERTY
@given(data=st.data())
def test_random_configs_validate_or_raise_config_errors(entry, data):
    fields = list(entry.cls.Config.model_fields)
    config = data.draw(st.dictionaries(st.sampled_from(fields + ["junk"]) if fields else keys, scalars, max_size=3))
    outcome(validate_config, entry.cls, config, entry.name)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A small real output (the default chain at 32 px) and its record, to mutate."""
    import loom
    from loom.outputs import read_record

    path = tmp_path_factory.mktemp("made") / "made.png"
    loom.generate("a red circle on a blue background", seed=1, size=32, progress=False, output=path)
    return path, read_record(path)


def step_config(record: dict, n: int) -> dict | None:
    """The config of step ``n`` (modulo their number) of ``record``'s spec; None where an earlier change left none."""
    try:
        steps = record["spec"]["steps"]
        config = steps[n % len(steps)].setdefault("config", {})
    except (KeyError, TypeError, AttributeError, ZeroDivisionError):
        return None
    return config if isinstance(config, dict) else None


def mutated(record: dict):
    """Strategies for ``record`` with random values put in at random places, top level and in its steps."""
    import copy

    def put(changes):
        out = copy.deepcopy(record)
        for where, value in changes:
            target = out
            if where.startswith("step:") and (config := step_config(out, int(where[5:]))) is not None:
                target = config
                where = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else "size"
            target[where] = value
        return out

    places = st.sampled_from([*record, "step:0", "step:1", "step:2", "step:3", "junk"])
    return st.lists(st.tuples(places, json_values), min_size=1, max_size=3).map(put)


@pytest.mark.slow
@settings(PROPERTY, max_examples=max(EXAMPLES // 4, 10))
@given(data=st.data())
def test_random_records_replay_or_raise_loom_errors(made, tmp_path_factory, data):
    from PIL import Image as PILImage

    import loom
    from loom.outputs import save_png

    source, record = made
    edited = data.draw(mutated(record))
    path = tmp_path_factory.mktemp("record") / "edited.png"
    with PILImage.open(source) as image:
        if isinstance(outcome(save_png, image.copy(), path, edited), LoomError):
            return  # a record Loom will not write (too large, not JSON) is refused as a LoomError too
    outcome(loom.reproduce, path, path.with_name("again.png"), progress=False)
