"""Keeping a router current without retraining: new scored rows, a new expert, a retired one.

A ``neighbours`` router's knowledge is its bank: each known query's embedding with every expert's
reward on it (``nan`` where unknown). Keeping it current is editing that bank, then recalibrating
the decision on the bank's leave-one-out estimates, as training does:

- :func:`update_router` merges rows in the dataset format: a row whose ``id`` the bank knows
  merges its rewards into that row (the newer reward wins, expert by expert); a new ``id`` is
  embedded and appended. A row may carry any subset of the experts' rewards, production feedback
  only the answering expert's.
- :func:`add_expert` adds an expert from its rewards on some queries (a few hundred suffice: the
  bank shrinks thin estimates towards the expert's prior, see :class:`~zooter.model.neighbours.NeighbourBank`).
- :func:`remove_expert` retires an expert from the bank, the decision and the prices.

Each returns an :class:`UpdateReport` (what changed, before -> after); the router is changed in
memory only when every row was valid, and saving it (``save_pretrained``) is crash-safe. The
router's ``config.json`` keeps the bank's provenance under ``neighbours``: its rows, the number of
updates and each source file with its sha256 and time. See ``docs/keeping-current.md``.

At scale an edit costs what training costs after its encoder pass, not more: new queries are
embedded on an engine (:mod:`zooter.engines`: this process, or Ray workers); the bank keeps its
faiss index (grown in place when the bank grows a little, rebuilt otherwise; ``index`` chooses the
kind as training does); and the decision is recalibrated on the leave-one-out estimates of a
bounded sample of the bank (the training setting ``calibration_rows``), found through that index.

A worker that only merges feedback loads the router with ``lazy_encoder=True``: the encoder is
then read only when a row must be embedded (feedback logged by ``ChatZooterRouter`` carries each
query's vector), and a save before that links the unchanged weights file (``zooter update`` does so).

Example:
    >>> from zooter import ZooterRouter
    >>> from zooter.data import load_rows
    >>> router = ZooterRouter.from_pretrained("my-router", lazy_encoder=True)  # doctest: +SKIP
    >>> report = router.update(load_rows("feedback.jsonl"), source="feedback.jsonl")  # doctest: +SKIP
    >>> print("\\n".join(report.lines()))  # doctest: +SKIP
    rows: 5608 -> 5702 (94 new, 12 merged)
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zooter.data import Query, QueryVector, RoutingExample
from zooter.decide.policy import DecisionRule, calibrate_decision
from zooter.engines import LocalEngine, ModelLoader
from zooter.errors import ConfigError, DataError, name_list
from zooter.labels.targets import hard_targets, soft_targets
from zooter.model.encoder import QueryEncoder
from zooter.model.index import TARGET_RECALL, FaissIndex, resolve_kind
from zooter.model.neighbours import CALIBRATION_ROWS, Estimates, NeighbourBank, NeighbourSettings, unit_rows

if TYPE_CHECKING:
    from zooter.decide.costs import CostSettings, CostTable
    from zooter.engines import Engine

# The router is typed Any here: zooter.model.router calls into this module (router.update), and the
# core keeps no import cycle, not even one for type checkers.
RouterLike = Any  # a zooter.model.router.ZooterRouter

logger = logging.getLogger(__name__)

# A faiss index grows in place (its lists as trained) while the rows added are at most this share
# of the rows it was built on; a bank that grew more gets a new index, its lists trained on all rows.
EXTEND_SHARE = 0.1


@dataclass(frozen=True)
class RouterState:
    """What an update changes, as ``zooter update`` prints it.

    Attributes:
        rows: queries in the bank.
        experts: the router's experts, in order.
        default_expert: the decision's default expert (None without a calibrated decision).
        margin: the decision's margin (None: routing did not pay, every query goes to the default).
        share_routed_away: the share of leave-one-out rows the decision sends away from the default.
        support: rows of the bank that carry each expert's reward.
        thin_experts: the experts with too few scored rows to calibrate with the others, each with
            whether the decision admits it (see :attr:`~zooter.decide.policy.DecisionRule.thin_experts`).
    """

    rows: int
    experts: list[str]
    default_expert: str | None
    margin: float | None
    share_routed_away: float
    support: dict[str, int]
    thin_experts: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, router: RouterLike) -> RouterState:
        bank, rule = router.bank, router.decision
        counts = bank.support_counts().tolist() if bank is not None else []
        return cls(
            rows=len(bank) if bank is not None else 0,
            experts=router.experts,
            default_expert=None if rule is None else rule.default_expert,
            margin=None if rule is None else rule.margin,
            share_routed_away=0.0 if rule is None else float(rule.calibration.get("share_routed_away", 0.0)),
            support=dict(zip(router.experts, (int(c) for c in counts))),
            thin_experts={} if rule is None else {name: m is not None for name, m in rule.thin_experts.items()},
        )


@dataclass(frozen=True)
class UpdateReport:
    """What an update, an added or a removed expert changed.

    Attributes:
        before: the router before.
        after: the router after.
        merged: rows whose id the bank knew (their rewards merged in).
        appended: new rows (appended; embedded unless they carried their vector).
        source: where the rows came from, when a file.
        reused_vectors: new rows whose query was not embedded again: they carried the vector the
            router computed when it routed the query (production feedback).
    """

    before: RouterState
    after: RouterState
    merged: int = 0
    appended: int = 0
    source: str | None = None
    reused_vectors: int = 0

    def lines(self) -> list[str]:
        """What changed, one line per figure: ``name: before -> after``."""
        b, a = self.before, self.after

        def margin(state: RouterState) -> str:
            return "never leaves the default" if state.margin is None else f"{state.margin:.4g}"

        added = [name for name in a.experts if name not in b.experts]
        removed = [name for name in b.experts if name not in a.experts]
        experts = f"{len(b.experts)} -> {len(a.experts)}"
        if added or removed:
            experts += "".join(
                [f" (added {name_list(added)})" if added else "", f" (removed {name_list(removed)})" if removed else ""]
            )

        def thin(state: RouterState) -> str:
            if not state.thin_experts:
                return "none"
            return ", ".join(
                f"{name} ({'admitted' if ok else 'not admitted'})" for name, ok in state.thin_experts.items()
            )

        reused = f"; {self.reused_vectors} kept the vector they were routed with" if self.reused_vectors else ""
        return [
            f"rows: {b.rows} -> {a.rows} ({self.appended} new{reused}, {self.merged} merged)",
            f"experts: {experts}",
            f"default expert: {b.default_expert} -> {a.default_expert}",
            f"margin: {margin(b)} -> {margin(a)}",
            f"routed away (leave-one-out): {b.share_routed_away:.1%} -> {a.share_routed_away:.1%}",
            f"thin experts (admitted only where their own rows show it pays): {thin(b)} -> {thin(a)}",
            "support (rows with a reward): "
            + ", ".join(f"{name} {b.support.get(name, 0)} -> {a.support.get(name, 0)}" for name in a.experts),
        ]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def update_router(
    router: RouterLike,
    rows: Iterable[RoutingExample],
    *,
    source: str | Path | None = None,
    index: str | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
) -> UpdateReport:
    """Merge scored rows into the router's bank and recalibrate its decision (see the module doc).

    Args:
        router: a router trained with the ``neighbours`` method.
        rows: rows in the dataset format; each may carry rewards for any subset of the experts.
        source: the file the rows came from, recorded with its sha256 in ``config.json``.
        index: how the updated bank is searched: ``"exact"``, ``"ann"`` or ``"auto"``, chosen as training
            chooses (:func:`zooter.model.index.build_index`); None: the router's training setting
            (``"auto"`` unless it was trained with another). A faiss index the bank has is grown or rebuilt.
        engine: where new queries are embedded (:func:`zooter.engines.make_engine`); this process by default.
        show_progress: show a progress bar while new queries are embedded.

    Raises:
        ConfigError: the router has no bank (a distilled head cannot learn without training).
        DataError: no rows, a row without a reward, or a reward for an expert the router lacks;
            the router is then unchanged.
    """
    previous = _bank_of(router)
    before = RouterState.of(router)
    rows = _checked_rows(rows, router.experts, source)
    bank, merged, appended, reused = _merged_bank(router, previous, router.experts, rows, engine, show_progress)
    _commit(router, router.experts, _indexed(router, bank, previous, index), source=source, rows=len(rows))
    return UpdateReport(
        before, RouterState.of(router), merged, appended, None if source is None else str(source), reused
    )


def add_expert(
    router: RouterLike,
    name: str,
    rows: Iterable[RoutingExample],
    *,
    costs: CostTable | Mapping[str, Any] | str | Path | None = None,
    source: str | Path | None = None,
    show_progress: bool = False,
) -> UpdateReport:
    """Add expert ``name`` from its rewards on some queries (ids the bank knows, or new queries).

    The new expert's reward is unknown on every other row of the bank; its estimates rest on the
    neighbours that have one, shrunk towards its prior where they are few, so a few hundred scored
    queries are enough to route to it where it is clearly better, and not elsewhere.

    Args:
        router: a router trained with the ``neighbours`` method.
        name: the new expert; not one of the router's.
        rows: rows with ``name``'s rewards (they may carry other experts' rewards too).
        costs: ``name``'s price (a cost table naming it, its dict or file), needed when the router
            prices its experts.
        source: the file the rows came from, for the record.
        show_progress: show a progress bar while new queries are embedded.

    Raises:
        ConfigError: ``name`` is already an expert, or the router has prices and ``costs`` does not
            price ``name``.
        DataError: no row has a reward for ``name``, or a row is invalid (see :func:`update_router`).
    """
    previous = _bank_of(router)
    if name in router.experts:
        raise ConfigError(f"{name!r} is already one of the router's experts {name_list(router.experts)}")
    before = RouterState.of(router)
    experts = [*router.experts, name]
    rows = _checked_rows(rows, experts, source)
    if not any(name in row.rewards for row in rows):
        raise DataError(f"no row has a reward for the new expert {name!r}", path=source)
    prices = _prices_with(router, name, costs)
    widened = _with_experts(previous, [*range(len(router.experts)), -1])
    bank, merged, appended, reused = _merged_bank(router, widened, experts, rows, None, show_progress)
    bank = _indexed(router, bank, previous)  # the widened bank has the previous bank's rows
    costs_after = router.config.costs
    if prices is not None and costs_after is not None:
        costs_after = costs_after.replace(prices=prices.to_dict())
    resize_head(router, [*range(len(router.experts)), -1])
    _commit(router, experts, bank, source=source, rows=len(rows), costs=costs_after)
    return UpdateReport(
        before, RouterState.of(router), merged, appended, None if source is None else str(source), reused
    )


def remove_expert(router: RouterLike, name: str) -> UpdateReport:
    """Retire expert ``name``: it leaves the bank, the decision and the prices.

    Rows that carried only its reward leave the bank too; the decision is recalibrated without it.

    Raises:
        ConfigError: ``name`` is not an expert of the router, or only two experts are left.
    """
    previous = _bank_of(router)
    if name not in router.experts:
        raise ConfigError(f"{name!r} is not one of the router's experts {name_list(router.experts)}")
    if len(router.experts) <= 2:
        raise ConfigError(f"a router needs at least 2 experts; removing {name!r} would leave one")
    before = RouterState.of(router)
    keep = [i for i, expert in enumerate(router.experts) if expert != name]
    experts = [router.experts[i] for i in keep]
    bank = _with_experts(previous, keep)
    has_reward = torch.isfinite(bank.rewards).any(dim=1)
    same_rows = bool(has_reward.all())
    if not same_rows:
        index = has_reward.nonzero().squeeze(1)
        bank = _rebuilt(
            bank,
            bank.embeddings[index],
            bank.rewards[index],
            bank.targets[index],
            None if bank.ids is None else [bank.ids[i] for i in index.tolist()],
            None if bank.propensities is None else bank.propensities[index],
            None if bank.tokens is None else bank.tokens[index],
        )
    bank = _indexed(router, bank, previous if same_rows else None)  # rows dropped: a new index
    costs = router.config.costs
    if costs is not None:
        listed = costs.prices.to_dict()
        calibration = costs.calibration
        if calibration is not None and name in calibration.penalised:
            calibration = calibration.replace(penalised=[p for p in calibration.penalised if p != name])
        costs = costs.replace(prices={e: listed[e] for e in experts}, calibration=calibration)
    resize_head(router, keep)
    _commit(router, experts, bank, source=None, rows=0, removed=name, costs=costs)
    return UpdateReport(before, RouterState.of(router))


# -- the bank -------------------------------------------------------------------------------------
def _bank_of(router: RouterLike) -> NeighbourBank:
    if router.bank is None:
        raise ConfigError(
            "only a router trained with the 'neighbours' method keeps the bank an update edits; "
            "a distilled head learns only by training again"
        )
    return router.bank


def _checked_rows(
    rows: Iterable[RoutingExample], experts: list[str], source: str | Path | None
) -> list[RoutingExample]:
    rows = list(rows)
    if not rows:
        raise DataError("no rows to update the router with", path=source)
    known = set(experts)
    seen = {name for row in rows for name in row.rewards}
    if seen and not seen & known:
        raise DataError(
            f"the rows score experts {name_list(sorted(seen))}, none of which is the router's "
            f"{name_list(experts)}: a dataset of another router?",
            path=source,
        )
    for row in rows:
        if not row.rewards:
            raise DataError("the row has no reward", path=source, record_id=row.id, field="rewards")
        unknown = sorted(set(row.rewards) - known)
        if unknown:
            raise DataError(
                f"rewards for experts the router lacks: {name_list(unknown)} (its experts: {name_list(experts)}; "
                "add a new one with add-expert)",
                path=source,
                record_id=row.id,
                field="rewards",
            )
    return rows


def _merged_bank(
    router: RouterLike,
    bank: NeighbourBank,
    experts: list[str],
    rows: list[RoutingExample],
    engine: Engine | None,
    show_progress: bool,
) -> tuple[NeighbourBank, int, int, int]:
    """The bank with ``rows`` merged by id (newer rewards win) and new ids appended; (bank, merged,
    appended, appended rows whose carried vector was reused)."""
    ids = bank.ids
    if ids is None:
        logger.warning("this router's bank predates query ids: every row is added as a new query")
    where = {} if ids is None else {rid: i for i, rid in enumerate(ids)}
    rewards = bank.rewards.clone()
    logged = any(row.propensity is not None for row in rows)
    propensities = bank.propensities
    if propensities is None and logged:
        propensities = torch.full_like(rewards, math.nan)
    propensities = None if propensities is None else propensities.clone()
    column = {name: j for j, name in enumerate(experts)}
    # id -> (query, rewards, propensities, the vector the router routed it with), in first-seen order
    new: dict[str, tuple[Any, dict[str, float], dict[str, float], QueryVector | None]] = {}
    changed: set[int] = set()
    for row in rows:
        # a reward observed through the router's policy carries its propensity; a scored one has none
        chance = math.nan if row.propensity is None else row.propensity
        if row.id in where:
            i = where[row.id]
            for name, value in row.rewards.items():
                rewards[i, column[name]] = value
                if propensities is not None:
                    propensities[i, column[name]] = chance
            changed.add(i)
        else:
            query, known, chances, vector = new.get(row.id, (row.query, {}, {}, None))
            new[row.id] = (
                query,
                {**known, **row.rewards},
                {**chances, **dict.fromkeys(row.rewards, chance)},
                vector or row.vector,
            )
    targets = bank.targets.clone()
    if changed:
        index = torch.tensor(sorted(changed), device=rewards.device)
        targets[index] = _targets(router, rewards[index])
    embeddings = bank.embeddings
    new_ids = list(bank.ids) if bank.ids is not None else None
    tokens = bank.tokens
    reused = 0
    if new:
        queries = [query for query, _, _, _ in new.values()]
        carried = [vector for _, _, _, vector in new.values()]
        dimension = embeddings.shape[1]
        vectors, reused = _new_vectors(router, dimension, list(new), queries, carried, engine, show_progress)
        if tokens is not None:  # the bank prices its rows: so are the new ones
            tokens = torch.cat([tokens, torch.tensor(router.count_tokens(queries), device=tokens.device).float()])
        appended = torch.full((len(new), len(experts)), math.nan, device=rewards.device)
        chances = torch.full_like(appended, math.nan)
        for r, (_, values, logged_chances, _) in enumerate(new.values()):
            for name, value in values.items():
                appended[r, column[name]] = value
                chances[r, column[name]] = logged_chances[name]
        # the bank's rows as they are (no float32 copy of them, no rounding again), the new ones made unit rows
        embeddings = torch.cat([embeddings, unit_rows(vectors.to(embeddings.device))])
        rewards = torch.cat([rewards, appended])
        targets = torch.cat([targets, _targets(router, appended)])
        propensities = None if propensities is None else torch.cat([propensities, chances])
        new_ids = [*new_ids, *new] if new_ids is not None else None
    merged = _rebuilt(bank, embeddings, rewards, targets, new_ids, propensities, tokens)
    return merged, len(changed), len(new), reused


def _new_vectors(
    router: RouterLike,
    dimension: int,
    ids: list[str],
    queries: list[Query],
    carried: list[QueryVector | None],
    engine: Engine | None,
    show_progress: bool,
) -> tuple[torch.Tensor, int]:
    """The pooled vectors of the new rows' queries, and how many were reused: a row that carries the
    vector this router's encoder computed when it routed the query (production feedback) is not
    embedded again; the others are embedded on ``engine``."""
    own = router.encoder_id if any(v is not None for v in carried) else None
    vectors = torch.empty((len(ids), dimension))
    missing = []
    for r, (rid, vector) in enumerate(zip(ids, carried)):
        if vector is None or vector.encoder != own:
            missing.append(r)
            continue
        values = vector.tensor()
        if values.numel() != dimension or not bool(torch.isfinite(values).all()) or not bool(values.any()):
            raise DataError(
                f"the query's vector must be {dimension} finite values, not all zero (what the router's "
                f"encoder computes); got {values.numel()} values",
                record_id=rid,
                field="vector",
            )
        vectors[r] = values
    foreign = sum(v is not None for v in carried) - (len(ids) - len(missing))
    if foreign:
        logger.info("%d new rows carry a vector of another encoder: embedding their queries", foreign)
    if missing:
        vectors[missing] = (
            embed_queries(router, [queries[r] for r in missing], engine, show_progress=show_progress).float().cpu()
        )
    return vectors, len(ids) - len(missing)


def embed_queries(
    router: RouterLike, queries: list[Query], engine: Engine | None = None, *, show_progress: bool = False
) -> torch.Tensor:
    """The router's pooled vector of each query, for its bank, computed on ``engine`` (this process by default).

    A Ray engine loads the same encoder on each worker: the pretrained encoder the router was built
    from (``config.json``'s ``encoder``; a ``neighbours`` router never fine-tunes it), at the router's
    ``max_length``, on its backend. Rows in input order, on the router's device.
    """
    loader = ModelLoader(
        QueryEncoder.load,
        (router.config.encoder,),
        {"max_length": router.config.max_length, "backend": router.backend},
        name=router.config.encoder,
    )
    return (engine or LocalEngine()).embed_queries(
        router, queries, loader=loader, batch_size=router.default_batch_size * 4, show_progress=show_progress
    )


def _indexed(
    router: RouterLike, bank: NeighbourBank, previous: NeighbourBank | None, kind: str | None = None
) -> NeighbourBank:
    """``bank`` searched with an index of ``kind`` (None: the router's training setting), reusing ``previous``'s.

    ``previous``: a bank whose rows are ``bank``'s first rows, or None. Its faiss index serves
    ``bank`` when no row was added, grows by the new rows when they are at most
    :data:`EXTEND_SHARE` of it (its search setting tuned again), and is rebuilt otherwise.
    """
    kind = kind or str((router.config.training or {}).get("index") or "auto")
    if resolve_kind(kind, len(bank)) == "exact":
        return bank  # a new bank searches exactly
    old = previous.index if previous is not None else None
    if isinstance(old, FaissIndex) and len(bank) - len(old) <= EXTEND_SHARE * len(old):
        added = bank.embeddings[len(old) :]
        if len(added):
            target = float(old.record.get("target_recall") or TARGET_RECALL)
            bank.index = old.extended(added).tune(bank.embeddings, k=bank.k, target_recall=target)
        else:
            bank.index = old
        logger.info("faiss index %s kept for %d rows (%d added)", old.factory, len(bank), len(added))
        return bank
    training = router.config.training or {}
    return bank.build_index("ann", seed=int(training.get("seed", 0)), factory=training.get("index_factory"))


def _targets(router: RouterLike, rewards: torch.Tensor) -> torch.Tensor:
    """Soft labels of new or changed rows, as training made them (without tag enhancement)."""
    labels = router.config.labels or {}
    if labels.get("hard"):
        return hard_targets(rewards)
    return soft_targets(rewards, float(labels.get("temperature", 1.0)))


def _with_experts(bank: NeighbourBank, columns: list[int]) -> NeighbourBank:
    """The bank with its expert columns picked by ``columns`` (-1: a new expert, no reward anywhere)."""
    rows = len(bank)
    pick = [
        bank.rewards[:, j] if j >= 0 else torch.full((rows,), math.nan, device=bank.rewards.device) for j in columns
    ]
    rewards = torch.stack(pick, dim=1)
    targets = torch.stack([bank.targets[:, j] if j >= 0 else torch.zeros_like(bank.targets[:, 0]) for j in columns], 1)
    total = targets.sum(dim=1, keepdim=True)
    # a row whose target mass was all on a removed expert is relabelled from its rewards
    targets = torch.where(total > 0, targets / total.clamp_min(1e-12), soft_targets(rewards))
    propensities = bank.propensities
    if propensities is not None:
        nothing = torch.full((rows,), math.nan, device=propensities.device)
        propensities = torch.stack([propensities[:, j] if j >= 0 else nothing for j in columns], dim=1)
    return _rebuilt(bank, bank.embeddings, rewards, targets, bank.ids, propensities, bank.tokens)


def _rebuilt(bank: NeighbourBank, embeddings, rewards, targets, ids, propensities, tokens) -> NeighbourBank:
    """A bank like ``bank`` over these rows: ``embeddings`` are unit float16 rows (``bank``'s, some of
    them, or those and new ones made so by :func:`~zooter.model.neighbours.unit_rows`)."""
    return NeighbourBank(
        embeddings,
        rewards,
        targets,
        k=bank.k,
        temperature=bank.temperature,
        shrinkage=bank.shrinkage,
        ids=ids,
        propensities=propensities,
        tokens=tokens,
        normalized=True,
    )


def resize_head(router: RouterLike, columns: list[int], *, new_bias: float | None = None) -> None:
    """The head's rows picked by ``columns`` (-1: a new expert's row, zero weights).

    A new row's bias is ``new_bias``, or the mean of the old biases when it is None.
    """
    old = router.head
    head = torch.nn.Linear(old.in_features, len(columns), device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        for r, j in enumerate(columns):
            head.weight[r] = old.weight[j] if j >= 0 else 0.0
            head.bias[r] = old.bias[j] if j >= 0 else (old.bias.mean() if new_bias is None else new_bias)
    router.head = head


def _prices_with(router: RouterLike, name: str, costs: Any) -> CostTable | None:
    from zooter.decide.costs import CostTable

    current = router.costs
    if costs is None:
        if current is not None:
            raise ConfigError(f"the router prices its experts: give {name!r}'s price (--costs FILE)")
        return None
    table = (
        costs
        if isinstance(costs, CostTable)
        else (CostTable.load(costs) if isinstance(costs, (str, Path)) else CostTable.from_dict(costs))
    )
    listed = {**(current.to_dict() if current is not None else {}), **table.to_dict()}
    if name not in listed:
        raise ConfigError(f"the prices given do not name the new expert {name!r}")
    if current is None:
        logger.warning("the router had no prices; the price given for %r is kept but others are unknown", name)
        return None
    return CostTable.from_dict(listed)


# -- recalibrating and recording --------------------------------------------------------------------
def recalibrate(
    router: RouterLike, bank: NeighbourBank, experts: list[str]
) -> tuple[DecisionRule, Estimates, torch.Tensor]:
    """The decision recalibrated on the leave-one-out estimates of a sample of the bank, as training
    does; with those estimates and the sample's rows (what λ is calibrated on again).

    The sample is seeded and random, of at most the training's ``calibration_rows`` rows
    (:data:`~zooter.model.neighbours.CALIBRATION_ROWS` for routers trained before it existed),
    searched through the bank's index.
    """
    training = router.config.training or {}
    seed = int(training.get("seed", 0))
    sample = bank.sample(int(training.get("calibration_rows") or CALIBRATION_ROWS), seed=seed)
    record = {"rows": len(sample), "of": len(bank), "by": "all rows" if len(sample) == len(bank) else "random"}
    held_out = bank.leave_one_out(sample)
    rule = calibrate_sample(
        bank, held_out, sample, experts, min_z=float(training.get("min_z", 2.0)), record={**record, "seed": seed}
    )
    return rule, held_out, sample


def recalibrate_cost_weight(
    costs: CostSettings,
    bank: NeighbourBank,
    held_out: Estimates,
    sample: torch.Tensor,
    experts: list[str],
    rule: DecisionRule | None,
) -> CostSettings:
    """``costs`` with λ calibrated again to its target on the leave-one-out estimates of the bank rows
    ``sample``, priced from the rows' token counts (as training calibrates it)."""
    from zooter.decide.costs import CostSettings, CostTarget, calibrate_cost_weight

    if costs.calibration is None or bank.tokens is None:
        return costs
    sample = sample.to(bank.rewards.device)
    target = CostTarget.from_dict(costs.calibration.target)
    result = calibrate_cost_weight(
        held_out.expected_rewards,
        costs.prices.query_costs(bank.tokens[sample].cpu(), experts),
        bank.rewards[sample],
        experts,
        rule,
        target,
        source="leave-one-out",
        stderr=held_out.stderr,
    )
    return CostSettings(prices=costs.prices, cost_weight=result["cost_weight"], calibration=result)


def calibrate_sample(
    bank: NeighbourBank,
    held_out: Estimates,
    sample: torch.Tensor,
    experts: list[str],
    *,
    min_z: float,
    record: dict[str, Any],
) -> DecisionRule:
    """The decision calibrated on ``held_out``, the leave-one-out estimates of the bank rows ``sample``.

    The default expert is the best on all rows; rows with missing rewards count through their
    stand-ins (:meth:`NeighbourBank.filled_rewards`), and thin experts are admitted by a doubly robust
    estimate that weighs each logged reward by its propensity. ``record`` (what was sampled: ``rows``,
    ``of``, ``by``, ``seed``) is kept in the rule's ``calibration["sample"]``.
    """
    sample = sample.to(bank.rewards.device)
    rule = calibrate_decision(
        held_out.scores,
        bank.rewards[sample],
        experts,
        default_rewards=bank.rewards,
        filled=bank.filled_rewards()[sample],
        propensities=None if bank.propensities is None else bank.propensities[sample],
        min_z=min_z,
        source="leave-one-out",
        stderr=held_out.stderr,
    )
    rule.calibration["sample"] = record
    return rule


def _commit(
    router: RouterLike,
    experts: list[str],
    bank: NeighbourBank,
    *,
    source: str | Path | None,
    rows: int,
    removed: str | None = None,
    costs: Any = ...,
) -> None:
    """Make ``bank`` the router's, with its decision recalibrated and its config changed in one step
    (the config checks that the decision and the prices name its experts)."""
    rule = router.config.decision
    held_out = sample = None
    if rule is not None or (router.config.training or {}).get("calibrate", True):
        rule, held_out, sample = recalibrate(router, bank, experts)
    costs = router.config.costs if costs is ... else costs
    calibration = None if costs is None else costs.calibration
    if calibration is not None and calibration.target:
        if bank.tokens is not None and held_out is not None and sample is not None:
            costs = recalibrate_cost_weight(costs, bank, held_out, sample, experts, rule)
        else:
            logger.warning(
                "λ (cost weight %.4g) is kept as calibrated: the bank does not price its rows (a router "
                "trained before banks kept their token counts); calibrate it again with router.calibrate_costs",
                router.cost_weight,
            )
    record = {"removed_expert": removed, "time": _now()} if removed is not None else source_record(source, rows)
    previous = router.config.neighbours
    settings = bank_settings(bank, experts)
    settings.updates = (previous.updates if previous is not None else 0) + 1
    settings.sources = [*(previous.sources if previous is not None else []), record]
    router.config = router.config.replace(experts=experts, decision=rule, costs=costs, neighbours=settings)
    router.bank = bank


def bank_settings(bank: NeighbourBank, experts: list[str]) -> NeighbourSettings:
    """What ``config.json`` says of a bank: its settings and rows, and the rows with each expert's reward."""
    settings = bank.settings()
    settings.support = dict(zip(experts, (int(c) for c in bank.support_counts().tolist())))
    return settings


def source_record(path: str | Path | None, rows: int) -> dict[str, Any]:
    """Where a bank's rows came from: the file, its sha256, the rows read and the time."""
    record: dict[str, Any] = {"rows": rows, "time": _now()}
    if path is not None and Path(path).is_file():
        record = {"path": str(path), "sha256": _sha256(Path(path)), **record}
    return record


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = [
    "RouterState",
    "UpdateReport",
    "add_expert",
    "bank_settings",
    "calibrate_sample",
    "embed_queries",
    "recalibrate",
    "remove_expert",
    "source_record",
    "update_router",
]
