"""Exploration: sending a share of queries to another expert, so feedback reaches every expert.

In production only the answering expert's outcome is known, so a router that always follows its
rule never learns about the experts it does not favour. :class:`Explorer` takes the rule's
decision and, with probability ``rate``, answers with another expert the decision could have
chosen (its ``ranking``: allowed, and within ``max_cost``), marked ``reason="explore"``. Every
decision it passes on carries its *propensity*, the probability with which the answering expert
was picked, so outcomes logged under exploration can be reweighted later (inverse-propensity
estimates).

Methods (``method``):

- ``"uniform"``: the other expert is drawn uniformly from the decision's ranking; with ``m``
  experts to choose from, the rule's choice has propensity ``1 - rate`` and each other
  ``rate / (m - 1)``.
- ``"uncertainty"``: the other expert is drawn in proportion to the chance that it beats the
  rule's choice, given both estimates and their standard errors (``Φ((score - chosen score) /
  sqrt(stderr² + chosen stderr²))``), so tries go to the experts that might be better rather than
  to those known to be worse; the rule's choice keeps ``1 - rate``. Without standard errors (a
  distilled head) it is uniform. On ``llmrouter_9model`` it served the explored traffic better
  than uniform at the same rate (``benchmarks/lifecycle.py``).

A decision with a single expert to choose from (one allowed, or only one within budget) is passed
on with propensity 1.

Example:
    >>> from zooter.decide.decision import RouteDecision
    >>> from zooter.decide.explore import Explorer
    >>> decision = RouteDecision(expert="a", probabilities={"a": 0.7, "b": 0.2, "c": 0.1}, ranking=["a", "b", "c"])
    >>> explorer = Explorer(0.1, seed=0)
    >>> explored = [explorer(decision) for _ in range(1000)]
    >>> sum(d.reason == "explore" for d in explored)
    106
    >>> explored[0].propensity
    0.9
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Literal

from zooter.decide.decision import RouteDecision
from zooter.errors import ConfigError

ExploreMethod = Literal["uniform", "uncertainty"]
EXPLORE_METHODS: tuple[str, ...] = ("uniform", "uncertainty")


class Explorer:
    """Turns a share ``rate`` of decisions into exploring ones, recording every decision's propensity.

    Args:
        rate: the share of decisions sent to another expert, in [0, 1).
        method: how the other expert is drawn (see the module docs).
        seed: seeds the draws, for reproducible runs and tests (None: seeded from the system).
    """

    def __init__(self, rate: float, *, method: ExploreMethod = "uniform", seed: int | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ConfigError(f"an exploration rate must be a number in [0, 1), got {rate!r}")
        if method not in EXPLORE_METHODS:
            raise ConfigError(f"exploration method must be one of {list(EXPLORE_METHODS)}, got {method!r}")
        self.rate = float(rate)
        self.method = method
        self._random = random.Random(seed)

    def __repr__(self) -> str:
        return f"Explorer(rate={self.rate}, method={self.method!r})"

    def __call__(self, decision: RouteDecision) -> RouteDecision:
        """The decision as it stands (with its propensity), or an exploring one."""
        others = [name for name in decision.ranking if name != decision.expert]
        if not others or not self.rate:
            return replace(decision, propensity=1.0)
        if self._random.random() >= self.rate:
            return replace(decision, propensity=1.0 - self.rate)
        weights = self._weights(decision, others)
        if weights is None:
            expert = others[self._random.randrange(len(others))]
            return replace(decision, expert=expert, reason="explore", propensity=self.rate / len(others))
        expert = self._random.choices(others, weights=weights)[0]
        chance = weights[others.index(expert)] / sum(weights)
        return replace(decision, expert=expert, reason="explore", propensity=self.rate * chance)

    def _weights(self, decision: RouteDecision, others: list[str]) -> list[float] | None:
        """Each other expert's weight in the draw: its chance to beat the choice (None: uniform)."""
        stderr, scores = decision.stderr, decision.scores
        if self.method != "uncertainty" or not stderr or not scores:
            return None
        chosen, error = scores.get(decision.expert), stderr.get(decision.expert)
        weights = []
        for name in others:
            score, spread = scores.get(name), stderr.get(name)
            if None in (chosen, error, score, spread):
                weights.append(0.5)  # no estimate to compare: as likely to be better as not
                continue
            gap = (score - chosen) / max(math.hypot(spread, error), 1e-9)  # type: ignore[operator]
            weights.append(max(0.5 * math.erfc(-gap / math.sqrt(2.0)), 1e-6))  # Φ(gap), never 0
        return weights


__all__ = ["EXPLORE_METHODS", "ExploreMethod", "Explorer"]
