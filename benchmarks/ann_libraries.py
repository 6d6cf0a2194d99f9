"""Which ANN library the neighbour bank uses: faiss, usearch and hnswlib on the same vectors and CPU.

Builds each index over ``--rows`` clustered unit vectors (seeded: ``--clusters`` random unit centres,
each row a centre plus Gaussian noise, renormalised; cosine to its centre about 0.8, as real query
embeddings of one topic are), then answers ``--queries`` fresh vectors from the same distribution
at ``k`` = 100 and measures, for each setting of the search-time knob (faiss IVF ``nprobe``, HNSW
``ef``): recall@100 against exact search, the time of one query and of a batch of 64, the build
time and the index's size. All libraries use the same number of threads (``--threads``, default
all cores).

Usage::

    python benchmarks/ann_libraries.py --rows 200000 --json

Prints one JSON object (``--json``) or a markdown table. Needs ``faiss-cpu``, ``usearch`` and
``hnswlib`` (``pip install faiss-cpu usearch hnswlib``); a missing one is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

K = 100


def clustered(rows: int, clusters: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = math.sqrt((1 / 0.8**2 - 1) / dim)  # cosine to the centre about 0.8
    out = centres[rng.integers(0, clusters, rows)] + sigma * rng.standard_normal((rows, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def timed(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(ms for one query, median over 100; ms for a batch of 64, best of 5; ids of all queries)."""
    ids = search(queries)
    single = []
    for row in queries[:100]:
        start = time.perf_counter()
        search(row[None])
        single.append(time.perf_counter() - start)
    batch = []
    for _ in range(5):
        start = time.perf_counter()
        search(queries[:64])
        batch.append(time.perf_counter() - start)
    return 1000 * statistics.median(single), 1000 * min(batch), ids


def size_mb(write: Callable[[str], None]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index")
        write(path)
        return os.path.getsize(path) / 2**20


def run_faiss(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[dict[str, Any]]:
    import faiss

    faiss.omp_set_num_threads(threads)
    out = []
    nlist = 1 << round(math.log2(4 * math.sqrt(len(data))))
    for factory, knob, values in (
        (f"IVF{nlist},Flat", "nprobe", (8, 16, 32, 64)),
        (f"IVF{nlist},SQ8", "nprobe", (16, 32, 64)),
        ("HNSW32,Flat", "efSearch", (128, 256)),
    ):
        index = faiss.index_factory(data.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        index.train(data)
        index.add(data)
        build = time.perf_counter() - start
        mb = size_mb(lambda path, index=index: faiss.write_index(index, path))
        for value in values:
            if knob == "nprobe":
                index.nprobe = value
            else:
                index.hnsw.efSearch = value
            b1, b64, ids = timed(lambda q, index=index: index.search(q, K)[1], queries)
            out.append(_row("faiss " + faiss.__version__, factory, f"{knob}={value}", build, b1, b64, ids, truth, mb))
    return out


def run_hnswlib(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[dict[str, Any]]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])
    start = time.perf_counter()
    index.init_index(max_elements=len(data), M=16, ef_construction=200)
    index.set_num_threads(threads)
    index.add_items(data)
    build = time.perf_counter() - start
    mb = size_mb(index.save_index)
    out = []
    for ef in (128, 256):
        index.set_ef(ef)
        b1, b64, ids = timed(lambda q: index.knn_query(q, k=K)[0], queries)
        version = getattr(hnswlib, "__version__", "")
        out.append(_row(f"hnswlib {version}".strip(), "M=16,efC=200", f"ef={ef}", build, b1, b64, ids, truth, mb))
    return out


def run_usearch(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[dict[str, Any]]:
    import usearch
    from usearch.index import Index

    out = []
    for dtype in ("f32", "i8"):
        index = Index(ndim=data.shape[1], metric="ip", dtype=dtype, connectivity=16, expansion_add=200)
        start = time.perf_counter()
        index.add(np.arange(len(data)), data, threads=threads)
        build = time.perf_counter() - start
        mb = size_mb(index.save)
        for ef in (128, 256):
            index.expansion_search = ef

            def search(q: np.ndarray, index: Any = index) -> np.ndarray:
                keys = index.search(q, K, threads=threads).keys
                return keys.reshape(len(q), -1)

            b1, b64, ids = timed(search, queries)
            out.append(
                _row(
                    f"usearch {usearch.__version__}",
                    f"M=16,efC=200,{dtype}",
                    f"ef={ef}",
                    build,
                    b1,
                    b64,
                    ids,
                    truth,
                    mb,
                )
            )
    return out


def _row(library: str, index: str, knob: str, build: float, b1: float, b64: float, ids: Any, truth: Any, mb: float):
    return {
        "library": library,
        "index": index,
        "search": knob,
        "build_s": round(build, 1),
        "query_b1_ms": round(b1, 3),
        "query_b64_ms": round(b64, 2),
        "recall_at_100": round(recall(np.asarray(ids), truth), 4),
        "index_mb": round(mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--libraries", default="faiss,usearch,hnswlib")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    data = clustered(args.rows + args.queries, args.clusters, args.dim, args.seed)
    data, queries = data[: args.rows], data[args.rows :]
    sims = torch.from_numpy(queries) @ torch.from_numpy(data).T
    truth = sims.topk(K, dim=1).indices.numpy()
    bank = torch.from_numpy(data)
    exact_b1 = timed(lambda q: (torch.from_numpy(q) @ bank.T).topk(K, dim=1).indices.numpy(), queries)[0]
    rows: list[dict[str, Any]] = []
    runners = {"faiss": run_faiss, "usearch": run_usearch, "hnswlib": run_hnswlib}
    for name in args.libraries.split(","):
        try:
            rows += runners[name](data, queries, truth, args.threads)
        except ImportError as e:
            rows.append({"library": name, "skipped": str(e)})
    result = {
        "rows": args.rows,
        "dim": args.dim,
        "clusters": args.clusters,
        "queries": args.queries,
        "k": K,
        "threads": args.threads,
        "exact_torch_b1_ms": round(exact_b1, 3),
        "results": rows,
    }
    if args.json:
        print(json.dumps(result))
    print(
        f"\n{args.rows:,} clustered unit vectors, {args.dim}-d, k = {K}, {args.threads} threads; "
        f"exact search (torch fp32 matmul + topk): {exact_b1:.1f} ms for one query\n"
    )
    print("| library | index | search | build s | 1 query ms | 64 queries ms | recall@100 | index MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['library']} | skipped: {r['skipped']} | | | | | | |")
            continue
        print(
            f"| {r['library']} | {r['index']} | {r['search']} | {r['build_s']} | {r['query_b1_ms']} | "
            f"{r['query_b64_ms']} | {r['recall_at_100']} | {r['index_mb']} |"
        )


if __name__ == "__main__":
    main()
