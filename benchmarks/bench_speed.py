"""Speed and memory of the tiny preset on this machine.

    python benchmarks/bench_speed.py [--steps 30] [--threads N]

Measures, each part in its own process so peak RSS is its own:
  * training: stage-1 steps/s (after 3 warm-up steps) and peak RSS;
  * encoder: time and peak memory of φ for one 20 s history (no grad).
Prints a table and writes results/benchmarks.md and results/benchmarks.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from framemem.files import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_train(steps: int, variant: str) -> dict:
    import torch

    from framemem.config import get_preset
    from framemem.data.histories import HistorySampler
    from framemem.models.framemem import FrameMem
    from framemem.training.stage1_retrieval import retrieval_loss
    from framemem.training.trainer import step_generators

    config = get_preset("tiny")
    torch.manual_seed(0)
    model = FrameMem.build(config, variant)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler = HistorySampler(config.model)
    times = []
    for step in range(steps + 3):
        rng, generator = step_generators(0, step)
        start = time.perf_counter()
        video = sampler.batch(rng, config.train.batch_size)
        loss = model(retrieval_loss, video, config.train, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    measured = times[3:]
    return {
        "variant": variant, "steps": steps, "seconds_per_step": sum(measured) / len(measured),
        "steps_per_second": len(measured) / sum(measured), "peak_rss_mb": peak_rss_mb(),
        "batch": f"{config.train.batch_size} histories x {config.train.targets_per_history} targets",
    }


def part_encoder(repeats: int = 5) -> dict:
    import torch

    from framemem.config import get_preset
    from framemem.data.histories import HistorySampler
    from framemem.models.framemem import FrameMem

    config = get_preset("tiny")
    model = FrameMem.build(config).eval()
    video = HistorySampler(config.model).batch(__import__("numpy").random.default_rng(0), 1)
    base = peak_rss_mb()
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            _, memory = model.encode_history(video)
            times.append(time.perf_counter() - start)
    return {
        "history": f"{config.model.seconds:g}s at {config.model.fps:g} fps, {config.model.width}x{config.model.height}",
        "seconds": sum(times[1:]) / repeats, "peak_extra_rss_mb": peak_rss_mb() - base,
        "memory_tokens": memory.tokens.shape[1],
    }


def run_part(args: list[str], threads: int | None, script: str = __file__) -> dict:
    """Run `script ARGS` in a fresh process (its peak RSS is its own); its last stdout line is JSON."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--part", choices=["train", "encoder"])
    parser.add_argument("--variant", default="proposed")
    args = parser.parse_args()
    if args.part == "train":
        print(json.dumps(part_train(args.steps, args.variant)))
        return
    if args.part == "encoder":
        print(json.dumps(part_encoder()))
        return

    import torch

    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": args.threads or torch.get_num_threads(),
        "train": [run_part(["--part", "train", "--steps", str(args.steps), "--variant", v], args.threads)
                  for v in ("proposed", "only_lr")],
        "encoder": run_part(["--part", "encoder"], args.threads),
    }
    lines = [
        "# Benchmarks: tiny preset on CPU",
        "",
        f"Command: `python benchmarks/bench_speed.py --steps {args.steps}` on {results['machine']}, "
        f"{results['threads']} threads.",
        "",
        "| stage-1 training | s/step | steps/s | peak RSS (MB) | batch |",
        "|---|---|---|---|---|",
    ]
    for r in results["train"]:
        lines.append(f"| {r['variant']} | {r['seconds_per_step']:.3f} | {r['steps_per_second']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['batch']} |")
    e = results["encoder"]
    lines += ["", "| memory encoder φ, one history | seconds | extra peak RSS (MB) | memory tokens |", "|---|---|---|---|",
              f"| {e['history']} | {e['seconds']:.3f} | {e['peak_extra_rss_mb']:.0f} | {e['memory_tokens']} |", ""]
    text = "\n".join(lines)
    print(text)
    docs = ROOT / "results"
    docs.mkdir(exist_ok=True)
    write_text(docs / "benchmarks.md", text)
    write_json(docs / "benchmarks.json", results)


if __name__ == "__main__":
    main()
