"""How honest are the leave-one-out estimates that choose ``k``, the temperature and the decision rule?

Leave-one-out lets a held-out training query use every other training query, including its
near-duplicates (the same question reworded, or filled into the same template). If new queries have
fewer such twins in the training set than training queries have among themselves, leave-one-out
flatters the router. This script measures it: for each set, the default recipe's choice (``k`` x
temperature, then the rule, exactly as :func:`zooter.training.fit_bank` makes it) is made on
held-out estimates that also leave out every training row more similar than ``tau`` to the held-out
query, for several ``tau``; it prints the held-out gain over the default expert against the same
router's gain on the test split (which is never used to choose), and how many queries have a
near-duplicate (cosine above each ``tau``) among the other training queries and, for test queries,
in the training set.

Vectors: the bundled MiniLM's, cached as ``benchmarks/routing_quality.py --cache`` writes them.

Usage::

    python benchmarks/held_out_honesty.py --cache /work/cache
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import torch
from routing_quality import SETS, cached_vectors, load_set

from zooter.decide.policy import calibrate_decision, choose, choose_default
from zooter.evaluation import evaluate_choices
from zooter.labels.targets import LabelConfig, make_targets, reward_tensor
from zooter.model.neighbours import NeighbourBank
from zooter.training import TrainingConfig

TAUS = (None, 0.95, 0.9, 0.85)


def search(queries: torch.Tensor, bank: torch.Tensor, k: int, *, self_rows: bool, tau: float | None):
    """Exact top-``k`` of unit ``queries`` in unit ``bank`` rows, leaving out row i for query i
    (``self_rows``) and every row more similar than ``tau``."""
    tops, rows = [], []
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ bank.T
        if self_rows:
            sims[torch.arange(len(sims)), torch.arange(start, start + len(sims))] = -math.inf
        if tau is not None:
            sims = sims.masked_fill(sims > tau, -math.inf)
        top, index = sims.topk(k, dim=-1)
        tops.append(top)
        rows.append(index)
    return torch.cat(tops), torch.cat(rows)


def measure(name: str, cache: Path) -> dict:
    train, _, test = load_set(name)
    unit = lambda v: torch.nn.functional.normalize(v.float(), dim=-1)  # noqa: E731
    vectors, test_vectors = (
        unit(cached_vectors(cache, name, "train", train)[0]),
        unit(cached_vectors(cache, name, "test", test)[0]),
    )
    config = TrainingConfig()
    experts, rewards = train.experts, reward_tensor(train)
    largest = min(max(config.neighbours), len(train) - 1)
    bank = NeighbourBank(
        vectors, rewards, make_targets(train, LabelConfig()), k=largest, shrinkage=config.neighbour_shrinkage
    )
    filled = bank.filled_rewards()
    default = experts.index(choose_default(rewards, experts)[0])
    test_default = evaluate_choices(test, [experts[default]] * len(test)).routed
    nearest_train = search(vectors, vectors, 1, self_rows=True, tau=None)[0][:, 0]
    nearest_test = search(test_vectors, vectors, 1, self_rows=False, tau=None)[0][:, 0]
    on_test = search(test_vectors, vectors, largest, self_rows=False, tau=None)
    out = {"set": name, "near_duplicates": {}, "by_tau": []}
    for tau in (t for t in TAUS if t is not None):
        out["near_duplicates"][str(tau)] = {
            "train": float((nearest_train > tau).float().mean()),
            "test": float((nearest_test > tau).float().mean()),
        }
    for tau in TAUS:
        found = search(vectors, vectors, largest, self_rows=True, tau=tau)
        best = None
        for temperature, k in itertools.product(config.neighbour_temperatures, config.neighbours):
            kept = bank.with_k(min(k, largest), temperature=temperature)
            held_out = kept.average(*found)
            rule = calibrate_decision(
                held_out.scores, rewards, experts, filled=filled, min_z=config.min_z, stderr=held_out.stderr
            )
            gain = rule.calibration.get("best_margin_gain", rule.calibration.get("gain", 0.0))
            if best is None or gain > best[0]:
                best = (gain, kept, rule)
        _, kept, rule = best
        estimates = kept.average(*on_test)
        picks = choose(estimates.scores, experts, rule, stderr=estimates.stderr)
        routed = evaluate_choices(test, [experts[i] for i in picks.tolist()]).routed
        out["by_tau"].append(
            {
                "tau": tau,
                "k": kept.k,
                "temperature": kept.temperature,
                "routes": rule.routes,
                "held_out_gain": rule.calibration["gain"],
                "test_routed": routed,
                "test_gain": routed - test_default,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--cache", default="/work/cache", help="folder of the cached vectors (written when missing)")
    args = parser.parse_args()
    results = [measure(name, Path(args.cache)) for name in args.sets.split(",")]
    print(json.dumps(results))
    print()
    print(
        "| set | near-duplicates > 0.9 (train among train / test in train) | leave out "
        "| k, T | held-out gain | test gain |"
    )
    print("|---|---|---|---|---:|---:|")
    for r in results:
        dups = r["near_duplicates"]["0.9"]
        for row in r["by_tau"]:
            tau = "the query itself" if row["tau"] is None else f"itself + rows with cosine > {row['tau']}"
            chosen = f"{row['k']}, {row['temperature']:g}" + ("" if row["routes"] else " (routes nothing)")
            print(
                f"| {r['set']} | {dups['train']:.1%} / {dups['test']:.1%} | {tau} | {chosen} "
                f"| {row['held_out_gain']:+.4f} | {row['test_gain']:+.4f} |"
            )


if __name__ == "__main__":
    main()
