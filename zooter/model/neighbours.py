"""Estimating each expert's reward on a query from the training queries nearest to it.

The router embeds a query, finds the ``k`` training queries closest to it (cosine similarity of
the encoder's pooled vectors) and averages their rewards, each neighbour weighted by
``exp((similarity - best similarity) / temperature)``: close neighbours count most, and a query
from a task the training set knows well is estimated mostly from that task. The result is each
expert's *expected reward* on the query, on the rewards' own scale (what the decision rule and a
cost trade-off need), plus the same average of the training targets (the Zooter soft labels), which
is a distribution over the experts.

Finding the neighbours (:meth:`NeighbourBank.search`) is the job of the bank's index
(:mod:`zooter.model.index`): exact search for small banks, a faiss ANN index for large ones; the
weighting and averaging of their rewards (:meth:`NeighbourBank.average`) is the same for both.

On real routing data this estimate routed better than a fine-tuned encoder with a linear head,
and it trains in one encoder pass over the training queries (see the README's "Routing quality").

Example:
    >>> import torch
    >>> from zooter.model.neighbours import NeighbourBank
    >>> bank = NeighbourBank(torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.eye(2), k=1)
    >>> bank.estimate(torch.tensor([[0.9, 0.1]])).expected_rewards
    tensor([[1., 0.]])
"""

from __future__ import annotations

import json
import logging
import math
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from zooter.config import ZooterConfig
from zooter.errors import ZooterError, name_list
from zooter.model.index import (
    ANN_EXTRA,
    BLOCK_ROWS,
    INDEX_NAME,
    TARGET_RECALL,
    BankIndex,
    ExactIndex,
    FaissIndex,
    build_index,
    faiss_available,
    fingerprint,
)

if TYPE_CHECKING:
    from zooter.model.folder import FolderFiles

logger = logging.getLogger(__name__)

NEIGHBOURS_NAME = "neighbours.safetensors"
_CHUNK = 1024  # query rows averaged at once: bounds memory at 1024 x k x experts floats
# Leave-one-out calibration estimates at most this many rows: its standard error is then small
# (about 0.003 on llmrouter_9model, docs/scaling.md), and its cost stops growing with the bank.
CALIBRATION_ROWS = 20_000
# Each expert is estimated from at least this share of k of its own nearest rows with a reward, even
# where fewer of the k nearest rows carry it (see NeighbourBank.average).
MIN_OWN_SHARE = 0.5
# An estimate reads at most this many times that many nearest rows to find them (see NeighbourBank.depth):
# an expert with rewards on fewer than 1 / MAX_DEPTH_FACTOR of the rows may find fewer.
MAX_DEPTH_FACTOR = 8


@dataclass(frozen=True)
class Estimates:
    """What the router expects of every expert, for a batch of queries (rows x experts).

    Attributes:
        probabilities: a distribution over the experts (rows sum to 1).
        expected_rewards: each expert's expected reward on the rewards' scale, or None when the
            router has no reward estimate (a distilled head alone gives probabilities only).
        support: how much evidence each expected reward rests on: the share of the neighbours'
            weight that carries the expert's reward, times their effective number (Kish's
            ``(sum w)^2 / sum w^2``); 0 where no neighbour has one; None without a neighbour bank.
        stderr: the standard error of each expected reward (the neighbours' weighted spread over
            their support, plus the shrinkage's pseudo-neighbours), or None without a bank.
        vectors: the pooled query vectors the estimates were made from (rows x hidden), when the
            router computed them (:meth:`zooter.ZooterRouter.estimate` with a bank); None otherwise.
    """

    probabilities: torch.Tensor
    expected_rewards: torch.Tensor | None = None
    support: torch.Tensor | None = None
    stderr: torch.Tensor | None = None
    vectors: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> Estimates:
        """The estimates of some rows only (a boolean mask or indices)."""
        return Estimates(*(None if t is None else t[index] for t in self._tensors()))

    def cpu(self) -> Estimates:
        return Estimates(*(None if t is None else t.cpu() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return self.probabilities, self.expected_rewards, self.support, self.stderr, self.vectors

    @property
    def scores(self) -> torch.Tensor:
        """What decisions compare: expected rewards when known, else probabilities."""
        return self.expected_rewards if self.expected_rewards is not None else self.probabilities


class NeighbourSettings(ZooterConfig):
    """The ``neighbours`` section of a router's ``config.json``: how the bank estimates, and its shape.

    The bank's columns are the router's experts, in ``config.json``'s ``experts`` order (the bank
    file records them too, so a bank from another router is refused at load).

    Attributes:
        k: neighbours per query (capped at the bank's size).
        temperature: similarity temperature of the neighbour weights (> 0, finite).
        rows: the bank's rows (training queries).
        dimension: the length of the bank's embeddings (the encoder's hidden size); None in
            folders written before it was recorded.
        index: how the bank is searched (:mod:`zooter.model.index`): ``{"kind": "exact"}``, or a
            faiss index's file, factory string, tuned search setting, measured recall and the
            fingerprint of the bank it was built for; None in folders from before (exact search).
        shrinkage: pseudo-neighbours of prior in each estimate (0: the plain neighbour average, as
            folders written before shrinkage existed were calibrated).
        support: rows of the bank with each expert's reward.
        updates: updates since training (:mod:`zooter.lifecycle`).
        sources: where the bank's rows came from: each training or update file with its ``sha256``,
            the rows read and the ``time``; an expert removed is recorded too.
    """

    k: int = Field(ge=1, strict=True)
    temperature: float = Field(gt=0, strict=True)
    rows: int = Field(ge=1, strict=True)
    dimension: int | None = Field(default=None, ge=1, strict=True)
    index: dict[str, Any] | None = None
    shrinkage: float = Field(default=0.0, ge=0)
    support: dict[str, int] | None = None
    updates: int = Field(default=0, ge=0)
    sources: list[dict[str, Any]] = Field(default_factory=list)


class NeighbourBank:
    """The training queries' unit-length embeddings with their rewards and soft targets.

    An expert's reward may be missing on any row (``nan``): an expert added from a few hundred
    scored queries, or production feedback that reveals only the answering expert's reward. Its
    plain neighbour average would then rest on the one or two neighbours that have it, and such a
    thin estimate would win on luck. So, with ``shrinkage`` > 0, each expert's estimate is pulled
    towards a prior in proportion to how little evidence it has (empirical Bayes)::

        expected = (support * neighbour mean + shrinkage * prior) / (support + shrinkage)

    where ``support`` is the effective number of neighbours carrying the expert's reward, and the
    prior is an additive model of the bank's rewards, ``reward[row, expert] ~ difficulty[row] +
    offset[expert]``: the neighbours' mean difficulty plus the expert's offset (itself shrunk
    towards the average expert when it rests on few rows). An expert with no evidence near a query
    is thus expected to do there what it does elsewhere relative to the others, not to win.

    Args:
        embeddings: rows x hidden size; normalised here to unit length, in float16 (float16 rows of
            unit length already are kept as they are).
        rewards: rows x experts, ``nan`` where an expert has no reward on a row.
        targets: rows x experts, each row a distribution (the training soft labels).
        k: neighbours per query (capped at the bank's size).
        temperature: similarity temperature of the neighbour weights (> 0).
        shrinkage: pseudo-neighbours of prior per expert estimate (0: the plain neighbour average).
        weights: how much each row counts, multiplying its similarity weight (None: 1 each); rows
            added from a few examples of a new expert stand for more than one query each.
        ids: each row's query id, so later rewards for the same query merge into its row (see
            :mod:`zooter.lifecycle`); None for a bank saved before ids were kept.
        propensities: rows x experts, the probability with which each reward was observed when it
            came from production feedback (the router's logged exploration propensity), ``nan``
            elsewhere; what the decision's doubly robust calibration weighs such rewards by (see
            :func:`zooter.decide.policy.doubly_robust_values`). None: no reward came with one.
        tokens: each row's query length in the router's tokens, kept when the router prices its
            experts against a cost target, so an update can calibrate λ again on the bank's rows
            (the bank keeps no query texts); None otherwise.
        normalized: the embeddings are float16 rows of unit length, checked by the caller (a saved
            bank as it loads): kept without another pass over them.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        rewards: torch.Tensor,
        targets: torch.Tensor,
        *,
        k: int,
        temperature: float = 0.1,
        weights: torch.Tensor | None = None,
        shrinkage: float = 0.0,
        ids: Sequence[str] | None = None,
        propensities: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        normalized: bool = False,
    ) -> None:
        if ids is not None and len(ids) != embeddings.shape[0]:
            raise ZooterError(f"a neighbour bank of {embeddings.shape[0]} rows got {len(ids)} ids")
        if embeddings.ndim != 2 or rewards.shape != targets.shape or rewards.shape[0] != embeddings.shape[0]:
            raise ZooterError(
                f"a neighbour bank needs rows x hidden embeddings and rows x experts rewards and targets, got "
                f"{tuple(embeddings.shape)}, {tuple(rewards.shape)}, {tuple(targets.shape)}"
            )
        if k < 1 or not temperature > 0 or not (shrinkage >= 0 and math.isfinite(shrinkage)):
            raise ZooterError(
                "a neighbour bank needs k >= 1, temperature > 0 and a finite shrinkage >= 0, got "
                f"k={k}, temperature={temperature}, shrinkage={shrinkage}"
            )
        # fp16 halves the file and the memory; similarities need no more precision to rank neighbours
        self.embeddings = embeddings if normalized else unit_rows(embeddings)
        self.rewards = rewards.float()
        self.targets = targets.float()
        if weights is not None and (
            weights.shape != (rewards.shape[0],) or not bool((torch.isfinite(weights) & (weights > 0)).all())
        ):
            raise ZooterError(f"a neighbour bank's row weights must be {rewards.shape[0]} positive numbers")
        self.weights = None if weights is None else weights.float().to(self.rewards.device)
        if propensities is not None and (
            propensities.shape != rewards.shape
            or not bool((propensities.isnan() | ((propensities > 0) & (propensities <= 1))).all())
        ):
            raise ZooterError(
                f"a neighbour bank's propensities must be {tuple(rewards.shape)} probabilities in (0, 1] or nan"
            )
        self.propensities = None if propensities is None else propensities.float().to(self.rewards.device)
        if tokens is not None and (
            tokens.shape != (rewards.shape[0],) or not bool((torch.isfinite(tokens) & (tokens >= 0)).all())
        ):
            raise ZooterError(f"a neighbour bank's token counts must be {rewards.shape[0]} numbers >= 0")
        self.tokens = None if tokens is None else tokens.float().to(self.rewards.device)
        self.k = k
        self.temperature = temperature
        self.index: BankIndex = ExactIndex(self.embeddings)
        self._fingerprint: str | None = None
        self.shrinkage = float(shrinkage)
        self.ids = None if ids is None else [str(i) for i in ids]
        self.difficulty, self.offsets = additive_fit(self.rewards)
        self._depth_factor = depth_factor(self.support_counts(), len(self))

    def to(self, device: torch.device) -> NeighbourBank:
        """The bank on ``device`` (itself when already there)."""
        if self.rewards.device == device:
            return self
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        bank = NeighbourBank.__new__(NeighbourBank)
        bank.__dict__.update(
            self.__dict__,
            **moved,
            index=self.index.to(device),
            difficulty=self.difficulty.to(device),
            offsets=self.offsets.to(device),
        )
        bank.__dict__.pop("_expert_spread", None)
        return bank

    def with_k(self, k: int, *, temperature: float | None = None) -> NeighbourBank:
        """The same bank and index, averaging over ``k`` neighbours (at ``temperature``, default the bank's)."""
        temperature = self.temperature if temperature is None else temperature
        if k < 1 or not temperature > 0:
            raise ZooterError(
                f"a neighbour bank needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}"
            )
        bank = NeighbourBank.__new__(NeighbourBank)
        bank.__dict__.update(self.__dict__, k=k, temperature=float(temperature))
        return bank

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"embeddings": self.embeddings, "rewards": self.rewards, "targets": self.targets}
        if self.weights is not None:
            tensors["weights"] = self.weights
        if self.propensities is not None:
            tensors["propensities"] = self.propensities
        if self.tokens is not None:
            tensors["tokens"] = self.tokens
        return tensors

    def row_weights(self) -> torch.Tensor:
        """How much each row counts (1 each unless rows were given weights)."""
        return self.weights if self.weights is not None else torch.ones(len(self), device=self.rewards.device)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def with_rows(
        self,
        embeddings: torch.Tensor,
        rewards: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: float = 1.0,
        ids: Sequence[str] | None = None,
    ) -> NeighbourBank:
        """A new bank: this bank's rows, then these, each counting ``weight`` (same experts, ``k``, temperature).

        ``ids`` name the new rows' queries; without them the new bank keeps no ids.
        """
        device = self.rewards.device
        weights = None
        if weight != 1.0 or self.weights is not None:
            weights = torch.cat([self.row_weights(), torch.full((len(rewards),), float(weight), device=device)])
        propensities = None
        if self.propensities is not None:
            propensities = torch.cat([self.propensities, torch.full_like(rewards.float().to(device), math.nan)])
        bank = NeighbourBank(
            torch.cat([self.embeddings, unit_rows(embeddings.to(device))]),
            torch.cat([self.rewards, rewards.float().to(device)]),
            torch.cat([self.targets, targets.float().to(device)]),
            k=self.k,
            temperature=self.temperature,
            weights=weights,
            shrinkage=self.shrinkage,
            ids=None if self.ids is None or ids is None else [*self.ids, *ids],
            propensities=propensities,
            normalized=True,  # this bank's unit rows, then the new ones made so
        )
        bank.index = self.index.extended(bank.embeddings[len(self) :])  # the same kind of index, grown
        return bank

    def with_expert(self, reward: float, target: float = 0.0) -> NeighbourBank:
        """A new bank with one more expert, last, holding ``reward`` and ``target`` on every row.

        ``reward`` may be ``nan`` (no reward known); ``target`` is its share of each row's
        distribution, taken from the other experts' shares in proportion.
        """
        if not 0.0 <= target < 1.0:
            raise ZooterError(f"a new expert's target share must be in [0, 1), got {target}")
        rows = len(self)
        column = torch.full((rows, 1), float(reward), device=self.rewards.device)
        bank = NeighbourBank(
            self.embeddings,
            torch.cat([self.rewards, column], dim=1),
            torch.cat([self.targets * (1.0 - target), torch.full_like(column, target)], dim=1),
            k=self.k,
            temperature=self.temperature,
            weights=self.weights,
            shrinkage=self.shrinkage,
            ids=self.ids,
            propensities=None
            if self.propensities is None
            else torch.cat([self.propensities, torch.full_like(column, math.nan)], dim=1),
            tokens=self.tokens,
            normalized=True,
        )
        bank.index, bank._fingerprint = self.index, self._fingerprint  # the same rows: the same index
        return bank

    @property
    def fingerprint(self) -> str:
        """A sha256 of the embeddings: what a saved index must have been built from."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.embeddings)
        return self._fingerprint

    def build_index(self, kind: str = "auto", *, k: int | None = None, seed: int = 0, **options: Any) -> NeighbourBank:
        """Search with a new index of ``kind`` (``"exact"``, ``"ann"`` or ``"auto"``; see
        :func:`zooter.model.index.build_index`), tuned for ``k`` neighbours (default: the bank's).

        Returns:
            The bank itself.
        """
        self.index = build_index(self.embeddings, kind, k=k or self.k, seed=seed, **options)
        return self

    # -- estimating -------------------------------------------------------------------------------
    def search(
        self, queries: torch.Tensor, *, k: int | None = None, leave_out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` (default: :meth:`depth`, what an estimate reads) most similar rows of each
        query, from the bank's index.

        Args:
            queries: pooled query vectors (rows x hidden; normalised here).
            k: rows per query (capped at the bank's size, less the row left out).
            leave_out: for each query row, the index of a bank row it must not use (itself, for
                leave-one-out estimates on the training rows), or -1 for none.

        Returns:
            Similarities and bank row indices, queries x k each, most similar first.
        """
        queries = torch.nn.functional.normalize(queries.float(), dim=-1).to(self.rewards.device)
        k = min(k or self.depth(), len(self) - (1 if leave_out is not None else 0))
        top, index = self.index.search(queries, max(k, 1), leave_out=leave_out)
        return top.to(self.rewards.device), index.to(self.rewards.device)

    def estimate(self, queries: torch.Tensor, *, leave_out: torch.Tensor | None = None) -> Estimates:
        """Neighbour estimates for query embeddings (rows x hidden; normalised here).

        Args:
            queries: pooled query vectors.
            leave_out: for each query row, the index of a bank row it must not use (itself, for
                leave-one-out estimates on the training rows), or -1 for none.
        """
        top, index = self.search(queries, leave_out=leave_out)
        return self.average(top, index)

    def depth(self) -> int:
        """How many of a query's nearest rows an estimate reads: ``k`` on a bank where every row has
        every reward; deeper where an expert's rewards cover fewer rows, so that each expert finds
        its own :meth:`own_neighbours` nearest rows with a reward (that many times the bank's rows
        over the thinnest expert's, at most :data:`MAX_DEPTH_FACTOR` times, and at most the bank)."""
        if self._depth_factor == 1:
            return min(self.k, len(self))
        return min(max(self.k, self.own_neighbours() * self._depth_factor), len(self))

    def own_neighbours(self) -> int:
        """The fewest rows with its reward each expert is estimated from: :data:`MIN_OWN_SHARE` of ``k``."""
        return math.ceil(MIN_OWN_SHARE * self.k)

    def average(self, similarities: torch.Tensor, neighbours: torch.Tensor) -> Estimates:
        """The weighted average of the rewards and targets of each query's neighbours.

        Each expert is estimated from the rows that carry its reward among the ``k`` nearest, and
        where fewer than :meth:`own_neighbours` (``k / 2``) of them do, from its ``k / 2`` nearest
        rows that do (a neighbour average over the rows where it was observed): rows without its
        reward (an expert added on a few hundred rows, feedback that reveals only the answering
        expert's) do not push all its evidence out of the neighbourhood. The weights are the
        similarity kernel's relative to the query's nearest row, so an expert whose rows are far
        from the query gets little support (see :meth:`_average`). On a bank where every row has
        every reward this is the plain average over the ``k`` nearest rows. The targets (the
        probabilities) are averaged over the ``k`` nearest rows.

        Args:
            similarities: each query's neighbours' similarities, most similar first (queries x n);
                only the first :meth:`depth` are used, so one search at the largest ``k`` serves
                every smaller one.
            neighbours: their bank row indices (queries x n).
        """
        depth = self.depth()
        parts: list[tuple[torch.Tensor, ...]] = []
        chunk = max(1, _CHUNK * self.k // depth)
        for start in range(0, len(similarities), chunk):
            top = similarities[start : start + chunk, :depth]
            index = neighbours[start : start + chunk, :depth].to(self.rewards.device)
            weights = torch.exp((top - top[:, :1]) / self.temperature)
            if self.weights is not None:
                weights = weights * self.weights[index]
            weights = weights.unsqueeze(-1)  # rows x depth x 1
            near, nearest = weights[:, : self.k], index[:, : self.k]
            probabilities = (near * self.targets[nearest]).sum(1) / near.sum(1)
            parts.append((*self._average(weights, index), probabilities))
        experts = self.rewards.shape[1]
        if not parts:
            empty = torch.empty((0, experts), device=self.rewards.device)
            return Estimates(empty, empty.clone(), empty.clone(), empty.clone())
        expected, support, stderr, probabilities = (torch.cat(column) for column in zip(*parts))
        return Estimates(probabilities, expected, support, stderr)

    def _average(self, weights: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expected reward, support and standard error of every expert from the neighbours ``index``
        (queries x depth, most similar first): each expert's from its rows with a reward among the
        first ``k``, or its first :meth:`own_neighbours` rows with a reward where those are fewer."""
        rewards = self.rewards[index]  # rows x depth x experts
        present = torch.isfinite(rewards)
        if index.shape[1] > self.k:  # beyond the k nearest: each expert's own nearest rows with a reward
            position = torch.arange(index.shape[1], device=index.device).view(1, -1, 1)
            present &= (position < self.k) | (present.cumsum(dim=1) <= self.own_neighbours())
        carried = weights * present
        weight = carried.sum(dim=1)
        # the weight carried by the expert's neighbours, in effective neighbours of the query's k
        # nearest rows (Kish: (sum w)^2 / sum w^2 of those), so a far neighbour's reward counts for
        # little (the similarity kernel relative to the nearest row); where every row has every
        # reward, the effective number of the k nearest
        near, nearest = weights[:, : self.k], index[:, : self.k]
        total = near.sum(dim=1)
        support = weight / total * total.square() / near.square().sum(dim=1)
        filled = rewards.nan_to_num(0.0)
        mean = (carried * filled).sum(dim=1) / weight.clamp_min(1e-12)
        spread = (carried * (filled - mean.unsqueeze(1)).square()).sum(dim=1) / weight.clamp_min(1e-12)
        # the spread of one or two neighbours says little: pool it with the expert's spread in the bank
        pooled = (support * spread + self._spread()) / (support + 1)
        if self.shrinkage > 0:
            known = torch.isfinite(self.difficulty[nearest])
            w = near.squeeze(-1) * known
            difficulty = (w * self.difficulty[nearest].nan_to_num(0.0)).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)
            prior = difficulty.unsqueeze(1) + self.offsets.unsqueeze(0)
            mean = torch.where(weight > 0, mean, prior)
            expected = (support * mean + self.shrinkage * prior) / (support + self.shrinkage)
        else:
            # an expert none of the neighbours has a reward for gets nan: it is never chosen
            expected = torch.where(weight > 0, mean, torch.nan)
        stderr = (pooled / (support + self.shrinkage).clamp_min(1e-12)).sqrt()
        return expected, support, stderr

    def _spread(self) -> torch.Tensor:
        spread = getattr(self, "_expert_spread", None)
        if spread is None or spread.device != self.rewards.device:
            spread = torch.nan_to_num(_nanvar(self.rewards), nan=0.0)
            self._expert_spread = spread
        return spread

    def support_counts(self) -> torch.Tensor:
        """How many rows carry each expert's reward."""
        return torch.isfinite(self.rewards).sum(dim=0)

    def filled_rewards(self) -> torch.Tensor:
        """The rewards with every missing one filled by the additive model (row difficulty + expert
        offset, from the row's own observed rewards): stand-ins to calibrate decisions on incomplete
        rows with; experts no row has a reward for stay ``nan``."""
        return torch.where(
            torch.isfinite(self.rewards), self.rewards, self.difficulty.unsqueeze(1) + self.offsets.unsqueeze(0)
        )

    def sample(self, size: int, *, seed: int = 0) -> torch.Tensor:
        """The indices (ascending) of a seeded random sample of at most ``size`` rows (all rows when
        there are no more), e.g. to calibrate on. The bank keeps no tasks: training samples its
        rows by task (:meth:`zooter.data.RoutingDataset.sample`) before they become a bank."""
        if size >= len(self):
            return torch.arange(len(self))
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self), generator=generator)[: max(0, size)].sort().values

    def leave_one_out(self, rows: torch.Tensor | None = None) -> Estimates:
        """Training rows estimated from the other rows: honest estimates to calibrate decisions on.

        Args:
            rows: the bank rows to estimate (default: all), e.g. a calibration sample.
        """
        rows = torch.arange(len(self)) if rows is None else rows
        rows = rows.to(self.embeddings.device)
        return self.estimate(self.embeddings[rows], leave_out=rows)

    # -- saving -----------------------------------------------------------------------------------
    def settings(self, record: NeighbourSettings | None = None) -> NeighbourSettings:
        """What ``config.json`` records of the bank (its ``neighbours`` section), with its index,
        keeping the provenance (``support``, ``updates``, ``sources``) of an earlier ``record`` of it."""
        kept = (
            {} if record is None else {"support": record.support, "updates": record.updates, "sources": record.sources}
        )
        index = self.index.settings()
        if index["kind"] != "exact":
            index["fingerprint"] = self.fingerprint
        return NeighbourSettings(
            k=self.k,
            temperature=float(self.temperature),
            rows=len(self),
            dimension=self.embeddings.shape[1],
            index=index,
            shrinkage=self.shrinkage,
            **kept,
        )

    def save(self, folder: Path, *, experts: Sequence[str]) -> None:
        """Write the bank into a router folder being saved: ``neighbours.safetensors``, and its ANN
        index, if any (``neighbours.faiss``).

        Any file written into ``folder`` is listed in ``config.json`` with its sha256 and checked
        at load (:mod:`zooter.model.folder`); :meth:`load` reads it back from the ``files`` it
        is given. ``experts`` name the bank's columns, recorded in the file so that a bank copied
        from another router is refused at load.
        """
        from safetensors.torch import save_file

        broken = non_finite(self.embeddings, self.rewards, self.targets)
        if broken:
            raise ZooterError(f"the neighbour bank holds {broken}; it cannot be saved")
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors().items()}
        metadata = {"format": "pt", "experts": json.dumps(list(experts))}
        if self.ids is not None:
            metadata["ids"] = json.dumps(self.ids)
        save_file(tensors, str(folder / NEIGHBOURS_NAME), metadata=metadata)
        if isinstance(self.index, FaissIndex):
            self.index.save(folder)

    @classmethod
    def load(
        cls, files: FolderFiles, settings: NeighbourSettings, *, experts: Sequence[str], dimension: int | None
    ) -> NeighbourBank:
        """The bank of a router folder, checked against ``config.json``.

        Args:
            files: the router folder, opened (:class:`~zooter.model.folder.FolderFiles`).
            settings: its ``config.json`` ``neighbours`` section.
            experts: the router's experts: the bank's columns, in order.
            dimension: the encoder's hidden size: the length of the bank's embeddings.

        Raises:
            ZooterError: naming the file: missing or changed, not a bank, another router's bank, a
                shape other than ``config.json`` describes, or values that are not finite.
        """
        path = files.where(NEIGHBOURS_NAME)
        if not files.has(NEIGHBOURS_NAME):
            raise ZooterError(f"{files.folder}: config.json names a neighbour bank but {NEIGHBOURS_NAME} is missing")
        mapped = files.map(NEIGHBOURS_NAME)  # a bank of millions of rows is read where it is used
        try:
            tensors, metadata, offsets = mapped_safetensors(mapped)
            recorded = json.loads(metadata.get("experts", "null"))
            ids = json.loads(metadata.get("ids", "null"))
        except Exception as e:  # safetensors' own error type for a damaged file
            raise ZooterError(f"{path} is not a readable safetensors file: {e}") from None
        missing = sorted({"embeddings", "rewards", "targets"} - set(tensors))
        if missing:
            raise ZooterError(f"{path} is not a neighbour bank: it lacks the tensors {missing}")
        embeddings, rewards, targets = tensors["embeddings"], tensors["rewards"], tensors["targets"]
        if recorded is not None and recorded != list(experts):
            raise ZooterError(
                f"{path} is another router's bank: its columns are the experts {name_list(recorded)}, "
                f"config.json's experts are {name_list(experts)}; copy the whole router folder again"
            )
        if not (
            embeddings.ndim == rewards.ndim == 2
            and rewards.shape == targets.shape
            and rewards.shape[0] == embeddings.shape[0]
        ):
            raise ZooterError(
                f"{path} is not a neighbour bank: it needs rows x dimension embeddings and rows x experts rewards "
                f"and targets, got {tuple(embeddings.shape)}, {tuple(rewards.shape)}, {tuple(targets.shape)}"
            )
        rows, width = embeddings.shape
        wrong = []
        if rows != settings.rows:
            wrong.append(f"{rows} rows where config.json's neighbours.rows says {settings.rows}")
        if rewards.shape[1] != len(experts):
            wrong.append(f"{rewards.shape[1]} experts where config.json lists {len(experts)}")
        for where, want in (("config.json's neighbours.dimension", settings.dimension), ("the encoder's", dimension)):
            if want is not None and width != want:
                wrong.append(f"embeddings of length {width} where {where} is {want}")
        if wrong:
            raise ZooterError(f"{path} does not fit config.json: {'; '.join(dict.fromkeys(wrong))}")
        finite, unit, saved_fingerprint = _scan_rows(embeddings, mapped, offsets["embeddings"])
        broken = non_finite(embeddings if not finite else embeddings[:0], rewards, targets)
        if broken:
            raise ZooterError(f"{path} holds {broken}; train the router again")
        try:  # row weights, when the bank has them, are checked where the bank is built
            bank = cls(
                embeddings,
                rewards,
                targets,
                k=settings.k,
                temperature=settings.temperature,
                weights=tensors.get("weights"),
                propensities=tensors.get("propensities"),
                tokens=tensors.get("tokens"),
                # routers saved before shrinkage existed keep the plain average they were calibrated with
                shrinkage=settings.shrinkage,
                ids=ids,
                normalized=unit,
            )
        except ZooterError as e:
            raise ZooterError(f"{path}: {e}") from None
        if unit:  # the rows as saved: the fingerprint read on the way is theirs
            bank._fingerprint = saved_fingerprint
        index = settings.index or {"kind": "exact"}  # routers from before indexes searched exactly
        if index.get("kind", "exact") != "exact":
            bank.index = _load_index(files, bank, index)
        # nothing wrote to the map: what the checks read goes back to the system's file cache, to be
        # read again where searches need it
        _give_back(mapped, 0, len(mapped))
        return bank


def depth_factor(counts: torch.Tensor, rows: int) -> int:
    """How many times n nearest rows a search must read for the thinnest expert (``counts``: rows
    with each expert's reward; experts without any left aside) to find about n rows with its reward:
    ``ceil(rows / its rows)``, 1 when every row has every reward, at most :data:`MAX_DEPTH_FACTOR`."""
    counts = counts[counts > 0]
    if not len(counts):
        return 1
    return max(1, min(MAX_DEPTH_FACTOR, math.ceil(rows / int(counts.min()))))


OFFSET_PRIOR_ROWS = 20.0  # an expert's offset counts as this many rows of "average expert" before its own


def additive_fit(rewards: torch.Tensor, *, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``reward[row, expert] ~ difficulty[row] + offset[expert]`` fitted on the observed rewards.

    Alternating means: each row's difficulty is the mean of its observed rewards less their
    experts' offsets, each expert's offset the mean of its rewards less their rows' difficulty,
    shrunk towards 0 (the average expert) by :data:`OFFSET_PRIOR_ROWS` pseudo-rows, so an expert
    scored on a handful of rows is not taken for the best or the worst. Returns (difficulty per
    row, ``nan`` for a row without rewards; offset per expert, ``nan`` for an expert without any).
    """
    present = torch.isfinite(rewards)
    filled = rewards.nan_to_num(0.0)
    per_row = present.sum(dim=1).clamp_min(1)
    per_expert = present.sum(dim=0)
    offsets = torch.zeros(rewards.shape[1], device=rewards.device)
    difficulty = filled.sum(dim=1) / per_row
    for _ in range(iterations):
        offsets = ((filled - difficulty.unsqueeze(1)) * present).sum(dim=0) / (per_expert + OFFSET_PRIOR_ROWS)
        difficulty = ((filled - offsets.unsqueeze(0)) * present).sum(dim=1) / per_row
    difficulty = difficulty.masked_fill(~present.any(dim=1), math.nan)
    offsets = offsets.masked_fill(per_expert == 0, math.nan)
    return difficulty, offsets


def _nanvar(values: torch.Tensor) -> torch.Tensor:
    present = torch.isfinite(values)
    count = present.sum(dim=0).clamp_min(1)
    mean = values.nan_to_num(0.0).sum(dim=0) / count
    return ((values.nan_to_num(0.0) - mean) * present).square().sum(dim=0) / count


def non_finite(embeddings: torch.Tensor, rewards: torch.Tensor, targets: torch.Tensor) -> str | None:
    """What in a bank is not finite, in words (rewards may be NaN: no reward), or None when all is."""
    broken = [
        name
        for name, tensor in (("embeddings", embeddings), ("rewards", rewards), ("targets", targets))
        if not all(
            bool((torch.isfinite(block) | (block.isnan() if name == "rewards" else False)).all())
            for block in tensor.split(BLOCK_ROWS)
        )
    ]
    if not broken:
        return None
    return (
        f"values that are not finite in its {', '.join(broken)} (a reward may be NaN, meaning none; "
        "nothing else may be NaN or infinite)"
    )


def unit_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """``embeddings`` scaled to rows of unit length, in float16, a block of rows at a time.

    float16 rows of unit length already (within float16 rounding: a bank's own rows, a saved
    bank's) are kept as they are, not copied: a bank of ten million rows is 7.7 GB.
    """
    if embeddings.dtype == torch.float16 and all(_unit_length(block) for block in embeddings.split(BLOCK_ROWS)):
        return embeddings
    out = torch.empty(embeddings.shape, dtype=torch.float16, device=embeddings.device)
    for start in range(0, embeddings.shape[0], BLOCK_ROWS):
        block = embeddings[start : start + BLOCK_ROWS].float()
        out[start : start + BLOCK_ROWS] = torch.nn.functional.normalize(block, dim=-1).half()
    return out


def _unit_length(block: torch.Tensor) -> bool:
    norms = block.float().norm(dim=-1)
    return bool((((norms - 1).abs() <= 1e-3) | (norms == 0)).all())  # normalising leaves a zero row zero


_SAFETENSORS_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def mapped_safetensors(buffer: Any) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, int]]:
    """The tensors of a safetensors file held in ``buffer`` (a writable memory map), as views of
    it (nothing copied), its ``__metadata__``, and where each tensor starts in ``buffer``.

    The format: 8 bytes of header length (little-endian), a JSON header giving each tensor's
    dtype, shape and byte range, then the data. (safetensors' own loaders take a path or bytes;
    a router folder maps the file it checked.)

    Raises:
        ValueError: ``buffer`` is not a safetensors file (what is wrong, in words).
    """
    size = len(buffer)
    if size < 8:
        raise ValueError(f"{size} bytes, shorter than a safetensors header")
    length = int.from_bytes(buffer[:8], "little")
    if length > size - 8:
        raise ValueError(f"its header claims {length:,} bytes, the file has {size - 8:,} after its length")
    header = json.loads(bytes(buffer[8 : 8 + length]))
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    start, tensors, offsets = 8 + length, {}, {}
    for name, entry in header.items():
        try:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"tensor {name!r} has a malformed header entry ({e!r})") from None
        count = math.prod(shape)
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= size - start or end - begin != count * dtype.itemsize:
            raise ValueError(f"tensor {name!r}: bytes {begin}-{end} of the data do not hold a {entry['dtype']} {shape}")
        if count:
            tensors[name] = torch.frombuffer(buffer, dtype=dtype, count=count, offset=start + begin).reshape(shape)
        else:
            tensors[name] = torch.empty(shape, dtype=dtype)
        offsets[name] = start + begin
    return tensors, metadata if isinstance(metadata, dict) else {}, offsets


def _scan_rows(embeddings: torch.Tensor, mapped: Any, offset: int) -> tuple[bool, bool, str]:
    """Whether a mapped bank's embeddings (starting at byte ``offset`` of ``mapped``) are all finite,
    whether they are float16 rows of unit length, and their fingerprint, from one pass a block of
    rows at a time, each block's pages given back once read: the pass never holds the bank."""
    finite = unit = True
    row_bytes = embeddings.shape[1] * embeddings.element_size()

    def blocks() -> Iterator[torch.Tensor]:
        nonlocal finite, unit
        for start in range(0, embeddings.shape[0], BLOCK_ROWS):
            block = embeddings[start : start + BLOCK_ROWS]
            finite = finite and bool(torch.isfinite(block).all())
            unit = unit and embeddings.dtype == torch.float16 and _unit_length(block)
            yield block
            _give_back(mapped, offset + start * row_bytes, block.shape[0] * row_bytes)

    digest = fingerprint(embeddings, blocks=blocks())  # the pass: finite and unit are known after it
    return finite, unit, digest


def _give_back(mapped: Any, start: int, length: int) -> None:
    """Let the whole pages of ``mapped[start : start + length]`` go from this process (not written to:
    the file keeps them); they are read again when touched. Nothing where the system cannot."""
    if not isinstance(mapped, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = (start + length) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


def _load_index(files: FolderFiles, bank: NeighbourBank, settings: dict[str, Any]) -> BankIndex:
    """The saved ANN index of ``bank``: checked against the bank, rebuilt when missing, exact without faiss."""
    folder, path = files.folder, files.where(INDEX_NAME)
    recorded = settings.get("fingerprint")
    if recorded != bank.fingerprint:
        raise ZooterError(
            f"{folder}: the neighbour index in config.json was built for another bank (fingerprint "
            f"{str(recorded)[:19]}, {NEIGHBOURS_NAME} has {bank.fingerprint[:19]}); copy the whole router folder again"
        )
    if not faiss_available():
        logger.warning(
            "%s: the router was saved with a faiss index but faiss is not installed; searching exactly "
            "(same neighbours, slower on a large bank: %s)",
            folder,
            ANN_EXTRA,
        )
        return ExactIndex(bank.embeddings)
    if not path.is_file():
        logger.warning(
            "%s: %s is missing; rebuilding it from the bank (%s)", folder, INDEX_NAME, settings.get("factory")
        )
        return FaissIndex.build(
            bank.embeddings,
            factory=settings.get("factory"),
            k=int(settings.get("recall_at") or bank.k),
            target_recall=float(settings.get("target_recall") or TARGET_RECALL),
        )
    with files.open_file(INDEX_NAME) as file:
        index = FaissIndex.read(file, settings, where=path)
    if not index.holds(bank.embeddings):
        raise ZooterError(
            f"{path} does not index {NEIGHBOURS_NAME} (its rows do not find themselves); "
            f"delete {INDEX_NAME} to rebuild it, or copy the whole router folder again"
        )
    return index


__all__ = [
    "CALIBRATION_ROWS",
    "MAX_DEPTH_FACTOR",
    "MIN_OWN_SHARE",
    "NEIGHBOURS_NAME",
    "Estimates",
    "NeighbourBank",
    "NeighbourSettings",
]
