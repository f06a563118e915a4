"""The autoregressive family's parts: the key/value cache and the sampler."""

import pytest
import torch

from loom.plugins.ar.model import ARConfig, ARModel, empty_condition, pick


def tiny_model():
    torch.manual_seed(0)
    cfg = ARConfig(image_size=16, codebook=32, code_dim=8, vq_channels=[8, 8, 8], d_model=32, layers=2, heads=2)
    return ARModel(cfg).eval()


def caption(b=3, length=6, dim=384):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, length)
    mask[0, 4:] = 0  # one padded caption
    return torch.randn(b, length, dim, generator=g), mask, torch.randn(b, dim, generator=g)


def test_cached_greedy_sampling_matches_full_recomputation():
    model = tiny_model()
    tokens, mask, pooled = caption()
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    codes = model.prior.sample(tokens, mask, pooled, gens, temperature=0)
    assert codes.shape == (3, model.cfg.seq_len)
    # teacher forcing on the sampled codes recomputes every prefix from scratch, without a cache:
    # greedy decoding through the cache must have picked the argmax at every position
    logits = model.prior(codes, tokens, mask, pooled)
    assert torch.equal(logits.argmax(-1), codes)


def test_guided_greedy_sampling_follows_the_guided_logits():
    model = tiny_model()
    tokens, mask, pooled = caption()
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    scale = 3.0
    codes = model.prior.sample(tokens, mask, pooled, gens, temperature=0, guidance_scale=scale)
    cond = model.prior(codes, tokens, mask, pooled)
    uncond = model.prior(codes, *empty_condition(tokens, mask, pooled))
    assert torch.equal((uncond + scale * (cond - uncond)).argmax(-1), codes)
    # guidance 1 is plain sampling
    plain = model.prior.sample(tokens, mask, pooled, gens, temperature=0)
    assert torch.equal(model.prior.sample(tokens, mask, pooled, gens, temperature=0, guidance_scale=1.0), plain)


def test_sampling_uses_each_items_own_generator():
    model = tiny_model()
    tokens, mask, pooled = caption()
    a = model.prior.sample(tokens, mask, pooled, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    b = model.prior.sample(tokens[1:2], mask[1:2], pooled[1:2], [torch.Generator().manual_seed(6)])
    assert torch.equal(a[1], b[0])
    c = model.prior.sample(tokens, mask, pooled, [torch.Generator().manual_seed(s) for s in (9, 6, 7)])
    assert not torch.equal(a[0], c[0]) and torch.equal(a[1:], c[1:])


def test_top_k_only_draws_among_the_k_likeliest():
    logits = torch.tensor([[5.0, 4.0, 3.0, -1.0, -2.0]]).repeat(200, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(200)]
    drawn = pick(logits, gens, temperature=5.0, top_k=2)
    assert set(drawn.tolist()) == {0, 1}
    assert set(pick(logits, gens, temperature=5.0, top_k=0).tolist()) > {0, 1}
    assert pick(logits[:2], gens[:2], temperature=0, top_k=2).tolist() == [0, 0]


def test_tokenizer_round_trip_shapes_and_codebook_updates():
    model = tiny_model()
    images = torch.rand(4, 3, 16, 16)
    codes = model.tokenizer.encode(images)
    assert codes.shape == (4, 16) and codes.max() < 32
    assert model.tokenizer.decode(codes).shape == (4, 3, 16, 16)
    model.tokenizer.train()
    before = model.tokenizer.codes.clone()
    loss, parts = model.tokenizer.loss(images, torch.Generator().manual_seed(0))
    loss.backward()
    assert not torch.equal(before, model.tokenizer.codes) and parts["codes_used"] >= 1


def test_edge_weights_mark_both_sides_of_an_objects_border_only():
    from loom.plugins.common.nn import edge_weights

    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, 12:20, 12:20] = 1.0  # a red square on black
    weights = edge_weights(image * 2 - 1, 20.0)[0, 0]
    assert set(weights.unique().tolist()) == {1.0, 21.0}
    edges = weights > 1
    assert edges[12, 12] and edges[11, 15] and edges[19, 19] and edges[20, 15]  # inside and outside the border
    assert not edges[15, 15] and not edges[2, 2] and not edges[30, 30]  # the square's middle, the background


def test_tokenizer_edge_weight_weighs_errors_at_borders_and_reports_plain_mse():
    model = tiny_model()
    model.tokenizer.eval()  # no codebook update, so both calls see the same codes
    images = torch.zeros(2, 3, 16, 16)
    images[:, 1, 4:10, 4:10] = 1.0
    plain, parts = model.tokenizer.loss(images)
    weighted, weighted_parts = model.tokenizer.loss(images, edge_weight=20.0)
    assert weighted_parts["vq_recon"] == parts["vq_recon"]
    assert weighted > 2 * plain


@pytest.mark.slow
def test_architecture_options_shape_the_trained_model(tmp_path):
    import json

    import pytest

    import loom
    from loom.core import InputError

    options = {"batch_size": 4, "vq_channels": [8, 16, 32], "codebook": 64, "d_model": 32, "layers": 1}
    out = loom.train("ar", steps=2, pool=16, out=tmp_path / "ar", options=options, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert (config["vq_channels"], config["codebook"], config["d_model"], config["layers"]) == ([8, 16, 32], 64, 32, 1)
    # three widths halve twice: a 16×16 token grid for a 64×64 image
    assert ARModel(ARConfig(**{k: v for k, v in config.items() if k != "training"})).cfg.seq_len == 256
    result = loom.generate("a red circle on a blue background", seed=0, generator=str(out), size=None, progress=False)
    assert result.output.pixels.shape == (1, 3, 64, 64)
    with pytest.raises(InputError, match="(?s)invalid training options.*d_model.*multiple of 4"):
        loom.train("ar", steps=1, pool=16, out=tmp_path / "bad", options={"d_model": 30}, progress=False)


@pytest.mark.slow
def test_init_from_a_trained_folder_without_its_checkpoint_loads_its_weights(tmp_path):
    import json
    import shutil

    from safetensors.torch import load_file

    import loom

    options = {"batch_size": 4, "vq_channels": [8, 16, 32], "codebook": 64, "d_model": 32, "layers": 1}
    source = loom.train("ar", steps=2, pool=16, out=tmp_path / "source", options=options, progress=False)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, shipped / name)
    # both learning rates ~0: the export shows where the run started
    tuned = loom.train(
        "ar",
        steps=2,
        pool=16,
        out=tmp_path / "tuned",
        init=shipped,
        progress=False,
        options={**options, "lr": 1e-12, "tokenizer_lr": 1e-12},
    )
    a, b = load_file(source / "model.safetensors"), load_file(tuned / "model.safetensors")
    differ = sorted(k for k in a if not torch.equal(a[k], b[k]))
    # the codebook follows the data by moving averages, not by the learning rate
    assert a.keys() == b.keys() and set(differ) <= {"tokenizer.codes", "tokenizer.code_sum", "tokenizer.usage"}, differ
    assert json.loads((tuned / "config.json").read_text())["training"]["init_from"]["weights_only"] is True
