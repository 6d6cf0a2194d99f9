"""How good is the routing? Compare the routed choices with every single expert, the oracle and chance.

All scores are mean rewards over the rows that have a reward for every expert (rows with a gap
cannot score every system fairly; their count is reported as ``skipped``).

- ``routed``: mean reward of the expert the router chose.
- ``per_expert`` and ``best_single``: always sending every query to one expert.
- ``oracle``: the per-query best expert (what reward-model ranking of all answers would pick).
- ``random``: the expected reward of a uniformly random expert (exact, not sampled).
- ``gap_recovered``: ``(routed - best_single) / (oracle - best_single)``; 1 is the oracle,
  0 is no better than the best single expert, negative is worse.
- ``mtr`` and ``uplift`` (the paper's metrics): over the tasks (or the whole set when there are
  none), the mean rank of each system among {zooter, each expert} and the share of tasks where it
  is best (ties count as best for all tied).

Example:
    >>> from zooter.evaluation import evaluate
    >>> report = evaluate(router, test_set)  # doctest: +SKIP
    >>> print(report.format_table())  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zooter._io import atomic_path
from zooter.data import RoutingDataset
from zooter.errors import MissingDependencyError, ZooterError

ROUTED = "zooter"


@dataclass
class SubsetScores:
    """Scores of every system on one set of rows."""

    n: int
    routed: float
    per_expert: dict[str, float]
    best_single: dict[str, Any]
    oracle: float
    random: float
    gap_recovered: float | None
    routing_share: dict[str, float]

    @classmethod
    def compute(cls, rewards: list[list[float]], choices: list[int], experts: Sequence[str]) -> SubsetScores:
        n = len(rewards)
        k = len(experts)
        per_expert = {name: sum(row[j] for row in rewards) / n for j, name in enumerate(experts)}
        best_name = max(experts, key=lambda name: per_expert[name])  # first of equals, in head order
        best = per_expert[best_name]
        routed = sum(row[c] for row, c in zip(rewards, choices)) / n
        oracle = sum(max(row) for row in rewards) / n
        random = sum(sum(row) / k for row in rewards) / n
        gap = oracle - best
        counts = [0] * k
        for c in choices:
            counts[c] += 1
        return cls(
            n=n,
            routed=routed,
            per_expert=per_expert,
            best_single={"expert": best_name, "score": best},
            oracle=oracle,
            random=random,
            gap_recovered=(routed - best) / gap if gap > 1e-12 else None,
            routing_share={name: counts[j] / n for j, name in enumerate(experts)},
        )


@dataclass
class EvalReport(SubsetScores):
    """The evaluation of a router (or of any list of choices) on a labelled dataset."""

    experts: list[str] = field(default_factory=list)
    skipped: int = 0
    per_task: dict[str, SubsetScores] = field(default_factory=dict)
    mtr: dict[str, float] = field(default_factory=dict)
    uplift: dict[str, float] = field(default_factory=dict)
    #: each expert's mean support on the evaluated queries: the effective number of neighbours that
    #: carry its reward (see :class:`~zooter.model.neighbours.Estimates`); empty without a bank
    support: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def support_line(self) -> str | None:
        """One line on each expert's mean support, or None when the router has no bank."""
        if not self.support:
            return None
        return "support (mean effective neighbours carrying each expert's reward): " + ", ".join(
            f"{name} {value:.1f}" for name, value in self.support.items()
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        data = dict(data)
        data["per_task"] = {task: SubsetScores(**scores) for task, scores in data.get("per_task", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary_rows(self) -> list[tuple[str, float]]:
        """``(system, mean reward)`` for the routed system, the baselines and every expert."""
        rows = [
            (f"{ROUTED} (routed)", self.routed),
            ("oracle (per-query best)", self.oracle),
            (f"best single ({self.best_single['expert']})", self.best_single["score"]),
            ("random (expected)", self.random),
        ]
        rows += [(f"  {name}", score) for name, score in sorted(self.per_expert.items(), key=lambda kv: -kv[1])]
        return rows

    def format_table(self) -> str:
        """A plain-text table for terminals."""
        width = max(len(name) for name, _ in self.summary_rows()) + 2
        lines = [f"{'system':<{width}}mean reward   routed share", "-" * (width + 26)]
        for name, score in self.summary_rows():
            expert = name.strip()
            share = f"{self.routing_share[expert]:>10.1%}" if expert in self.routing_share else ""
            lines.append(f"{name:<{width}}{score:>11.3f}   {share}")
        lines.append("")
        gap = "n/a (oracle = best single)" if self.gap_recovered is None else f"{self.gap_recovered:.1%}"
        lines.append(f"queries: {self.n} (skipped for missing rewards: {self.skipped})")
        lines.append(f"gap recovered (oracle - best single): {gap}")
        if self.support_line():
            lines.append(str(self.support_line()))
        if self.per_task:
            lines.append(
                f"MTR over {len(self.per_task)} tasks (lower is better): "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.mtr.items(), key=lambda kv: kv[1]))
            )
            lines.append(f"%Uplift ({ROUTED} best on): {self.uplift.get(ROUTED, 0.0):.0%} of tasks")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A Markdown table for model cards."""
        lines = ["| system | mean reward | routed share |", "|---|---:|---:|"]
        for name, score in self.summary_rows():
            expert = name.strip()
            share = f"{self.routing_share[expert]:.1%}" if expert in self.routing_share else ""
            lines.append(f"| {expert} | {score:.3f} | {share} |")
        gap = "n/a" if self.gap_recovered is None else f"{self.gap_recovered:.1%}"
        lines.append("")
        lines.append(f"{self.n} queries; gap recovered (oracle minus best single): {gap}.")
        if self.support_line():
            lines.append(f"{str(self.support_line()).capitalize()}.")
        if self.per_task:
            lines.append(f"MTR over {len(self.per_task)} tasks: {self.mtr.get(ROUTED, float('nan')):.2f} ({ROUTED}).")
        return "\n".join(lines)


_TIE = 1e-9  # means that differ only by float rounding are equal


def _ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 is the highest score; equal scores (within rounding) share the mean of their ranks."""
    ranks = {}
    for name, score in scores.items():
        better = sum(other > score + _TIE for other in scores.values())
        tied = sum(abs(other - score) <= _TIE for other in scores.values())
        ranks[name] = better + (tied + 1) / 2
    return ranks


def evaluate_choices(dataset: RoutingDataset, choices: Sequence[str]) -> EvalReport:
    """Score a list of chosen experts (one per row of ``dataset``) against the dataset's rewards.

    Raises:
        ZooterError: the lengths differ, a choice is not an expert, or no row has every reward.
    """
    if len(choices) != len(dataset):
        raise ZooterError(f"got {len(choices)} choices for {len(dataset)} rows")
    experts = dataset.experts
    if ROUTED in experts:
        raise ZooterError(f"an expert is named {ROUTED!r}, the name reports give the routed system; rename it")
    index = {name: j for j, name in enumerate(experts)}
    unknown = sorted({c for c in choices if c not in index})
    if unknown:
        raise ZooterError(f"choices name unknown experts {unknown}; experts are {experts}")
    rows: list[tuple[list[float], int, str | None]] = []
    for reward_row, choice, task in zip(dataset.reward_matrix(), choices, dataset.tasks):
        if all(math.isfinite(r) for r in reward_row):
            rows.append((reward_row, index[choice], task))
    if not rows:
        raise ZooterError("no row has a reward for every expert; nothing to evaluate on")

    overall = SubsetScores.compute([r for r, _, _ in rows], [c for _, c, _ in rows], experts)
    by_task: dict[str, list[tuple[list[float], int]]] = {}
    if any(task is not None for _, _, task in rows):
        for reward_row, c, task in rows:
            by_task.setdefault(task if task is not None else "(none)", []).append((reward_row, c))
    per_task = {
        task: SubsetScores.compute([r for r, _ in items], [c for _, c in items], experts)
        for task, items in sorted(by_task.items())
    }
    subsets = list(per_task.values()) or [overall]
    systems = [ROUTED, *experts]
    rank_sums = dict.fromkeys(systems, 0.0)
    wins = dict.fromkeys(systems, 0)
    for scores in subsets:
        table = {ROUTED: scores.routed, **scores.per_expert}
        ranks = _ranks(table)
        top = max(table.values())
        for name in systems:
            rank_sums[name] += ranks[name]
            wins[name] += table[name] >= top - _TIE
    return EvalReport(
        **asdict(overall),
        experts=list(experts),
        skipped=len(dataset) - len(rows),
        per_task=per_task,
        mtr={name: rank_sums[name] / len(subsets) for name in systems},
        uplift={name: wins[name] / len(subsets) for name in systems},
    )


def per_task_best_choices(train: RoutingDataset, dataset: RoutingDataset) -> list[str]:
    """A baseline that knows each query's task: the expert with the best mean reward on the training
    rows of that task (the best overall for a task the training rows lack, or a row without one).

    Evaluate it with :func:`evaluate_choices` on ``dataset``; a router never sees the task.
    """
    import torch

    from zooter.labels.targets import reward_tensor

    train.check_experts(dataset.experts, allow_subset=True)
    train = train.select_experts(dataset.experts)
    rewards = reward_tensor(train)

    def best(rows: torch.Tensor) -> str:
        return train.experts[int(rows.nanmean(dim=0).nan_to_num(nan=-math.inf).argmax())]

    by_task = {
        task: best(rewards[torch.tensor([t == task for t in train.tasks])])
        for task in set(train.tasks)
        if task is not None
    }
    overall = best(rewards)
    return [by_task.get(task, overall) if task is not None else overall for task in dataset.tasks]


def evaluate(
    router: Any,
    dataset: RoutingDataset,
    *,
    batch_size: int | None = None,
    show_progress: bool = False,
    estimates: Any = None,
) -> EvalReport:
    """Route every query of ``dataset`` with ``router`` and score the choices.

    Args:
        estimates: the router's estimates of ``dataset``'s rows, when already made (see
            :func:`evaluate_costs`, which can share them); by default routing makes them.

    Raises:
        ExpertMismatchError: the dataset's experts differ from the router's.
    """
    dataset.check_experts(router.experts)
    dataset = dataset.select_experts(router.experts)  # head order
    queries = [ex.query for ex in dataset]
    if estimates is None:
        estimates = router.estimate(queries, batch_size=batch_size, show_progress=show_progress)
    decisions = router.route(queries, estimates=estimates)
    report = evaluate_choices(dataset, [d.expert for d in decisions])
    support = getattr(estimates, "support", None)
    if support is not None:
        complete = [i for i, row in enumerate(dataset.reward_matrix()) if all(math.isfinite(r) for r in row)]
        if complete:
            means = support[complete].mean(dim=0).tolist()
            report.support = dict(zip(router.experts, means))
    return report


@dataclass
class SelectionReport:
    """How often a selection of several experts (e.g. an agent's tools) holds a right one.

    A row's *right* experts are those with the row's highest reward (ties included); rows where
    every present reward is equal have no right answer to find and are skipped.

    Attributes:
        n: rows evaluated.
        skipped: rows without a best expert.
        recall_at_k: for each k, the share of rows where a right expert is among the router's k
            most probable ones.
        per_task: ``recall_at_k`` for each task, when the rows have tasks.
        task_sizes: rows evaluated per task.
        policy: the selection policy evaluated (its dict), if any.
        policy_recall: the share of rows where the policy's selection holds a right expert.
        mean_selected: the mean number of experts the policy selected (``always_include`` counted).
    """

    n: int
    skipped: int
    recall_at_k: dict[int, float]
    per_task: dict[str, dict[int, float]] = field(default_factory=dict)
    task_sizes: dict[str, int] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    policy_recall: float | None = None
    mean_selected: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        """A plain-text table for terminals."""
        ks = sorted(self.recall_at_k)
        header = "".join(f"{f'recall@{k}':>11}" for k in ks)
        width = max([len("all"), *(len(t) for t in self.per_task)]) + 2
        lines = [f"{'task':<{width}}{'n':>5}{header}", "-" * (width + 5 + 11 * len(ks))]
        lines.append(f"{'all':<{width}}{self.n:>5}" + "".join(f"{self.recall_at_k[k]:>11.1%}" for k in ks))
        for task, recalls in self.per_task.items():
            size = self.task_sizes.get(task, "")
            lines.append(f"{task:<{width}}{size:>5}" + "".join(f"{recalls[k]:>11.1%}" for k in ks))
        lines.append("")
        lines.append(f"rows: {self.n} (skipped, no single best: {self.skipped})")
        if self.policy_recall is not None:
            lines.append(
                f"policy {self.policy}: recall {self.policy_recall:.1%}, mean selected {self.mean_selected:.2f}"
            )
        return "\n".join(lines)


def evaluate_rankings(
    dataset: RoutingDataset,
    rankings: Sequence[Sequence[str]],
    *,
    ks: Sequence[int] = (1, 2, 3),
    selections: Sequence[Sequence[str]] | None = None,
    policy: dict[str, Any] | None = None,
) -> SelectionReport:
    """Score rankings of experts (most probable first, one per row) against the dataset's rewards.

    Args:
        dataset: the labelled rows.
        rankings: for each row, expert names in the router's order of preference.
        ks: the cut-offs to report recall at.
        selections: for each row, the set a selection policy kept (for ``policy_recall``).
        policy: the policy's settings, recorded in the report.

    Raises:
        ZooterError: the lengths differ, a k is below 1, or no row has a best expert.
    """
    if len(rankings) != len(dataset) or (selections is not None and len(selections) != len(dataset)):
        raise ZooterError(f"got {len(rankings)} rankings for {len(dataset)} rows")
    if not ks or any(k < 1 for k in ks):
        raise ZooterError(f"ks must be integers >= 1, got {list(ks)}")
    hits: dict[str | None, dict[int, int]] = {}
    counts: dict[str | None, int] = {}
    policy_hits, selected_total, n = 0, 0, 0
    for i, example in enumerate(dataset):
        rewards = example.rewards
        best = max(rewards.values())
        if all(abs(r - best) <= _TIE for r in rewards.values()):
            continue
        right = {name for name, r in rewards.items() if r >= best - _TIE}
        n += 1
        for task in {None, example.task}:
            counts[task] = counts.get(task, 0) + 1
            task_hits = hits.setdefault(task, dict.fromkeys(ks, 0))
            for k in ks:
                task_hits[k] += bool(right.intersection(rankings[i][:k]))
        if selections is not None:
            policy_hits += bool(right.intersection(selections[i]))
            selected_total += len(selections[i])
    if n == 0:
        raise ZooterError("no row has a single best expert; nothing to evaluate on")

    def recall(task: str | None) -> dict[int, float]:
        return {k: hits[task][k] / counts[task] for k in ks}

    tasks = sorted(t for t in counts if t is not None)
    return SelectionReport(
        n=n,
        skipped=len(dataset) - n,
        recall_at_k=recall(None),
        per_task={t: recall(t) for t in tasks},
        task_sizes={t: counts[t] for t in tasks},
        policy=policy,
        policy_recall=policy_hits / n if selections is not None else None,
        mean_selected=selected_total / n if selections is not None else None,
    )


def evaluate_selection(
    router: Any,
    dataset: RoutingDataset,
    *,
    ks: Sequence[int] = (1, 2, 3),
    policy: Any = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> SelectionReport:
    """Rank every expert for each query of ``dataset`` (one router pass) and report recall@k.

    Args:
        router: a trained :class:`~zooter.model.router.ZooterRouter`.
        dataset: labelled rows over the router's experts.
        ks: the cut-offs to report recall at.
        policy: a :class:`~zooter.decide.policy.SelectionPolicy` to evaluate as well (its recall and the
            mean number of experts it selects).
        batch_size: queries per encoder forward.
        show_progress: show a progress bar.

    Raises:
        ExpertMismatchError: the dataset's experts differ from the router's.
    """
    from zooter.decide.policy import select_top

    dataset.check_experts(router.experts)
    probs = router.predict_proba([ex.query for ex in dataset], batch_size=batch_size, show_progress=show_progress)
    experts = router.experts
    rankings = [[experts[j] for j in row] for row in probs.argsort(dim=-1, descending=True, stable=True).tolist()]
    selections = None
    if policy is not None:
        selections = [s.selected for s in select_top(probs, experts, policy)]
    return evaluate_rankings(
        dataset, rankings, ks=ks, selections=selections, policy=None if policy is None else policy.to_dict()
    )


@dataclass
class CostReport:
    """The cost-quality trade-off of a router on a labelled dataset (see :func:`evaluate_costs`).

    Costs are USD per query; rewards are mean rewards over the rows that have every reward.

    Attributes:
        n: rows evaluated.
        experts: the experts, in head order.
        frontier: one point per cost weight λ swept, cheapest last: ``{"cost_weight", "reward",
            "cost", "share"}`` (``share``: the share of calls each expert got).
        router: the point at the router's own cost weight (the one it routes with).
        singles: each expert's ``{"reward", "cost"}`` when it answers every query.
        best_single: the expert with the best mean reward, with its reward and cost.
        cheapest: the expert with the lowest mean cost, with its reward and cost.
        oracle: the per-query best expert (the cheapest among equals): its reward and cost.
        apgr: the area under the routed curve of performance gap recovered, ``(reward - cheapest)
            / (best single - cheapest)``, over cost from the cheapest expert's to the best single
            expert's (RouteLLM's APGR with cost in place of the share of strong-model calls); 0.5
            is what mixing the two at random achieves, 1 is best-single quality at the cheapest
            cost. None when the best single expert is also the cheapest.
        cost_to_reach: for 50, 80, 95 and 100 % (keys "50%"...) of the best single expert's mean
            reward, the cheapest point that reaches it (with ``relative_cost``: its cost over the
            best single expert's; None when that expert is free), or None when no λ does.
        prices: where the prices came from.
        skipped: rows without every reward.
    """

    n: int
    experts: list[str]
    frontier: list[dict[str, Any]]
    router: dict[str, Any]
    singles: dict[str, dict[str, float]]
    best_single: dict[str, Any]
    cheapest: dict[str, Any]
    oracle: dict[str, float]
    apgr: float | None
    cost_to_reach: dict[str, dict[str, Any] | None]
    prices: str = "costs"
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pareto(self) -> list[dict[str, Any]]:
        """The frontier points no other point beats on both reward and cost, cheapest first."""
        out: list[dict[str, Any]] = []
        for point in sorted(self.frontier, key=lambda p: (p["cost"], -p["reward"])):
            if not out or point["reward"] > out[-1]["reward"] + _TIE:
                out.append(point)
        return out

    def spread(self, rows: int) -> list[dict[str, Any]]:
        """At most ``rows`` points of :meth:`pareto`, evenly spread over the curve, both ends kept."""
        front = self.pareto()
        if len(front) > rows > 1:
            step = (len(front) - 1) / (rows - 1)
            front = [front[round(i * step)] for i in range(rows)]
        return front

    def format_table(self, *, rows: int = 12) -> str:
        """A plain-text table: a spread of frontier points, then each expert, the oracle and the targets."""
        best_cost = self.best_single["cost"]
        front = self.spread(rows)
        lines = [
            f"{'system':<44}{'mean reward':>12}{'USD / 1k queries':>18}{'vs best single':>16}",
            "-" * 90,
        ]

        def line(name: str, reward: float, cost: float) -> str:
            relative = f"{cost / best_cost:>15.1%}" if best_cost > 0 else f"{'n/a':>15}"  # the best expert is free
            return f"{name:<44}{reward:>12.4f}{1000 * cost:>18.4g} {relative}"

        lines.append(
            line(
                f"{ROUTED} at its own λ = {self.router['cost_weight']:.4g}", self.router["reward"], self.router["cost"]
            )
        )
        for point in front:
            lines.append(line(f"  λ = {point['cost_weight']:.4g}", point["reward"], point["cost"]))
        lines.append(line("oracle (per-query best, cheapest of equals)", self.oracle["reward"], self.oracle["cost"]))
        for name, single in sorted(self.singles.items(), key=lambda kv: -kv[1]["reward"]):
            lines.append(line(f"  {name}", single["reward"], single["cost"]))
        lines.append("")
        lines.append(
            f"queries: {self.n} (skipped for missing rewards: {self.skipped}); prices: {self.prices}; "
            f"best single {self.best_single['expert']}, cheapest {self.cheapest['expert']}"
        )
        lines.append(f"APGR (cheapest -> best single, over cost): {'n/a' if self.apgr is None else f'{self.apgr:.3f}'}")
        for level, point in self.cost_to_reach.items():
            if point is None:
                lines.append(f"{level} of the best single expert's quality: not reached")
            else:
                relative = point["relative_cost"]  # None: the best single expert is free, no ratio to give
                share = "n/a: the best single expert is free" if relative is None else f"{relative:.1%} of its cost"
                lines.append(
                    f"{level} of the best single expert's quality: {1000 * point['cost']:.4g} USD / 1k queries "
                    f"({share}), λ = {point['cost_weight']:.4g}"
                )
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Draw the frontier, every expert and the oracle to an image file (needs matplotlib)."""
        check_plotting()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        front = self.pareto()
        ax.plot(
            [1000 * p["cost"] for p in front], [p["reward"] for p in front], "-o", ms=2.5, label=f"{ROUTED} (λ sweep)"
        )
        ax.plot([1000 * self.router["cost"]], [self.router["reward"]], "*", ms=12, label=f"{ROUTED} at its own λ")
        for name, single in self.singles.items():
            ax.plot([1000 * single["cost"]], [single["reward"]], "s", ms=6, color="grey")
            ax.annotate(
                name, (1000 * single["cost"], single["reward"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ax.plot([1000 * self.oracle["cost"]], [self.oracle["reward"]], "D", color="black", label="oracle")
        ax.set_xlabel("mean cost, USD per 1,000 queries")
        ax.set_ylabel("mean reward")
        ax.set_title(f"cost-quality frontier ({self.n} queries)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=120, format=_image_format(path))
        except OSError as e:  # named by the user's path, not by the temporary file beside it
            raise ZooterError(f"cannot write {path}: {e.strerror or e}") from None
        finally:
            plt.close(fig)
        return path


QUALITY_LEVELS = (0.5, 0.8, 0.95, 1.0)


def check_plotting(path: str | Path | None = None) -> None:
    """Raise unless the frontier can be drawn (to ``path``): ``--plot`` checks this before any work.

    Raises:
        MissingDependencyError: matplotlib cannot be imported.
        ZooterError: matplotlib writes no image of ``path``'s kind (its suffix).
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError("drawing the frontier needs matplotlib: pip install 'zooter-langchain[plot]'")
    if path is not None:
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = FigureCanvasBase.get_supported_filetypes()
        if _image_format(Path(path)) not in kinds:
            raise ZooterError(
                f"cannot draw the frontier to {path}: matplotlib writes no {Path(path).suffix!r} images "
                f"(it writes {', '.join(sorted(kinds))})"
            )


def _image_format(path: Path) -> str:
    return path.suffix.lstrip(".").lower() or "png"


def evaluate_costs(
    router: Any,
    dataset: RoutingDataset,
    costs: Any = None,
    *,
    batch_size: int | None = None,
    show_progress: bool = False,
    estimates: Any = None,
) -> CostReport:
    """Sweep the cost weight on ``dataset`` and report the cost-quality frontier.

    Args:
        router: a router that estimates expected rewards (the default ``"neighbours"`` method).
        dataset: labelled rows (held out from training).
        costs: a :class:`~zooter.decide.costs.CostTable` (or its dict, or a JSON file); by default the
            router's own prices.
        batch_size: queries per encoder forward.
        show_progress: show a progress bar.
        estimates: the router's estimates of every row of ``dataset``, when already made (e.g.
            for :func:`evaluate` too); by default they are made here.

    Raises:
        ConfigError: no prices, or the router does not estimate expected rewards.
        ExpertMismatchError: the dataset's experts differ from the router's.
    """
    import torch

    from zooter.decide.costs import CostTable, cost_weight_grid, sweep_cost_weights
    from zooter.errors import ConfigError

    table = router.costs if costs is None else CostTable.coerce(costs)
    if table is None:
        raise ConfigError("evaluating costs needs the experts' prices: pass costs or give the router its own")
    table.check_experts(router.experts)
    dataset.check_experts(router.experts)
    dataset = dataset.select_experts(router.experts)
    experts = router.experts
    complete = [i for i, row in enumerate(dataset.reward_matrix()) if all(math.isfinite(r) for r in row)]
    if not complete:
        raise ZooterError("no row has a reward for every expert; nothing to evaluate on")
    rows = [dataset[i] for i in complete]
    queries = [example.query for example in rows]
    if estimates is None:
        estimates = router.estimate(queries, batch_size=batch_size, show_progress=show_progress)
    elif len(estimates.probabilities) != len(dataset):
        raise ConfigError(f"got estimates of {len(estimates.probabilities)} rows for {len(dataset)} rows")
    else:  # estimates of every row: keep those of the rows scored here
        estimates = estimates.rows(torch.tensor(complete, dtype=torch.long))
    if estimates.expected_rewards is None:
        raise ConfigError(
            "the cost-quality frontier weighs expected rewards, which this router does not estimate "
            "(a distilled head gives probabilities only); train with the default method 'neighbours'"
        )
    scores = estimates.expected_rewards
    prices = table.query_costs(router.count_tokens(queries), experts)
    rewards = torch.tensor([[example.rewards[e] for e in experts] for example in rows], dtype=torch.float64)
    rule = router.decision
    margin = rule.margin if rule is not None and rule.margin is not None else 0.0
    grid = cost_weight_grid(scores, prices, margin=margin)
    stderr = estimates.stderr
    frontier = sweep_cost_weights(scores, prices, rewards, experts, rule, grid, stderr=stderr)
    own = sweep_cost_weights(
        scores,
        prices,
        rewards,
        experts,
        rule,
        [router.cost_weight],
        penalties=router.cost_penalties(prices),
        stderr=stderr,
    )[0]
    mean_reward, mean_cost = rewards.mean(dim=0).tolist(), prices.mean(dim=0).tolist()
    singles = {name: {"reward": mean_reward[j], "cost": mean_cost[j]} for j, name in enumerate(experts)}
    best_name = max(experts, key=lambda name: singles[name]["reward"])
    cheap_name = min(experts, key=lambda name: (singles[name]["cost"], -singles[name]["reward"]))
    # the oracle: each row's best reward, paid at the cheapest expert that reaches it
    top = rewards.max(dim=1, keepdim=True).values
    oracle_cost = prices.masked_fill(rewards < top - _TIE, math.inf).min(dim=1).values
    best, cheap = singles[best_name], singles[cheap_name]
    return CostReport(
        n=len(rows),
        experts=experts,
        frontier=sorted(frontier, key=lambda p: p["cost_weight"]),
        router=own,
        singles=singles,
        best_single={"expert": best_name, **best},
        cheapest={"expert": cheap_name, **cheap},
        oracle={"reward": float(top.mean()), "cost": float(oracle_cost.mean())},
        apgr=_apgr(frontier, cheap, best),
        cost_to_reach=_cost_to_reach(frontier, best),
        prices=table.source,
        skipped=len(dataset) - len(rows),
    )


def _apgr(points: list[dict[str, Any]], cheapest: dict[str, float], best: dict[str, float]) -> float | None:
    span_cost = best["cost"] - cheapest["cost"]
    span_reward = best["reward"] - cheapest["reward"]
    if span_cost <= 0 or span_reward <= 0:
        return None
    steps = 200
    placed = sorted(
        ((p["cost"] - cheapest["cost"]) / span_cost, (p["reward"] - cheapest["reward"]) / span_reward) for p in points
    )
    reached, i = 0.0, 0  # sending every query to the cheapest expert reaches 0 at no extra cost
    values = []
    for step in range(steps + 1):
        x = step / steps
        while i < len(placed) and placed[i][0] <= x + 1e-12:
            reached = max(reached, placed[i][1])
            i += 1
        values.append(reached)
    return sum((a + b) / 2 for a, b in itertools.pairwise(values)) / steps


def _cost_to_reach(points: list[dict[str, Any]], best: dict[str, float]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for level in QUALITY_LEVELS:
        floor = level * best["reward"]
        fits = [p for p in points if p["reward"] >= floor - _TIE]
        point = min(fits, key=lambda p: (p["cost"], -p["reward"])) if fits and best["reward"] > 0 else None
        key = f"{level:.0%}"
        out[key] = None
        if point is not None:
            relative = point["cost"] / best["cost"] if best["cost"] > 0 else None
            out[key] = {**point, "relative_cost": relative}
    return out


__all__ = [
    "QUALITY_LEVELS",
    "ROUTED",
    "CostReport",
    "EvalReport",
    "SelectionReport",
    "SubsetScores",
    "check_plotting",
    "evaluate",
    "evaluate_choices",
    "evaluate_costs",
    "evaluate_rankings",
    "evaluate_selection",
    "per_task_best_choices",
]
