"""One routing decision, from the rule that makes it to the answer that reports it.

:class:`RouteDecision` is what :meth:`zooter.ZooterRouter.route` returns for a query and what the
LangChain adapter carries unchanged to ``response_metadata["zooter"]``, the ``zooter_route``
callback event and ``ZooterDecisionModel``'s answer: the chosen expert, why it won (``reason``),
every expert's estimate, cost and score after λ, and the ranking fallbacks follow. It is
serialised once, by :meth:`RouteDecision.to_dict`, where it leaves the program.

Example:
    >>> from zooter.decide.decision import RouteDecision
    >>> decision = RouteDecision(
    ...     expert="coder",
    ...     probabilities={"coder": 0.7, "poet": 0.3},
    ...     expected_rewards={"coder": 8.1, "poet": 3.2},
    ...     reason="routed",
    ...     scores={"coder": 8.1, "poet": 3.2},
    ...     ranking=["coder", "poet"],
    ...     default_expert="poet",
    ...     margin=0.5,
    ... )
    >>> print(decision.explain().splitlines()[-1])
    routed: coder's score 8.1 beats the default poet's 3.2 by more than the margin 0.5
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

REASONS = ("routed", "default", "forced", "over_budget", "explore")
"""Why an expert won: the rule chose it (``routed``); no expert beat the default expert by the
margin (``default``); it was the only one allowed and affordable, or the caller named it
(``forced``); no allowed expert fits ``max_cost``, so the cheapest answers (``over_budget``); or
an exploring caller sent the query elsewhere on purpose (``explore``)."""


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RouteDecision:
    """The router's choice for one query, with everything that went into it.

    Attributes:
        expert: the chosen expert.
        probabilities: the router's probability for every expert, in head order.
        expected_rewards: every expert's expected reward on the training rewards' scale, when the
            router estimates it (None for an expert no neighbour has a reward for); None otherwise.
        costs: every expert's expected cost of answering this query (USD), when the router has
            prices (:meth:`zooter.ZooterRouter.set_costs`); None otherwise.
        id: a unique id of this decision (hex), to record an outcome against it later.
        reason: why ``expert`` won, one of :data:`REASONS` (an adapter may add its own, such as
            ``"empty query"``).
        scores: what the rule compared for every expert: the expected reward (or, for a distilled
            head, the probability) less ``cost_weight`` times its cost; None where the router has
            no estimate.
        ranking: the experts the rule could choose (allowed, and within ``max_cost``), the chosen
            one first, then by score: the order fallbacks follow.
        default_expert: the rule's default expert (None: the highest score wins).
        margin: how much an expert's score had to beat the default's by; None: the rule never
            leaves the default.
        z: how many standard errors of the difference of the two estimates an expert had to beat
            the default by, besides the margin (0: the margin alone; see
            :attr:`zooter.decide.policy.DecisionRule.z`).
        cost_weight: λ, what one unit of cost (USD, or a call for a share-of-calls target) took off
            a score.
        max_cost: the budget per query in USD the call set, if any.
        support: per expert, how much evidence its expected reward rests on (effective
            neighbours carrying its reward), when the router measures it; None otherwise.
        stderr: per expert, the standard error of its expected reward, when the router measures
            it (None for an expert without an estimate); None otherwise.
        propensity: the probability with which ``expert`` was picked, when a policy that draws
            at random (exploration, see :class:`zooter.decide.explore.Explorer`) made the
            decision; None otherwise.
        vector: the query's pooled vector (a 1-d tensor) the router computed to decide, when it
            has a neighbour bank and was asked to keep it (``route(..., keep_vectors=True)``), so
            that feedback on the answer reaches the bank without embedding the query again (see
            :class:`zooter.data.QueryVector`); None otherwise. Not part of :meth:`to_dict`.
    """

    expert: str
    probabilities: dict[str, float]
    expected_rewards: dict[str, float | None] | None = None
    costs: dict[str, float] | None = None
    id: str = field(default_factory=_new_id)
    reason: str = "routed"
    scores: dict[str, float | None] = field(default_factory=dict)
    ranking: list[str] = field(default_factory=list)
    default_expert: str | None = None
    margin: float | None = None
    cost_weight: float = 0.0
    max_cost: float | None = None
    support: dict[str, float] | None = None
    propensity: float | None = None
    z: float = 0.0
    stderr: dict[str, float | None] | None = None
    vector: Any = field(default=None, repr=False, compare=False)

    @property
    def expected_reward(self) -> float | None:
        """The chosen expert's expected reward, when the router estimates rewards."""
        return None if self.expected_rewards is None else self.expected_rewards.get(self.expert)

    @property
    def expected_cost(self) -> float | None:
        """The chosen expert's expected cost (USD), when the router has prices."""
        return None if self.costs is None else self.costs[self.expert]

    def candidates(self, fallbacks: int) -> list[str]:
        """The chosen expert, then up to ``fallbacks`` others in the rule's ranking."""
        return [self.expert, *(name for name in self.ranking if name != self.expert)][: 1 + max(fallbacks, 0)]

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain JSON values (what leaves the program: metadata, events, logs)."""
        out: dict[str, Any] = {
            "id": self.id,
            "expert": self.expert,
            "reason": self.reason,
            "probabilities": dict(self.probabilities),
            "scores": dict(self.scores),
            "ranking": list(self.ranking),
            "default_expert": self.default_expert,
            "margin": self.margin,
        }
        if self.expected_rewards is not None:
            out["expected_rewards"] = dict(self.expected_rewards)
        if self.costs is not None:
            out["costs"] = dict(self.costs)
            out["cost_weight"] = self.cost_weight
        if self.max_cost is not None:
            out["max_cost"] = self.max_cost
        if self.z:
            out["z"] = self.z
        if self.support is not None:
            out["support"] = dict(self.support)
        if self.stderr is not None:
            out["stderr"] = dict(self.stderr)
        if self.propensity is not None:
            out["propensity"] = self.propensity
        return out

    def explain(self) -> str:
        """A few lines a person reads: each expert's estimate, cost and score, and why this one won."""
        names = list(self.probabilities)
        priced = self.costs is not None
        columns = ["expert", "expected reward" if self.expected_rewards is not None else "probability"]
        # the evidence columns where the rule weighed them (z > 0), or where only support is known
        evidence = self.support is not None and (self.z > 0 or self.stderr is None)
        errors = self.stderr is not None and self.z > 0
        if evidence:
            columns.append("support")
        if errors:
            columns.append("std. error")
        if priced:
            columns += ["cost (USD)", "score after λ"]
        rows = []
        for name in names:
            rewards = self.expected_rewards
            estimate = rewards.get(name) if rewards is not None else self.probabilities[name]
            row = [name, _number(estimate)]
            if evidence:
                row.append(_number(self.support.get(name)))  # type: ignore[union-attr]
            if errors:
                row.append(_number(self.stderr.get(name)))  # type: ignore[union-attr]
            if priced:
                row += [_number(self.costs[name]), _number(self.scores.get(name))]  # type: ignore[index]
            mark = "  <- chosen" if name == self.expert else ""
            rows.append([*row[:-1], row[-1] + mark])
        widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [columns, *rows]]
        rule = f"default expert: {self.default_expert or 'none'}"
        if self.default_expert is not None:
            margin = "none (routing did not pay when calibrated)" if self.margin is None else _number(self.margin)
            rule += f", margin: {margin}"
            if self.z:
                rule += f" + {_number(self.z)} standard errors"
        if priced:
            rule += f", λ = {self.cost_weight:.4g}"
        if self.max_cost is not None:
            rule += f", max_cost = {self.max_cost:.4g} USD"
        lines.append(rule)
        lines.append(self._why())
        return "\n".join(lines)

    def _why(self) -> str:
        expert, default = self.expert, self.default_expert
        if self.reason == "routed":
            if default is None or default == expert or default not in self.ranking:
                return f"routed: {expert} has the highest score among the experts it could choose"
            return (
                f"routed: {expert}'s score {_number(self.scores.get(expert))} beats the default {default}'s "
                f"{_number(self.scores.get(default))} by more than {self._needed(expert)}"
            )
        if self.reason == "default":
            if self.margin is None:
                return f"kept the default {default}: routing away from it did not pay when the rule was calibrated"
            if self.z:
                return (
                    f"kept the default {default}: no expert beat it by the margin {_number(self.margin)} plus "
                    f"{_number(self.z)} standard errors of its estimate's difference from the default's"
                )
            return f"kept the default {default}: no expert beat it by the margin {_number(self.margin)}"
        if self.reason == "forced":
            return f"forced: {expert} was the only expert allowed within the budget, or the caller named it"
        if self.reason == "over_budget":
            budget = _number(self.max_cost)
            return f"over budget: no allowed expert costs at most {budget} USD; the cheapest, {expert}, answers"
        if self.reason == "explore":
            return f"explored: {expert} was picked to learn how it does, not because it scored best"
        return f"{self.reason}: {expert} answers"

    def _needed(self, expert: str) -> str:
        """What ``expert`` had to beat the default by, in words."""
        margin = f"the margin {_number(self.margin or 0.0)}"
        if not self.z:
            return margin
        mine = (self.stderr or {}).get(expert)
        theirs = (self.stderr or {}).get(self.default_expert or "")
        if mine is None or theirs is None:
            return f"{margin} plus {_number(self.z)} standard errors"
        error = math.hypot(mine, theirs)
        return (
            f"{margin} plus {_number(self.z)} x the standard error {_number(error)} of the difference "
            f"({_number((self.margin or 0.0) + self.z * error)} in all)"
        )


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


__all__ = ["REASONS", "RouteDecision"]
