"""What ``--method distill+neighbours`` routes on llmrouter_9model when it keeps epoch 0 (the pretrained encoder).

``distill+neighbours`` holds 10 % of the training rows out (by id hash, ``--seed``), and chooses the
epoch, ``k`` and the decision on them; its bank holds the other 90 %. Epoch 0 is that recipe on the
pretrained MiniLM, so it separates what fine-tuning changes from what the held-out validation
changes. Computed from the cached MiniLM vectors (``benchmarks/lifecycle.py``'s cache, written on the
first run), beside the default ``neighbours`` recipe (all rows, leave-one-out) from the same vectors.
No encoder pass when the cache is there: seconds.

Usage::

    python benchmarks/distill_epoch0.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lifecycle import cached_embeddings, data_folder

from zooter.data import RoutingDataset
from zooter.decide.policy import route_decisions
from zooter.evaluation import evaluate_choices
from zooter.labels.targets import make_targets
from zooter.training import DISTILLED_BANK_VALIDATION, TrainingConfig, fit_bank, held_out_gain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="the llmrouter_9model folder (default: ../shared/data)")
    parser.add_argument("--cache", default=os.environ.get("ZOOTER_CACHE", "/work/cache"))
    args = parser.parse_args()
    folder, cache = data_folder(args.data), Path(args.cache)
    train = RoutingDataset.load(folder / "train.jsonl.gz")
    test = RoutingDataset.load(folder / "test.jsonl.gz", experts=train.experts)
    vectors, _ = cached_embeddings(train, "train", cache)
    test_vectors, _ = cached_embeddings(test, "test", cache)
    row = {ex.id: i for i, ex in enumerate(train)}
    results = {}
    for method in ("neighbours", "distill+neighbours"):
        config = TrainingConfig(method=method, seed=args.seed, show_progress=False)
        rows, held_out = train, None
        if method == "distill+neighbours":  # as train_router splits it
            splits = train.split(validation_fraction=DISTILLED_BANK_VALIDATION, test_fraction=0.0, seed=args.seed)
            rows = splits.train
            validation = RoutingDataset(list(splits.validation), experts=train.experts)
            held_out = (vectors[[row[ex.id] for ex in validation]], validation)
        fit = fit_bank(
            vectors[[row[ex.id] for ex in rows]], rows, make_targets(rows, config.labels), config, held_out=held_out
        )
        estimates = fit.bank.estimate(test_vectors)
        decisions = route_decisions(estimates.probabilities, estimates.expected_rewards, train.experts, fit.rule)
        calibration = fit.rule.calibration
        results[method] = {
            "routed": evaluate_choices(test, [d.expert for d in decisions]).routed,
            "bank_rows": len(fit.bank),
            "neighbours": fit.bank.k,
            "calibrated_on": f"{calibration['source']} ({calibration['rows']} rows)",
            "held_out_gain": held_out_gain(fit.rule),
        }
    print(json.dumps({"seed": args.seed, "test_rows": len(test), **results}))


if __name__ == "__main__":
    main()
