"""From rewards to the router's training targets.

The soft target of a query is ``s(q) = softmax(r(q) / temperature)`` over the experts that have a
reward on it (the others get probability 0); with ``hard=True`` it is the argmax instead (a one-hot,
so the KL loss is plain cross-entropy). A :class:`LabelEnhancer` may then mix each target with
information from other queries: the paper's tag-based enhancement,
``s*(q) = beta * s(q) + (1 - beta) * mean_{t in T(q)} s_t``, is
:class:`zooter.labels.tagging.TagEnhancer`, switched on by ``LabelConfig(tags=...)``.

Example:
    >>> import torch
    >>> from zooter.labels.targets import soft_targets
    >>> soft_targets(torch.tensor([[1.0, 1.0, float("nan")]]), temperature=1.0)
    tensor([[0.5000, 0.5000, 0.0000]])
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import Field, field_validator

from zooter.config import ZooterConfig
from zooter.data import RoutingDataset


class LabelConfig(ZooterConfig):
    """How rewards become targets.

    Attributes:
        temperature: softmax temperature tau; the paper uses 1. Lower values sharpen targets toward
            the best expert, higher values flatten them. Rewards are used on their own scale, so
            tune tau to it (a 1-10 grade and a 0/1 correctness differ).
        hard: use the argmax of the rewards (one-hot; the loss becomes cross-entropy) instead of the
            softmax, the paper's "hard labels" baseline. Experts tied for the best share the mass,
            as in the softmax's limit for tau -> 0, so ties do not favour the head order.
        tags: where the tags of the tag-based enhancement come from: ``"none"`` (off, the
            default), ``"data"`` (the rows' ``tags``), ``"task"`` (the rows' ``task``),
            ``"data+task"``, ``"cluster"`` or ``"cluster:K"`` (k-means clusters of the encoder's
            embeddings of the training queries; K from the data size unless given).
        beta: weight of the query's own target in ``s* = beta * s(q) + (1 - beta) * tag average``;
            the paper's best is 0.3; 1 turns the enhancement off. Used only when ``tags`` is set.
    """

    temperature: float = Field(default=1.0, gt=0.0)
    hard: bool = False
    tags: str = "none"
    beta: float = Field(default=0.3, ge=0.0, le=1.0)

    @field_validator("tags")
    @classmethod
    def _known_tag_source(cls, value: str) -> str:
        value = value.strip().lower()
        match = _TAG_SOURCE.fullmatch(value)
        if match is None:
            raise ValueError("expected one of none, data, task, data+task, cluster, cluster:K (K >= 2)")
        if match.group("k") is not None and int(match.group("k")) < 2:
            raise ValueError("cluster:K needs K >= 2")
        return value

    @property
    def enhanced(self) -> bool:
        """Whether training targets are mixed with tag averages (tags set and beta below 1)."""
        return self.tags != "none" and self.beta < 1.0


_TAG_SOURCE = re.compile(r"none|data|task|data\+task|cluster(?::(?P<k>\d+))?")


def reward_tensor(dataset: RoutingDataset) -> torch.Tensor:
    """Rewards as a float tensor (rows x experts), ``nan`` where a reward is missing."""
    return torch.tensor(dataset.reward_matrix(), dtype=torch.float32).reshape(len(dataset), len(dataset.experts))


def soft_targets(rewards: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Masked softmax of ``rewards / temperature`` along the last axis; ``nan`` entries get 0.

    Raises:
        ValueError: a row has no finite reward, or ``temperature`` is not positive.
    """
    if not temperature > 0:  # also rejects nan
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rewards = rewards.float()  # integer rewards (0/1 correctness) are fine too
    mask = torch.isfinite(rewards)
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every row needs at least one reward")
    logits = torch.where(mask, rewards / temperature, torch.full_like(rewards, float("-inf")))
    return torch.softmax(logits, dim=-1)


def hard_targets(rewards: torch.Tensor) -> torch.Tensor:
    """One-hot targets on the best expert of each row (``nan`` rewards never win; ties share equally).

    Raises:
        ValueError: a row has no finite reward.
    """
    rewards = rewards.float()
    mask = torch.isfinite(rewards)
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every row needs at least one reward")
    filled = torch.where(mask, rewards, torch.full_like(rewards, float("-inf")))
    best = (filled == filled.max(dim=-1, keepdim=True).values).float()
    return best / best.sum(dim=-1, keepdim=True)


@runtime_checkable
class LabelEnhancer(Protocol):
    """Adjusts soft targets using more than the query's own rewards (e.g. tag-level averages).

    ``fit`` sees the training rows only; ``transform`` is then applied to the training targets.
    ``to_dict`` says what was done, for the router's config and model card.
    """

    def fit(self, dataset: RoutingDataset, targets: torch.Tensor) -> LabelEnhancer: ...

    def transform(self, dataset: RoutingDataset, targets: torch.Tensor) -> torch.Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


def make_targets(
    dataset: RoutingDataset, config: LabelConfig | None = None, enhancer: LabelEnhancer | None = None
) -> torch.Tensor:
    """The training targets of ``dataset``: soft (or hard) targets, then ``enhancer`` if given.

    ``config.tags`` is not acted on here: the caller builds the enhancer it names (see
    :func:`zooter.labels.tagging.enhancer_from_config`; :func:`~zooter.training.train_router` does).
    """
    config = config or LabelConfig()
    rewards = reward_tensor(dataset)
    targets = hard_targets(rewards) if config.hard else soft_targets(rewards, config.temperature)
    if enhancer is not None:
        targets = enhancer.fit(dataset, targets).transform(dataset, targets)
    return targets


__all__ = ["LabelConfig", "LabelEnhancer", "hard_targets", "make_targets", "reward_tensor", "soft_targets"]
