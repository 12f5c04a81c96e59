"""`framemem bench retrieval | consistency | scale`: the benchmarks' command-line layer."""
from __future__ import annotations

from pathlib import Path

from ..errors import FrameMemError


def _run_bench(args, budget, table, default_name: str) -> dict:
    """Options both benchmarks take, then the benchmark itself."""
    if args.seeds:
        budget.seeds = tuple(args.seeds)
    out = Path(args.out or f"results/{default_name}")
    result = table(budget, Path(args.runs or f"runs/{out.name}"), out)
    print(f"wrote {out}.md, {out}.json and its PNGs")
    return result


def _check_only(names, known, also=(), hint: str = "") -> None:
    """Every name must be one of `known` (listed in the error) or of `also`."""
    unknown = [n for n in names if n not in known and n not in also]
    if unknown:
        raise FrameMemError(f"--only {unknown[0]}: not a row of this benchmark ({', '.join(known)}{hint})")


def cmd_bench_retrieval(args) -> None:
    import dataclasses

    from ..bench.budgets import QUICK, Budget
    from ..bench.retrieval_table import retrieval_table
    from ..bench.report import orderings

    budget = dataclasses.replace(QUICK if args.quick else Budget())
    if args.steps:
        budget.steps = args.steps
    if args.only:  # a variant (all its rates) or one row, VARIANT:RATE
        _check_only(args.only, sorted({v for v, _ in budget.specs}), {f"{v}:{r}" for v, r in budget.specs},
                    "; or one row of a variant, VARIANT:RATE")
        budget.specs = [spec for spec in budget.specs if spec[0] in args.only or f"{spec[0]}:{spec[1]}" in args.only]
    if bool(args.lpips_backbone) != bool(args.lpips_linear):
        raise FrameMemError("LPIPS needs both --lpips-backbone and --lpips-linear")
    budget.lpips_backbone, budget.lpips_linear = args.lpips_backbone, args.lpips_linear
    result = _run_bench(args, budget, retrieval_table, "table1")
    for r in result["records"]:
        print(f"{r['variant']:>17} {r['rate']:>8} {r['tokens']:>6} tokens  PSNR {r['psnr_mean']:6.2f} ± {r['psnr_std']:.2f}"
              f"  SSIM {r['ssim_mean']:.3f} ± {r['ssim_std']:.3f}")
    print("\n".join(orderings(result["records"])))


def cmd_bench_consistency(args) -> None:
    import dataclasses

    from ..bench.consistency import QUICK, ConsistencyBudget, consistency_table
    from ..config import get_preset
    from ..outputs import load_generation

    budget = dataclasses.replace(QUICK if args.quick else ConsistencyBudget())
    budget.checkpoints = tuple(str(Path(c)) for c in args.checkpoint or ())
    if args.only:  # variants, or a --checkpoint's path for its row alone
        only = [o if o in budget.variants else str(Path(o)) for o in args.only]
        _check_only(only, budget.variants, budget.checkpoints, "; or a path given to --checkpoint")
        budget.variants = tuple(v for v in budget.variants if v in only)
        if any(o in budget.checkpoints for o in only):
            budget.checkpoints = tuple(c for c in budget.checkpoints if c in only)
    for c in budget.checkpoints:  # fail before hours of training, not after
        mc, tiny = load_generation(c).framemem_config.model, get_preset("tiny").model
        if (mc.height, mc.width, mc.fps) != (tiny.height, tiny.width, tiny.fps):
            raise FrameMemError(f"{c}: {mc.width}x{mc.height} at {mc.fps:g} fps; the consistency cases are "
                                f"the tiny preset's {tiny.width}x{tiny.height} at {tiny.fps:g} fps")
    result = _run_bench(args, budget, consistency_table, "consistency")
    for r in result["records"]:
        print(f"{r['variant']:>17}  PSNR {r['psnr_mean']:6.2f} ± {r['psnr_std']:.2f}  feature {r['feature_mean']:.3f}"
              f"  SSIM {r['ssim_mean']:.3f} ± {r['ssim_std']:.3f}")


def cmd_bench_scale(args) -> None:
    from ..bench.scale import scale_table

    out = Path(args.out or f"results/scale-{args.preset}-{args.device.replace(':', '')}")
    result = scale_table(args.preset, args.layers, args.device, out)
    for r in result["rows"]:
        figure = (f"{r['seconds']:.2f} s at {r['layers']} layers, {r['seconds_full_depth']:.1f} s at full depth "
                  "(extrapolated)" if r["measured"] else "not run (planner figures in the table)")
        print(f"{r['method']:>14} {r['history_seconds']:>4g} s history {r['tokens']:>8,} tokens: {figure}")
    print(f"wrote {out}.md and {out}.json")
