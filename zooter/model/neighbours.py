"""Estimating each expert's reward on a query from the training queries nearest to it.

The router embeds a query, finds the ``k`` training queries closest to it (cosine similarity of
the encoder's pooled vectors) and averages their rewards, each neighbour weighted by
``exp((similarity - best similarity) / temperature)``: close neighbours count most, and a query
from a task the training set knows well is estimated mostly from that task. The result is each
expert's *expected reward* on the query, on the rewards' own scale (what the decision rule and a
cost trade-off need), plus the same average of the training targets (the Zooter soft labels), which
is a distribution over the experts.

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
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zooter.errors import ZooterError

NEIGHBOURS_NAME = "neighbours.safetensors"
_CHUNK = 1024  # query rows per similarity block: bounds memory at 1024 x bank size floats


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
    """

    probabilities: torch.Tensor
    expected_rewards: torch.Tensor | None = None
    support: torch.Tensor | None = None
    stderr: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> Estimates:
        """The estimates of some rows only (a boolean mask or indices)."""
        return Estimates(*(None if t is None else t[index] for t in self._tensors()))

    def cpu(self) -> Estimates:
        return Estimates(*(None if t is None else t.cpu() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return self.probabilities, self.expected_rewards, self.support, self.stderr

    @property
    def scores(self) -> torch.Tensor:
        """What decisions compare: expected rewards when known, else probabilities."""
        return self.expected_rewards if self.expected_rewards is not None else self.probabilities


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
        embeddings: rows x hidden size; normalised here to unit length.
        rewards: rows x experts, ``nan`` where an expert has no reward on a row.
        targets: rows x experts, each row a distribution (the training soft labels).
        k: neighbours per query (capped at the bank's size).
        temperature: similarity temperature of the neighbour weights (> 0).
        shrinkage: pseudo-neighbours of prior per expert estimate (0: the plain neighbour average).
        ids: each row's query id, so later rewards for the same query merge into its row (see
            :mod:`zooter.lifecycle`); None for a bank saved before ids were kept.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        rewards: torch.Tensor,
        targets: torch.Tensor,
        *,
        k: int,
        temperature: float = 0.1,
        shrinkage: float = 0.0,
        ids: list[str] | None = None,
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
        self.embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1).half()
        self.rewards = rewards.float()
        self.targets = targets.float()
        self.k = k
        self.temperature = temperature
        self.shrinkage = float(shrinkage)
        self.ids = None if ids is None else [str(i) for i in ids]
        self.difficulty, self.offsets = additive_fit(self.rewards)

    def to(self, device: torch.device) -> NeighbourBank:
        """The bank on ``device`` (itself when already there)."""
        if self.rewards.device == device:
            return self
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        bank = NeighbourBank.__new__(NeighbourBank)
        bank.__dict__.update(
            self.__dict__, **moved, difficulty=self.difficulty.to(device), offsets=self.offsets.to(device)
        )
        return bank

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"embeddings": self.embeddings, "rewards": self.rewards, "targets": self.targets}

    def __len__(self) -> int:
        return self.embeddings.shape[0]

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

    def estimate(self, queries: torch.Tensor, *, leave_out: torch.Tensor | None = None) -> Estimates:
        """Neighbour estimates for query embeddings (rows x hidden; normalised here).

        Args:
            queries: pooled query vectors.
            leave_out: for each query row, the index of a bank row it must not use (itself, for
                leave-one-out estimates on the training rows), or -1 for none.
        """
        top, index = self.search(queries, leave_out=leave_out)
        return self.average(top, index)

    def search(
        self, queries: torch.Tensor, *, leave_out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest bank rows of each query: (similarities, indices), rows x k, best first."""
        queries = torch.nn.functional.normalize(queries.float(), dim=-1).to(self.rewards.device)
        k = max(1, min(self.k, len(self) - (1 if leave_out is not None else 0)))
        tops, indices = [], []
        for start, block in _blocks(queries):
            sims = block @ self.embeddings.float().T
            if leave_out is not None:
                rows = leave_out[start : start + len(block)].to(sims.device)
                hit = rows >= 0
                sims[hit.nonzero().squeeze(1), rows[hit]] = -math.inf
            top, index = sims.topk(k, dim=-1)
            tops.append(top)
            indices.append(index)
        if not tops:
            return torch.empty((0, k), device=self.rewards.device), torch.empty((0, k), dtype=torch.long)
        return torch.cat(tops), torch.cat(indices)

    def average(self, top: torch.Tensor, index: torch.Tensor) -> Estimates:
        """Estimates from each query's neighbours (:meth:`search`'s similarities and bank rows)."""
        parts: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, len(top), _CHUNK):
            block, rows = top[start : start + _CHUNK], index[start : start + _CHUNK].to(self.rewards.device)
            weights = torch.exp((block - block[:, :1]) / self.temperature).unsqueeze(-1)  # rows x k x 1
            parts.append((*self._average(weights, rows), (weights * self.targets[rows]).sum(1) / weights.sum(1)))
        experts = self.rewards.shape[1]
        if not parts:
            empty = torch.empty((0, experts), device=self.rewards.device)
            return Estimates(empty, empty.clone(), empty.clone(), empty.clone())
        expected, support, stderr, probabilities = (torch.cat(column) for column in zip(*parts))
        return Estimates(probabilities, expected, support, stderr)

    def _average(self, weights: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expected reward, support and standard error of every expert from the neighbours ``index``."""
        rewards = self.rewards[index]  # rows x k x experts
        present = torch.isfinite(rewards)
        carried = weights * present
        weight = carried.sum(dim=1)
        # the share of the neighbours' weight that carries the reward, in effective neighbours
        # (Kish: (sum w)^2 / sum w^2 of all k), so a far neighbour's reward counts for little
        total = weights.sum(dim=1)
        support = weight / total * total.square() / weights.square().sum(dim=1)
        filled = rewards.nan_to_num(0.0)
        mean = (weights * filled).sum(dim=1) / weight.clamp_min(1e-12)
        spread = (carried * (filled - mean.unsqueeze(1)).square()).sum(dim=1) / weight.clamp_min(1e-12)
        # the spread of one or two neighbours says little: pool it with the expert's spread in the bank
        pooled = (support * spread + self._spread()) / (support + 1)
        if self.shrinkage > 0:
            known = torch.isfinite(self.difficulty[index])
            w = weights.squeeze(-1) * known
            difficulty = (w * self.difficulty[index].nan_to_num(0.0)).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)
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

    def leave_one_out(self) -> Estimates:
        """Each training row estimated from the other rows: honest estimates to calibrate decisions on."""
        return self.estimate(self.embeddings.float(), leave_out=torch.arange(len(self)))

    # -- saving -----------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "shrinkage": self.shrinkage, "rows": len(self)}

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors().items()}
        metadata = {"format": "pt"}
        if self.ids is not None:
            metadata["ids"] = json.dumps(self.ids)
        save_file(tensors, str(folder / NEIGHBOURS_NAME), metadata=metadata)

    @classmethod
    def load(cls, folder: Path, settings: dict[str, Any]) -> NeighbourBank:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = folder / NEIGHBOURS_NAME
        if not path.is_file():
            raise ZooterError(f"{folder}: config.json names a neighbour bank but {NEIGHBOURS_NAME} is missing")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                ids = (f.metadata() or {}).get("ids")
            return cls(
                tensors["embeddings"],
                tensors["rewards"],
                tensors["targets"],
                k=int(settings["k"]),
                temperature=float(settings["temperature"]),
                # routers saved before shrinkage existed keep the plain average they were calibrated with
                shrinkage=float(settings.get("shrinkage", 0.0)),
                ids=None if ids is None else json.loads(ids),
            )
        except (KeyError, TypeError, ValueError, OSError, ZooterError) as e:
            raise ZooterError(f"{path} or its settings in config.json are damaged: {e}") from None
        except Exception as e:  # safetensors' own error type for a damaged file
            raise ZooterError(f"{path} is not a readable safetensors file: {e}") from None


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


def _blocks(queries: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, len(queries), _CHUNK):
        yield start, queries[start : start + _CHUNK]


__all__ = ["NEIGHBOURS_NAME", "Estimates", "NeighbourBank"]
