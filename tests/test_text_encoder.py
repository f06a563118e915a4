import time

import pytest
import torch

from loom.core import Text, WeightsError
from loom.plugins.text_encoder import TextEncoder, model_folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A small random-weight BERT saved as a real model folder, with the default model's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(model_folder("all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_any_transformers_encoder_loads_from_a_local_folder(tiny_bert):
    encoder = TextEncoder(model=str(tiny_bert), max_length=16)
    emb = encoder(Text(["a red circle", "a blue square in the top left"]), seed=0)
    assert emb.tokens.shape == (2, 16, 32) and emb.mask.shape == (2, 16)
    assert emb.encoder == str(tiny_bert)
    assert emb.mask[0].sum() < emb.mask[1].sum()  # real tokens only, padding masked
    assert torch.allclose(emb.pooled.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_missing_model_says_where_it_looked_without_hanging(tmp_path):
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="looked for a local folder.*Hugging Face cache.*HF_HUB_OFFLINE=1"):
        TextEncoder(model="nobody/no-such-model-xyz").load()
    with pytest.raises(WeightsError, match=str(tmp_path / "empty")):
        (tmp_path / "empty").mkdir()
        TextEncoder(model=str(tmp_path / "empty")).load()
    assert time.perf_counter() - start < 30


@pytest.mark.slow
def test_default_encoder_puts_paraphrases_close():
    emb = TextEncoder()(
        Text(["a circle in the top left", "a circle in the upper left corner", "a large blue square at the bottom"]),
        seed=0,
    )
    p = emb.pooled
    assert emb.encoder == "all-MiniLM-L6-v2" and emb.tokens.shape == (3, 64, 384)
    assert float(p[0] @ p[1]) > float(p[0] @ p[2]) + 0.1


PROMPTS = [
    "a red circle",
    "a big blue square at the top of a white background, and a small green triangle",
    "",
    "ÉLAN café naïve — “quotes” 日本語 🙂",
    "x " * 200,  # past every max_length: truncated
    "RED Circle!!",
]


@pytest.mark.parametrize("which", ["default", "tiny"])
def test_plain_bert_gives_transformers_numbers_bit_for_bit(which, tiny_bert):
    """A BERT folder loads through loom.plugins.bert (no transformers import): the same token ids, masks and states
    as transformers' tokenizer and BertModel, exactly."""
    from loom.plugins.text_encoder import _plain_bert, _transformers

    folder = model_folder("all-MiniLM-L6-v2") if which == "default" else str(tiny_bert)
    (plain_tok, plain), (hf_tok, hf) = _plain_bert(which, folder, "cpu"), _transformers(which, folder, "cpu", False)
    assert type(plain).__module__ == "loom.plugins.bert" and type(hf).__module__.startswith("transformers.")
    for max_length in (64, 8):
        a = hf_tok(PROMPTS, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        b = plain_tok(PROMPTS, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        with torch.inference_mode():
            assert torch.equal(hf(**a).last_hidden_state, plain(**b).last_hidden_state)
    assert hf_tok(PROMPTS, truncation=False)["input_ids"] == plain_tok(PROMPTS, truncation=False)["input_ids"]


def test_a_folder_that_is_not_bert_loads_through_transformers(tmp_path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(model_folder("all-MiniLM-L6-v2"))
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = TextEncoder(model=str(tmp_path), max_length=16).load()
    assert type(encoder.model).__name__ == "DistilBertModel"
    emb = encoder(Text(["a red circle"]), seed=0)
    assert emb.tokens.shape == (1, 16, 32)


@pytest.mark.slow
def test_the_default_chain_runs_without_importing_transformers(tmp_path):
    """What makes a cold `loom generate` fast: the packaged encoder needs no transformers import, and no attention
    mask sends torch through its symbolic shapes (sympy; see loom.plugins.common.nn.padding_mask)."""
    import subprocess
    import sys

    code = (
        "import sys, loom; loom.generate('a red circle', 1, size=32, progress=False, output=sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'diffusers', 'sympy')))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.png")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_a_bert_folder_with_a_damaged_config_is_one_weights_error(tiny_bert, tmp_path):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_bert, folder)
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(WeightsError) as err:
        TextEncoder(model=str(folder)).load()
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
