"""Raw diffusers against Loom with its speed options, on the real SD-1.5 architecture.

    python bench/diffusion_gpu.py [--steps 25] [--size 512] [--batch 1] [--repeats 5] [--variants default|all|NAMES] [--json F]
    python bench/diffusion_gpu.py --tiny --device cpu --size 64 --steps 2 --repeats 1   # checks the script on a CPU

Builds Stable Diffusion 1.5's UNet, VAE and CLIP ViT-L/14 text encoder from their config values
with random weights (no download; the timing of a network does not depend on its weights), saves
the pipeline in float16 to a temporary folder, and times, at 512×512 and 25 steps in half
precision on CUDA:

- raw diffusers: ``StableDiffusionPipeline`` as it comes (diffusers' default SDPA attention);
- Loom's ``stable-diffusion`` component: as it comes, then with each speed option
  (``channels_last``, ``fuse_qkv``, ``compile_unet: default``) and with all of them; the
  ``compile_unet: max-autotune`` variant only when named (its compiling ran past 6 minutes on an H200).

Prints images/s for each and its ratio to raw diffusers. Needs a CUDA GPU (exits saying so
otherwise) and about 6 GB of GPU memory; torch.compile adds a few minutes of warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
)
#: Its VAE (vae/config.json).
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)
#: Its text encoder: CLIP ViT-L/14's text tower (text_encoder/config.json).
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
#: Its scheduler (scheduler/scheduler_config.json).
SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
)

VARIANTS = {
    "loom": {},
    "loom + channels_last": {"channels_last": True},
    "loom + fuse_qkv": {"fuse_qkv": True},
    "loom + compile_unet": {"compile_unet": "default"},
    "loom + compile_unet max-autotune": {"compile_unet": "max-autotune"},
    "loom + all speed options": {"channels_last": True, "fuse_qkv": True, "compile_unet": "default"},
}
#: Measured first by default; max-autotune's warm-up alone takes minutes, so it is asked for by name.
DEFAULT_VARIANTS = [name for name in VARIANTS if "max-autotune" not in name]


def build_sd15(folder: str, device: str = "cuda") -> str:
    """SD-1.5's architecture with random weights, saved in float16 into ``folder``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from loom.plugins.diffusion.tiny import clip_tokenizer

    tokenizer, kind = clip_tokenizer(os.path.join(folder, ".tokenizer"))
    text = dict(
        SD15_TEXT,
        vocab_size=max(SD15_TEXT["vocab_size"], len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):  # random initialisation of 1 B parameters is minutes on a CPU
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(torch.float16)
    pipe.save_pretrained(folder)
    del pipe, unet, vae, text_encoder
    if device == "cuda":
        torch.cuda.empty_cache()
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--variants",
        default="default",
        help=f"'default' ({', '.join(DEFAULT_VARIANTS)}), 'all', or comma-separated names from: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark), or cpu with --tiny to check the script")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the tests' tiny SD-shaped pipeline instead of SD-1.5 (checks the script runs)",
    )
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "bench/diffusion_gpu.py needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False); "
            "nothing was measured. On a CPU, run bench/diffusion_overhead.py instead."
        )
    from diffusers import StableDiffusionPipeline

    from loom.chains import Pipeline

    if args.variants in ("default", "all"):
        names = DEFAULT_VARIANTS if args.variants == "default" else list(VARIANTS)
    else:
        names = [v.strip() for v in args.variants.split(",")]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            sys.exit(f"unknown variant(s) {unknown}; choose from: {', '.join(VARIANTS)}")
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    prompts = ["a photograph of an astronaut riding a horse"] * args.batch
    seeds = list(range(args.batch))
    sampling = {
        "steps": args.steps,
        "width": args.size,
        "height": args.size,
        "device": args.device,
        "dtype": "float16" if dtype == torch.float16 else "float32",
        "batch_size": args.batch,
    }

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="loom-bench-sd15-") as folder:
        start = time.perf_counter()
        if args.tiny:
            from loom.plugins.diffusion.tiny import build_tiny_pipeline

            kind = build_tiny_pipeline(folder)
        else:
            kind = build_sd15(folder, args.device)
        print(
            f"built {'a tiny' if args.tiny else 'the SD-1.5'} architecture with random weights ({kind} tokenizer) "
            f"in {time.perf_counter() - start:.0f} s",
            flush=True,
        )

        raw = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(args.device)
        raw.set_progress_bar_config(disable=True)

        def run_raw():
            raw(
                prompts,
                num_inference_steps=args.steps,
                width=args.size,
                height=args.size,
                output_type="pt",
                generator=[torch.Generator().manual_seed(s) for s in seeds],
            )

        runners = {"raw diffusers": run_raw}
        for name in names:
            pipeline = Pipeline.from_steps(("stable-diffusion", {"model": folder, **sampling, **VARIANTS[name]}))
            pipeline.load(progress=False)
            runners[name] = (lambda p: lambda: p.run(prompts, seed=seeds, progress=False))(pipeline)
        for name, fn in list(runners.items()):  # warm-up (torch.compile compiles here)
            start = time.perf_counter()
            try:
                fn()
                fn()
            except Exception as err:  # one variant failing (a compiler error, say) must not lose the others
                failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
                del runners[name]
                print(f"warm-up {name}: FAILED, left out ({failed[name]})", flush=True)
                continue
            print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):  # interleaved, so drifts in clocks hit every variant alike
            for name, fn in runners.items():
                times[name].append(timed(fn))

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"\n{device}, torch {torch.__version__}, {'tiny' if args.tiny else 'SD-1.5'}, {args.size}x{args.size}, "
        f"{args.steps} steps, {sampling['dtype']}, batch {args.batch}, median of {args.repeats} interleaved runs"
    )
    rows = {}
    if "raw diffusers" in times:
        # The median is the headline; the best run is printed beside it because a launch-bound GPU
        # run on a shared host is noisy (measured: one variant's runs spread over ±15 %).
        base = args.batch / statistics.median(times["raw diffusers"])
        base_best = args.batch / min(times["raw diffusers"])
        for name, ts in times.items():
            ips, best = args.batch / statistics.median(ts), args.batch / min(ts)
            rows[name] = {
                "images_per_s": round(ips, 4),
                "ratio": round(ips / base, 4),
                "best_images_per_s": round(best, 4),
                "best_ratio": round(best / base_best, 4),
                "seconds": [round(t, 4) for t in ts],
            }
            print(
                f"  {name:<34} {ips:7.3f} images/s   ratio to raw diffusers {ips / base:5.3f}   "
                f"(best run: {best:7.3f} images/s, ratio {best / base_best:5.3f})"
            )
    for name, why in failed.items():
        print(f"  {name:<34} failed: {why}")
    if args.json:
        import json

        import diffusers

        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": device,
                    "torch": torch.__version__,
                    "diffusers": diffusers.__version__,
                    "architecture": "tiny" if args.tiny else "SD-1.5",
                    "size": args.size,
                    "steps": args.steps,
                    "dtype": sampling["dtype"],
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "results": rows,
                    "failed": failed,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
