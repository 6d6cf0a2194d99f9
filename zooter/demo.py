"""The demo: train a router on real data shipped with the package, and show what routing is worth.

Two bundled sets (each with its licence and attribution in a ``NOTICE.md`` beside it):

- ``"llmrouter"`` (the default): llmrouter_9model, nine open LLMs on 14 benchmark tasks with their
  prices (MIT, from ulab-uiuc/LLMRouter). Train on its 5,608 training queries, evaluate on its 500
  test queries: routed against the best single model, the per-task best and the oracle, where the
  queries went, and the cost-quality frontier at the bundled prices.
- ``"arena"``: arena-bench-v1, GPT-4 grades of six comparable chat models on 300 hard prompts
  (Apache-2.0), split 210 / 30 / 60 by id hash. Too little data for routing to pay: the router
  keeps every query on the best model, and says so.

:func:`run_demo` returns a :class:`DemoReport`; the ``zooter demo`` command prints it.

Example:
    >>> from zooter.demo import llmrouter_data
    >>> train, test, prices = llmrouter_data()
    >>> len(train), len(test), len(prices.experts)
    (5608, 500, 9)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from zooter.data import RoutingDataset
from zooter.decide.policy import describe_decision
from zooter.errors import ConfigError
from zooter.evaluation import ROUTED

logger = logging.getLogger(__name__)

#: The bundled sets ``zooter demo --data`` takes.
DEMO_SETS = ("llmrouter", "arena")
#: arena-bench-v1's pool of comparable models (GPT-4 judges, so gpt-4-* answers are left out).
DEMO_EXPERTS = [
    "gpt-3.5-turbo",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "claude-2.1",
    "claude-instant-1",
    "claude-1",
    "Starling-LM-7B-alpha",
]
#: Queries the arena demo routes as examples (hand-written; they have no grades).
DEMO_QUERIES = [
    "Write a Python function that merges overlapping intervals and explain its complexity.",
    "Solve for x: 3x + 7 = 22, and show each step.",
    "Write a short, warm wedding toast for my sister who loves mountain climbing.",
]
#: llmrouter_9model test queries the demo explains: a short gsm8k problem, a short human_eval task and
#: a trivia question (chosen once, by length, from the test split).
LLMROUTER_EXAMPLES = ["test-00462-d0ec8da120", "test-00417-3bc8bf3f66", "test-00233-5ab5e1c1ca"]
#: The set has no answers, so each answer is counted as this many tokens when pricing a call.
ANSWER_TOKENS = 256


def resource(name: str) -> Path:
    """A file shipped in ``zooter/resources`` (e.g. ``"llmrouter_9model/experts.json"``)."""
    return Path(str(files("zooter.resources").joinpath(*name.split("/"))))


def demo_data_path() -> Path:
    """The arena-bench-v1 rewards shipped inside the package (see its NOTICE.md)."""
    return resource("arena_bench_v1/rewards.jsonl")


def demo_splits() -> tuple[RoutingDataset, Any]:
    """The arena demo's data (the six comparable experts) and its fixed split."""
    data = RoutingDataset.load(demo_data_path(), experts=DEMO_EXPERTS)
    return data, data.split(validation_fraction=0.1, test_fraction=0.2, seed=0)


def llmrouter_data(*, answer_tokens: float = ANSWER_TOKENS) -> tuple[RoutingDataset, RoutingDataset, Any]:
    """llmrouter_9model's training rows, its test rows and its price table (see its NOTICE.md).

    Args:
        answer_tokens: the expected length of every model's answer, in tokens (the set has no
            answers to measure it on); a call costs its input tokens plus these at the model's prices.
    """
    from zooter.decide.costs import CostTable

    train = RoutingDataset.load(resource("llmrouter_9model/train.jsonl.gz"))
    test = RoutingDataset.load(resource("llmrouter_9model/test.jsonl.gz"), experts=train.experts)
    prices = CostTable.load(resource("llmrouter_9model/experts.json"))
    return train, test, prices.with_output_tokens(dict.fromkeys(prices.experts, answer_tokens))


@dataclass
class DemoReport:
    """What :func:`run_demo` measured.

    Attributes:
        data: which bundled set (one of :data:`DEMO_SETS`).
        description: the set in words, with its licence.
        train_rows: training queries.
        evaluation: the router on the test rows (:class:`~zooter.evaluation.EvalReport`).
        per_task_best: the mean test reward of the per-task best expert (chosen on the training
            rows of each query's task; it needs the task label a router never sees), or None.
        costs: the cost-quality report on the test rows (:class:`~zooter.evaluation.CostReport`),
            when the set has prices.
        examples: the example queries, each with its task and the router's decision.
        router: the trained router.
        train_seconds: wall time of training.
        seconds: wall time of the whole demo.
    """

    data: str
    description: str
    train_rows: int
    evaluation: Any
    router: Any
    per_task_best: float | None = None
    costs: Any = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (the router itself is left out)."""
        report = self.evaluation
        rule = self.router.decision
        out: dict[str, Any] = {
            "data": self.data,
            "train_rows": self.train_rows,
            "test_rows": report.n,
            "routed": report.routed,
            "best_single": report.best_single,
            "per_task_best": self.per_task_best,
            "oracle": report.oracle,
            "random": report.random,
            "gap_recovered": report.gap_recovered,
            "routing_share": report.routing_share,
            "per_expert": report.per_expert,
            "decision": None if rule is None else rule.to_dict(),
            "examples": [
                {"id": ex["id"], "task": ex["task"], "query": ex["query"], **ex["decision"].to_dict()}
                for ex in self.examples
            ],
            "train_seconds": round(self.train_seconds, 1),
            "seconds": round(self.seconds, 1),
        }
        if self.costs is not None:
            out["costs"] = self.costs.to_dict()
            reach = self.costs.cost_to_reach.get("100%")
            out["best_single_quality_cost"] = None if reach is None else reach["cost"]
            out["best_single_quality_relative_cost"] = None if reach is None else reach["relative_cost"]
        return out

    def format_text(self, *, frontier_rows: int = 6) -> str:
        """What ``zooter demo`` prints: the scores, where the queries went, the costs, the examples."""
        report = self.evaluation
        best = report.best_single
        lines = [self.description, describe_decision(self.router.decision), ""]
        width = 48
        lines.append(f"held-out test split ({report.n} queries)".ljust(width) + "mean reward")
        systems = [
            (f"{ROUTED} (routed)", report.routed),
            (f"best single ({best['expert']})", best["score"]),
            ("per-task best (knows each query's task)", self.per_task_best),
            ("oracle (per-query best)", report.oracle),
        ]
        lines += [f"  {name}".ljust(width) + f"{score:>11.3f}" for name, score in systems if score is not None]
        gap = "n/a (oracle = best single)" if report.gap_recovered is None else f"{report.gap_recovered:.1%}"
        gain = report.routed - best["score"]
        lines.append(f"  routed - best single: {gain:+.3f}; share of the gap to the oracle recovered: {gap}")
        lines += ["", "share of test queries routed to each model (its own mean reward):"]
        for name, share in sorted(report.routing_share.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {share:>6.1%}  {name} ({report.per_expert[name]:.3f})")
        if self.costs is not None:
            lines += ["", *self._format_costs(frontier_rows)]
        lines += ["", f"{len(self.examples)} example queries, explained:"]
        for example in self.examples:
            lines += self._format_example(example)
        return "\n".join(lines)

    def _format_costs(self, rows: int) -> list[str]:
        costs = self.costs
        best = costs.best_single
        lines = [
            f"cost-quality frontier on the test queries (the bundled prices, answers counted as {ANSWER_TOKENS} "
            "tokens; λ: reward given up per USD):",
            f"  {'mean reward':>11}  {'USD / 1k queries':>16}  {'of the best single model':>24}",
        ]
        for point in costs.spread(rows):
            relative = f"{point['cost'] / best['cost']:>24.1%}" if best["cost"] > 0 else f"{'n/a':>24}"
            lines.append(
                f"  {point['reward']:>11.3f}  {1000 * point['cost']:>16.4f}  {relative}"
                f"   λ = {point['cost_weight']:.4g}"
            )
        lines.append(f"  {best['reward']:>11.3f}  {1000 * best['cost']:>16.4f}  {1:>24.1%}   {best['expert']} alone")
        reach = costs.cost_to_reach.get("100%")
        if reach is None:
            lines.append("routing does not reach the best single model's quality at any λ on these queries")
        else:
            relative = reach["relative_cost"]  # None when the best single model is free
            share = "" if relative is None else f": {relative:.1%} of its cost"
            lines.append(
                f"routing reaches the best single model's quality ({best['reward']:.3f}) at "
                f"{1000 * reach['cost']:.4f} USD per 1k queries{share} "
                f"(λ = {reach['cost_weight']:.4g}, mean reward {reach['reward']:.3f})"
            )
        return lines

    def _format_example(self, example: dict[str, Any]) -> list[str]:
        decision = example["decision"]
        text = " ".join(str(example["query"]).split())
        short = text if len(text) <= 90 else text[:87] + "..."
        task = f" ({example['task']})" if example["task"] else ""
        lines = ["", f'  "{short}"{task}']
        lines += [f"    {line}" for line in decision.explain().splitlines()]
        if example["rewards"]:
            shown = dict.fromkeys(name for name in (decision.expert, decision.default_expert) if name is not None)
            rewards = ", ".join(f"{name} {example['rewards'][name]:g}" for name in shown)
            lines.append(f"    the rewards on this test row: {rewards}")
        return lines


def run_demo(
    data: str = "llmrouter",
    *,
    encoder: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
    show_progress: bool = False,
) -> DemoReport:
    """Train a router on a bundled set with the default settings and evaluate it on held-out rows.

    Args:
        data: ``"llmrouter"`` (train on llmrouter_9model's train split, test on its test split,
            with its prices) or ``"arena"`` (arena-bench-v1, six experts, a fixed 210/30/60 split).
        encoder: Hugging Face encoder id or folder (default: the bundled all-MiniLM-L6-v2).
        seed: the training seed.
        epochs: epochs for ``method="distill"`` (unused by the default method).
        show_progress: show progress bars.

    Raises:
        ConfigError: ``data`` is not one of :data:`DEMO_SETS`.
    """
    from zooter.evaluation import evaluate, evaluate_choices, evaluate_costs, per_task_best_choices
    from zooter.training import TrainingConfig, train_router

    if data not in DEMO_SETS:
        raise ConfigError(f"unknown demo data {data!r}; expected one of {', '.join(DEMO_SETS)}")
    started = time.perf_counter()
    config = TrainingConfig(seed=seed, encoder=encoder, show_progress=show_progress)
    if epochs is not None:
        config.epochs = epochs
    prices = None
    if data == "llmrouter":
        train, test, prices = llmrouter_data()
        validation = None
        description = (
            f"llmrouter_9model (MIT, ulab-uiuc/LLMRouter): {len(train.experts)} open LLMs on "
            f"{len(set(train.tasks))} benchmark tasks, reward = the task metric of each answer; "
            f"{len(train)} train / {len(test)} test queries"
        )
    else:
        full, splits = demo_splits()
        train, validation, test = splits.train, splits.validation, splits.test
        description = (
            f"arena-bench-v1 (GPT-4 grades 1-10, Apache-2.0): {len(full)} prompts, {len(full.experts)} experts; "
            f"split {len(train)} train / {len(validation)} validation / {len(test)} test"
        )
    router = train_router(train, config, validation=validation, costs=prices)
    train_seconds = time.perf_counter() - started
    estimates = router.estimate(test.texts, show_progress=show_progress)  # one encoder pass for every report
    evaluation = evaluate(router, test, estimates=estimates)
    costs = evaluate_costs(router, test, estimates=estimates) if prices is not None else None
    per_task_best = None
    if any(task is not None for task in test.tasks):
        per_task_best = evaluate_choices(test, per_task_best_choices(train, test)).routed
    if data == "llmrouter":
        rows = {example.id: example for example in test}
        picked = [rows[i] for i in LLMROUTER_EXAMPLES if i in rows]
        queries = [example.query for example in picked]
        examples = [{"id": ex.id, "task": ex.task, "query": ex.query, "rewards": ex.rewards} for ex in picked]
    else:
        queries = list(DEMO_QUERIES)
        examples = [{"id": None, "task": None, "query": query, "rewards": None} for query in queries]
    for example, decision in zip(examples, router.route(queries)):
        example["decision"] = decision
    return DemoReport(
        data=data,
        description=description,
        train_rows=len(train),
        evaluation=evaluation,
        router=router,
        per_task_best=per_task_best,
        costs=costs,
        examples=examples,
        train_seconds=train_seconds,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "ANSWER_TOKENS",
    "DEMO_EXPERTS",
    "DEMO_QUERIES",
    "DEMO_SETS",
    "DemoReport",
    "demo_data_path",
    "demo_splits",
    "llmrouter_data",
    "resource",
    "run_demo",
]
