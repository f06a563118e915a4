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
