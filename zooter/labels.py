"""From rewards to the router's training targets.

The soft target of a query is ``s(q) = softmax(r(q) / temperature)`` over the experts that have a
reward on it (the others get probability 0). A :class:`LabelEnhancer` may then mix each target
with information from other queries (the paper's tag-based enhancement plugs in here).

Example:
    >>> import torch
    >>> from zooter.labels import soft_targets
    >>> soft_targets(torch.tensor([[1.0, 1.0, float("nan")]]), temperature=1.0)
    tensor([[0.5000, 0.5000, 0.0000]])
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import Field

from zooter.config import ZooterConfig
from zooter.data import RoutingDataset


class LabelConfig(ZooterConfig):
    """How rewards become targets.

    Attributes:
        temperature: softmax temperature tau; the paper uses 1. Lower values sharpen targets toward
            the best expert, higher values flatten them. Rewards are used on their own scale, so
            tune tau to it (a 1-10 grade and a 0/1 correctness differ).
    """

    temperature: float = Field(default=1.0, gt=0.0)


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
    """The training targets of ``dataset``: soft targets, then ``enhancer`` if given."""
    config = config or LabelConfig()
    targets = soft_targets(reward_tensor(dataset), config.temperature)
    if enhancer is not None:
        targets = enhancer.fit(dataset, targets).transform(dataset, targets)
    return targets
