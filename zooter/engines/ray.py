"""The Ray Data engine: the heavy passes on a local Ray or a Ray cluster (extra ``zooter-langchain[ray]``).

Rows go into a Ray dataset; ``map_batches`` runs a callable class on a fixed pool of actors, each
of which loads the model once in ``__init__`` (from a :class:`~zooter.engines.ModelLoader`, on its
own GPU when the cluster has GPUs) and computes one batch per ``__call__`` with the same function
the local engine uses. Results stream back to the driver as batches finish, so ``zooter score``
writes each batch to its side file at once and a killed run loses only the batches in flight.

Which Ray: ``address`` (``--ray-address``), else the ``RAY_ADDRESS`` environment variable, else a
Ray started on this machine for the run (and stopped after it). A Ray this process already joined
(``ray.init`` in a notebook or a test) is used as it is and left running.

Example:
    >>> from zooter.engines.ray import RayEngine
    >>> from zooter.model.encoder import QueryEncoder
    >>> from zooter.engines import ModelLoader
    >>> engine = RayEngine(workers=2)
    >>> loader = ModelLoader(QueryEncoder.load, kwargs={"max_length": 128})
    >>> vectors = engine.embed_queries(QueryEncoder.load(), ["Why is the sky blue?"], loader=loader)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zooter.engines.loader import ModelLoader
from zooter.errors import ConfigError, import_optional

if TYPE_CHECKING:
    import numpy as np
    import torch

    from zooter.data import Query
    from zooter.model.encoder import QueryEncoder
    from zooter.rewards.scorers import RewardScorer

logger = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'zooter-langchain[ray]'"
EMBED_ROWS = 1024  # queries per Ray batch when embedding: a second or so of a CPU worker's time


def import_ray() -> Any:
    """``ray`` with its Data library, or a :class:`MissingDependencyError` naming the extra."""
    # the engine needs Ray Data, not only Ray core
    return import_optional("ray", "ray.data", needs="the ray engine needs Ray Data", install=RAY_INSTALL)


class EmbedBatches:
    """Ray Data actor: loads the encoder once, then embeds one batch of queries per call.

    Args:
        loader: builds the encoder (a :class:`~zooter.model.encoder.QueryEncoder` or a router).
        device: where this worker runs it.
        batch_size: queries per encoder forward within a Ray batch (default: the encoder's).
    """

    def __init__(self, loader: ModelLoader, device: str, batch_size: int | None = None) -> None:
        self.encoder = loader(device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        queries = [json.loads(text) for text in batch["query"]]
        vectors = self.encoder.embed_queries(queries, batch_size=self.batch_size)
        return {"row": batch["row"], "embedding": vectors.cpu().numpy()}


class ScoreBatches:
    """Ray Data actor: loads the reward scorer once, then scores one batch of pairs per call.

    A missing score travels as NaN (Arrow columns hold numbers) and comes back as None.
    """

    def __init__(self, loader: ModelLoader, device: str) -> None:
        self.scorer = loader(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        from zooter.rewards.scorers import score_batch

        queries = [json.loads(text) for text in batch["query"]]
        rewards = score_batch(self.scorer, queries, [str(r) for r in batch["response"]])
        values = np.array([math.nan if r is None else r for r in rewards], dtype=np.float64)
        return {"row": batch["row"], "reward": values}


class RayEngine:
    """Ray Data: ``map_batches`` over a fixed pool of ``workers`` actors, each holding the model once.

    Args:
        address: the Ray cluster to join (``"auto"``, ``"ray://head:10001"``, ...); default:
            ``RAY_ADDRESS``, else a local Ray for the run.
        workers: actors (the pool's size, what older Ray called ``concurrency``); default: one per
            GPU when the cluster has GPUs, else one per CPU.
        gpus_per_worker: ``num_gpus`` of each actor; default: 1 when the cluster has GPUs, else 0.
        batch_size: rows per Ray batch (default: 1024 queries to embed; the scorer's batch size
            to score, so that each batch written to the side file is one the scorer ran).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_worker: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if gpus_per_worker is not None and not (math.isfinite(gpus_per_worker) and gpus_per_worker >= 0):
            raise ConfigError(f"gpus_per_worker must be a number >= 0, got {gpus_per_worker}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return (
            f"RayEngine(address={self.address!r}, workers={self.workers}, "
            f"gpus_per_worker={self.gpus_per_worker}, batch_size={self.batch_size})"
        )

    # -- the passes -----------------------------------------------------------------------------
    def embed_queries(
        self,
        encoder: QueryEncoder,
        queries: Sequence[Query],
        *,
        loader: ModelLoader | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Each query's pooled vector, computed by ``workers`` copies of the encoder ``loader`` builds.

        Args:
            encoder: the encoder of this process; the result lands on its device, in float32.
            queries: texts or chat message lists.
            loader: builds the same encoder on a worker (required: weights are not shipped).
            batch_size: queries per encoder forward on a worker (default: the worker encoder's).
            show_progress: Ray Data's progress bars.
        """
        import torch

        import_ray()
        if loader is None:
            raise ConfigError("the ray engine loads the encoder on each worker: pass loader=ModelLoader(...)")
        out = torch.empty((len(queries), encoder.embedding_size), dtype=torch.float32)  # reads no deferred encoder
        if not len(queries):
            return out.to(encoder.device)
        rows = [{"row": i, "query": json.dumps(q, ensure_ascii=False)} for i, q in enumerate(queries)]
        with self._session(show_progress) as ray:
            workers, gpus = self._pool(ray)
            # a small pass still spreads over every worker; a large one goes in batches of EMBED_ROWS
            size = self.batch_size or min(EMBED_ROWS, math.ceil(len(rows) / workers))
            dataset = self._dataset(ray, rows, size).map_batches(
                EmbedBatches,
                fn_constructor_kwargs={"loader": loader, "device": _device(gpus), "batch_size": batch_size},
                batch_size=size,
                compute=ray.data.ActorPoolStrategy(size=min(workers, math.ceil(len(rows) / size))),
                num_gpus=gpus,
                batch_format="numpy",
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                out[torch.as_tensor(batch["row"], dtype=torch.long)] = torch.tensor(batch["embedding"])
        return out.to(encoder.device)

    def score(
        self,
        scorer: RewardScorer | ModelLoader,
        queries: Sequence[Query],
        responses: Sequence[str],
        *,
        batch_size: int,
    ) -> Iterator[tuple[list[int], list[float | None]]]:
        """Rewards of the pairs, ``(pair indices, rewards)`` per batch as each worker finishes one.

        Checked at the call (a missing extra, a scorer already loaded here); run as it is iterated.
        """
        import_ray()
        if not isinstance(scorer, ModelLoader):
            raise ConfigError(
                "the ray engine loads the reward model on each worker: pass a ModelLoader "
                "(RewardModelScorer.loader(...)), not a scorer already loaded in this process"
            )
        return self._score(scorer, queries, responses, self.batch_size or batch_size)

    def _score(
        self, scorer: ModelLoader, queries: Sequence[Query], responses: Sequence[str], size: int
    ) -> Iterator[tuple[list[int], list[float | None]]]:
        if not len(queries):
            return
        rows = [
            {"row": i, "query": json.dumps(q, ensure_ascii=False), "response": r}
            for i, (q, r) in enumerate(zip(queries, responses))
        ]
        with self._session(False) as ray:
            workers, gpus = self._pool(ray)
            dataset = self._dataset(ray, rows, size).map_batches(
                ScoreBatches,
                fn_constructor_kwargs={"loader": scorer, "device": _device(gpus)},
                batch_size=size,
                compute=ray.data.ActorPoolStrategy(size=min(workers, math.ceil(len(rows) / size))),
                num_gpus=gpus,
                batch_format="numpy",
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                rewards = [None if math.isnan(v) else float(v) for v in batch["reward"].tolist()]
                yield [int(i) for i in batch["row"]], rewards

    # -- Ray plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, show_progress: bool) -> Iterator[Any]:
        """Ray, joined (or started) for the pass; stopped after it only if started here."""
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            logger.info("starting Ray (address %s)", self.address or "from RAY_ADDRESS, else local")
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        elif self.address is not None:
            logger.warning("Ray is already running in this process; address %r is not used", self.address)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()

    def _pool(self, ray: Any) -> tuple[int, float]:
        """Actors and GPUs per actor: as set, else one actor per GPU (or per CPU without GPUs)."""
        resources = ray.cluster_resources()
        gpus_total = float(resources.get("GPU", 0.0))
        gpus = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus_total else 0.0)
        if gpus > gpus_total:
            raise ConfigError(f"{gpus} GPUs per worker asked for, but the Ray cluster has {gpus_total:g}")
        workers = self.workers or max(1, int(gpus_total // gpus) if gpus else int(resources.get("CPU", 1)))
        logger.info("Ray engine: %d workers, %g GPUs each", workers, gpus)
        return workers, gpus

    @staticmethod
    def _dataset(ray: Any, rows: list[dict[str, Any]], batch_size: int) -> Any:
        # about one block per batch: results come back (and are written) batch by batch
        return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))


def _device(gpus: float) -> str:
    """Where an actor runs its model: its GPU when it was given one (Ray sets CUDA_VISIBLE_DEVICES)."""
    return "cuda" if gpus > 0 else "cpu"


__all__ = ["RAY_INSTALL", "EmbedBatches", "RayEngine", "ScoreBatches", "import_ray"]
