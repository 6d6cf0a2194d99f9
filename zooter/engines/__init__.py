"""Where the heavy passes run: in this process (``local``, the default) or on Ray Data (``ray``).

Two passes dominate the pipeline's time on large data: embedding the training queries (``zooter
train``) and reward-scoring every (query, answer) pair (``zooter score``). An engine runs them; both
engines compute every batch with the same function (the encoder's
:meth:`~zooter.model.encoder.QueryEncoder.embed_queries`, the scorers'
:func:`~zooter.rewards.scorers.score_batch`), so their outputs agree by construction.

The Ray engine loads the model on each worker (a :class:`ModelLoader` travels, not the weights),
so the same command runs on a laptop and on a cluster; see ``docs/scaling-engines.md``.

Example:
    >>> from zooter.engines import make_engine
    >>> make_engine("local").name
    'local'
    >>> ray = make_engine("ray", workers=2)  # needs the ray extra only when it runs a pass
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TypeAlias

from zooter.engines.loader import ModelLoader
from zooter.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from zooter.data import Query
    from zooter.engines.ray import RayEngine
    from zooter.model.encoder import QueryEncoder
    from zooter.rewards.scorers import RewardScorer

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


Engine: TypeAlias = "LocalEngine | RayEngine"
"""What runs the heavy passes: :class:`LocalEngine` or :class:`zooter.engines.ray.RayEngine`, which has
LocalEngine's ``name``, ``embed_queries`` and ``score``; :func:`make_engine` builds either."""


class LocalEngine:
    """This process, one batch after another (what every command does by default)."""

    name = "local"

    def embed_queries(
        self,
        encoder: QueryEncoder,
        queries: Sequence[Query],
        *,
        loader: ModelLoader | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """``encoder.embed_queries(queries)``: the encoder already loaded here does the work."""
        return encoder.embed_queries(queries, batch_size=batch_size, show_progress=show_progress)

    def score(
        self,
        scorer: RewardScorer | ModelLoader,
        queries: Sequence[Query],
        responses: Sequence[str],
        *,
        batch_size: int,
    ) -> Iterator[tuple[list[int], list[float | None]]]:
        """Rewards of ``batch_size`` pairs at a time, in order: ``(pair indices, rewards)`` per batch."""
        from zooter.rewards.scorers import score_batch

        if isinstance(scorer, ModelLoader):
            scorer = scorer()
        for start in range(0, len(queries), batch_size):
            stop = min(start + batch_size, len(queries))
            yield list(range(start, stop)), score_batch(scorer, queries[start:stop], responses[start:stop])


def make_engine(
    name: str = "local",
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    batch_size: int | None = None,
) -> Engine:
    """The engine called ``name``, with its settings.

    Args:
        name: ``"local"`` (this process) or ``"ray"`` (Ray Data, extra ``zooter-langchain[ray]``).
        address: the Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray started here).
        workers: Ray actors, each loading the model once (default: one per GPU, else one per CPU).
        gpus_per_worker: GPUs per actor (default: 1 when the cluster has GPUs, else 0).
        batch_size: rows per Ray batch (default: 1024 queries to embed, the scorer's batch to score).

    Raises:
        ConfigError: an unknown engine, or Ray settings given to the local engine.
    """
    if name == "local":
        given = {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker, "batch_size": batch_size}
        set_options = sorted(k for k, v in given.items() if v is not None)
        if set_options:
            raise ConfigError(f"{', '.join(set_options)} only apply to engine 'ray'; the local engine has no workers")
        return LocalEngine()
    if name == "ray":
        from zooter.engines.ray import RayEngine

        return RayEngine(address=address, workers=workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size)
    raise ConfigError(f"engine must be one of {list(ENGINES)}, got {name!r}")


__all__ = ["ENGINES", "Engine", "LocalEngine", "ModelLoader", "make_engine"]
