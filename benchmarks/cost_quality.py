"""The cost-quality trade-off of the default router on real data with real prices.

For each set, trains the default router (``TrainingConfig()``, the ``"neighbours"`` method) on the
training rows with the experts' prices, then:

1. sweeps the cost weight λ on the *test* rows (:func:`zooter.evaluation.evaluate_costs`): the
   frontier of mean reward against mean cost per query, every single expert's point, the oracle's,
   APGR and the cost needed to reach 50 / 80 / 95 % of the best single expert's quality;
2. calibrates λ for each of the set's targets on the *training* rows' leave-one-out estimates
   (what ``zooter train --target-...`` does; the test rows play no part) and reports what that λ
   gives on the test rows.

Sets (train -> test, fixed splits, as ``benchmarks/routing_quality.py``):

- ``llmrouter``: ``../shared/data/llmrouter_9model`` with its ``experts.json`` prices (0.10-0.90
  USD per million tokens); targets: the best single expert's quality at the lowest cost, 95 % of
  it, and half its mean cost.
- ``routellm``: ``../shared/data/routellm_mmlu_gsm8k`` (20 % test by id hash, seed 0; other
  splits with ``--split-seeds``) with
  ``examples/data/routellm_costs.json`` (the RouteLLM paper's prices: 24.7 USD per million tokens
  for GPT-4, 0.24 for Mixtral); targets: at most 50 % of calls to GPT-4, and 95 % of GPT-4's
  quality at the lowest cost.

Neither set has the experts' answers, so every answer is counted as ``--output-tokens`` tokens
(default 256); input tokens are the router tokenizer's count of each query.

Prints one JSON object, then markdown tables; draws each set's frontier to ``--plots``. Trained
routers are cached in ``--cache`` (training the 12k RouteLLM queries takes minutes on a CPU).

Usage::

    python benchmarks/cost_quality.py
    python benchmarks/cost_quality.py --sets llmrouter --plots frontiers/
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from _common import SHARED_DATA, machine
from routing_quality import load_set

from zooter.data import RoutingDataset
from zooter.decide.costs import CostTable, CostTarget
from zooter.evaluation import evaluate_costs
from zooter.labels.targets import reward_tensor
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router

ROOT = Path(__file__).resolve().parents[1]
PRICES = {
    "llmrouter": SHARED_DATA / "llmrouter_9model" / "experts.json",
    "routellm": ROOT / "examples" / "data" / "routellm_costs.json",
}
GPT4 = "gpt-4-1106-preview"


def targets(name: str, best_cost: float) -> dict[str, CostTarget]:
    if name == "routellm":
        return {
            "<= 50% of calls to GPT-4": CostTarget(share=0.5, share_experts=[GPT4]),
            "95% of the best quality, cheapest": CostTarget(quality_fraction=0.95),
        }
    return {
        "100% of the best quality, cheapest": CostTarget(quality_fraction=1.0),
        "95% of the best quality, cheapest": CostTarget(quality_fraction=0.95),
        "<= 50% of the best single's cost": CostTarget(mean_cost=0.5 * best_cost),
    }


def splits(name: str, seed: int) -> tuple[RoutingDataset, RoutingDataset]:
    """(train, test) of a set; RouteLLM's id-hash split can be drawn with another seed."""
    if name == "routellm" and seed != 0:
        data = RoutingDataset.load(SHARED_DATA / "routellm_mmlu_gsm8k" / "rewards.jsonl.gz")
        parts = data.split(validation_fraction=0.0, test_fraction=0.2, seed=seed)
        return parts.train, parts.test
    train, _, test = load_set(name)
    return train, test


def trained(name: str, seed: int, cache: Path, device: str | None) -> tuple[ZooterRouter, float | None]:
    folder = cache / (f"{name}-router" if seed == 0 else f"{name}-split{seed}-router")
    if (folder / "config.json").is_file():
        return ZooterRouter.from_pretrained(folder, device=device), None
    train, _ = splits(name, seed)
    started = time.perf_counter()
    router = train_router(train, TrainingConfig(device=device, show_progress=False))
    seconds = time.perf_counter() - started
    router.save_pretrained(folder)
    return router, seconds


def run(name: str, seed: int, cache: Path, plots: Path, output_tokens: float, device: str | None) -> dict[str, Any]:
    train, test = splits(name, seed)
    router, seconds = trained(name, seed, cache, device)
    experts = router.experts
    prices = CostTable.load(PRICES[name])
    prices = prices.with_output_tokens(
        {e: output_tokens for e in experts if prices.costs[e].expected_output_tokens is None}
    )
    router.set_costs(prices)
    test = test.select_experts(experts)
    estimates = router.estimate([ex.query for ex in test])  # one encoder pass over the test rows
    report = evaluate_costs(router, test, estimates=estimates)
    plot = report.plot(plots / (f"cost_quality_{name}.png" if seed == 0 else f"cost_quality_{name}_split{seed}.png"))

    # λ for each target, calibrated as `zooter train --target-...` does (on leave-one-out estimates),
    # then the router's own point on the test rows
    held_out = router.bank.leave_one_out()  # type: ignore[union-attr]
    train_costs = prices.query_costs(router.count_tokens([ex.query for ex in train]), experts)
    best_train = int(reward_tensor(train).nanmean(dim=0).argmax())
    calibrated = {}
    for label, target in targets(name, float(train_costs[:, best_train].mean())).items():
        c = router.calibrate_costs(train, target, estimates=held_out, source="leave-one-out")
        on_test = evaluate_costs(router, test, estimates=estimates).router
        calibrated[label] = {
            "target": target.to_dict(),
            "cost_weight": c["cost_weight"],
            "unit": c["unit"],
            "leave_one_out": {"reward": c["reward"], "cost": c["cost"], "met": c["met"]},
            "test": {
                **on_test,
                "quality_vs_best_single": on_test["reward"] / report.best_single["reward"],
                "cost_vs_best_single": on_test["cost"] / report.best_single["cost"],
            },
        }
    return {
        "set": name,
        "split_seed": seed,
        "train_rows": len(train),
        "test_rows": report.n,
        "prices": PRICES[name].name if name == "llmrouter" else str(PRICES[name].relative_to(ROOT)),
        "output_tokens": output_tokens,
        "train_seconds": seconds,
        "report": report.to_dict(),
        "pareto": report.pareto(),
        "calibrated": calibrated,
        "plot": str(plot),
    }


def markdown(result: dict[str, Any]) -> str:
    report = result["report"]
    best = report["best_single"]
    lines = [
        f"**{result['set']}**, split seed {result['split_seed']} ({result['test_rows']} test queries; "
        f"prices {result['prices']}, "
        f"answers counted as {result['output_tokens']:.0f} tokens)",
        "",
        "| system | mean reward | USD / 1k queries | cost vs best single |",
        "|---|---:|---:|---:|",
    ]

    def row(name: str, reward: float, cost: float) -> str:
        return f"| {name} | {reward:.4f} | {1000 * cost:.4g} | {cost / best['cost']:.1%} |"

    pareto = result["pareto"]
    spread = sorted({round(i * (len(pareto) - 1) / 8) for i in range(9)})  # both ends and 7 between
    for point in (pareto[i] for i in spread):
        lines.append(row(f"zooter, λ = {point['cost_weight']:.4g}", point["reward"], point["cost"]))
    lines.append(row("oracle", report["oracle"]["reward"], report["oracle"]["cost"]))
    for name, single in sorted(report["singles"].items(), key=lambda kv: -kv[1]["reward"]):
        lines.append(row(name, single["reward"], single["cost"]))
    apgr = "n/a" if report["apgr"] is None else f"{report['apgr']:.3f}"
    lines += ["", f"APGR (cheapest -> best single, over cost): {apgr}. Cost to reach the best single's quality:"]
    for level, point in report["cost_to_reach"].items():
        reached = "not reached" if point is None else f"{point['relative_cost']:.1%} of its cost"
        lines.append(f"- {level}: {reached}")
    lines += [
        "",
        "| target (λ calibrated on leave-one-out training rows) | λ | test reward | vs best single | test cost vs best "
        "single | share to the best single's expert |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, c in result["calibrated"].items():
        t = c["test"]
        unit = " per call" if c["unit"] == "calls" else ""
        lines.append(
            f"| {label} | {c['cost_weight']:.4g}{unit} | {t['reward']:.4f} | {t['quality_vs_best_single']:.1%} "
            f"| {t['cost_vs_best_single']:.1%} | {t['share'][best['expert']]:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="llmrouter,routellm", help="comma-separated, from llmrouter, routellm")
    parser.add_argument("--output-tokens", type=float, default=256.0, help="tokens counted per answer")
    parser.add_argument("--cache", default=str(ROOT / ".benchmarks"), help="folder of trained routers (reused)")
    parser.add_argument("--plots", default=str(ROOT / ".benchmarks"), help="folder for the frontier plots")
    parser.add_argument("--split-seeds", default="0", help="routellm: comma-separated seeds of its id-hash split")
    parser.add_argument("--device")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache, plots = Path(args.cache), Path(args.plots)
    cache.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    seeds = [int(seed) for seed in args.split_seeds.split(",")]
    results = [
        run(name, seed, cache, plots, args.output_tokens, args.device)
        for name in args.sets.split(",")
        for seed in (seeds if name == "routellm" else [0])  # llmrouter's split is its source's
    ]
    print(json.dumps({"machine": machine(), "results": results}))
    for result in results:
        print()
        print(markdown(result))


if __name__ == "__main__":
    main()
