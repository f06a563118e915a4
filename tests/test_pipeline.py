import json

import pytest
from fakes import LOADED, fake_registry

from loom.chains import Pipeline as AppPipeline
from loom.chains import read_spec
from loom.core import ConfigError, Pipeline, SpecError, TypeMismatchError, UnknownComponentError, hookimpl
from loom.core.errors import InputError

GOOD = {
    "steps": [{"component": "hash-encoder"}, {"component": "noise", "config": {"size": 6}}, {"component": "invert"}]
}


@pytest.fixture
def registry():
    LOADED.clear()
    return fake_registry()


def test_good_spec_builds_without_loading_anything(registry):
    pipeline = Pipeline.from_spec(GOOD, registry)
    assert LOADED == []
    assert pipeline.input_type.kind == "Text" and pipeline.output_type.kind == "Image"
    assert [s.config for s in pipeline.spec.steps] == [{"dim": 8}, {"size": 6}, {}]


def test_unknown_component_names_step_and_suggests(registry):
    spec = {"steps": [{"component": "hash-encoder"}, {"component": "nois"}]}
    with pytest.raises(UnknownComponentError) as err:
        Pipeline.from_spec(spec, registry)
    msg = str(err.value)
    assert "step 2" in msg and "'nois'" in msg and "did you mean 'noise'" in msg
    assert LOADED == []


def test_invalid_config_value_names_step_option_and_value(registry):
    spec = {"steps": [{"component": "hash-encoder"}, {"component": "noise", "config": {"size": 1000}}]}
    with pytest.raises(ConfigError) as err:
        Pipeline.from_spec(spec, registry)
    msg = str(err.value)
    assert "step 2 ('noise')" in msg and "'size' = 1000" in msg and "less than or equal to 64" in msg
    assert LOADED == []


def test_unknown_config_option_is_rejected(registry):
    spec = {"steps": [{"component": "hash-encoder", "config": {"dimm": 3}}, {"component": "noise"}]}
    with pytest.raises(
        ConfigError, match=r"(?s)step 1 \('hash-encoder'\): unknown option 'dimm'.*accepted options: dim"
    ):
        Pipeline.from_spec(spec, registry)


def test_type_mismatch_names_both_steps_and_what_fits(registry):
    spec = {"steps": [{"component": "hash-encoder"}, {"component": "invert"}]}
    with pytest.raises(TypeMismatchError) as err:
        Pipeline.from_spec(spec, registry)
    msg = str(err.value)
    assert "step 2 ('invert') takes Image" in msg
    assert "step 1 ('hash-encoder') gives Embedding" in msg
    assert "components that take Embedding: noise" in msg
    assert LOADED == []


def test_audio_step_after_image_rejected(registry):
    spec = {"steps": [{"component": "hash-encoder"}, {"component": "noise"}, {"component": "quieter"}]}
    with pytest.raises(TypeMismatchError, match="takes Audio, but step 2 .* gives Image"):
        Pipeline.from_spec(spec, registry)


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ({"steps": []}, "steps.*at least 1"),
        ({"stepz": []}, "unknown option 'stepz'"),
        ({"steps": [{"config": {}}]}, "steps.0.component"),
        ("steps: [unclosed", "not valid YAML"),
        ("[1, 2]", "a spec is a mapping"),
        ({"version": 2, "steps": [{"component": "noise"}]}, "version"),
    ],
)
def test_malformed_specs(registry, spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        AppPipeline.from_spec(spec, registry)


def test_spec_from_yaml_and_json_files(registry, tmp_path):
    yml = tmp_path / "chain.yaml"
    yml.write_text("steps:\n  - component: hash-encoder\n  - component: noise\n    config: {size: 4}\n")
    js = tmp_path / "chain.json"
    js.write_text(json.dumps({"steps": [{"component": "hash-encoder"}, {"component": "noise", "config": {"size": 4}}]}))
    a, b = AppPipeline.from_spec(yml, registry), AppPipeline.from_spec(str(js), registry)
    assert a.spec == b.spec == AppPipeline.from_spec(yml.read_text(), registry).spec
    with pytest.raises(SpecError, match="does not exist"):
        read_spec(tmp_path / "missing.yaml")
    # the engine takes specs as data only; reading files is the app layer's
    with pytest.raises(SpecError, match="a spec is a mapping.*got PosixPath"):
        Pipeline.from_spec(yml, registry)


def test_from_steps_matches_spec(registry):
    p = AppPipeline.from_steps("hash-encoder", ("noise", {"size": 6}), "invert", registry=registry)
    assert p.spec == Pipeline.from_spec(GOOD, registry).spec


def test_seed_gives_same_item_alone_or_in_any_batch_position(registry):
    pipeline = Pipeline.from_spec(GOOD, registry)
    prompts = [f"prompt {i}" for i in range(8)]
    batch = pipeline.run(prompts, seed=[100 + i for i in range(8)], progress=False).output.to_numpy()
    for i in (0, 3, 7):
        alone = pipeline.run(prompts[i], seed=[100 + i], progress=False).output.to_numpy()[0]
        assert (alone == batch[i]).all()
    shuffled = pipeline.run(prompts[::-1], seed=[107 - i for i in range(8)], progress=False).output.to_numpy()
    assert (shuffled[::-1] == batch).all()
    other = pipeline.run(prompts[0], seed=[999], progress=False).output.to_numpy()[0]
    assert (other != batch[0]).any()


def test_result_provenance(registry):
    engine = Pipeline.from_spec(GOOD, registry).run(["a", "b"], seed=5)
    # the engine keeps the facts of the run; the app layer's pipeline adds the replayable record
    assert set(engine.provenance) == {"inputs", "seeds", "timings"} and engine.provenance["seeds"] == [5, 6]
    pipeline = AppPipeline.from_spec(GOOD, registry)
    result = pipeline.run(["a", "b"], seed=5, progress=False)
    rec = result.provenance
    assert rec["seeds"] == [5, 6] and rec["inputs"] == ["a", "b"]
    assert rec["spec"]["steps"][1] == {"component": "noise", "config": {"size": 6}}
    assert [c["plugin"] for c in rec["components"]] == ["fakes"] * 3
    assert rec["components"][0]["plugin_version"] == "1.0"
    assert len(rec["timings"]["steps_s"]) == 3
    one = result.record(1)
    assert one["inputs"] == ["b"] and one["seeds"] == [6] and one["item"] == 1


def test_bad_inputs(registry):
    pipeline = Pipeline.from_spec(GOOD, registry)
    with pytest.raises(InputError, match="prompt 2 is empty"):
        pipeline.run(["ok", "  "], progress=False)
    with pytest.raises(InputError, match="one seed per input"):
        pipeline.run(["a", "b"], seed=[1], progress=False)
    with pytest.raises(InputError, match="seed"):
        pipeline.run(["a"], seed=-3, progress=False)
    with pytest.raises(InputError, match="takes Text"):
        pipeline.run(42, progress=False)


def test_run_hooks_fire_in_order(registry):
    events = []

    class Observer:
        @hookimpl
        def loom_pipeline_start(self, inputs, seeds):
            events.append(("start", len(inputs), tuple(seeds)))

        @hookimpl
        def loom_step_end(self, index, step, seconds):
            events.append(("step", index, step.component))

        @hookimpl
        def loom_pipeline_end(self, result):
            events.append(("end", len(result)))

    registry.add_plugin(Observer(), "observer")
    Pipeline.from_spec(GOOD, registry).run(["x", "y"], seed=1, progress=False)
    assert events == [
        ("start", 2, (1, 2)),
        ("step", 0, "hash-encoder"),
        ("step", 1, "noise"),
        ("step", 2, "invert"),
        ("end", 2),
    ]


def test_failing_observer_warns_but_run_completes(registry):
    class Broken:
        @hookimpl
        def loom_step_end(self):
            raise RuntimeError("boom")

    registry.add_plugin(Broken(), "broken-observer")
    with pytest.warns(UserWarning, match="broken-observer.*boom"):
        result = Pipeline.from_spec(GOOD, registry).run("x", seed=1, progress=False)
    assert len(result) == 1
