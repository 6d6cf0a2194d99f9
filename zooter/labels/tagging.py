"""Where the tags of the tag-based label enhancement come from, and the enhancement itself.

Rewards on a single query are noisy, so the paper mixes each query's soft target with the average
target of the training queries that share its tags::

    s_t      = mean of s(q) over the training queries q with tag t
    s*(q)    = beta * s(q) + (1 - beta) * mean_{t in T(q)} s_t

Queries without a (known) tag keep ``s(q)``. A :class:`Tagger` says which tags each row has:

- :class:`DataTagger`: the rows' own ``tags`` field, the ``task`` field, or both;
- :class:`ClusterTagger`: k-means clusters of the encoder's pooled embeddings of the training
  queries, each query tagged with its nearest cluster(s); its centroids are saved with the router
  (``tagger.safetensors``) so the training labels can be rebuilt and new queries tagged;
- ``zooter_langchain.tagging.ChatModelTagger`` asks an LLM for InsTag-style intent tags and
  writes them into the dataset's ``tags`` field, for :class:`DataTagger`.

:class:`TagEnhancer` computes ``s_t`` from the rows it is fitted on, which
:func:`~zooter.training.train_router` makes the training split only: validation and test rows never
shape the labels.

Example:
    >>> from zooter.data import RoutingDataset
    >>> from zooter.labels.targets import make_targets
    >>> from zooter.labels.tagging import DataTagger, TagEnhancer
    >>> train = RoutingDataset.load("train.jsonl")  # rows with "tags"  # doctest: +SKIP
    >>> targets = make_targets(train, enhancer=TagEnhancer(DataTagger(), beta=0.3))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from zooter.data import Query, RoutingDataset, RoutingExample
from zooter.errors import ConfigError, ZooterError
from zooter.model.encoder import QueryEncoder

if TYPE_CHECKING:
    from zooter.labels.targets import LabelConfig
    from zooter.model.folder import FolderFiles

logger = logging.getLogger(__name__)

TAGGER_WEIGHTS_NAME = "tagger.safetensors"
Tags = tuple[str, ...]


@runtime_checkable
class Tagger(Protocol):
    """Gives each row a (possibly empty) tuple of tags.

    ``fit`` sees the training rows only; ``tag`` then tags those or any other rows. ``to_dict``
    records the settings (for the router's config and model card) and ``save`` writes any fitted
    state into the router folder, so :func:`load_tagger` can rebuild the tagger.
    """

    def fit(self, rows: Sequence[RoutingExample]) -> Tagger: ...

    def tag(self, rows: Sequence[RoutingExample]) -> list[Tags]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def save(self, folder: Path) -> None: ...


class DataTagger:
    """Tags read from the rows themselves: their ``tags`` field, their ``task``, or both.

    Args:
        use_tags: take the row's ``tags``.
        use_task: add the row's ``task`` as a tag (as ``task:<name>``, so it never collides with a tag).

    Example:
        >>> from zooter.data import RoutingExample
        >>> row = RoutingExample("q1", "2+2?", {"a": 1.0, "b": 0.0}, tags=("math",), task="gsm8k")
        >>> DataTagger(use_task=True).tag([row])
        [('math', 'task:gsm8k')]
    """

    kind = "data"

    def __init__(self, *, use_tags: bool = True, use_task: bool = False) -> None:
        if not (use_tags or use_task):
            raise ConfigError("DataTagger needs use_tags or use_task")
        self.use_tags = use_tags
        self.use_task = use_task

    def fit(self, rows: Sequence[RoutingExample]) -> DataTagger:
        return self  # nothing to learn: the tags are in the data

    def tag(self, rows: Sequence[RoutingExample]) -> list[Tags]:
        out = []
        for row in rows:
            tags = list(row.tags) if self.use_tags else []
            if self.use_task and row.task is not None:
                tags.append(f"task:{row.task}")
            out.append(tuple(dict.fromkeys(tags)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "use_tags": self.use_tags, "use_task": self.use_task}

    def save(self, folder: Path) -> None:
        pass  # no fitted state

    @classmethod
    def load(cls, settings: dict[str, Any], files: FolderFiles) -> DataTagger:
        """Rebuild the tagger from its :meth:`to_dict` (the router folder holds nothing of it)."""
        return cls(use_tags=bool(settings.get("use_tags", True)), use_task=bool(settings.get("use_task", False)))


def default_cluster_count(n: int) -> int:
    """k for ``n`` training queries when none is given: ``round(sqrt(n / 2))``, clamped to [2, 64]."""
    return max(2, min(64, round(math.sqrt(n / 2))))


def kmeans(
    points: torch.Tensor, k: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 100
) -> tuple[torch.Tensor, float]:
    """Lloyd's k-means with k-means++ seeding, in float64 on the CPU; the best of ``n_init`` runs.

    Deterministic for a given ``seed`` (its own generator; the global torch RNG is untouched).

    Returns:
        ``(centroids, inertia)``: a ``(k, dim)`` tensor and the summed squared distance of every
        point to its nearest centroid.
    """
    x = points.detach().to("cpu", torch.float64)
    n = len(x)
    if n_init < 1:
        raise ConfigError(f"n_init must be >= 1, got {n_init}")
    if not 1 <= k <= n:
        raise ConfigError(f"k-means needs 1 <= k <= number of points, got k={k} for {n} points")
    generator = torch.Generator().manual_seed(seed)
    best: tuple[torch.Tensor, float] | None = None
    for _ in range(n_init):
        centroids = _kmeans_pp(x, k, generator)
        for _ in range(max_iter):
            assign = torch.cdist(x, centroids).argmin(dim=1)
            moved = centroids.clone()
            for j in range(k):
                members = x[assign == j]
                if len(members):
                    moved[j] = members.mean(dim=0)
                else:  # an empty cluster restarts on the point farthest from its centroid
                    moved[j] = x[torch.cdist(x, moved).min(dim=1).values.argmax()]
            shift = (moved - centroids).norm(dim=1).max().item()
            centroids = moved
            if shift < 1e-9:
                break
        inertia = torch.cdist(x, centroids).min(dim=1).values.pow(2).sum().item()
        if best is None or inertia < best[1] - 1e-12:
            best = (centroids, inertia)
    assert best is not None  # n_init >= 1
    return best


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++: each new centre drawn with probability proportional to the squared distance."""
    first = int(torch.randint(len(x), (1,), generator=generator))
    centroids = [x[first]]
    closest = (x - x[first]).pow(2).sum(dim=1)
    for _ in range(1, k):
        if closest.sum() <= 0:  # fewer distinct points than k: any point will do
            index = int(torch.randint(len(x), (1,), generator=generator))
        else:
            index = int(torch.multinomial(closest, 1, generator=generator))
        centroids.append(x[index])
        closest = torch.minimum(closest, (x - x[index]).pow(2).sum(dim=1))
    return torch.stack(centroids)


def embed_queries(encoder: QueryEncoder, queries: Sequence[Query], *, batch_size: int = 64) -> torch.Tensor:
    """The pooled vectors of ``queries`` (float32, CPU), from a router or a bare :class:`QueryEncoder`."""
    return encoder.embed_queries(queries, batch_size=batch_size).cpu()


class ClusterTagger:
    """Tags from k-means clusters of the encoder's embeddings of the training queries.

    The queries are embedded by the *pretrained* encoder the router starts from (a
    :class:`~zooter.model.encoder.QueryEncoder`: the router's own tokenisation and masked mean pooling),
    L2-normalised, and clustered with seeded k-means++; each query is tagged ``cluster-<j>`` for
    its ``top_m`` nearest centroids. The centroids live in
    the pretrained encoder's space, so tagging new queries later loads that encoder again (the
    trained router's encoder has moved away from it).

    Args:
        k: number of clusters; by default :func:`default_cluster_count` of the training size.
        top_m: clusters each query is tagged with (nearest first).
        seed: seeds the k-means++ initialisation; equal seeds give equal clusters.
        encoder: Hub id or folder of the encoder (None: the bundled default).
        max_length: tokens kept per query.
        embedder: the pretrained encoder to embed the training queries in ``fit`` (``train_router``
            passes its freshly initialised router, a :class:`~zooter.model.encoder.QueryEncoder` too,
            saving a second load); it is let go after ``fit``. By default, and for tagging later,
            one is loaded from ``encoder``.

    Example:
        >>> tagger = ClusterTagger(k=8, seed=0).fit(train_rows)  # doctest: +SKIP
        >>> tagger.tag_queries(["integrate x^2 from 0 to 1"])  # doctest: +SKIP
        [('cluster-3',)]
    """

    kind = "cluster"

    def __init__(
        self,
        k: int | None = None,
        *,
        top_m: int = 1,
        seed: int = 0,
        encoder: str | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        embedder: QueryEncoder | None = None,
    ) -> None:
        if k is not None and k < 2:
            raise ConfigError(f"ClusterTagger needs k >= 2, got {k}")
        if top_m < 1:
            raise ConfigError(f"ClusterTagger needs top_m >= 1, got {top_m}")
        self.k = k
        self.top_m = top_m
        self.seed = seed
        self.encoder = encoder
        self.max_length = max_length
        self.batch_size = batch_size
        self._embedder = embedder
        self.centroids: torch.Tensor | None = None
        self.fitted_on: int = 0
        self.inertia: float | None = None

    def _embed(self, queries: Sequence[Query]) -> torch.Tensor:
        if self._embedder is None:
            self._embedder = QueryEncoder.load(self.encoder, max_length=self.max_length)
        return torch.nn.functional.normalize(embed_queries(self._embedder, queries, batch_size=self.batch_size), dim=1)

    def fit(self, rows: Sequence[RoutingExample]) -> ClusterTagger:
        """Cluster the queries of ``rows`` (the training rows)."""
        n = len(rows)
        k = self.k if self.k is not None else default_cluster_count(n)
        if k > n:
            raise ConfigError(f"cannot make {k} clusters of {n} training queries; choose k <= {n}")
        embeddings = self._embed([row.query for row in rows])
        # A borrowed embedder (train_router's router) is about to be fine-tuned: tagging later must
        # load the pretrained encoder again, so the centroids and new queries share one space.
        self._embedder = None
        centroids, inertia = kmeans(embeddings, k, seed=self.seed)
        self.centroids = centroids.float()
        self.fitted_on = n
        self.inertia = inertia
        logger.info("clustered %d training queries into %d clusters (inertia %.3f)", n, k, inertia)
        return self

    def tag_queries(self, queries: Sequence[Query]) -> list[Tags]:
        """Tags of any queries: their ``top_m`` nearest clusters."""
        if self.centroids is None:
            raise ZooterError("ClusterTagger is not fitted: call fit() or load it with a router")
        if not queries:
            return []
        distances = torch.cdist(self._embed(queries).double(), self.centroids.double())
        nearest = distances.topk(min(self.top_m, len(self.centroids)), dim=1, largest=False).indices
        return [tuple(f"cluster-{j}" for j in row) for row in nearest.tolist()]

    def tag(self, rows: Sequence[RoutingExample]) -> list[Tags]:
        return self.tag_queries([row.query for row in rows])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "k": len(self.centroids) if self.centroids is not None else self.k,
            "k_given": self.k is not None,
            "top_m": self.top_m,
            "seed": self.seed,
            "encoder": self.encoder,
            "max_length": self.max_length,
            "fitted_on": self.fitted_on,
            "weights": TAGGER_WEIGHTS_NAME,
        }

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        if self.centroids is None:
            raise ZooterError("cannot save an unfitted ClusterTagger")
        save_file({"centroids": self.centroids.contiguous()}, str(Path(folder) / TAGGER_WEIGHTS_NAME))

    @classmethod
    def load(cls, settings: dict[str, Any], files: FolderFiles) -> ClusterTagger:
        """Rebuild a fitted tagger from its :meth:`to_dict` and the centroids in the router folder ``files``."""
        from safetensors.torch import load

        name = settings.get("weights", TAGGER_WEIGHTS_NAME)
        path = files.where(name)
        if not files.has(name):
            raise ZooterError(f"{files.folder}: the config names a cluster tagger but {name} is missing")
        data = files.read(name)
        try:
            centroids = load(data)["centroids"]
        except Exception as e:  # safetensors' own error type for a damaged file, or no such tensor
            raise ZooterError(f"{path} is not a readable tagger file: {e}") from None
        tagger = cls(
            int(settings.get("k") or len(centroids)),
            top_m=int(settings.get("top_m", 1)),
            seed=int(settings.get("seed", 0)),
            encoder=settings.get("encoder"),
            max_length=int(settings.get("max_length", 256)),
        )
        tagger.centroids = centroids
        tagger.fitted_on = int(settings.get("fitted_on", 0))
        return tagger


#: The saved taggers by the ``kind`` their ``to_dict`` records: each class's ``load(settings, files)`` rebuilds one.
TAGGER_KINDS: dict[str, Any] = {DataTagger.kind: DataTagger, ClusterTagger.kind: ClusterTagger}


def load_tagger(settings: dict[str, Any], files: FolderFiles) -> Tagger:
    """Rebuild the tagger described by ``settings`` (its ``to_dict``), with any state in the router folder ``files``.

    A tagger's ``save(folder)`` writes its state into the router folder being saved; ``load``
    reads it back through ``files`` (see :mod:`zooter.model.folder`).
    """
    kind = settings.get("kind")
    tagger_class = TAGGER_KINDS.get(kind) if isinstance(kind, str) else None
    if tagger_class is None:
        raise ZooterError(f"unknown tagger kind {kind!r} in the router config; expected one of {sorted(TAGGER_KINDS)}")
    return tagger_class.load(settings, files)


def tagger_from_spec(
    spec: str, *, encoder: str | None = None, max_length: int = 256, seed: int = 0, embedder: Any = None
) -> Tagger | None:
    """The tagger a ``LabelConfig.tags`` value names (None for ``"none"``)."""
    spec = spec.strip().lower()
    if spec == "none":
        return None
    if spec in ("data", "task", "data+task"):
        return DataTagger(use_tags=spec != "task", use_task=spec != "data")
    if spec == "cluster" or spec.startswith("cluster:"):
        k = int(spec.split(":", 1)[1]) if ":" in spec else None
        return ClusterTagger(k, seed=seed, encoder=encoder, max_length=max_length, embedder=embedder)
    raise ConfigError(f"tags={spec!r}: expected none, data, task, data+task, cluster or cluster:K")


class TagEnhancer:
    """The paper's tag-based label enhancement: ``s* = beta * s(q) + (1 - beta) * mean_t s_t``.

    ``s_t`` is the mean target of the rows ``fit`` saw with tag ``t`` (the training rows). A row
    whose tags were never seen in fitting keeps its own target. Experts a row has no reward for
    stay at 0: the tag average is renormalised over the row's rewarded experts.

    Args:
        tagger: where the tags come from.
        beta: weight of the row's own target (1: no enhancement; the paper's best is 0.3).

    Example:
        >>> from zooter.labels.targets import make_targets
        >>> targets = make_targets(train, enhancer=TagEnhancer(DataTagger(), beta=0.3))  # doctest: +SKIP
    """

    def __init__(self, tagger: Tagger, beta: float = 0.3) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        self.tagger = tagger
        self.beta = beta
        self.tag_targets: dict[str, torch.Tensor] = {}
        self.tag_counts: dict[str, int] = {}
        self._fitted: dict[str, Tags] = {}
        self._rows_tagged = 0

    def fit(self, dataset: RoutingDataset, targets: torch.Tensor) -> TagEnhancer:
        """Tag the training rows and average their targets per tag."""
        tags = self.tagger.fit(dataset).tag(dataset)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for row_tags, target in zip(tags, targets):
            for tag in row_tags:
                sums[tag] = sums.get(tag, torch.zeros_like(target)) + target
                counts[tag] = counts.get(tag, 0) + 1
        self.tag_targets = {tag: total / counts[tag] for tag, total in sums.items()}
        self.tag_counts = counts
        self._fitted = {row.id: row_tags for row, row_tags in zip(dataset, tags)}
        self._rows_tagged = sum(1 for row_tags in tags if row_tags)
        logger.info("%d of %d training rows carry one of %d tags", self._rows_tagged, len(dataset), len(counts))
        if not counts:
            logger.warning("no training row has a tag; the labels are not enhanced")
        return self

    def tags_of(self, dataset: RoutingDataset) -> list[Tags]:
        if all(row.id in self._fitted for row in dataset):  # the fitted rows: no second embedding pass
            return [self._fitted[row.id] for row in dataset]
        return self.tagger.tag(dataset)

    def transform(self, dataset: RoutingDataset, targets: torch.Tensor) -> torch.Tensor:
        """``targets`` mixed with the tag averages of each row's known tags."""
        out = targets.clone()
        for i, row_tags in enumerate(self.tags_of(dataset)):
            known = [self.tag_targets[t] for t in row_tags if t in self.tag_targets]
            if not known:
                continue
            tag_part = torch.stack(known).mean(dim=0).to(targets)
            row = dataset[i]
            if len(row.rewards) < len(dataset.experts):  # keep unrewarded experts at 0, as s(q) does
                rewarded = torch.tensor([name in row.rewards for name in dataset.experts], device=targets.device)
                tag_part = tag_part * rewarded
                total = tag_part.sum()
                if total <= 0:
                    continue
                tag_part = tag_part / total
            out[i] = self.beta * targets[i] + (1.0 - self.beta) * tag_part
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "tags",
            "beta": self.beta,
            "tagger": self.tagger.to_dict(),
            "distinct_tags": len(self.tag_counts),
            "rows_tagged": self._rows_tagged,
            "rows_fitted": len(self._fitted),
        }


def enhancer_from_config(
    config: LabelConfig, *, encoder: str | None = None, max_length: int = 256, seed: int = 0, embedder: Any = None
) -> TagEnhancer | None:
    """The :class:`TagEnhancer` a :class:`~zooter.labels.targets.LabelConfig` asks for, or None when it is off."""
    if not config.enhanced:
        return None
    tagger = tagger_from_spec(config.tags, encoder=encoder, max_length=max_length, seed=seed, embedder=embedder)
    return TagEnhancer(tagger, config.beta) if tagger is not None else None


__all__ = [
    "TAGGER_KINDS",
    "ClusterTagger",
    "DataTagger",
    "TagEnhancer",
    "Tagger",
    "default_cluster_count",
    "embed_queries",
    "enhancer_from_config",
    "kmeans",
    "load_tagger",
    "tagger_from_spec",
]
