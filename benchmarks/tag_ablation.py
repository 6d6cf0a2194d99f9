"""The paper's Table 2 ablation on our data: hard labels vs soft labels with tag enhancement at several beta.

Trains and evaluates one router per (configuration, seed) on a fixed split, and prints the mean and
spread of the routed score and the gap recovered on the held-out test rows, as one JSON object and a
markdown table. Configurations:

- ``hard``: argmax one-hot targets (cross-entropy), no tags;
- ``beta=B`` for each B: soft targets mixed with tag averages, ``s* = B s(q) + (1-B) mean_t s_t``;
  ``beta=1`` is plain soft labels (the enhancement is off; the default training).

By default it runs on the arena-bench-v1 rewards shipped with the package, over the demo's six
experts and the demo's split (seed 0: 210 train / 30 validation / 60 test); those rows have no tags,
so the tags are k-means clusters of the encoder's embeddings (``--tags cluster``). The training seed
varies; the split does not.

Each finished run is appended to ``--results`` (JSONL) at once, and a rerun skips the runs already
there, so the script can be stopped and resumed. Runs go seed by seed, so a partial table has every
configuration at the first seeds; within a seed the baseline (beta=1) and the paper's best
(beta=0.3) go first.

Usage::

    python benchmarks/tag_ablation.py --results ablation.jsonl            # ~90 s a run on 2 CPU cores
    python benchmarks/tag_ablation.py --results ablation.jsonl --summary-only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RUN_FIRST = ("beta=1", "beta=0.3")


def configurations(betas: list[float], tags: str) -> dict[str, dict[str, Any]]:
    """Name -> LabelConfig settings, in the order of the table."""
    configs: dict[str, dict[str, Any]] = {"hard": {"hard": True}}
    for beta in betas:
        name = f"beta={beta:g}"
        configs[name] = {"tags": tags, "beta": beta} if beta < 1.0 else {}
    return configs


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line: redo that run
            continue
    return rows


def append_result(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_one(splits: Any, labels: dict[str, Any], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from zooter.evaluation import evaluate
    from zooter.labels.targets import LabelConfig
    from zooter.training import TrainingConfig, train_router

    settings: dict[str, Any] = {"seed": seed, "show_progress": False, "labels": LabelConfig(**labels)}
    for name in ("encoder", "epochs", "device"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    started = time.perf_counter()
    router = train_router(splits.train, TrainingConfig(**settings), validation=splits.validation)
    report = evaluate(router, splits.test)
    enhancer = router.config.labels.get("enhancer") or {}
    return {
        "routed": report.routed,
        "gap_recovered": report.gap_recovered,
        "best_single": report.best_single,
        "oracle": report.oracle,
        "routing_share": report.routing_share,
        "best_epoch": router.config.training_summary["best_epoch"],
        "clusters": (enhancer.get("tagger") or {}).get("k"),
        "seconds": round(time.perf_counter() - started, 1),
        "device": router.config.training_summary["device"],
    }


def summarise(rows: list[dict[str, Any]], names: list[str], seeds: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        done = sorted((r for r in rows if r["config"] == name and r["seed"] in seeds), key=lambda r: r["seed"])
        entry: dict[str, Any] = {"seeds_done": [r["seed"] for r in done]}
        for metric in ("routed", "gap_recovered"):
            values = [r[metric] for r in done if r[metric] is not None]
            entry[metric] = {
                "mean": statistics.fmean(values) if values else math.nan,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values) if values else math.nan,
                "max": max(values) if values else math.nan,
                "values": values,
            }
        summary[name] = entry
    return summary


def markdown(summary: dict[str, Any], reference: dict[str, Any] | None) -> str:
    lines = [
        "| labels | seeds | routed score (mean ± std) | gap recovered (mean ± std) | gap recovered, min … max |",
        "|---|---|---|---|---|",
    ]
    for name, entry in summary.items():
        routed, gap = entry["routed"], entry["gap_recovered"]
        if not entry["seeds_done"]:
            lines.append(f"| {name} | 0 | not run | not run | |")
            continue
        label = f"{name} (no enhancement)" if name in ("beta=1", "beta=1.0") else name
        several = len(entry["seeds_done"]) > 1  # one seed has no spread to show
        routed_spread = f" ± {routed['std']:.3f}" if several else ""
        gap_spread = f" ± {100 * gap['std']:.1f}" if several else ""
        lines.append(
            f"| {label} | {len(entry['seeds_done'])} | {routed['mean']:.3f}{routed_spread} | "
            f"{100 * gap['mean']:+.1f}{gap_spread} % | {100 * gap['min']:+.1f} … {100 * gap['max']:+.1f} % |"
        )
    if reference:
        lines.append("")
        lines.append(
            f"Test split: {reference['n']} prompts; best single expert {reference['best_single']['expert']} "
            f"{reference['best_single']['score']:.3f}; oracle {reference['oracle']:.3f}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset JSONL (default: the shipped arena-bench-v1 rewards)")
    parser.add_argument("--experts", help="comma-separated experts (default: the demo's six for the shipped data)")
    parser.add_argument("--results", default="tag_ablation.jsonl", help="JSONL of finished runs (resumed)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--betas", default="0,0.1,0.3,0.5,1.0")
    parser.add_argument("--tags", default="cluster", help="tag source for the beta runs (LabelConfig.tags)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--encoder")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device")
    parser.add_argument("--summary-only", action="store_true", help="print the table of the runs done; train none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from zooter.data import RoutingDataset
    from zooter.demo import DEMO_EXPERTS, demo_data_path

    path = Path(args.data) if args.data else demo_data_path()
    experts = args.experts.split(",") if args.experts else (None if args.data else DEMO_EXPERTS)
    data = RoutingDataset.load(path, experts=experts)
    splits = data.split(validation_fraction=0.1, test_fraction=0.2, seed=args.split_seed)
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = configurations([float(b) for b in args.betas.split(",")], args.tags)
    setup = {
        "data": path.name,
        "experts": data.experts,
        "split": [len(splits.train), len(splits.validation), len(splits.test)],
        "split_seed": args.split_seed,
        "tags": args.tags,
        "encoder": args.encoder,
        "epochs": args.epochs,
    }
    results_path = Path(args.results)
    rows = [r for r in read_results(results_path) if r.get("setup") == setup]
    done = {(r["config"], r["seed"]) for r in rows}
    print(f"setup: {json.dumps(setup)}; {len(done)} runs already in {results_path}", file=sys.stderr)

    # The baseline and the paper's best first: a partial run still answers "do tags help at all?"
    run_order = sorted(
        configs, key=lambda name: (name not in RUN_FIRST, RUN_FIRST.index(name) if name in RUN_FIRST else 0)
    )
    if not args.summary_only:
        for seed in seeds:
            for name in run_order:
                labels = configs[name]
                if (name, seed) in done:
                    continue
                result = {"setup": setup, "config": name, "labels": labels, "seed": seed}
                result.update(run_one(splits, labels, seed, args))
                append_result(results_path, result)
                rows.append(result)
                print(
                    f"{name} seed {seed}: routed {result['routed']:.3f} gap {result['gap_recovered']:.3f} "
                    f"({result['seconds']:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )

    from zooter.evaluation import evaluate_choices

    # best single and oracle of the test split, for the table's footnote (no router needed)
    reference = evaluate_choices(splits.test, [data.experts[0]] * len(splits.test)).to_dict()
    summary = summarise(rows, list(configs), seeds)
    print(json.dumps({"setup": setup, "test": {k: reference[k] for k in ("n", "best_single", "oracle")}, **summary}))
    print(markdown(summary, reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
