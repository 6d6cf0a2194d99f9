"""Routing quality of the default recipe on every real set the project has, against the baselines.

For each set, trains with ``TrainingConfig()`` defaults (``--method distill`` for the paper's
fine-tuning instead, ``--method distill+neighbours`` for a bank of the fine-tuned encoder's
embeddings, ``--epochs`` its epoch budget) on the training rows, routes the test rows, and compares
the routed mean reward with, on the same test rows:

- best single: the expert with the highest mean reward on the test rows (a hindsight baseline);
- per-task best: for each test row, the expert with the best mean reward on the *training* rows of
  its task (uses the ``task`` field, which a router never sees);
- kNN-10 and kNN-100: the mean reward of the 10 / 100 training queries nearest to the test query
  (cosine on the router's encoder's pooled vectors, unweighted; frozen MiniLM for the default, the
  fine-tuned encoder for the other methods, over the bank's rows when it has one), then the best expert;
- oracle: the best expert of every row.

Sets (train -> test, fixed splits):

- ``arena``: arena-bench-v1, the demo's six experts and split (210 train, 30 validation, 59 scored test);
- ``routellm``: ``../shared/data/routellm_mmlu_gsm8k`` split by id hash, seed 0, 20 % test;
- ``llmrouter``: ``../shared/data/llmrouter_9model`` train.jsonl.gz -> test.jsonl.gz.

A ``distill+neighbours`` run also records its per-epoch validation figures and ``head_argmax``:
the test rows routed by the argmax of the head trained with it (at the epoch the bank chose), i.e.
the paper's distilled router from the same fine-tuning, without a calibrated margin.
It also records ``head_blend``: the test rows routed by the bank's expected rewards plus ``w`` times
the head's log-probabilities, with ``w`` (from 0, the bank alone, to 0.2) and the rule chosen on the
validation rows the bank does not hold (``head_blend_weight``, ``head_blend_validation_gain``).

Each run also records how honest the held-out estimates that chose ``k``, the temperature and the
rule were: ``held_out_gain`` (the calibrated rule's gain over the default expert on the leave-one-out
estimates of the training rows) against ``test_gain`` (the routed test score less the default
expert's on the test rows); ``held_out_gain - test_gain`` is the optimism.

``--cache DIR`` (``neighbours`` with the bundled encoder only) reuses the frozen MiniLM's vectors of
each split from ``DIR/<set>-minilm-<split>.pt`` (written there, temp + rename, on the first run), so
seeds and reruns take seconds; the training minutes then add the encoder pass's seconds measured when
the cache was written to the bank's fitting time. The ``neighbours`` recipe has no random step on
these sets (exact search; every training row is in the calibration sample, which ``seed`` draws only
beyond ``calibration_rows``), so its seeds give identical routers: the table says so rather than
average three copies as if they were independent.

Prints one JSON object, then a markdown table. Each finished (set, seed) run is appended to
``--results`` (JSONL) and skipped on a rerun.

Usage::

    python benchmarks/routing_quality.py --results routing_quality.jsonl
    python benchmarks/routing_quality.py --sets llmrouter --seeds 0 --method distill --device cuda
    python benchmarks/routing_quality.py --cache /work/cache --results routing_quality.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import SHARED_DATA, machine, minilm_vectors

from zooter.data import RoutingDataset
from zooter.decide.policy import calibrate_decision, decide
from zooter.demo import demo_splits
from zooter.evaluation import evaluate, evaluate_choices, per_task_best_choices
from zooter.labels.targets import LabelConfig, reward_tensor
from zooter.training import TrainingConfig, train_router

SETS = ("arena", "routellm", "llmrouter")


DATA = SHARED_DATA


def load_set(name: str) -> tuple[RoutingDataset, RoutingDataset | None, RoutingDataset]:
    """(train, validation or None, test) of a named set."""
    if name == "arena":
        _, splits = demo_splits()
        return splits.train, splits.validation, splits.test
    if name == "routellm":
        data = RoutingDataset.load(DATA / "routellm_mmlu_gsm8k" / "rewards.jsonl.gz")
        splits = data.split(validation_fraction=0.0, test_fraction=0.2, seed=0)
        return splits.train, None, splits.test
    if name == "llmrouter":
        folder = DATA / "llmrouter_9model"
        train = RoutingDataset.load(folder / "train.jsonl.gz")
        return train, None, RoutingDataset.load(folder / "test.jsonl.gz", experts=train.experts)
    raise SystemExit(f"unknown set {name!r}; expected one of {SETS}")


def knn_choices(train_vectors: torch.Tensor, train: RoutingDataset, test_vectors: torch.Tensor, k: int) -> list[str]:
    """Best expert by the unweighted mean reward of the ``k`` nearest training queries."""
    a = torch.nn.functional.normalize(train_vectors.float().cpu(), dim=-1)
    b = torch.nn.functional.normalize(test_vectors.float().cpu(), dim=-1)
    rewards = reward_tensor(train)
    index = (b @ a.T).topk(min(k, len(train)), dim=-1).indices
    means = rewards[index].nanmean(dim=1).nan_to_num(nan=-float("inf"))
    return [train.experts[j] for j in means.argmax(dim=-1).tolist()]


CACHE_NAMES = {"arena": "arena_demo", "routellm": "routellm_mmlu_gsm8k", "llmrouter": "llmrouter_9model"}


def cached_vectors(cache: Path, name: str, split: str, dataset: RoutingDataset) -> tuple[torch.Tensor, float]:
    """The bundled MiniLM's vectors of a named set's split, from ``cache`` (see :func:`_common.minilm_vectors`)."""
    return minilm_vectors(cache / f"{CACHE_NAMES[name]}-minilm-{split}.pt", dataset)


class CachedEngine:
    """An engine whose "encoder pass" over the training queries returns their cached vectors."""

    name = "cached"

    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors

    def embed_queries(self, encoder: Any, queries: Any, **_: Any) -> torch.Tensor:
        if len(queries) != len(self.vectors):
            raise SystemExit(f"the cache holds {len(self.vectors)} vectors for {len(queries)} training queries")
        return self.vectors.to(encoder.device)


def run(
    name: str,
    seed: int,
    method: str,
    device: str | None,
    encoder: str | None = None,
    epochs: int | None = None,
    cache: Path | None = None,
    label_temperature: float = 1.0,
) -> dict[str, Any]:
    train, validation, test = load_set(name)
    cached = cache is not None and method == "neighbours" and encoder is None
    engine, encoder_seconds, test_vectors = None, 0.0, None
    if cached:
        train_vectors, encoder_seconds = cached_vectors(cache, name, "train", train)  # type: ignore[arg-type]
        test_vectors, _ = cached_vectors(cache, name, "test", test)  # type: ignore[arg-type]
        engine = CachedEngine(train_vectors)
    config = TrainingConfig(
        method=method,
        seed=seed,
        device=device,
        encoder=encoder,
        show_progress=False,
        labels=LabelConfig(temperature=label_temperature),
        **({} if epochs is None else {"epochs": epochs}),
    )
    started = time.perf_counter()
    router = train_router(train, config, validation=validation, engine=engine)
    seconds = time.perf_counter() - started + encoder_seconds
    estimates = None if test_vectors is None else router.bank.estimate(test_vectors.to(router.device)).cpu()
    report = evaluate(router, test, estimates=estimates)
    # the router's encoder's vectors: the neighbour bank holds them already (its rows: all training rows,
    # or those left when distill+neighbours held some out to validate on)
    if router.bank is not None:
        index = {ex.id: i for i, ex in enumerate(train)}
        neighbours_of, train_vectors = train.take([index[i] for i in router.bank.ids]), router.bank.embeddings
    else:
        neighbours_of, train_vectors = train, router.embed_queries([ex.query for ex in train])
    if test_vectors is None:
        test_vectors = router.embed_queries([ex.query for ex in test])
    baselines = {
        "per_task_best": evaluate_choices(test, per_task_best_choices(train, test)).routed,
        **{
            f"knn_{k}": evaluate_choices(test, knn_choices(train_vectors, neighbours_of, test_vectors, k)).routed
            for k in (10, 100)
        },
    }
    extra: dict[str, Any] = {}
    if method == "distill+neighbours":
        test_logp = head_log_probabilities(router, test_vectors)
        heads = test_logp.argmax(dim=1).tolist()
        extra = {
            "head_argmax": evaluate_choices(test, [router.experts[j] for j in heads]).routed,
            "epochs": [e for e in router.training_log if "val_gain" in e],
            **head_blend(router, train, validation, test, test_vectors, test_logp),
        }
    rule = router.decision
    honesty = {}
    if rule is not None:
        c = rule.calibration
        honesty = {
            "held_out_source": c.get("source"),
            "held_out_gain": c.get("gain", 0.0) if rule.routes else 0.0,
            "test_gain": report.routed - report.per_expert[rule.default_expert],
        }
    return {
        "set": name,
        "seed": seed,
        "method": method,
        "train_rows": len(train),
        "test_rows": report.n,
        "routed": report.routed,
        "best_single": report.best_single,
        "oracle": report.oracle,
        "gap_recovered": report.gap_recovered,
        **baselines,
        "routes": rule.routes if rule else True,
        "share_routed_away": None
        if rule is None
        else sum(share for expert, share in report.routing_share.items() if expert != rule.default_expert),
        "decision": None if rule is None else rule.to_dict(),
        "neighbours": None if router.config.neighbours is None else router.config.neighbours.to_dict(),
        "epoch_budget": None if method == "neighbours" else config.epochs,
        "label_temperature": label_temperature,
        "best_epoch": router.config.training_summary.get("best_epoch"),
        "validation_rows": router.config.training_summary.get("validation_rows"),
        **extra,
        **honesty,
        "temperature": None if router.bank is None else router.bank.temperature,
        "train_seconds": round(seconds, 1),
        "encoder_seconds_cached": round(encoder_seconds, 1) if cached else None,
        "device": str(router.device),
    }


BLEND_WEIGHTS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def head_log_probabilities(router: Any, vectors: torch.Tensor) -> torch.Tensor:
    """The distilled head's log-probabilities over the experts for pooled query vectors (on the CPU)."""
    with torch.no_grad():
        logits = router.head(vectors.to(router.device, router.head.weight.dtype))
    return logits.float().log_softmax(dim=1).cpu()


def head_blend(
    router: Any,
    train: RoutingDataset,
    validation: RoutingDataset | None,
    test_rows: RoutingDataset,
    test_vectors: torch.Tensor,
    test_logp: torch.Tensor,
) -> dict[str, Any]:
    """The distilled head's log-probabilities mixed into the bank's expected rewards,
    ``scores = expected + w * log p``, with ``w`` (0: the bank alone) and the rule chosen on the
    validation rows the bank does not hold, with the bank's standard errors as its own rule has them
    (so ``w = 0`` is the bank's rule); the test rows are only routed."""
    if validation is None:
        held = set(router.bank.ids)
        validation = train.take([i for i, ex in enumerate(train) if ex.id not in held])
    validation = validation.complete()
    val_vectors = router.embed_queries([ex.query for ex in validation])
    val, val_logp = router.bank.estimate(val_vectors.to(router.device)), head_log_probabilities(router, val_vectors)
    test = router.bank.estimate(test_vectors.to(router.device))
    rewards = reward_tensor(validation)[:, [validation.experts.index(e) for e in router.experts]]
    best: tuple[float, float, Any] | None = None
    for weight in BLEND_WEIGHTS:
        rule = calibrate_decision(
            val.scores.cpu() + weight * val_logp,
            rewards,
            router.experts,
            default_expert=router.decision.default_expert,
            min_z=router.decision.calibration.get("min_z", 2.0),
            stderr=val.stderr.cpu(),
        )
        gain = rule.calibration.get("gain", 0.0) if rule.routes else 0.0
        if best is None or gain > best[0]:
            best = (gain, weight, rule)
    assert best is not None
    gain, weight, rule = best
    choices = decide(test.scores.cpu() + weight * test_logp, router.experts, rule, stderr=test.stderr.cpu())
    return {
        "head_blend": evaluate_choices(test_rows, [router.experts[j] for j in choices]).routed,
        "head_blend_weight": weight,
        "head_blend_validation_gain": gain,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in SETS:
        mine = [r for r in runs if r["set"] == name]
        if not mine:
            continue
        routed = [r["routed"] for r in mine]
        gaps = [r["gap_recovered"] for r in mine if r["gap_recovered"] is not None]
        minutes = statistics.mean(r["train_seconds"] for r in mine) / 60
        best = mine[0]["best_single"]["score"]
        gains = [(r["held_out_gain"], r["test_gain"]) for r in mine if r.get("held_out_gain") is not None]
        rows.append(
            {
                "set": name,
                "seeds": [r["seed"] for r in mine],
                "routed_mean": statistics.mean(routed),
                "routed_std": statistics.pstdev(routed),
                "best_single": mine[0]["best_single"],
                "per_task_best": mine[0]["per_task_best"],
                "knn_10": mine[0]["knn_10"],
                "knn_100": mine[0]["knn_100"],
                "oracle": mine[0]["oracle"],
                "gap_recovered_mean": statistics.mean(gaps) if gaps else None,
                "share_routed_away": statistics.mean(r["share_routed_away"] or 0.0 for r in mine),
                "identical_seeds": len({round(v, 12) for v in routed}) == 1 and len(mine) > 1,
                "held_out_gain": statistics.mean(g for g, _ in gains) if gains else None,
                "test_gain": statistics.mean(t for _, t in gains) if gains else None,
                "train_minutes": minutes,
                "gain_per_minute": (statistics.mean(routed) - best) / minutes if minutes > 0 else None,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| set | seeds | routed (mean ± std) | best single | per-task best | kNN-10 | kNN-100 | oracle "
        "| gap recovered | routed away | held-out gain / test gain | training (min) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gap = "n/a" if r["gap_recovered_mean"] is None else f"{r['gap_recovered_mean']:+.1%}"
        seeds = f"{len(r['seeds'])}" + (" (identical)" if r.get("identical_seeds") else "")
        honesty = "n/a" if r.get("held_out_gain") is None else f"{r['held_out_gain']:+.4f} / {r['test_gain']:+.4f}"
        lines.append(
            f"| {r['set']} | {seeds} | {r['routed_mean']:.4f} ± {r['routed_std']:.4f} "
            f"| {r['best_single']['score']:.4f} | {r['per_task_best']:.4f} | {r['knn_10']:.4f} | {r['knn_100']:.4f} "
            f"| {r['oracle']:.4f} | {gap} | {r['share_routed_away']:.0%} | {honesty} | {r['train_minutes']:.1f} |"
        )
    return "\n".join(lines)


def same_recipe(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether a finished run is of the method (and epoch budget) asked for."""
    if result["method"] != args.method or result.get("label_temperature", 1.0) != args.label_temperature:
        return False
    budget = None if args.method == "neighbours" else args.epochs or TrainingConfig().epochs
    return result.get("epoch_budget", None if args.method == "neighbours" else TrainingConfig().epochs) == budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {SETS}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--method", default="neighbours", choices=["neighbours", "distill", "distill+neighbours"])
    parser.add_argument("--epochs", type=int, help="epochs of the fine-tuning methods (default 6)")
    parser.add_argument("--device")
    parser.add_argument("--encoder", help="encoder id or folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data", help=f"folder holding the shared data sets (default: {SHARED_DATA})")
    parser.add_argument("--results", default="routing_quality.jsonl", help="JSONL of finished runs (resumed)")
    parser.add_argument("--cache", help="folder of the frozen MiniLM's vectors per split (neighbours; reused)")
    parser.add_argument(
        "--label-temperature", type=float, default=1.0, help="the soft targets' temperature tau (the paper's: 1)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    global DATA
    DATA = Path(args.data) if args.data else SHARED_DATA
    results = Path(args.results)
    done = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.is_file() else []
    for name in args.sets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            if any(r["set"] == name and r["seed"] == seed and same_recipe(r, args) for r in done):
                continue
            cache = Path(args.cache) if args.cache else None
            result = run(name, seed, args.method, args.device, args.encoder, args.epochs, cache, args.label_temperature)
            done.append(result)
            with results.open("a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
    runs = [r for r in done if same_recipe(r, args) and r["set"] in args.sets.split(",")]
    rows = summarise(runs)
    print(json.dumps({"machine": machine(), "method": args.method, "runs": runs, "summary": rows}))
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
