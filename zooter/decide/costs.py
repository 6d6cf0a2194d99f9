"""What each expert costs, and routing that trades expected quality against it.

Each expert carries a price (:class:`ExpertCost`): USD per million input and output tokens, with
the expected length of its answers (learned from a responses file, or given), and/or a flat price
per call. A query's cost on an expert is then::

    cost(q, e) = input_tokens(q) * input_price + expected_output_tokens(e) * output_price + cost_per_call

and the router chooses ``argmax_e  quality(q, e) - λ · cost(q, e)``, where ``quality`` is its
expected reward and ``λ`` (``cost_weight``) is how much reward one USD per query is worth. ``λ = 0``
is the quality-only router. Rather than guessing ``λ``, :func:`calibrate_cost_weight` sweeps it on
held-out estimates and keeps the value that meets a :class:`CostTarget`: a mean cost per query, a
share of calls to some experts, or a quality level ("the cheapest routing that keeps 95 % of the
best single model's quality").

Input tokens are counted with the router's own tokenizer (not truncated): an estimate of what the
experts' tokenizers count, good for comparing experts, not for an invoice.

Example:
    >>> import torch
    >>> from zooter.decide.costs import CostTable
    >>> table = CostTable.from_dict({"big": {"input_price_per_mtok": 10}, "small": {"cost_per_call": 1e-6}})
    >>> table.query_costs(torch.tensor([100]), ["big", "small"])
    tensor([[1.0000e-03, 1.0000e-06]])
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, field_serializer, field_validator, model_validator

from zooter.config import ZooterConfig
from zooter.errors import ConfigError, DataError, ZooterError, name_list

logger = logging.getLogger(__name__)

PRICE_FIELDS = ("input_price_per_mtok", "output_price_per_mtok", "expected_output_tokens", "cost_per_call")
#: The largest price (USD per million tokens, or per call) and answer length (tokens) accepted. Real
#: ones are many orders of magnitude below; a larger number is a typo, and would only overflow the
#: products and sums that every cost estimate, calibration and report computes.
MAX_PRICE = 1e9
#: The fewest held-out rows with every reward a cost weight is calibrated on.
MIN_CALIBRATION_ROWS = 10
_RECORD_FIELDS = ("model", "size")  # descriptive fields some price lists carry; kept for the record


class ExpertCost(ZooterConfig):
    """What one call of an expert costs.

    Every value is a finite number from 0 to :data:`MAX_PRICE`.

    Attributes:
        input_price_per_mtok: USD per million prompt tokens.
        output_price_per_mtok: USD per million answer tokens.
        expected_output_tokens: the expected length of an answer, in tokens (learned from
            responses, or given); None: unknown, counted as 0 (a warning says so).
        cost_per_call: USD per call, on top of the token prices.
        model: the provider's model name, for the record.
        size: the model's size, for the record.
    """

    input_price_per_mtok: float = Field(default=0.0, ge=0.0, le=MAX_PRICE)
    output_price_per_mtok: float = Field(default=0.0, ge=0.0, le=MAX_PRICE)
    expected_output_tokens: float | None = Field(default=None, ge=0.0, le=MAX_PRICE)
    cost_per_call: float = Field(default=0.0, ge=0.0, le=MAX_PRICE)
    model: str | None = None
    size: str | None = None


def _short(value: Any) -> str:
    """A number for a one-line message: a 400-digit integer is written by its size, not in full."""
    if isinstance(value, int) and abs(value) >= 10**20:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # more digits than Python writes out
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


class CostTable:
    """Every expert's :class:`ExpertCost`, keyed by expert name.

    Args:
        costs: expert name -> its cost.
        source: where the prices came from (a file name), for messages and the record.
    """

    def __init__(self, costs: Mapping[str, ExpertCost], *, source: str = "costs") -> None:
        if not costs:
            raise ConfigError(f"{source}: no expert has a cost")
        self.costs = dict(costs)
        self.source = source

    def __repr__(self) -> str:
        return f"CostTable({name_list(self.costs)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CostTable) and self.to_dict() == other.to_dict()

    @property
    def experts(self) -> list[str]:
        return list(self.costs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "costs") -> CostTable:
        """Build from ``{expert: {"input_price_per_mtok": ..., ...}}``; each bad value is named.

        Raises:
            DataError: not a mapping of experts to price objects, an unknown field, or a price that
                is not a number from 0 to :data:`MAX_PRICE` (the message names ``source`` and the field).
        """
        if not isinstance(data, Mapping):
            raise DataError(f"expected an object of expert name -> prices, got {type(data).__name__}", path=source)
        costs = {}
        for name, prices in data.items():
            if not isinstance(prices, Mapping):
                raise DataError(
                    f"expected an object with {', '.join(PRICE_FIELDS)}, got {prices!r:.60}", path=source, field=name
                )
            unknown = sorted(set(prices) - set(PRICE_FIELDS) - set(_RECORD_FIELDS))
            if unknown:
                raise DataError(
                    f"unknown price field(s) {unknown}; expected {', '.join(PRICE_FIELDS)}",
                    path=source,
                    field=name,
                )
            for key in PRICE_FIELDS:
                value = prices.get(key)
                if value is None:
                    continue
                field = f"{name}.{key}"
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise DataError(f"expected a finite number >= 0, got {value!r:.60}", path=source, field=field)
                try:
                    number = float(value)
                except OverflowError:  # an integer beyond any float
                    number = math.inf
                if not math.isfinite(number):
                    raise DataError(f"expected a finite number >= 0, got {_short(value)}", path=source, field=field)
                if number < 0:
                    raise DataError(f"expected a number >= 0, got {value!r}", path=source, field=field)
                if number > MAX_PRICE:
                    raise DataError(
                        f"expected a number <= {MAX_PRICE:g} (larger ones overflow the cost sums), got {_short(value)}",
                        path=source,
                        field=field,
                    )
            costs[str(name)] = ExpertCost(**{k: v for k, v in prices.items() if v is not None})
        return cls(costs, source=source)

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        """Read a JSON price file (the shape :meth:`from_dict` takes), e.g. ``experts.json``.

        Raises:
            DataError: the file is missing, not JSON, or holds a bad price (named by field).
        """
        path = Path(path)
        if not path.is_file():
            raise DataError("no such file" if not path.exists() else "is a folder, not a JSON price file", path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"not valid JSON ({e})", path=path) from None
        except ValueError:  # Python refuses to read an integer of more than 4300 digits
            raise DataError("a number has too many digits to read", path=path) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def coerce(cls, costs: CostTable | Mapping[str, Any] | str | Path, *, source: str = "costs") -> CostTable:
        """A table from a table, its dict, or a JSON price file: the one way prices come in."""
        if isinstance(costs, CostTable):
            return costs
        if isinstance(costs, (str, Path)):
            return cls.load(costs)
        return cls.from_dict(costs, source=source)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {k: v for k, v in cost.to_dict().items() if v is not None} for name, cost in self.costs.items()}

    def check_experts(self, experts: Sequence[str]) -> None:
        """Raise :class:`DataError` unless every one of ``experts`` has a cost (extra entries are fine)."""
        missing = [name for name in experts if name not in self.costs]
        if missing:
            raise DataError(
                f"no cost for expert(s) {name_list(missing)}; it prices {name_list(self.costs)}", path=self.source
            )

    def with_output_tokens(self, tokens: Mapping[str, float]) -> CostTable:
        """A copy where the experts in ``tokens`` expect answers of that many tokens."""
        costs = {
            name: cost.replace(expected_output_tokens=float(tokens[name])) if name in tokens else cost
            for name, cost in self.costs.items()
        }
        return CostTable(costs, source=self.source)

    def warn_unknown_lengths(self, experts: Sequence[str]) -> None:
        """Log once which experts have an output price but no expected answer length."""
        unknown = [
            name
            for name in experts
            if self.costs[name].output_price_per_mtok > 0 and self.costs[name].expected_output_tokens is None
        ]
        if unknown:
            logger.warning(
                "%s: %s have an output price but no expected_output_tokens: their answers are counted as 0 tokens "
                "(learn the lengths from a responses file, or set expected_output_tokens)",
                self.source,
                name_list(unknown),
            )

    def query_costs(self, input_tokens: torch.Tensor | Sequence[int], experts: Sequence[str]) -> torch.Tensor:
        """USD of each query on each expert: rows x experts (float64 on the CPU)."""
        self.check_experts(experts)
        tokens = torch.as_tensor(input_tokens, dtype=torch.float64).reshape(-1, 1)
        per_input = torch.tensor([self.costs[e].input_price_per_mtok / 1e6 for e in experts], dtype=torch.float64)
        fixed = torch.tensor(
            [
                self.costs[e].output_price_per_mtok * (self.costs[e].expected_output_tokens or 0.0) / 1e6
                + self.costs[e].cost_per_call
                for e in experts
            ],
            dtype=torch.float64,
        )
        return tokens * per_input + fixed


def check_cost_weight(value: Any, *, what: str = "cost_weight") -> float:
    """λ as a float: a finite number >= 0 (0: decisions weigh quality alone)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


class CostCalibration(ZooterConfig):
    """What calibrating λ to a :class:`CostTarget` measured (see :func:`calibrate_cost_weight`).

    Attributes:
        unit: what λ weighs: ``"usd"``, or ``"calls"`` to the ``penalised`` experts (a share target).
        penalised: the experts a call to which λ weighs, when ``unit`` is ``"calls"``.
        cost_weight: the λ kept.
        target: the target, as :meth:`CostTarget.to_dict` writes it.
        met: whether λ met the target on the calibration rows.
        rows: how many held-out rows it was calibrated on.
        source: where those rows came from.
        reward: the routed mean reward there.
        cost: the routed mean cost there (USD per query).
        share: the share of calls each expert got there.
        best_single: the best single expert there: ``{"expert", "reward", "cost"}``.
    """

    unit: Literal["usd", "calls"] = "usd"
    penalised: list[str] = Field(default_factory=list)
    cost_weight: float = Field(default=0.0, ge=0.0)
    target: dict[str, Any] = Field(default_factory=dict)
    met: bool = True
    rows: int = Field(default=0, ge=0)
    source: str = "validation"
    reward: float | None = None
    cost: float | None = None
    share: dict[str, float] = Field(default_factory=dict)
    best_single: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _calls_name_experts(self) -> CostCalibration:
        if self.unit == "calls" and not self.penalised:
            raise ValueError("calibration.unit 'calls' needs the penalised experts")
        return self


class CostSettings(ZooterConfig):
    """What each expert costs and how much that weighs in decisions: ``config.json``'s ``costs``.

    Attributes:
        prices: every expert's price.
        cost_weight: λ, reward per USD (or per penalised call): decisions choose
            ``argmax expected reward - λ · cost``; 0: quality alone.
        calibration: what calibrating λ to a target measured; None when λ was set by hand.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    prices: CostTable
    cost_weight: float = 0.0
    calibration: CostCalibration | None = None

    @field_validator("calibration", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return CostCalibration.known_keys(value)

    @field_validator("prices", mode="before")
    @classmethod
    def _table(cls, value: Any) -> CostTable:
        return CostTable.coerce(value, source="config.json costs.prices")

    @field_validator("cost_weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> float:
        return check_cost_weight(value)

    @field_serializer("prices")
    def _prices(self, table: CostTable) -> dict[str, Any]:
        return table.to_dict()

    def check_experts(self, experts: Sequence[str]) -> None:
        """Raise :class:`ConfigError` unless the prices cover ``experts`` and the calibration names only them."""
        self.prices.check_experts(experts)
        unknown = [name for name in (self.calibration.penalised if self.calibration else []) if name not in experts]
        if unknown:
            raise ConfigError(
                f"costs.calibration.penalised names unknown expert(s) {name_list(unknown)}; "
                f"the experts are {name_list(experts)}"
            )

    def penalties(self, costs: torch.Tensor, experts: Sequence[str]) -> torch.Tensor:
        """What λ multiplies in decisions: the USD ``costs``, or calls to the penalised experts."""
        if self.calibration is not None and self.calibration.unit == "calls":
            return call_penalties(len(costs), experts, self.calibration.penalised)
        return costs


class CostTarget(ZooterConfig):
    """What a calibrated cost weight must achieve on held-out rows; set exactly one kind.

    Attributes:
        mean_cost: the best quality whose mean cost per query (USD) is at most this.
        share: the best quality that sends at most this share of calls to ``share_experts``.
        share_experts: the experts ``share`` counts (e.g. the expensive one).
        quality_fraction: the cheapest routing whose mean reward is at least this fraction of the
            best single expert's (needs rewards >= 0, such as accuracies or grades).
        min_quality: the cheapest routing whose mean reward is at least this.

    Example:
        >>> CostTarget(share=0.5, share_experts=["gpt-4"]).describe()
        'at most 50% of calls to gpt-4'
    """

    mean_cost: float | None = Field(default=None, ge=0.0)
    share: float | None = Field(default=None, ge=0.0, le=1.0)
    share_experts: list[str] = Field(default_factory=list)
    quality_fraction: float | None = Field(default=None, gt=0.0)
    min_quality: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CostTarget:
        kinds = [k for k in ("mean_cost", "share", "quality_fraction", "min_quality") if getattr(self, k) is not None]
        if len(kinds) != 1:
            given = kinds or "none"
            raise ValueError(f"set exactly one of mean_cost, share, quality_fraction, min_quality (got {given})")
        if (self.share is None) != (not self.share_experts):
            raise ValueError("share and share_experts go together")
        return self

    def check_experts(self, experts: Sequence[str]) -> None:
        """Raise :class:`ConfigError` if ``share_experts`` names an expert not among ``experts``."""
        unknown = [name for name in self.share_experts if name not in experts]
        if unknown:
            raise ConfigError(
                f"the cost target's share_experts names {name_list(unknown)}, not among {name_list(experts)}"
            )

    def describe(self) -> str:
        if self.mean_cost is not None:
            return f"mean cost at most {self.mean_cost:.4g} USD per query"
        if self.share is not None:
            return f"at most {self.share:.0%} of calls to {', '.join(self.share_experts)}"
        if self.quality_fraction is not None:
            return f"the cheapest routing with at least {self.quality_fraction:.0%} of the best single expert's quality"
        return f"the cheapest routing with a mean reward of at least {self.min_quality:.4g}"


def cost_weight_grid(
    scores: torch.Tensor, costs: torch.Tensor, *, margin: float = 0.0, points: int = 200
) -> list[float]:
    """Cost weights that span every trade-off on these rows, from 0 (quality only) to all-cheapest.

    A row's choice between a dearer expert ``i`` and a cheaper ``j`` flips at
    ``λ = (q_i - q_j + margin) / (c_i - c_j)``. The grid is 0, ``points`` quantiles of those switch
    points, and one past the largest (where every row goes to its cheapest expert).
    """
    q = scores.double().nan_to_num(nan=0.0)
    c = costs.double()
    dq = q.unsqueeze(2) - q.unsqueeze(1) + margin  # rows x i x j
    dc = c.unsqueeze(2) - c.unsqueeze(1)
    valid = (dc > 0) & (dq > 0)
    switches = dq[valid] / dc[valid]
    switches = switches[torch.isfinite(switches)]  # a tiny cost step: no finite λ would make that switch
    if not len(switches):
        return [0.0]
    if len(switches) > 4_000_000:  # torch.quantile's input limit: an even subsample keeps the spread
        switches = switches[:: len(switches) // 4_000_000 + 1]
    levels = torch.linspace(0, 1, points, dtype=torch.float64)
    grid = torch.quantile(switches, levels) if len(switches) > 1 else switches
    return sorted({0.0, *grid.tolist(), float(switches.max()) * 1.5 + 1e-12})


def sweep_cost_weights(
    scores: torch.Tensor,
    costs: torch.Tensor,
    rewards: torch.Tensor,
    experts: Sequence[str],
    rule: Any,
    weights: Sequence[float],
    *,
    penalties: torch.Tensor | None = None,
    stderr: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Routed mean reward, mean cost and call shares at each cost weight (rows with every reward).

    Args:
        penalties: what λ multiplies in the decision, rows x experts (default: ``costs``); e.g.
            :func:`call_penalties` for a router that counts calls instead of USD.
        stderr: the standard errors of ``scores``, which the rule's ``z`` weighs (None: none).

    Returns:
        One point per weight: ``{"cost_weight", "reward", "cost", "share": {expert: share}}``.
    """
    from zooter.decide.policy import choose

    experts = list(experts)
    penalties = costs if penalties is None else penalties
    points = []
    for weight in weights:
        picks = choose(scores, experts, rule, costs=costs, penalties=penalties, cost_weight=weight, stderr=stderr)
        counts = torch.bincount(picks, minlength=len(experts)).double() / max(len(picks), 1)
        points.append(
            {
                "cost_weight": float(weight),
                "reward": float(rewards.gather(1, picks.unsqueeze(1)).mean()),
                "cost": float(costs.gather(1, picks.unsqueeze(1)).mean()),
                "share": dict(zip(experts, counts.tolist())),
            }
        )
    return points


def call_penalties(rows: int, experts: Sequence[str], penalised: Sequence[str]) -> torch.Tensor:
    """1 for a call to one of ``penalised``, else 0 (rows x experts): what a share-of-calls target weighs."""
    marks = torch.tensor([1.0 if name in set(penalised) else 0.0 for name in experts], dtype=torch.float64)
    return marks.expand(rows, len(experts))


def calibrate_cost_weight(
    scores: torch.Tensor,
    costs: torch.Tensor,
    rewards: torch.Tensor,
    experts: Sequence[str],
    rule: Any,
    target: CostTarget,
    *,
    source: str = "validation",
    stderr: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The cost weight that meets ``target`` on held-out estimates, with what it measured there.

    Args:
        scores: held-out expected rewards, rows x experts (e.g. leave-one-out estimates).
        costs: the same rows' cost on each expert (USD).
        rewards: the same rows' true rewards; rows without every reward are left out.
        experts: the column names.
        rule: the router's :class:`~zooter.decide.policy.DecisionRule` (default expert and margin), or None.
        target: what to achieve.
        source: where the estimates came from, for the record.
        stderr: the estimates' standard errors, which the rule's ``z`` weighs (None: none).

    Returns:
        ``{"cost_weight", "unit", "penalised", "target", "met", "rows", "source", "reward",
        "cost", "share", "best_single": {"expert", "reward", "cost"}}``; ``unit`` is what λ
        weighs: ``"usd"``, or ``"calls"`` to the ``penalised`` experts for a share target (the
        constraint's own currency: a share of calls is met most cheaply in quality by pricing
        calls, not tokens). When no weight meets the target, the
        closest one is kept (the cheapest for a cost or share target, the best for a quality
        target), ``met`` is False and a warning says so.

    Raises:
        ZooterError: fewer than :data:`MIN_CALIBRATION_ROWS` rows have every reward, or
            ``share_experts`` names an unknown expert.
    """
    experts = list(experts)
    target.check_experts(experts)
    check_calibration_rows(rewards, experts, source=source)
    complete = torch.isfinite(rewards).all(dim=1).cpu()
    scores, costs, rewards = scores.cpu()[complete], costs.cpu()[complete], rewards.double().cpu()[complete]
    stderr = None if stderr is None else stderr.cpu()[complete]
    means = rewards.mean(dim=0)
    best = int(means.argmax())
    best_single = {"expert": experts[best], "reward": float(means[best]), "cost": float(costs[:, best].mean())}
    # A share target budgets calls, so λ weighs calls to those experts (its Lagrange multiplier);
    # the other targets budget USD or buy quality at the least USD, so λ weighs USD.
    penalties = call_penalties(len(rewards), experts, target.share_experts) if target.share is not None else costs
    margin = rule.margin if rule is not None and rule.margin is not None else 0.0
    grid = cost_weight_grid(scores, penalties, margin=margin)
    points = sweep_cost_weights(scores, costs, rewards, experts, rule, grid, penalties=penalties, stderr=stderr)
    chosen, met = _pick(points, target, best_single["reward"])
    if not met:
        logger.warning(
            "no cost weight met the target (%s) on %d %s rows; kept the closest: mean reward %.4g, mean cost %.4g",
            target.describe(),
            len(rewards),
            source,
            chosen["reward"],
            chosen["cost"],
        )
    return {
        **chosen,
        "unit": "calls" if target.share is not None else "usd",
        "penalised": list(target.share_experts),
        "target": target.to_dict(),
        "met": met,
        "rows": len(rewards),
        "source": source,
        "best_single": best_single,
    }


def check_calibration_rows(rewards: torch.Tensor, experts: Sequence[str], *, source: str) -> None:
    """Raise :class:`ZooterError` unless :data:`MIN_CALIBRATION_ROWS` rows of ``rewards`` have every reward.

    A cost weight measured on fewer rows is chance. Training checks this before it starts; the
    message names the experts with the fewest rewards, the usual cause (an expert added late).
    """
    present = torch.isfinite(rewards)
    rows = int(present.all(dim=1).sum())
    if rows >= MIN_CALIBRATION_ROWS:
        return
    counts = present.sum(dim=0).tolist()
    sparse = sorted((j for j in range(len(experts)) if counts[j] < len(rewards)), key=lambda j: counts[j])
    raise ZooterError(
        f"only {rows} of {len(rewards)} {source} rows have a reward for every expert, fewer than the "
        f"{MIN_CALIBRATION_ROWS} a cost weight is calibrated on"
        + (f" ({', '.join(f'{experts[j]} has {counts[j]}' for j in sparse[:3])})" if sparse else "")
        + "; leave the sparse experts out, or add rows with every reward"
    )


def _pick(points: list[dict[str, Any]], target: CostTarget, best_reward: float) -> tuple[dict[str, Any], bool]:
    """The point that meets ``target`` best, and whether any met it."""
    if target.mean_cost is not None or target.share is not None:

        def spent(p: dict[str, Any]) -> float:
            if target.mean_cost is not None:
                return p["cost"]
            return sum(p["share"][name] for name in target.share_experts)

        limit = target.mean_cost if target.mean_cost is not None else target.share
        fits = [p for p in points if spent(p) <= limit + 1e-12]  # type: ignore[operator]
        if fits:
            return max(fits, key=lambda p: (p["reward"], -p["cost"])), True
        return min(points, key=lambda p: (spent(p), -p["reward"])), False
    if target.quality_fraction is not None:
        if best_reward <= 0:
            raise ConfigError(
                f"a quality_fraction target needs a positive best single reward, got {best_reward:.4g}; "
                "set min_quality (a mean reward) instead"
            )
        floor = target.quality_fraction * best_reward
    else:
        floor = float(target.min_quality)  # type: ignore[arg-type]
    fits = [p for p in points if p["reward"] >= floor - 1e-12]
    if fits:
        return min(fits, key=lambda p: (p["cost"], -p["reward"])), True
    return max(points, key=lambda p: (p["reward"], -p["cost"])), False


def mean_output_tokens(records: Sequence[Any], count_tokens: Any) -> dict[str, float]:
    """Each model's mean answer length in tokens, from responses records (``.model``, ``.response``).

    Args:
        records: what :func:`zooter.rewards.responses.read_responses` returns first.
        count_tokens: ``texts -> token counts`` (e.g. :meth:`zooter.model.router.ZooterRouter.count_tokens`).
    """
    counts = count_tokens([record.response for record in records])
    totals: dict[str, list[float]] = {}
    for record, n in zip(records, counts):
        totals.setdefault(record.model, []).append(float(n))
    return {model: sum(values) / len(values) for model, values in totals.items()}


__all__ = [
    "MAX_PRICE",
    "MIN_CALIBRATION_ROWS",
    "CostCalibration",
    "CostSettings",
    "CostTable",
    "CostTarget",
    "ExpertCost",
    "calibrate_cost_weight",
    "call_penalties",
    "check_calibration_rows",
    "check_cost_weight",
    "cost_weight_grid",
    "mean_output_tokens",
    "sweep_cost_weights",
]
