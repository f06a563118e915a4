"""The conformance kit (loom.testing): broken components fail exactly the check they break, the
results are structured and counted, the pytest integration makes one item per check, and every
first-party component passes."""

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import conformance_fakes as fakes
import pytest

from loom.core import Capabilities, ConfigError
from loom.testing import (
    CHECKS,
    EXAMPLE_ENCODER,
    EXAMPLE_TEXT_DIM,
    ConformanceError,
    check_component,
    check_plugin,
    conformance_tests,
)

TESTS = Path(__file__).resolve().parent
ALL_CHECKS = {c.name for c in CHECKS}


def failed(report) -> set[str]:
    return {r.check for r in report.failures}


def test_a_component_that_keeps_the_contract_passes_and_says_what_was_skipped():
    report = check_component(fakes.Brighten)
    assert failed(report) == set()
    assert report.ok and report.ran == len(ALL_CHECKS) - 1
    assert report.counts == {"passed": len(ALL_CHECKS) - 1, "failed": 0, "skipped": 1}
    [skip] = report.skipped
    assert skip.check == "weights_round_trip" and "has_weights = False" in skip.message
    assert f"{len(ALL_CHECKS) - 1} passed, 0 failed, 1 skipped" in str(report)


@pytest.mark.parametrize(
    ("component", "check"),
    [
        (fakes.NonDeterministic, "seed_determinism"),
        (fakes.WrongOutputType, "call_output"),
        (fakes.BatchDependent, "batch_invariance"),
        (fakes.AcceptsAnything, "config_rejects_bad_values"),
        (fakes.BadDefault, "config_defaults"),
        (fakes.LossyWeights, "weights_round_trip"),
        (fakes.BareErrors, "bad_input_errors"),
        (fakes.IgnoresSeed, "seeds_differ"),
        (fakes.SecretlySeeded, "seeds_differ"),
        (fakes.UnboundedSize, "config_fuzzing"),
        (fakes.CrashesWithoutImage, "given_inputs"),
        (fakes.AcceptsAnyInput, "given_inputs"),
        (fakes.VagueRefusal, "given_inputs"),
        (fakes.IgnoresStrayInputs, "given_inputs"),
        (fakes.FirstImageForAll, "batch_invariance"),
    ],
)
def test_a_broken_component_fails_exactly_the_check_it_breaks(component, check):
    report = check_component(component)
    assert failed(report) == {check}, str(report)
    [failure] = report.failures
    contract = next(c.contract for c in CHECKS if c.name == check)
    assert failure.message.startswith(f"component {component.__name__!r} fails check {check!r}: ")
    assert failure.message.endswith(f"; the contract: {contract}")
    with pytest.raises(ConformanceError, match=f"fails check '{check}'"):
        report.raise_for_failures()


def test_a_step_that_takes_images_passes_every_check_on_the_kits_examples_of_them():
    report = check_component(fakes.Blend)
    assert failed(report) == set(), str(report)
    assert [r.check for r in report.skipped] == ["weights_round_trip"]
    assert report.status("given_inputs") == report.status("batch_invariance") == "passed"
    # a component that takes nothing still has its stray inputs checked, not a skip
    assert check_component(fakes.Brighten, only=["given_inputs"]).status("given_inputs") == "passed"


def test_the_kit_calls_a_step_with_each_input_it_takes_and_without_each_optional_one():
    seen = []

    class Spy(fakes.Blend):
        def run(self, inputs, generators, image, mask=None):
            seen.append((len(inputs), len(image), mask is not None and len(mask)))
            assert mask is None or bool((mask.pixels[:, 0] == mask.pixels[:, 2]).all())  # a mask is grey
            return super().run(inputs, generators, image, mask)

    calling = [c.name for c in CHECKS if c.calls and c.name not in ("weights_round_trip", "given_inputs")]
    assert check_component(Spy, only=calling).ok
    assert seen and all(n == images == masks for n, images, masks in seen), seen
    seen.clear()
    assert check_component(Spy, only=["given_inputs"]).ok
    assert any(masks is False for _, _, masks in seen)  # a call without its optional mask


def test_given_images_replace_the_kits_examples_per_component():
    import torch

    from loom.core import Image, hookimpl

    small = Image(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    report = check_component(fakes.SmallImagesOnly)
    assert failed(report) == {"call_output"} and "takes 8×8 images, got (16, 16)" in report.failures[0].message
    assert failed(check_component(fakes.SmallImagesOnly, given={"image": small})) == set()
    assert check_component(fakes.SmallImagesOnly, given={"image": lambda count: small.take([0] * count)}).ok

    class Plugin:
        @hookimpl
        def loom_register_components(self, register):
            register("small", fakes.SmallImagesOnly)

    only = ["call_output", "batch_invariance", "given_inputs", "run_hooks"]
    assert check_plugin(Plugin(), given={"small": {"image": small}}, only=only).ok
    test = conformance_tests(Plugin(), given={"small": {"image": small}}, only=only)
    cases = [param.values for mark in test.pytestmark for param in mark.args[1]]
    assert sorted(name for _, name in cases) == sorted(["registers", *only])
    for case in cases:
        test(*case)  # pytest.fail()s on a failed check

    with pytest.raises(ValueError, match=r"given= names inputs that 'SmallImagesOnly' does not take: \['imgae'\]"):
        check_component(fakes.SmallImagesOnly, given={"imgae": small})
    report = check_plugin(Plugin(), given={"big": {"image": small}}, only=["data_types"])
    assert "for components it does not register: ['big']" in report.failures[0].message


def test_takes_must_name_data_types_and_optional_names_among_them():
    class TakesANumber(fakes.Blend):
        takes = {"image": int}

    class OptionalStranger(fakes.Blend):
        optional = frozenset({"mask", "depth"})

    report = check_component(TakesANumber, only=["data_types"])
    assert failed(report) == {"data_types"} and "gives input 'image' the type <class 'int'>" in str(report)
    report = check_component(OptionalStranger, only=["data_types"])
    assert failed(report) == {"data_types"} and "optional names ['depth'], which are not in its takes" in str(report)


def test_eager_weight_reading_fails_lazy_import(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not really weights")
    report = check_component(fakes.EagerWeights, {"weights": str(weights)})
    assert failed(report) == {"lazy_import"}
    assert f"opened weights file {str(weights)!r}" in report.failures[0].message


@pytest.mark.slow
def test_eager_torch_import_fails_lazy_import_and_names_the_line():
    report = check_plugin(importlib.import_module("conformance_eager"))
    assert failed(report) == {"lazy_import"}
    assert "imported torch (first from" in report.failures[0].message
    assert "conformance_eager.py:3" in report.failures[0].message


def test_capabilities_turn_checks_into_skips_with_reasons():
    report = check_component(fakes.DeclaredRandom)
    assert report.ok
    assert report.status("seed_determinism") == "skipped" and report.status("batch_invariance") == "skipped"
    assert all("deterministic = False" in r.message for r in report.skipped if r.check != "weights_round_trip")

    gpu = check_component(fakes.GPUOnly)
    calling = {c.name for c in CHECKS if c.calls}
    assert {r.check for r in gpu.skipped} == calling
    assert all("without cpu" in r.message for r in gpu.skipped)
    assert gpu.ran == len(ALL_CHECKS) - len(calling)


def test_a_run_where_everything_was_skipped_is_not_ok():
    report = check_component(fakes.GPUOnly, only=["call_output", "progress"])
    assert report.counts == {"passed": 0, "failed": 0, "skipped": 2} and not report.ok
    with pytest.raises(ConformanceError, match="no conformance check ran"):
        report.raise_for_failures()


def test_weights_round_trip_runs_when_declared():
    report = check_component(fakes.Projector)
    assert report.ok and report.status("weights_round_trip") == "passed"
    assert report.counts["skipped"] == 0


def test_capabilities_are_validated_and_default_to_the_strict_promises():
    assert Capabilities(uses_seed=False) == fakes.Brighten.capabilities
    assert Capabilities().deterministic and Capabilities().batchable and Capabilities().tolerance == 0.0
    assert Capabilities().uses_seed  # a component that ignores its seeds says so
    with pytest.raises(ValueError):
        Capabilities(tolerance=-1)
    with pytest.raises(ConfigError):
        fakes.Brighten(amount=3)


def test_check_plugin_reports_registration_failures():
    class Empty:
        pass

    report = check_plugin(Empty())
    assert not report.ok and report.status("registers") == "failed"
    assert "registered no component" in report.failures[0].message
    report = check_plugin(fakes, configs={"nonexistent": {}}, only=["data_types"])
    assert "does not register: ['nonexistent']" in report.failures[0].message


@pytest.mark.slow
def test_conformance_tests_make_one_pytest_item_per_check(tmp_path):
    only = ["data_types", "seed_determinism", "weights_round_trip"]
    (tmp_path / "test_plugin.py").write_text(
        textwrap.dedent(f"""
        import conformance_fakes
        from loom.testing import conformance_tests

        class BrokenPlugin:
            from loom.core import hookimpl

            @hookimpl
            def loom_register_components(self, register):
                register("nondeterministic", conformance_fakes.NonDeterministic)

        test_fakes = conformance_tests(conformance_fakes, only={only!r})
        test_broken = conformance_tests(BrokenPlugin(), only=["seed_determinism"])
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(tmp_path / "test_plugin.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    # the counts from first principles: one "registers" item per plugin, then one per (component,
    # check); of the fakes, only a component declaring weights can round-trip them; the broken
    # plugin's one component fails its one check
    registered = {}
    fakes.loom_register_components(lambda name, cls, **_: registered.setdefault(name, cls))
    items = 1 + len(registered) * len(only) + 1 + 1
    skipped = sum(not cls.capabilities.has_weights for cls in registered.values())
    passed = items - 1 - skipped
    assert 0 < skipped < len(registered)  # the fakes show both a skipped and a passed round trip
    assert f"1 failed, {passed} passed, {skipped} skipped" in text
    assert "FAILED test_plugin.py::test_broken[nondeterministic-seed_determinism]" in text
    assert "component 'nondeterministic' fails check 'seed_determinism': two calls with seed 11" in text
    assert "component 'brighten', check 'weights_round_trip': it declares capabilities.has_weights = False" in text
    assert (
        f"loom conformance: {len(registered) + 1} component(s), {items} checks: "
        f"{passed} passed, 1 failed, {skipped} skipped" in text
    )


def test_importing_the_kit_and_its_pytest_plugin_imports_no_torch():
    code = "import sys, loom.testing, loom.testing.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# -- Loom's own components ----------------------------------------------------------------------

test_image_postprocessors_conform = conformance_tests("image-postprocessors")
test_text_encoder_conforms = pytest.mark.slow(conformance_tests("text-encoder"))


def tiny_folder(family: str, root: Path) -> str:
    """An untrained but complete folder of ``family`` at 16 px, conditioned on the kit's example
    embeddings: what the contract checks need, in a fraction of a second (no weights ship yet)."""
    mod = importlib.import_module(f"loom.plugins.{family}.model")
    common = dict(image_size=16, text_dim=EXAMPLE_TEXT_DIM, encoder=EXAMPLE_ENCODER)
    if family == "vae":
        model = mod.ConditionalVAE(
            mod.VAEConfig(**common, latent_dim=4, cond_dim=16, width=16, queries=2, channels=[16, 8])
        )
    elif family == "gan":
        model = mod.GANGenerator(
            mod.GANConfig(
                **common, noise_dim=4, cond_dim=16, width=16, queries=2, channels=[16, 8], d_channels=[8, 8, 8, 8]
            )
        )
    else:
        model = mod.ARModel(
            mod.ARConfig(
                **common, codebook=16, code_dim=8, vq_channels=[8, 8, 8], d_model=16, layers=1, heads=2, queries=2
            )
        )
    model.save(root / family)
    return str(root / family)


def tiny_sound_folder(family: str, root: Path) -> str:
    """An untrained sound folder of ``family`` (``vae`` or ``gan``): 1×16×8 mel images of 0.064 s
    clips at 16 bands, so that the contract checks (Griffin-Lim included) run in a moment."""
    from loom.plugins.common.mel import MelImage, MelSettings

    mod = importlib.import_module(f"loom.plugins.{family}.model")
    layout = MelImage(settings=MelSettings(n_mels=16, griffin_lim_iterations=4), samples=1024, frames=8)
    common = dict(
        family=f"{family}-sound",
        sample_shape=[1, 16, 8],
        mel=layout.model_dump(),
        text_dim=EXAMPLE_TEXT_DIM,
        encoder=EXAMPLE_ENCODER,
        cond_dim=16,
        width=16,
        queries=2,
        channels=[16, 8],
    )
    if family == "vae":
        model = mod.ConditionalVAE(mod.VAEConfig(**common, latent_dim=4))
    else:
        model = mod.GANGenerator(mod.GANConfig(**common, noise_dim=4, d_channels=[8, 8, 8, 8]))
    model.save(root / f"{family}-sound")
    return str(root / f"{family}-sound")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vae", "gan", "ar"])
def test_first_party_generators_conform(family, tmp_path):
    configs = {family: {"weights": tiny_folder(family, tmp_path)}}
    if family in ("vae", "gan"):  # the plugin registers its sound generator too
        configs[f"{family}-sound"] = {"weights": tiny_sound_folder(family, tmp_path)}
    report = check_plugin(family, configs=configs)
    assert failed(report) == set(), str(report)
    assert report.ran >= len(ALL_CHECKS)  # every check but the round trip, plus "registers"


def test_trained_generator_folder_format_round_trips(tmp_path):
    """The first-party folder format (config.json + model.safetensors) survives save and load,
    shown on a subclass that declares it the way a generator with a folder format does."""
    from loom.plugins.vae import VAEGenerator

    class SavingVAE(VAEGenerator):
        capabilities = Capabilities(has_weights=True, weights_option="weights")

        def save_weights(self, folder):
            return self.model.save(folder)

    report = check_component(SavingVAE, {"weights": tiny_folder("vae", tmp_path)}, only=["weights_round_trip"])
    assert report.status("weights_round_trip") == "passed", str(report)


@pytest.mark.slow
def test_the_example_plugin_passes_its_own_conformance_tests(tmp_path):
    root = TESTS.parent / "docs" / "example-plugin"
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(root),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    # its one component: "registers" and every check, the weights round trip skipped (it declares
    # no weights); then the plugin's own tests
    own = sum(line.startswith("def test_") for line in (root / "tests" / "test_frame.py").read_text().splitlines())
    assert own >= 1
    assert f"{1 + len(ALL_CHECKS) - 1 + own} passed, 1 skipped" in out.stdout


def test_the_pytest_plugin_gives_the_kit_as_a_fixture(loom_check):
    assert loom_check(fakes.Brighten, {"amount": 0.5}, only=["config_defaults", "call_output"]).ok


# -- components that take adapters ---------------------------------------------------------------


def test_a_component_that_takes_adapters_is_checked_with_the_adapter_the_test_gives(tmp_path):
    adapter = fakes.write_tint_adapter(tmp_path / "tint.safetensors")
    report = check_component(fakes.Tinted, adapter=adapter)
    assert report.status("adapters") == "passed", str(report)
    assert not report.failures, str(report)
    # without an adapter the check says what to give; a component without the option has no such check
    assert "gave no adapter file" in str(check_component(fakes.Tinted, only=["adapters"]))
    assert "adapters" not in {r.check for r in check_component(fakes.Brighten).results}


@pytest.mark.parametrize(
    ("component", "says"),
    [
        (fakes.IgnoresAdapters, "at scale 1 changes nothing"),
        (fakes.TakesAnyModule, "an adapter for a module it lacks ('tint_kit_missing') was accepted"),
    ],
)
def test_a_component_that_breaks_an_adapter_promise_fails_the_adapters_check(component, says, tmp_path):
    adapter = fakes.write_tint_adapter(tmp_path / "tint.safetensors")
    report = check_component(component, adapter=adapter, only=["adapters"])
    assert failed(report) == {"adapters"} and says in str(report), str(report)
