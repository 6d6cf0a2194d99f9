"""Adding a tool to a tool selector from a few example requests, against retraining with it.

On ``examples/data/tool_use.jsonl`` (242 requests over eight tools), for each split seed (a quarter
held out, stratified by tool, as ``examples/tool_selection.py`` splits) and each tool:

1. *without it*: a router trained on the training rows without the tool (its reward column
   dropped, and the requests only it served dropped: before the tool existed, nothing served them);
2. *added with n*: that router, then ``ZooterToolSelector.add_tool(tool, requests)`` with n = 5, 10
   and 20 of the tool's training requests (subset seeds 0, 1, 2; all of them when it has fewer);
3. *full retrain*: a router trained on every training row, every tool.

It reports recall@1 and recall@2 (a right tool among the top k) on the tool's held-out requests
and on all held-out requests, averaged over tools and seeds, and the seconds an add takes against
a training run. Every router is the default method (the neighbour bank) on the bundled
all-MiniLM-L6-v2, with the example's label temperature 0.25; nothing is chosen on the test rows.

Test rows are embedded once per split and estimated through each router's bank: the same figures as
``router.predict_proba`` (checked on the full retrain of every split), without re-encoding them for
every variant.

Usage::

    python benchmarks/tool_lifecycle.py --output tool_lifecycle.json   # 47.5 min on a busy 2-core CPU
    python benchmarks/tool_lifecycle.py --seeds 0 --subsets 0          # a quick look, 6 to 9 min there

The measured table and how to read it are in ``docs/tool-selection-updates.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from zooter import LabelConfig, RoutingDataset, TrainingConfig, train_router
from zooter.data import RoutingExample
from zooter.evaluation import evaluate_rankings
from zooter_langchain import ZooterToolSelector

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "tool_use.jsonl"
SIZES = (5, 10, 20)


def without_tool(train: RoutingDataset, tool: str) -> RoutingDataset:
    """The training rows as they were before ``tool`` existed: its column gone, and the requests only it served."""
    others = [e for e in train.experts if e != tool]
    kept = [
        RoutingExample(ex.id, ex.query, {e: ex.rewards[e] for e in others}, ex.tags, ex.task)
        for ex in train
        if any(ex.rewards[e] > 0 for e in others)
    ]
    return RoutingDataset(kept, experts=others, source=train.source)


def recalls(router: Any, test: RoutingDataset, embeddings: torch.Tensor, tool: str | None) -> dict[str, float]:
    """recall@1/@2 on all test rows and (with ``tool``) on the rows ``tool`` serves."""
    probs = router.bank.estimate(embeddings).probabilities.cpu()
    experts = router.experts
    rankings = [[experts[j] for j in row] for row in probs.argsort(dim=-1, descending=True, stable=True).tolist()]
    out = {}
    report = evaluate_rankings(test, rankings, ks=(1, 2))
    out["all@1"], out["all@2"] = report.recall_at_k[1], report.recall_at_k[2]
    if tool is not None:
        index = [i for i, ex in enumerate(test) if ex.rewards.get(tool, 0.0) > 0]
        own = evaluate_rankings(
            RoutingDataset([test[i] for i in index], experts=test.experts), [rankings[i] for i in index], ks=(1, 2)
        )
        out["tool@1"], out["tool@2"] = own.recall_at_k[1], own.recall_at_k[2]
    return out


def run(seeds: list[int], subsets: list[int], sizes: tuple[int, ...], config: TrainingConfig) -> dict[str, Any]:
    data = RoutingDataset.load(DATA)
    results: list[dict[str, Any]] = []
    for seed in seeds:
        splits = data.split(validation_fraction=0.0, test_fraction=0.25, seed=seed, stratify_by_task=True)
        train, test = splits.train, splits.test
        started = time.perf_counter()
        full = train_router(train, config)
        retrain_s = time.perf_counter() - started
        embeddings = full.embed_queries(test.texts)  # the encoder is frozen: the same for every router
        direct = full.predict_proba(test.texts)
        if not torch.allclose(direct, full.bank.estimate(embeddings).probabilities.cpu(), atol=1e-4):
            raise SystemExit("bank estimates of the cached test embeddings differ from predict_proba")
        for tool in train.experts:
            figures = recalls(full, test, embeddings, tool)
            results.append({"seed": seed, "tool": tool, "variant": "full retrain", "seconds": retrain_s, **figures})
            started = time.perf_counter()
            base = train_router(without_tool(train, tool), config)
            base_s = time.perf_counter() - started
            figures = recalls(base, test, embeddings, tool)
            results.append({"seed": seed, "tool": tool, "variant": "without it", "seconds": base_s, **figures})
            pool = [ex.query for ex in train if ex.rewards[tool] > 0]
            for n in sizes:
                for subset in subsets:
                    examples = random.Random(subset).sample(pool, min(n, len(pool)))
                    router = copy.deepcopy(base)
                    selector = ZooterToolSelector(router, k=2)
                    started = time.perf_counter()
                    selector.add_tool(tool, examples)
                    add_s = time.perf_counter() - started
                    figures = recalls(router, test, embeddings, tool)
                    results.append(
                        {
                            "seed": seed,
                            "tool": tool,
                            "variant": f"added with {n}",
                            "subset": subset,
                            "examples": len(examples),
                            "seconds": add_s,
                            **figures,
                        }
                    )
            print(f"seed {seed} {tool}: done", file=sys.stderr, flush=True)
    return {"results": results, "summary": summarise(results, sizes)}


def summarise(results: list[dict[str, Any]], sizes: tuple[int, ...]) -> dict[str, Any]:
    variants = ["without it", *(f"added with {n}" for n in sizes), "full retrain"]
    table = {}
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        table[variant] = {key: statistics.fmean(r[key] for r in rows) for key in ("tool@1", "tool@2", "all@1", "all@2")}
        table[variant]["seconds"] = statistics.fmean(r["seconds"] for r in rows)
    full, ten = table["full retrain"], table.get("added with 10")
    targets = {}
    if ten is not None:
        targets = {
            "tool@2 with 10 / full retrain (target >= 0.80)": ten["tool@2"] / full["tool@2"],
            "all@2 with 10 - full retrain, points (target >= -2)": 100 * (ten["all@2"] - full["all@2"]),
        }
    per_tool = {}
    for tool in dict.fromkeys(r["tool"] for r in results):
        per_tool[tool] = {
            variant: statistics.fmean(r["tool@2"] for r in results if r["tool"] == tool and r["variant"] == variant)
            for variant in variants
        }
    return {"table": table, "targets": targets, "per_tool_recall@2": per_tool}


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| router | its requests: recall@1 | recall@2 | all requests: recall@1 | recall@2 | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, row in summary["table"].items():
        lines.append(
            f"| {variant} | {row['tool@1']:.1%} | {row['tool@2']:.1%} | {row['all@1']:.1%} | {row['all@2']:.1%} "
            f"| {row['seconds']:.2f} |"
        )
    lines.append("")
    variants = list(summary["table"])
    lines.append("| tool (recall@2 on its requests) | " + " | ".join(variants) + " |")
    lines.append("|---|" + "---:|" * len(variants))
    for tool, row in summary["per_tool_recall@2"].items():
        lines.append(f"| {tool} | " + " | ".join(f"{row[v]:.1%}" for v in variants) + " |")
    lines.append("")
    for name, value in summary["targets"].items():
        lines.append(f"- {name}: {value:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split seeds")
    parser.add_argument("--subsets", type=int, nargs="+", default=[0, 1, 2], help="example-subset seeds")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="example requests per add")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = TrainingConfig(show_progress=False, max_length=64, labels=LabelConfig(temperature=0.25))
    started = time.perf_counter()
    out = run(args.seeds, args.subsets, tuple(args.sizes), config)
    out["settings"] = {
        "data": str(DATA.name),
        "seeds": args.seeds,
        "subsets": args.subsets,
        "sizes": args.sizes,
        "training": {"method": config.method, "neighbours": config.neighbours, "label_temperature": 0.25},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps({k: out[k] for k in ("settings", "summary")}, indent=2)
    print(text)
    print()
    print(markdown(out["summary"]))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
