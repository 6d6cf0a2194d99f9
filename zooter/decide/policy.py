"""Turning the router's estimates into choices: one expert (a calibrated decision rule), or several.

**One expert.** :class:`DecisionRule` leaves the *default expert* (the best on the training data)
only when the router expects another expert to do better by more than a ``margin``.
:func:`calibrate_decision` picks the margin on held-out estimates (leave-one-out or a validation
split) and keeps routing only where it paid there, clearly (by at least ``min_z`` standard errors
of the per-query gain); otherwise every query goes to the default expert, so a router is never
silently worse than its best single expert on the data it was calibrated on.

**Several experts.** Some uses want a
*set*: an agent that should see only the few tools that matter for a request, or a cascade that
asks the two likeliest models. :class:`SelectionPolicy` says how large the set is, and
:func:`select_top` applies it to a whole batch of probability rows at once.

- ``k``: the ``k`` most probable experts.
- ``cumulative_p``: the fewest experts, most probable first, whose probabilities add up to at
  least ``p`` (then clamped to ``[min_k, max_k]``): few when the router is sure, more when not.
- ``always_include``: experts added to every selection; they do not count against ``k``, and their
  probability counts towards ``cumulative_p``.

Example:
    >>> from zooter.decide.policy import SelectionPolicy, select_top
    >>> policy = SelectionPolicy(cumulative_p=0.8, always_include=["web_search"])
    >>> probs = [[0.80, 0.10, 0.05, 0.05]]
    >>> select_top(probs, ["calculator", "code_runner", "web_search", "weather"], policy)[0].selected
    ['calculator', 'web_search']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, model_validator

from zooter.config import ZooterConfig
from zooter.decide.decision import RouteDecision
from zooter.errors import ConfigError, name_list

DEFAULT_K = 3
#: An expert is a candidate default only with rewards on at least this share of the rows the
#: best-covered expert has (see :func:`choose_default`).
MIN_DEFAULT_SUPPORT = 0.5
#: The values of :attr:`DecisionRule.z` calibration tries when the estimates have standard errors.
Z_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


class DecisionRule(ZooterConfig):
    """When to leave the default expert, saved in the router's ``config.json``.

    Attributes:
        default_expert: the expert every query goes to unless routing away pays (the best on the
            training data).
        margin: leave the default only for an expert whose score (expected reward, or probability
            for a distilled head) beats the default's by more than this; None: never leave it.
        z: the evidence an expert needs on *this* query besides the margin: its advantage over the
            default must also exceed ``z`` standard errors of the difference of the two estimates,
            ``sqrt(stderr_expert² + stderr_default²)`` (see :class:`~zooter.model.neighbours.Estimates`),
            so an expert whose estimate rests on a few neighbours (an expert added from a few
            hundred rows, bandit feedback) needs a larger advantage than a well-covered one. Among
            the experts that clear it, the highest score wins. 0: one global margin, as in folders
            saved before it existed, and for routers without standard errors (a distilled head).
        calibration: how the margin was chosen and what it measured there (rows, default and
            routed score, gain, its standard error, share routed away).
        thin_experts: experts whose rewards cover too few rows to be a default candidate (one just
            added from a few hundred scored queries, or known only from production feedback), each
            with the margin by which its score must beat the expert the rule chooses among the
            others to be chosen instead; None: not chosen while another expert is allowed (its own
            rows did not show that routing to it pays). See :func:`calibrate_decision`.
    """

    default_expert: str = Field(min_length=1)
    margin: float | None = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    z: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    calibration: dict[str, Any] = Field(default_factory=dict)
    thin_experts: dict[str, float | None] = Field(default_factory=dict)

    @property
    def routes(self) -> bool:
        """Whether any query can leave the default expert."""
        return self.margin is not None


def describe_decision(rule: DecisionRule | None) -> str:
    """One line on a calibrated decision: does routing pay, and how much leaves the default expert."""
    if rule is None:
        return "decision: the most probable expert (not calibrated: no held-out rows)"
    c = rule.calibration
    where = f"{c.get('rows')} held-out rows ({c.get('source')})"
    if not rule.routes:
        return (
            f"routing did not pay on {where}: every query goes to {rule.default_expert}, the best expert "
            f"on the training data (mean reward {c.get('default_score', float('nan')):.4g})"
        )
    z = c["gain"] / c["standard_error"] if c.get("standard_error") else float("inf")
    evidence = f"; an expert needs {rule.z:.3g} standard errors of evidence besides the margin" if rule.z else ""
    return (
        f"routing pays on {where}: {c['routed_score']:.4g} against {c['default_score']:.4g} for "
        f"{rule.default_expert} alone (+{c['gain']:.3g}, {z:.1f} standard errors); "
        f"{c['share_routed_away']:.0%} of queries leave it{evidence}"
    )


def check_allowed(
    allowed: str | Sequence[str] | None, experts: Sequence[str], *, what: str = "allowed", allow_empty: bool = False
) -> list[str] | None:
    """``allowed`` as a list of expert names (one name is a list of one), or None for all.

    Args:
        allowed: the names a call may choose among.
        experts: every name there is.
        what: how the message calls ``allowed`` (e.g. ``"allowed_experts"``).
        allow_empty: accept an empty list (a selection of several may keep none of them).

    Raises:
        ConfigError: ``allowed`` names an expert not among ``experts``, or is empty.
    """
    if allowed is None:
        return None
    names = [allowed] if isinstance(allowed, str) else list(allowed)
    unknown = [name for name in names if name not in experts]
    if unknown:
        raise ConfigError(f"{what} names unknown expert(s) {unknown}; choose among {name_list(experts)}")
    if not names and not allow_empty:
        raise ConfigError(f"{what} is empty: name at least one of {name_list(experts)}")
    return names


def check_max_cost(max_cost: Any, *, what: str = "max_cost") -> float | None:
    """``max_cost`` as a float, or None; a budget must be a finite number of USD >= 0."""
    if max_cost is None:
        return None
    if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or not math.isfinite(max_cost):
        raise ConfigError(f"{what} must be a finite number of USD >= 0, got {max_cost!r}")
    if max_cost < 0:
        raise ConfigError(f"{what} must be >= 0 USD (a budget per query), got {max_cost!r}")
    return float(max_cost)


@dataclass(frozen=True)
class Ranked:
    """The rule applied to a batch (rows x experts): what it chose, and what it compared.

    Attributes:
        chosen: the chosen expert's index per row.
        scores: what the rule compared: the scores less ``cost_weight`` times the penalties (``nan``
            where there is no estimate).
        keep: the experts each row could choose: allowed, and within ``max_cost``.
        over_budget: rows where no allowed expert was within ``max_cost`` (the cheapest was kept).
        margin: the margin the rule applied (None: it never left the default).
        z: the standard errors of evidence the rule asked for besides the margin (0: none).
    """

    chosen: torch.Tensor
    scores: torch.Tensor
    keep: torch.Tensor
    over_budget: torch.Tensor
    margin: float | None
    z: float = 0.0

    def reasons(self, experts: Sequence[str], rule: DecisionRule | None) -> list[str]:
        """Why each row's expert won (see :data:`zooter.decide.decision.REASONS`)."""
        experts = list(experts)
        default = experts.index(rule.default_expert) if rule is not None and rule.default_expert in experts else None
        alone = self.keep.sum(dim=-1) == 1
        out = []
        for row, chosen in enumerate(self.chosen.tolist()):
            if bool(self.over_budget[row]):
                out.append("over_budget")
            elif bool(alone[row]):
                out.append("forced")
            elif default is not None and chosen == default:
                out.append("default")
            else:
                out.append("routed")
        return out

    def rankings(self) -> list[list[int]]:
        """Each row's choosable experts, the chosen one first, then by score (ties in head order)."""
        order = self.scores.nan_to_num(nan=-math.inf).masked_fill(~self.keep, -math.inf)
        ranked = torch.sort(order, dim=-1, descending=True, stable=True).indices.tolist()
        out = []
        for row, chosen in enumerate(self.chosen.tolist()):
            keep = self.keep[row].tolist()
            out.append([chosen, *(i for i in ranked[row] if keep[i] and i != chosen)])
        return out


def decide(scores: torch.Tensor, experts: Sequence[str], rule: DecisionRule | None = None, **limits: Any) -> list[int]:
    """The chosen expert's index for each row of ``scores`` (rows x experts); see :func:`rank`."""
    return rank(scores, experts, rule, **limits).chosen.tolist()


def choose(
    scores: torch.Tensor, experts: Sequence[str], rule: DecisionRule | None = None, **limits: Any
) -> torch.Tensor:
    """The chosen expert's index for each row of ``scores`` (rows x experts), as a tensor; see :func:`rank`."""
    return rank(scores, experts, rule, **limits).chosen


def rank(
    scores: torch.Tensor,
    experts: Sequence[str],
    rule: DecisionRule | None = None,
    *,
    allowed: Sequence[str] | None = None,
    costs: torch.Tensor | None = None,
    cost_weight: float = 0.0,
    max_cost: float | None = None,
    penalties: torch.Tensor | None = None,
    stderr: torch.Tensor | None = None,
) -> Ranked:
    """Apply the decision rule to each row of ``scores`` (rows x experts).

    Without a rule, the highest score wins. With one, the default expert is kept unless the best
    allowed expert's score beats it by more than ``rule.margin``; with ``rule.z`` > 0 and the
    estimates' ``stderr`` (rows x experts), an expert must also beat it by ``z`` standard errors of
    the difference, and the highest-scoring expert that does wins. An expert outside ``allowed`` is
    never chosen; when the default is not allowed, the highest allowed score wins. ``nan`` scores
    (no estimate) never beat a score, but an allowed expert without one is still chosen when
    nothing else is allowed.

    With ``costs`` (USD, rows x experts), each score first loses ``cost_weight * cost``, so a
    cheaper expert wins where it is expected to be nearly as good; a rule whose margin is None
    (routing for quality alone did not pay) then leaves its default by any positive margin, since
    the trade-off is what was asked for. ``max_cost`` rules out, row by row, the experts that cost
    more; where none is left, the cheapest allowed expert is chosen. ``penalties`` replaces
    ``costs`` as what ``cost_weight`` multiplies (e.g. calls to some experts, for a share target).
    """
    experts = list(experts)
    penalties = costs if penalties is None else penalties
    priced = penalties is not None and bool(cost_weight)
    # float64 where USD amounts (around 1e-4) are subtracted; float32 otherwise, exactly as calibrated
    adjusted = scores.double() if priced else scores.float()
    if priced:
        adjusted = adjusted - cost_weight * penalties.to(adjusted.device, torch.float64)  # type: ignore[union-attr]
    filled = adjusted.nan_to_num(nan=-math.inf)
    keep = torch.ones_like(filled, dtype=torch.bool)
    if allowed is not None:
        names = set(allowed)
        keep &= torch.tensor([name in names for name in experts], device=filled.device)
    over_budget = torch.zeros(len(filled), dtype=torch.bool, device=filled.device)
    if max_cost is not None:
        if costs is None:
            raise ConfigError("max_cost needs the experts' costs: set them with router.set_costs(...)")
        costs = costs.to(filled.device, torch.float64)
        affordable = keep & (costs <= max_cost)
        cheapest = costs.masked_fill(~keep, math.inf).argmin(dim=-1, keepdim=True)
        fallback = torch.zeros_like(keep).scatter_(1, cheapest, True)
        over_budget = ~affordable.any(dim=-1)
        keep = torch.where(over_budget.unsqueeze(1), fallback, affordable)
    # an expert without an estimate ranks below every estimate, but above every expert it may not choose
    lowest = torch.full_like(filled, torch.finfo(filled.dtype).min)
    thin = rule.thin_experts if rule is not None else {}
    on_probation = torch.tensor([name in thin for name in experts], device=filled.device)
    scored = filled
    if thin:  # the rule first chooses among the other experts, as if a thin expert had no estimate
        filled = filled.masked_fill(on_probation, math.nan)
    filled = torch.where(keep & ~torch.isfinite(filled), lowest, filled).masked_fill(~keep, -math.inf)
    best = filled.argmax(dim=-1)
    if rule is None or rule.default_expert not in experts:
        return Ranked(best, adjusted, keep, over_budget, None)
    default = experts.index(rule.default_expert)
    margin = rule.margin
    if margin is None:
        if not priced:
            chosen = torch.where(keep[:, default], torch.full_like(best, default), best)
            return Ranked(_admit_thin(chosen, scored, keep, experts, thin), adjusted, keep, over_budget, None)
        margin = 0.0
    z = rule.z if stderr is not None else 0.0
    advantage = filled - filled[:, default : default + 1]
    if z > 0:
        # where the default has no estimate, any estimate beats it (as without z)
        needed = z * difference_stderr(stderr, default).to(filled)  # type: ignore[arg-type]
        advantage = torch.where(torch.isfinite(filled[:, default : default + 1]), advantage - needed, advantage)
    chosen = _leave_default(filled, advantage.masked_fill(~keep, -math.inf), default, margin)
    # a default the call does not allow: the best allowed expert answers
    chosen = torch.where(keep[:, default], chosen, best)
    return Ranked(_admit_thin(chosen, scored, keep, experts, thin), adjusted, keep, over_budget, margin, z)


def _leave_default(scores: torch.Tensor, advantage: torch.Tensor, default: int, margin: float) -> torch.Tensor:
    """Per row, the highest-scoring expert whose ``advantage`` over the default (less the evidence
    asked for) exceeds ``margin``, else the default."""
    return _leave_default_at(scores, advantage, default, [margin])[0]


def _leave_default_at(
    scores: torch.Tensor, advantage: torch.Tensor, default: int, margins: Sequence[float]
) -> torch.Tensor:
    """:func:`_leave_default` at each of ``margins`` (margins x rows), a block of margins at a time:
    calibration tries every margin in one pass."""
    clears_at = advantage.nan_to_num(nan=-math.inf)
    clears_at[:, default] = -math.inf
    block = max(1, 2**22 // max(1, advantage.numel()))
    out = []
    for start in range(0, len(margins), block):
        levels = torch.tensor(margins[start : start + block], dtype=clears_at.dtype, device=clears_at.device)
        levels = levels.view(-1, 1, 1)
        clears = clears_at.unsqueeze(0) > levels
        routed = scores.unsqueeze(0).masked_fill(~clears, -math.inf).argmax(dim=-1)
        out.append(torch.where(clears.any(dim=-1), routed, torch.full_like(routed, default)))
    return torch.cat(out)


def difference_stderr(stderr: torch.Tensor, default: int) -> torch.Tensor:
    """The standard error of each expert's estimate minus the default's (rows x experts), as if
    independent; an expert without one (``nan``) gets an infinite one: it never clears the evidence."""
    se = stderr.double().nan_to_num(nan=math.inf)
    return (se.square() + se[:, default : default + 1].square()).sqrt()


def _admit_thin(
    chosen: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor, experts: list[str], thin: dict[str, float | None]
) -> torch.Tensor:
    """``chosen``, or a thin expert whose score beats the chosen expert's by more than its margin."""
    if not thin:
        return chosen
    margins = torch.tensor(
        [math.inf if thin.get(name) is None else thin[name] for name in experts],
        dtype=scores.dtype,
        device=scores.device,
    )
    against = scores.gather(1, chosen.unsqueeze(1)).squeeze(1)
    # where the chosen expert has no estimate (it was the only choice), a thin expert needs one to win
    against = torch.where(torch.isfinite(against), against, torch.full_like(against, -math.inf))
    lead = (scores - margins).masked_fill(~keep | ~torch.isfinite(scores), -math.inf)
    best = lead.argmax(dim=-1)
    wins = lead.gather(1, best.unsqueeze(1)).squeeze(1) > against
    wins &= torch.isfinite(lead.gather(1, best.unsqueeze(1)).squeeze(1))
    return torch.where(wins, best, chosen)


def route_decisions(
    probabilities: torch.Tensor,
    expected_rewards: torch.Tensor | None,
    experts: Sequence[str],
    rule: DecisionRule | None = None,
    *,
    stderr: torch.Tensor | None = None,
    support: torch.Tensor | None = None,
    vectors: torch.Tensor | None = None,
    **limits: Any,
) -> list[RouteDecision]:
    """One :class:`~zooter.decide.decision.RouteDecision` per row: the rule's choice, reason and ranking.

    The rule compares ``expected_rewards`` when given, else ``probabilities``, weighing the
    estimates' ``stderr`` by its ``z``; ``support`` is reported with each decision, and each
    row of ``vectors`` (the pooled query vectors) is kept with its decision; ``limits`` are
    :func:`rank`'s (``allowed``, ``costs``, ``cost_weight``, ``max_cost``, ``penalties``).
    """
    experts = list(experts)
    scores = probabilities if expected_rewards is None else expected_rewards
    ranked = rank(scores, experts, rule, stderr=stderr, **limits)
    costs, cost_weight = limits.get("costs"), limits.get("cost_weight", 0.0)
    rows = len(probabilities)
    probs = probabilities.tolist()
    expected = [None] * rows if expected_rewards is None else [_named(experts, r) for r in expected_rewards.tolist()]
    prices = [None] * rows if costs is None else [dict(zip(experts, r)) for r in costs.double().tolist()]
    adjusted = [_named(experts, r) for r in ranked.scores.tolist()]
    errors = [None] * rows if stderr is None else [_named(experts, r) for r in stderr.tolist()]
    evidence = [None] * rows if support is None else [dict(zip(experts, r)) for r in support.tolist()]
    return [
        RouteDecision(
            expert=experts[chosen],
            probabilities=dict(zip(experts, probs[row])),
            expected_rewards=expected[row],
            costs=prices[row],
            reason=reason,
            scores=adjusted[row],
            ranking=[experts[i] for i in ranking],
            default_expert=None if rule is None else rule.default_expert,
            margin=ranked.margin,
            z=ranked.z,
            cost_weight=float(cost_weight) if costs is not None else 0.0,
            max_cost=limits.get("max_cost"),
            support=evidence[row],
            stderr=errors[row],
            vector=None if vectors is None else vectors[row],
        )
        for row, (chosen, reason, ranking) in enumerate(
            zip(ranked.chosen.tolist(), ranked.reasons(experts, rule), ranked.rankings())
        )
    ]


def _named(experts: list[str], row: list[float]) -> dict[str, float | None]:
    """A row of values by expert name, None where a value is missing (nan or infinite)."""
    return {name: (value if math.isfinite(value) else None) for name, value in zip(experts, row)}


def best_expert(rewards: torch.Tensor, experts: Sequence[str]) -> str:
    """The expert with the highest mean reward among those with enough rows (see :func:`choose_default`)."""
    return choose_default(rewards, experts)[0]


def choose_default(rewards: torch.Tensor, experts: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The default expert: the highest mean reward over the rows that have one (``nan``: missing),
    among the experts with rewards on at least :data:`MIN_DEFAULT_SUPPORT` of the rows the
    best-covered expert has. A mean over a handful of rows is no ground to send all traffic there.

    Returns:
        The expert's name, and what was weighed, for the decision's record: ``{"rows": its rows,
        "min_rows": the least a candidate needs, "passed_over": {expert: rows}}``, the last only
        when experts with a better mean on too few rows were passed over.
    """
    experts = list(experts)
    present = torch.isfinite(rewards)
    counts = present.sum(0)
    means = rewards.float().nan_to_num(0.0).sum(0) / counts.clamp_min(1)
    means = means.masked_fill(counts == 0, -math.inf)
    floor = _min_default_rows(counts)
    best = int(means.masked_fill(counts < floor, -math.inf).argmax())
    support: dict[str, Any] = {"rows": int(counts[best]), "min_rows": floor}
    passed = {experts[j]: int(counts[j]) for j in range(len(experts)) if counts[j] < floor and means[j] > means[best]}
    if passed:
        support["passed_over"] = passed
    return experts[best], support


def calibrate_decision(
    scores: torch.Tensor,
    rewards: torch.Tensor,
    experts: Sequence[str],
    *,
    default_expert: str | None = None,
    default_rewards: torch.Tensor | None = None,
    filled: torch.Tensor | None = None,
    propensities: torch.Tensor | None = None,
    min_z: float = 2.0,
    source: str = "validation",
    stderr: torch.Tensor | None = None,
    z_grid: Sequence[float] = Z_GRID,
) -> DecisionRule:
    """Choose the margin (and, with ``stderr``, the evidence ``z``) that routes best on held-out
    ``scores`` against their true ``rewards``.

    Experts whose rewards cover too few rows to be a default candidate (see :func:`choose_default`:
    an expert just added from a few hundred scored queries, or known only from bandit feedback)
    are *thin*: the margin is calibrated among the other experts first, then the thin experts are
    admitted only by a margin of their own over the rule's choice, and only when a doubly robust
    estimate of what admitting them gains passes the same significance test (see
    :func:`doubly_robust_values`). So an expert with thin evidence never displaces a calibrated
    rule on the strength of its prior, and the router with it is not worse than without it.

    Args:
        scores: the router's held-out scores, rows x experts (e.g. leave-one-out estimates).
        rewards: the same rows' rewards, ``nan`` where missing; rows without every reward are left
            out, unless ``filled`` stands in for the missing ones.
        experts: the column names.
        default_expert: the expert to keep unless routing pays; by default the best mean reward
            among the experts with enough rows (:func:`choose_default`, recorded as
            ``calibration["default_support"]``).
        default_rewards: the rows to choose the default expert (and the thin experts) on (e.g. the
            training rows, when ``rewards`` are a validation split's); by default ``rewards``.
        filled: stand-ins for the missing rewards (e.g. :meth:`NeighbourBank.filled_rewards`, from
            each row's own observed rewards), so rows with only some rewards calibrate the margin
            among the well-covered experts too; the significance test then counts only the rows
            whose choice and default rewards are both observed.
        propensities: for each observed reward, the probability with which it was observed (the
            logged exploration propensity of production feedback), rows x experts, ``nan`` where
            unknown (a scored reward: see :func:`doubly_robust_values`). Used by the doubly robust
            admission of thin experts.
        min_z: routing is kept only if its mean gain over the default is at least this many
            standard errors above 0 (guards against a margin that won by chance on few rows); a
            thin expert is admitted only on the same terms.
        source: where the scores came from, for the record.
        stderr: the standard errors of the held-out ``scores`` (rows x experts), when the router
            estimates them: every ``z`` of ``z_grid`` is then tried with every margin (see
            :attr:`DecisionRule.z`); without them only ``z`` = 0 (one global margin).
        z_grid: the values of ``z`` to try; on equal gains the larger one (more evidence) wins.

    Returns:
        The rule, with ``calibration`` holding what it measured. When fewer than 2 rows have every
        reward, routing cannot be calibrated: the margin is None, and ``sparse_experts`` records
        each expert lacking rewards with its number of rows.
    """
    experts = list(experts)
    rewards = rewards.float().cpu()
    scores = scores.float().cpu()
    support = None
    if default_expert is None:
        default_expert, support = choose_default(rewards if default_rewards is None else default_rewards, experts)
    # Rows logged through the router's policy (production feedback) lack the rewards of the experts
    # it did not choose, because it expected them to be worse: not at random, so stand-ins would
    # flatter the rule's choices there. The margin is calibrated on the scored rows (when there are
    # some), and an expert is thin for lack of scored rows; logged rows count in the estimates and,
    # weighed by their propensities, in the doubly robust admission of thin experts.
    rows = torch.ones(len(rewards), dtype=torch.bool)
    counted: dict[str, int] = {}
    if propensities is not None:
        scored = ~torch.isfinite(propensities.cpu()).any(dim=1)
        if int(scored.sum()) >= 2 and not bool(scored.all()):
            rows = scored
    if bool(rows.all()):
        thin = thin_mask(rewards if default_rewards is None else default_rewards)
    else:
        thin = thin_mask(rewards[rows])
        counted = {"scored_rows": int(rows.sum()), "logged_rows": int((~rows).sum())}
    thin[experts.index(default_expert)] = False
    stderr = None if stderr is None else stderr.float().cpu()
    kept = (~thin).nonzero().squeeze(1)
    rule = _calibrate_margin(
        scores[rows][:, kept],
        rewards[rows][:, kept],
        [experts[i] for i in kept.tolist()],
        default_expert,
        None if filled is None else filled[rows][:, kept],
        min_z,
        source,
        None if stderr is None else stderr[rows][:, kept],
        z_grid,
    )
    figures = rule.calibration
    if support is not None:
        figures["default_support"] = support
    figures.update(counted)
    if not bool(thin.any()):
        return rule
    rule = rule.model_copy(
        update={"thin_experts": dict.fromkeys((experts[i] for i in thin.nonzero().squeeze(1).tolist()), None)}
    )
    admitted, figures["thin_experts"] = _admit_thin_experts(scores, rewards, experts, rule, propensities, min_z, stderr)
    return rule.model_copy(update={"thin_experts": admitted, "calibration": figures})


def thin_mask(rewards: torch.Tensor) -> torch.Tensor:
    """Which experts (columns of ``rewards``, ``nan``: missing) have rewards on too few rows to be a
    default candidate: fewer than :data:`MIN_DEFAULT_SUPPORT` of the rows the best-covered one has."""
    counts = torch.isfinite(rewards).sum(0)
    return counts < _min_default_rows(counts)


def _min_default_rows(counts: torch.Tensor) -> int:
    """The fewest rows with rewards a default candidate needs, given each expert's ``counts``."""
    return max(1, math.ceil(MIN_DEFAULT_SUPPORT * int(counts.max())))


def _margin_candidates(advantage: torch.Tensor) -> list[float]:
    """The margins calibration tries, ascending: 50 quantiles of the positive advantages."""
    positive = advantage[advantage > 0]
    return sorted(set(torch.quantile(positive, torch.linspace(0, 0.98, 50)).tolist())) if len(positive) else []


def doubly_robust_values(
    rewards: torch.Tensor, direct: torch.Tensor, propensities: torch.Tensor | None = None
) -> torch.Tensor:
    """Each row's doubly robust estimate of each expert's reward (rows x experts).

    ``direct + observed / propensity * (reward - direct)``: the direct estimate (e.g. the
    leave-one-out neighbour estimate), corrected where the reward was observed by its residual
    weighted by the inverse of the probability it was observed. Averaged over rows it is unbiased
    for what a policy choosing these experts would get, whatever the direct estimate's error, as
    long as the propensities are right; where an expert's reward is never observed it is the
    direct estimate alone. A reward without a logged propensity (``nan``: it was scored, not
    observed through the router's policy) counts as one of a random subset: its probability is
    the share of the rows without logged propensities that have the expert's reward (1 for a
    fully scored training set, n / rows for an expert scored on n random rows).
    """
    observed = torch.isfinite(rewards)
    logged = torch.zeros_like(observed) if propensities is None else torch.isfinite(propensities)
    scored = ~logged.any(dim=1, keepdim=True)
    share = (observed & scored).sum(dim=0, keepdim=True) / scored.sum().clamp_min(1)
    p = share.float().expand_as(rewards)
    if propensities is not None:
        p = torch.where(logged, propensities.float(), p)
    direct = direct.float().nan_to_num(0.0)
    residual = (rewards.float() - direct).nan_to_num(0.0) / p.clamp_min(1e-6)
    return direct + torch.where(observed, residual, torch.zeros_like(residual))


def _admit_thin_experts(
    scores: torch.Tensor,
    rewards: torch.Tensor,
    experts: list[str],
    rule: DecisionRule,
    propensities: torch.Tensor | None,
    min_z: float,
    stderr: torch.Tensor | None,
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The margin the thin experts of ``rule`` must clear over its choice (None: not admitted), from
    doubly robust estimates of each candidate margin's gain on every row."""
    thin = torch.tensor([name in rule.thin_experts for name in experts])
    counts = torch.isfinite(rewards).sum(0).tolist()
    record: dict[str, Any] = {
        "rows": {experts[i]: counts[i] for i in thin.nonzero().squeeze(1).tolist()},
        "estimator": "doubly robust",
        "admitted": False,
    }
    base = rank(
        scores, experts, rule, stderr=stderr
    ).chosen  # thin experts are not admitted yet: the rule among the others
    values = doubly_robust_values(rewards, scores, None if propensities is None else propensities.float().cpu())
    lead = scores.masked_fill(~thin, -math.inf).nan_to_num(nan=-math.inf)
    best = lead.argmax(dim=-1)
    advantage = lead.gather(1, best.unsqueeze(1)).squeeze(1) - scores.gather(1, base.unsqueeze(1)).squeeze(1)
    advantage = advantage.nan_to_num(nan=-math.inf, neginf=-math.inf)
    candidates = _margin_candidates(advantage)
    if not candidates:
        return dict(rule.thin_experts), record
    against = values.gather(1, base.unsqueeze(1)).squeeze(1)
    chosen: tuple[float, torch.Tensor] | None = None
    for margin in candidates:  # ascending: on equal gains the larger margin (fewer switches) wins
        picks = torch.where(advantage > margin, best, base)
        diff = values.gather(1, picks.unsqueeze(1)).squeeze(1) - against
        if chosen is None or diff.mean() >= chosen[1].mean():
            chosen = (margin, diff)
    margin, diff = chosen  # type: ignore[misc]
    gain, error = float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))
    admitted = gain > 0 and gain >= min_z * error
    record.update(
        gain=gain,
        standard_error=error,
        margin=float(margin),
        admitted=admitted,
        share_routed_to=float((advantage > margin).float().mean()) if admitted else 0.0,
    )
    return {name: (float(margin) if admitted else None) for name in rule.thin_experts}, record


def _calibrate_margin(
    scores: torch.Tensor,
    rewards: torch.Tensor,
    experts: list[str],
    default_expert: str,
    filled: torch.Tensor | None,
    min_z: float,
    source: str,
    stderr: torch.Tensor | None,
    z_grid: Sequence[float],
) -> DecisionRule:
    """The margin (and ``z``) over ``default_expert`` that routes best (margin None: routing did not
    pay), with what was measured."""
    default = experts.index(default_expert)
    observed = torch.isfinite(rewards)
    if filled is not None:
        keep = observed.any(dim=1) & torch.isfinite(filled.float().cpu()).all(dim=1)
        rewards = torch.where(observed, rewards, filled.float().cpu())
    else:
        keep = observed.all(dim=1)
    figures: dict[str, Any] = {"source": source, "rows": int(keep.sum()), "min_z": min_z}
    if filled is not None:
        figures["complete_rows"] = int(observed.all(dim=1).sum())
    if keep.sum() < 2:
        # too few rows have every reward: no margin can be measured, every query goes to the default
        own = rewards[:, default][observed[:, default]]
        if len(own):
            figures["default_score"] = float(own.mean())
        counts = observed.sum(0).tolist()
        figures["sparse_experts"] = {name: n for name, n in zip(experts, counts) if n < len(rewards)}
        return DecisionRule(default_expert=default_expert, margin=None, calibration={**figures, "pays": False})
    rewards, scores, observed = rewards[keep], scores[keep], observed[keep]
    ranked = scores.nan_to_num(nan=-math.inf)
    advantage = ranked - ranked[:, default : default + 1]
    advantage[:, default] = -math.inf
    base = rewards[:, default]
    zs = sorted({0.0, *(float(z) for z in z_grid)}) if stderr is not None else [0.0]
    needed = None if stderr is None else difference_stderr(stderr.float().cpu()[keep], default).float()
    chosen: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
    for z in zs:  # ascending, like the margins: on equal gains more evidence (fewer switches) wins
        excess = advantage if z == 0 or needed is None else advantage - z * needed
        top = excess.max(dim=-1).values.nan_to_num(nan=-math.inf)
        margins = sorted({0.0, *_margin_candidates(top)})
        picks = _leave_default_at(ranked, excess, default, margins)  # margins x rows
        diffs = rewards.gather(1, picks.T).T - base
        means = diffs.mean(dim=1)
        for i, margin in enumerate(margins):
            if chosen is None or means[i] >= chosen[2].mean():
                chosen = (z, margin, diffs[i], picks[i])
    z, margin, diff, picks = chosen  # type: ignore[misc]
    gain = float(diff.mean())
    # stand-in rewards are not evidence: the spread is the diffs', the count only the observed ones
    known = int((observed.gather(1, picks.unsqueeze(1)).squeeze(1) & observed[:, default]).sum())
    error = float(diff.std() / math.sqrt(max(known, 1)))
    pays = gain > 0 and gain >= min_z * error
    figures.update(
        default_score=float(base.mean()),
        routed_score=float(base.mean()) + gain,
        gain=gain,
        standard_error=error,
        share_routed_away=float((picks != default).float().mean()) if pays else 0.0,
        pays=pays,
    )
    if stderr is not None:
        figures["z_grid"] = zs
    if not pays:
        figures["routed_score"] = float(base.mean())
        figures["best_margin_gain"] = gain
        figures["gain"] = 0.0
    return DecisionRule(
        default_expert=default_expert,
        margin=float(margin) if pays else None,
        z=float(z) if pays else 0.0,
        calibration=figures,
    )


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
    allowed = check_allowed(allowed, experts, allow_empty=True)
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


__all__ = [
    "MIN_DEFAULT_SUPPORT",
    "Z_GRID",
    "DecisionRule",
    "Ranked",
    "Selection",
    "SelectionPolicy",
    "best_expert",
    "calibrate_decision",
    "check_allowed",
    "check_max_cost",
    "choose",
    "choose_default",
    "decide",
    "difference_stderr",
    "doubly_robust_values",
    "rank",
    "route_decisions",
    "select_top",
    "thin_mask",
]
