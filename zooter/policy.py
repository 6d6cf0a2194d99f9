"""Turning router probabilities into a choice of several experts: top-k or a cumulative share.

The router's argmax picks one expert (:meth:`zooter.router.ZooterRouter.route`). Some uses want a
*set*: an agent that should see only the few tools that matter for a request, or a cascade that
asks the two likeliest models. :class:`SelectionPolicy` says how large the set is, and
:func:`select_top` applies it to a whole batch of probability rows at once.

- ``k``: the ``k`` most probable experts.
- ``cumulative_p``: the fewest experts, most probable first, whose probabilities add up to at
  least ``p`` (then clamped to ``[min_k, max_k]``): few when the router is sure, more when not.
- ``always_include``: experts added to every selection; they do not count against ``k``, and their
  probability counts towards ``cumulative_p``.

Example:
    >>> from zooter.policy import SelectionPolicy, select_top
    >>> policy = SelectionPolicy(cumulative_p=0.8, always_include=["web_search"])
    >>> probs = [[0.80, 0.10, 0.05, 0.05]]
    >>> select_top(probs, ["calculator", "code_runner", "web_search", "weather"], policy)[0].selected
    ['calculator', 'web_search']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from zooter.config import ZooterConfig
from zooter.errors import ConfigError

DEFAULT_K = 3


class SelectionPolicy(ZooterConfig):
    """How many experts a selection keeps.

    Set ``k`` or ``cumulative_p``, not both; with neither, ``k`` is 3.

    Attributes:
        k: keep the ``k`` most probable experts.
        cumulative_p: keep the fewest experts, most probable first, whose probabilities (together
            with those of ``always_include``) reach ``p``; probabilities are renormalised over the
            experts a call allows.
        min_k: with ``cumulative_p``, keep at least this many (besides ``always_include``).
        max_k: with ``cumulative_p``, keep at most this many (besides ``always_include``).
        always_include: experts in every selection, after the ranked ones.
    """

    k: int | None = Field(default=None, ge=1)
    cumulative_p: float | None = Field(default=None, gt=0.0, le=1.0)
    min_k: int = Field(default=1, ge=1)
    max_k: int | None = Field(default=None, ge=1)
    always_include: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_k(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("k") is None and data.get("cumulative_p") is None:
            data = {**data, "k": DEFAULT_K}
        return data

    @model_validator(mode="after")
    def _one_rule(self) -> SelectionPolicy:
        if self.k is not None and self.cumulative_p is not None:
            raise ValueError(f"set k or cumulative_p, not both (got k={self.k}, cumulative_p={self.cumulative_p})")
        if self.max_k is not None and self.max_k < self.min_k:
            raise ValueError(f"max_k ({self.max_k}) must be >= min_k ({self.min_k})")
        return self

    def check_names(self, experts: Sequence[str]) -> None:
        """Raise :class:`ConfigError` if ``always_include`` names an expert not in ``experts``."""
        unknown = [name for name in self.always_include if name not in experts]
        if unknown:
            raise ConfigError(f"always_include names {unknown}, which are not among {list(experts)}")


@dataclass(frozen=True)
class Selection:
    """The experts a policy kept for one query.

    Attributes:
        ranked: the experts the policy chose from the router's ranking, most probable first.
        always_included: the policy's ``always_include`` experts, in the policy's order.
        probabilities: the router's probability of every expert, in head order.
    """

    ranked: list[str]
    always_included: list[str]
    probabilities: dict[str, float]

    @property
    def selected(self) -> list[str]:
        """Every selected expert: the ranked ones, then the always-included ones."""
        return [*self.ranked, *(name for name in self.always_included if name not in self.ranked)]

    def to_dict(self) -> dict[str, Any]:
        return {"selected": self.selected, "ranked": self.ranked, "probabilities": self.probabilities}


def select_top(
    probabilities: Any,
    experts: Sequence[str],
    policy: SelectionPolicy,
    *,
    allowed: Sequence[str] | None = None,
) -> list[Selection]:
    """Apply ``policy`` to each row of router probabilities.

    Args:
        probabilities: rows x experts, a tensor or nested lists (e.g. ``router.predict_proba(...)``).
        experts: the expert names, in the column order.
        policy: how many experts to keep.
        allowed: choose only among these (``always_include`` is added regardless); ``None`` allows all.

    Returns:
        One :class:`Selection` per row, in row order.

    Raises:
        ConfigError: ``allowed`` or ``always_include`` names an expert not in ``experts``.
    """
    experts = list(experts)
    policy.check_names(experts)
    if allowed is not None:
        unknown = [name for name in allowed if name not in experts]
        if unknown:
            raise ConfigError(f"allowed names {unknown}, which are not among {experts}")
    allowed_set = set(experts if allowed is None else allowed)
    always = [name for name in policy.always_include if name]
    candidates = [i for i, name in enumerate(experts) if name in allowed_set and name not in always]
    always_idx = [experts.index(name) for name in always]
    rows = probabilities.tolist() if hasattr(probabilities, "tolist") else [list(row) for row in probabilities]
    out = []
    for row in rows:
        if len(row) != len(experts):
            raise ConfigError(f"a probability row has {len(row)} values for {len(experts)} experts")
        ranked = sorted(candidates, key=lambda i: -row[i])  # stable: ties keep head order
        keep = _how_many(row, ranked, always_idx, policy)
        out.append(
            Selection(
                ranked=[experts[i] for i in ranked[:keep]],
                always_included=list(always),
                probabilities=dict(zip(experts, (float(p) for p in row))),
            )
        )
    return out


def _how_many(row: list[float], ranked: list[int], always_idx: list[int], policy: SelectionPolicy) -> int:
    if policy.cumulative_p is None:
        return min(policy.k or DEFAULT_K, len(ranked))
    # renormalise over the experts in play, so p means the same whatever a call allows
    total = sum(row[i] for i in ranked) + sum(row[i] for i in always_idx)
    mass = sum(row[i] for i in always_idx) / total if total > 0 else 0.0
    keep = 0
    # a small tolerance: probabilities from a softmax rarely add up to exactly 1.0
    while keep < len(ranked) and mass < policy.cumulative_p - 1e-6:
        mass += row[ranked[keep]] / total if total > 0 else 1.0 / len(ranked)
        keep += 1
    keep = max(keep, policy.min_k)
    if policy.max_k is not None:
        keep = min(keep, policy.max_k)
    return min(keep, len(ranked))


__all__ = ["Selection", "SelectionPolicy", "select_top"]
