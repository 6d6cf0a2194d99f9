"""Finding a query's nearest training queries in the neighbour bank: exact search, or a faiss index.

The bank's rows are unit vectors, so cosine similarity is an inner product. Two kinds of index
answer the same question (the ``k`` most similar rows of each query, optionally leaving one row
out per query):

- :class:`ExactIndex`: a matrix product with the whole bank, kept in the dtype it is searched in
  (float32 on CPU, float16 on CUDA). Exact, and fast enough below a few tens of thousands of rows.
- :class:`FaissIndex`: an approximate index built with faiss' ``index_factory`` for inner product,
  its type picked by the bank's size as faiss' guidelines advise (:func:`ann_factory`), and its
  search-time knob (``nprobe`` of an IVF index, ``efSearch`` of an HNSW one) tuned at build time
  to the smallest value whose measured recall@k on a sample of the bank reaches a target, from a
  floor (an IVF search probes at least :data:`MIN_NPROBE` lists and scans at least
  :data:`CANDIDATES_PER_NEIGHBOUR` rows per neighbour) and no further than recall keeps rising.
  On CUDA it runs on faiss' GPU index when faiss was built with one.

:func:`build_index` chooses between them (``"exact"``, ``"ann"`` or ``"auto"``: exact below
:data:`ANN_MIN_ROWS` rows or without faiss installed). faiss is an optional extra
(``pip install 'zooter-langchain[ann]'``), imported only here and only when an ANN index is used.

A saved ANN index (``neighbours.faiss``, written with ``faiss.write_index``) is tied to its bank by
the bank's fingerprint (a sha256 of its embeddings), recorded in ``config.json``: a bank whose
fingerprint differs is refused, and a missing index file is rebuilt from the recorded settings.

Example:
    >>> import torch
    >>> from zooter.model.index import build_index
    >>> bank = torch.nn.functional.normalize(torch.randn(1000, 32), dim=-1)
    >>> index = build_index(bank, "exact")
    >>> similarities, rows = index.search(bank[:2], 5, leave_out=torch.tensor([0, 1]))
    >>> rows.shape, bool((rows[:, 0] != torch.tensor([0, 1])).all())
    (torch.Size([2, 5]), True)
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import torch

from zooter.errors import MissingDependencyError, ZooterError, import_optional

logger = logging.getLogger(__name__)

IndexKind = Literal["exact", "ann", "auto"]
INDEX_KINDS: tuple[str, ...] = ("exact", "ann", "auto")
INDEX_NAME = "neighbours.faiss"
ANN_EXTRA = "pip install 'zooter-langchain[ann]'"
# Below this many rows one exact lookup costs less than the encoder's forward on a CPU (see
# docs/scaling.md), and an approximate index would only add an error.
ANN_MIN_ROWS = 50_000
# From here on the index stores 1 byte per dimension (SQ8) behind an HNSW coarse quantiser: a flat
# IVF would need 4 bytes per dimension and an exhaustive assignment over millions of rows.
COMPRESSED_MIN_ROWS = 2_000_000
# Decisions follow recall closely: on MiniLM embeddings of real queries (benchmarks/scale.py, 20,000
# rows) IVF agreed with exact search on 94.2 / 97.6 / 99.1 % of decisions at recall@50 0.945 / 0.975
# / 0.991, so the search setting is tuned to 0.99.
TARGET_RECALL = 0.99
TUNE_QUERIES = 500
# An IVF search scans at least this many candidate rows per neighbour asked for. Tuning measures
# recall on bank rows, which find their own near-copies in their own list; a query from outside the
# bank has its neighbours spread over more lists. At 1,000,000 rows (benchmarks/scale.py, k = 50,
# 244 rows per list) the tuned nprobe 2 (10 candidates per neighbour) agreed with exact search on
# 97.05 % of decisions, nprobe 8 (39) on 99.3 %, 16 (78) on 99.65 %.
CANDIDATES_PER_NEIGHBOUR = 32
# ... and probes at least this many lists. The test queries (none of them with copies in the bank)
# needed 32 or more: at 1,000,000 rows (IVF4096) they agreed with exact search on 97.2 / 98.6 / 99.6 %
# of decisions at nprobe 8 / 16 / 32; at 10,000,000 (IVF4096, SQ8) on 97.8 / 99.2 / 99.6 %.
MIN_NPROBE = 32
# A search setting that gains less recall than this over the previous one has reached what the
# index's codes allow (an SQ8 index blurs near-tied rows): looking further only costs time.
RECALL_PLATEAU = 0.0005
# Bank rows converted, checked, hashed or added to an index at once: a large bank is never copied
# whole (a block of 384-d rows is 96 MB as float32).
BLOCK_ROWS = 2**16
_BLOCK = 2**26  # similarities per exact search block (256 MB of float32), whatever the bank's size


class BankIndex(Protocol):
    """What the neighbour bank needs of an index: the nearest rows of each query."""

    kind: str

    def search(
        self, queries: torch.Tensor, k: int, *, leave_out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` similarities and row indices (queries x k each, most similar first).

        ``queries`` are unit vectors; ``leave_out`` holds, per query, a row it must not return
        (-1: none). Rows an approximate index could not fill have similarity ``-inf``.
        """
        ...

    def to(self, device: torch.device) -> BankIndex: ...

    def extended(self, vectors: torch.Tensor) -> BankIndex:
        """This index with ``vectors`` added after its rows (a bank that grew)."""
        ...

    def settings(self) -> dict[str, Any]: ...

    def memory_bytes(self) -> int: ...


def fingerprint(embeddings: torch.Tensor, *, blocks: Iterable[torch.Tensor] | None = None) -> str:
    """A sha256 of the bank's embeddings as saved (float16), with their shape: what an index is built from.

    Read a block of rows at a time (no copy of a large bank): ``blocks``, when given, are those
    blocks of ``embeddings`` in order (a reader that checks them on the way).
    """
    digest = hashlib.sha256(f"{tuple(embeddings.shape)}".encode())
    for block in embeddings.detach().split(BLOCK_ROWS) if blocks is None else blocks:
        digest.update(block.to("cpu", torch.float16).contiguous().view(torch.int16).numpy())
    return "sha256:" + digest.hexdigest()


class ExactIndex:
    """Exact inner-product search over the whole bank, held in the dtype it is searched in.

    The copy in that dtype is made at the first search, not before: a bank served by a faiss
    index, or one only saved, never holds it (a million float32 rows are 1.5 GB).

    Args:
        embeddings: the bank's unit vectors (rows x hidden).
    """

    kind = "exact"

    def __init__(self, embeddings: torch.Tensor) -> None:
        self.embeddings = embeddings
        self._vectors: torch.Tensor | None = None

    @property
    def vectors(self) -> torch.Tensor:
        """The rows in the dtype they are searched in (made at the first use)."""
        if self._vectors is None:
            # a CPU multiplies float32 fastest and exactly; CUDA multiplies float16 at full speed
            self._vectors = self.embeddings.to(_search_dtype(self.embeddings.device))
        return self._vectors

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def to(self, device: torch.device) -> ExactIndex:
        return self if self.embeddings.device == device else ExactIndex(self.embeddings.to(device))

    def extended(self, vectors: torch.Tensor) -> ExactIndex:
        """This index with ``vectors`` (unit rows) added after its rows."""
        return ExactIndex(torch.cat([self.embeddings, vectors.to(self.embeddings.device, self.embeddings.dtype)]))

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def memory_bytes(self) -> int:
        """The bytes of the copy searched (counted before the first search makes it too)."""
        return self.embeddings.numel() * _search_dtype(self.embeddings.device).itemsize

    def search(
        self, queries: torch.Tensor, k: int, *, leave_out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = queries.to(self.vectors.device, self.vectors.dtype)
        k = min(k, len(self))
        tops, rows = [], []
        chunk = max(1, min(1024, _BLOCK // max(1, len(self))))
        for start in range(0, len(queries), chunk):
            sims = queries[start : start + chunk] @ self.vectors.T
            if leave_out is not None:
                out = leave_out[start : start + chunk].to(sims.device)
                hit = out >= 0
                sims[hit.nonzero().squeeze(1), out[hit]] = -math.inf
            top, index = sims.topk(k, dim=-1)
            tops.append(top.float())
            rows.append(index)
        if not tops:
            return torch.empty((0, k), device=self.vectors.device), torch.empty((0, k), dtype=torch.long)
        return torch.cat(tops), torch.cat(rows)


def _faiss_reason(error: RuntimeError) -> str:
    """faiss' message in an error, without the C++ function and source file it names first."""
    line = (str(error).splitlines() or ["unknown"])[0]
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", line)


def _search_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def import_faiss() -> Any:
    """The faiss module, or :class:`MissingDependencyError` naming the extra to install."""
    return import_optional("faiss", needs="an ANN index for the neighbour bank needs faiss", install=ANN_EXTRA)


def faiss_available() -> bool:
    try:
        import_faiss()
    except MissingDependencyError:
        return False
    return True


def ann_factory(rows: int) -> str:
    """The faiss ``index_factory`` string for a bank of ``rows`` rows, after faiss' own guidelines.

    An inverted file (IVF) with about ``4 * sqrt(rows)`` lists (a power of two, with at least 39
    training rows per list as faiss asks), storing the vectors as they are; from
    :data:`COMPRESSED_MIN_ROWS` rows on, an HNSW coarse quantiser and 8-bit scalar quantisation
    (a quarter of the memory).
    """
    lists = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(rows))))
    lists = max(1, min(lists, 2 ** int(math.log2(max(1, rows // 39)))))
    if rows >= COMPRESSED_MIN_ROWS:
        return f"IVF{lists}_HNSW32,SQ8"
    return f"IVF{lists},Flat"


class FaissIndex:
    """A faiss index over the bank (inner product on unit vectors), with its tuned search setting.

    Build one with :meth:`build`; :meth:`save` and :meth:`load` write and read it with faiss' own
    ``write_index`` / ``read_index``.
    """

    kind = "faiss"

    def __init__(self, index: Any, factory: str, search_params: dict[str, int], record: dict[str, Any]) -> None:
        self.cpu_index = index
        self.index = index
        self.factory = factory
        self.search_params = dict(search_params)
        self.record = dict(record)  # what tuning measured, for config.json
        self.device = torch.device("cpu")
        self._ivf_cpu = _ivf(import_faiss(), index)
        self._apply(self.index)

    def __len__(self) -> int:
        return int(self.cpu_index.ntotal)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        embeddings: torch.Tensor,
        *,
        factory: str | None = None,
        k: int = 100,
        target_recall: float = TARGET_RECALL,
        tune_queries: int = TUNE_QUERIES,
        seed: int = 0,
    ) -> FaissIndex:
        """Build an index over ``embeddings`` (unit rows) and tune its search to ``target_recall`` at ``k``.

        Args:
            embeddings: the bank's unit vectors.
            factory: a faiss ``index_factory`` string; by default :func:`ann_factory` of the bank's size.
            k: the number of neighbours searched for, which recall is measured at.
            target_recall: the smallest search setting (from the floor up) whose recall@k reaches
                this is kept; or, if none does, the one after which recall stops rising (or the
                most thorough one).
            tune_queries: bank rows the recall is measured on (each searched with itself left out,
                as calibration searches them).
            seed: seeds the training sample and the tuning sample.
        """
        faiss = import_faiss()
        started = time.perf_counter()
        rows, dim = embeddings.shape
        factory = factory or ann_factory(rows)
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ZooterError(
                f"index factory {factory!r} is not a faiss index_factory string: {_faiss_reason(e)}"
            ) from None
        generator = torch.Generator().manual_seed(seed)

        def float32(block: torch.Tensor) -> Any:  # what faiss reads, a block at a time: no float32 copy of the bank
            return block.detach().to("cpu", torch.float32).contiguous().numpy()

        if not index.is_trained:
            ivf = _ivf(faiss, index)
            lists = ivf.nlist if ivf is not None else 256
            # 64 training rows per list is plenty for k-means; more only slows the build
            sample = torch.randperm(rows, generator=generator)[: min(rows, 64 * lists)].sort().values
            index.train(float32(embeddings[sample]))
        for block in embeddings.split(BLOCK_ROWS):
            index.add(float32(block))
        built = time.perf_counter() - started
        record = {"factory": factory, "build_seconds": round(built, 1)}
        out = cls(index, factory, {}, record)
        out._tune(embeddings, k=k, target_recall=target_recall, queries=tune_queries, generator=generator)
        logger.info(
            "faiss index %s over %d rows built in %.1fs; %s gives recall@%d %.3f on %d bank rows",
            factory,
            rows,
            built,
            out.search_params,
            k,
            out.record.get("recall", float("nan")),
            out.record.get("tune_queries", 0),
        )
        return out

    def _knob(self) -> tuple[str, list[int]] | None:
        """The search-time setting this index has, and the values to try (cheapest first)."""
        ivf = self._ivf_cpu
        if ivf is not None:
            return "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if v < ivf.nlist] + [ivf.nlist]
        if hasattr(import_faiss().downcast_index(self.cpu_index), "hnsw"):
            return "efSearch", [16, 32, 64, 128, 256, 512, 1024]
        return None  # a flat index is exact: nothing to tune

    def tune(
        self, embeddings: torch.Tensor, *, k: int, target_recall: float = TARGET_RECALL, seed: int = 0
    ) -> FaissIndex:
        """Tune the search setting again for ``k`` neighbours (e.g. once training has chosen ``k``).

        ``embeddings`` are the rows the index holds. Returns the index itself.
        """
        generator = torch.Generator().manual_seed(seed)
        queries = int(self.record.get("tune_queries") or TUNE_QUERIES)
        self._tune(embeddings, k=k, target_recall=target_recall, queries=queries, generator=generator)
        self._apply(self.index)
        return self

    def _tune(
        self, embeddings: torch.Tensor, *, k: int, target_recall: float, queries: int, generator: torch.Generator
    ) -> None:
        rows = len(embeddings)
        k = max(1, min(k, rows - 1))
        sample = torch.randperm(rows, generator=generator)[: min(rows, queries)]
        vectors = torch.nn.functional.normalize(embeddings[sample].float(), dim=-1).cpu()
        if self._knob() is None or not len(sample):
            return
        exact = ExactIndex(embeddings.cpu())
        _, truth = exact.search(vectors, k, leave_out=sample)
        self.tune_against(vectors, truth, leave_out=sample, target_recall=target_recall)

    def tune_against(
        self, vectors: torch.Tensor, truth: torch.Tensor, *, leave_out: torch.Tensor, target_recall: float
    ) -> None:
        """Tune the search setting on bank rows ``vectors`` (``leave_out``: their row numbers), whose
        exact nearest other rows are ``truth`` (rows x k): from the floor up, the first setting whose
        recall reaches ``target_recall``, or the last one before recall stops rising."""
        knob = self._knob()
        if knob is None:
            return
        k = truth.shape[1]
        name, values = knob
        least = k if name == "efSearch" else self._least_nprobe(k)
        values = [v for v in values if v >= least] or values[-1:]
        tried: list[dict[str, Any]] = []
        for value in values:
            self.search_params = {name: value}
            self._apply(self.index)
            _, found = self.search(vectors, k, leave_out=leave_out)
            recall = _recall(found, truth)
            if tried and recall - tried[-1]["recall"] < RECALL_PLATEAU:
                # no better than the last setting: keep that one
                self.search_params = {name: tried[-1][name]}
                tried.append({name: value, "recall": round(recall, 4), "plateau": True})
                break
            tried.append({name: value, "recall": round(recall, 4)})
            if recall >= target_recall:
                break
        self._apply(self.index)
        kept = next(t for t in tried if t[name] == self.search_params[name])
        self.record.update(
            recall=kept["recall"], recall_at=k, target_recall=target_recall, tune_queries=len(vectors), tried=tried
        )

    def _least_nprobe(self, k: int) -> int:
        """The fewest lists an IVF search probes: :data:`MIN_NPROBE`, or more where that many lists
        hold fewer than :data:`CANDIDATES_PER_NEIGHBOUR` rows per neighbour on average."""
        lists = self._ivf_cpu.nlist
        per_list = max(1.0, len(self) / max(1, lists))
        return max(1, min(lists, max(MIN_NPROBE, math.ceil(CANDIDATES_PER_NEIGHBOUR * k / per_list))))

    def set_search(self, **params: int) -> None:
        """Search from now on with these settings (e.g. ``nprobe=16``) instead of the tuned ones."""
        self.search_params = dict(params)
        self._apply(self.index)

    def _apply(self, index: Any) -> None:
        if not self.search_params:
            return
        faiss = import_faiss()
        space = faiss.GpuParameterSpace() if self.device.type == "cuda" else faiss.ParameterSpace()
        for name, value in self.search_params.items():
            space.set_index_parameter(index, name, value)
            if name == "nprobe" and "HNSW" in self.factory.split(",")[0]:
                # an HNSW coarse quantiser must look at least as far as the lists it returns
                space.set_index_parameter(index, "quantizer_efSearch", max(64, 2 * value))

    # -- searching ----------------------------------------------------------------------------
    def search(
        self, queries: torch.Tensor, k: int, *, leave_out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = queries.device
        wanted = min(k, len(self) - (1 if leave_out is not None else 0))
        extra = 1 if leave_out is not None else 0
        data = queries.detach().to("cpu", torch.float32).contiguous().numpy()
        if self._ivf_cpu is not None and self.index is self.cpu_index:
            # faiss' threads split the queries (mode 0), or one query's lists (mode 1): one query
            # routed alone is searched by every thread, about 40 % faster at 32 lists
            self._ivf_cpu.parallel_mode = 1 if len(data) == 1 else 0
        sims, rows = self.index.search(data, max(1, wanted + extra))
        sims, rows = torch.from_numpy(sims), torch.from_numpy(rows)
        sims = sims.masked_fill(rows < 0, -math.inf)
        if leave_out is not None:
            sims = sims.masked_fill(rows == leave_out.cpu().unsqueeze(1), -math.inf)
            sims, order = sims.topk(max(1, wanted), dim=1)
            rows = rows.gather(1, order)
        return sims.to(device), rows.clamp_min(0).to(device)

    def extended(self, vectors: torch.Tensor) -> FaissIndex:
        """A copy of this index with ``vectors`` (unit rows) added after its rows, same search setting.

        The lists and their centroids stay as trained: right for a bank that grows by a small
        share; rebuild the index (:func:`build_index`) when it has grown a lot.
        """
        faiss = import_faiss()
        index = faiss.clone_index(self.cpu_index)
        index.add(vectors.detach().to("cpu", torch.float32).contiguous().numpy())
        return FaissIndex(index, self.factory, self.search_params, self.record).to(self.device)

    def holds(self, embeddings: torch.Tensor, *, probes: int = 16) -> bool:
        """Whether this index was built over ``embeddings``: it has as many rows of the same width,
        and sampled rows, searched for, find themselves (or a row equal to them)."""
        if len(self) != len(embeddings) or int(self.cpu_index.d) != embeddings.shape[1]:
            return False
        rows = torch.randperm(len(embeddings), generator=torch.Generator().manual_seed(0))[:probes]
        vectors = torch.nn.functional.normalize(embeddings[rows].float(), dim=-1).cpu()
        _, found = self.search(vectors, 1)
        match = (torch.nn.functional.normalize(embeddings[found[:, 0].cpu()].float(), dim=-1).cpu() * vectors).sum(1)
        # an approximate index may miss a row now and then; another bank's index misses nearly all
        return bool((match > 0.98).float().mean() >= 0.75)

    # -- devices, saving ------------------------------------------------------------------
    def to(self, device: torch.device) -> FaissIndex:
        if device.type == self.device.type:
            return self
        faiss = import_faiss()
        moved = FaissIndex.__new__(FaissIndex)
        moved.__dict__.update(self.__dict__)
        if device.type == "cuda" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            moved.resources = faiss.StandardGpuResources()
            moved.index = faiss.index_cpu_to_gpu(moved.resources, device.index or 0, self.cpu_index)
            moved.device = device
            moved._apply(moved.index)
        else:  # CPU faiss: the index stays in host memory and results move to the bank's device
            moved.index, moved.device = self.cpu_index, torch.device("cpu")
        return moved

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": INDEX_NAME, "search": self.search_params, **self.record}

    def memory_bytes(self) -> int:
        faiss = import_faiss()
        return int(faiss.serialize_index(self.cpu_index).nbytes)

    def save(self, folder: Path) -> None:
        import_faiss().write_index(self.cpu_index, str(folder / INDEX_NAME))

    @classmethod
    def read(cls, file: BinaryIO, settings: dict[str, Any], *, where: Path) -> FaissIndex:
        """An index saved by :meth:`save`, streamed from ``file`` (``where``: its path, for messages):
        a chunk at a time, so loading holds the index and never a second copy of its bytes."""
        faiss = import_faiss()
        try:
            index = faiss.read_index(faiss.PyCallbackIOReader(file.read, 1 << 20))
        except RuntimeError as e:
            raise ZooterError(f"{where} is not a readable faiss index: {_faiss_reason(e)}") from None
        search = settings.get("search") or {}
        record = {key: value for key, value in settings.items() if key not in ("kind", "file", "search")}
        return cls(index, str(settings.get("factory", "")), {str(k): int(v) for k, v in search.items()}, record)


def _ivf(faiss: Any, index: Any) -> Any:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return None


def _recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float((hits.float() / truth.shape[1]).mean())


def resolve_kind(kind: str, rows: int) -> str:
    """``"exact"`` or ``"ann"``: what index ``kind`` means for a bank of ``rows`` rows (see :func:`build_index`).

    ``"auto"`` is an ANN index from :data:`ANN_MIN_ROWS` rows on when faiss is installed, exact
    search otherwise; the choice is logged.
    """
    if kind not in INDEX_KINDS:
        raise ZooterError(f"index must be one of {list(INDEX_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    if rows < ANN_MIN_ROWS:
        logger.info("index auto: exact search over %d rows (an ANN index pays from %d rows)", rows, ANN_MIN_ROWS)
        return "exact"
    if not faiss_available():
        logger.warning(
            "index auto: exact search over %d rows, since faiss is not installed (%s for an ANN index)", rows, ANN_EXTRA
        )
        return "exact"
    logger.info("index auto: a faiss ANN index over %d rows", rows)
    return "ann"


def build_index(
    embeddings: torch.Tensor,
    kind: str = "auto",
    *,
    k: int = 100,
    factory: str | None = None,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
) -> BankIndex:
    """The index to search ``embeddings`` (unit rows) with.

    Args:
        embeddings: the bank's unit vectors.
        kind: ``"exact"``; ``"ann"`` (a faiss index: :class:`MissingDependencyError` without faiss);
            or ``"auto"``: an ANN index from :data:`ANN_MIN_ROWS` rows on when faiss is installed,
            exact search otherwise. The choice is logged.
        k: the number of neighbours the bank searches for (the ANN index is tuned at it).
        factory: a faiss ``index_factory`` string instead of the one chosen by size.
        target_recall: recall@k the ANN index's search setting is tuned to reach.
        seed: seeds the ANN index's training and tuning samples.
    """
    if resolve_kind(kind, len(embeddings)) == "exact":
        return ExactIndex(embeddings)
    return FaissIndex.build(embeddings, factory=factory, k=k, target_recall=target_recall, seed=seed).to(
        embeddings.device
    )


__all__ = [
    "ANN_MIN_ROWS",
    "INDEX_KINDS",
    "INDEX_NAME",
    "BankIndex",
    "ExactIndex",
    "FaissIndex",
    "ann_factory",
    "build_index",
    "fingerprint",
    "import_faiss",
    "resolve_kind",
]
