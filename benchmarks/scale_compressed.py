"""A bank too large to hold as vectors: a compressed faiss index built chunk by chunk, against exact search.

The scaling issue's stretch (10,000,000 rows, a compressed index, <= 4 GB resident) does not fit
``benchmarks/scale.py``, which holds the whole bank as float16 vectors (and float32 copies while it
builds). Here the vectors live only in the faiss index: ``--rows`` rows are generated in chunks of
``--chunk`` (real MiniLM embeddings of llmrouter_9model's training queries plus seeded noise, as in
``scale.py``: row ``i`` is query ``i mod 5,608``'s embedding at cosine about 0.9; each chunk
reproducible from its seed), the index (``--factory``, default what ``ann_factory`` picks) is
trained on a sample of the first chunk and then fed chunk by chunk, and exact search is done the
same way (each chunk generated again, top-k merged), so neither needs the bank in memory at once.

Measured: build time; the index's size and the process's peak resident memory (``ru_maxrss``);
one query's lookup (median over ``--timed`` test queries) and 64 queries', against the bare encoder
forward of one query; the search setting (``nprobe``) tuned on 200 bank rows by the library's own
tuner (``FaissIndex.tune_against``: from its floor, to recall@k 0.99 or where recall stops
rising); recall@k and decision agreement with exact search on 1,000 queries (the 500
test queries and 500 fresh noisy copies of training queries) under a decision rule and ``k``
calibrated by ``fit_bank`` on the first 100,000 rows. Memory twice: ``peak_rss_mb``, the whole
benchmark's peak (the build, the exact searches, the encoder); ``serving_rss_mb``, a fresh process
that only loads the saved index, holds a float16 reward per row and expert and searches. With
``--serve``, the whole router is also saved as a router folder (the bank's float16 rows, rewards
and targets, the index, the rule) and loaded and routed by a fresh process
(``scale.py --serve``'s): what a router folder of this size costs to serve.

Usage::

    python benchmarks/scale_compressed.py --rows 3000000 --json
    python benchmarks/scale_compressed.py --rows 10000000 --factory IVF4096_HNSW32,SQ8 --serve --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy
import torch
from _common import SHARED_DATA
from routing_throughput import bare_forward
from scale import agreement, make_bank_rows, noisy, read, source_embeddings, timed_ms

from zooter.decide.policy import decide
from zooter.labels.targets import LabelConfig, make_targets, reward_tensor
from zooter.model.index import TARGET_RECALL, FaissIndex, ann_factory, import_faiss
from zooter.model.neighbours import NeighbourBank
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, fit_bank

LLMROUTER = SHARED_DATA / "llmrouter_9model"


def chunk(c: int, size: int, rows: int, embedded: torch.Tensor, seed: int) -> torch.Tensor:
    """Rows ``c*size`` to ``(c+1)*size`` of the bank (float32 unit vectors), from chunk ``c``'s own seed."""
    start = c * size
    source = torch.arange(start, min(rows, start + size)) % len(embedded)
    return noisy(embedded[source], torch.Generator().manual_seed(seed * 1_000_003 + c))


def exact_top(queries: torch.Tensor, k: int, chunks: int, make) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` (similarities, rows) of ``queries`` over the chunked bank."""
    best_s = torch.full((len(queries), k), -math.inf)
    best_i = torch.zeros((len(queries), k), dtype=torch.long)
    offset = 0
    for c in range(chunks):
        block = make(c)
        sims = queries @ block.T
        top_s, top_i = sims.topk(min(k, block.shape[0]), dim=1)
        merged_s = torch.cat([best_s, top_s], 1)
        merged_i = torch.cat([best_i, top_i + offset], 1)
        best_s, order = merged_s.topk(k, dim=1)
        best_i = merged_i.gather(1, order)
        offset += block.shape[0]
    return best_s, best_i


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float((hits.float() / truth.shape[1]).mean())


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SERVE = """
import sys, faiss, numpy
index = faiss.read_index(sys.argv[1])
faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(sys.argv[3]))
rows, experts = index.ntotal, int(sys.argv[4])
rewards = numpy.ones((rows, experts), dtype=numpy.float16)  # what routing needs besides the index
queries = numpy.load(sys.argv[2])
for start in range(0, len(queries), 64):
    index.search(queries[start : start + 64], int(sys.argv[5]))
# VmHWM: this program's own peak (ru_maxrss would keep the parent's across fork and exec)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""


def serving_mb(index_path: Path, queries: torch.Tensor, nprobe: int, experts: int, k: int) -> float:
    """Peak resident memory (MB) of a fresh process that loads the index, holds a float16 reward per
    row and expert, and searches ``queries``: what serving the bank needs, without the build's copies."""
    query_path = index_path.with_suffix(".npy")
    numpy.save(query_path, queries.numpy())
    args = [str(index_path), str(query_path), str(nprobe), str(experts), str(k)]
    out = subprocess.run([sys.executable, "-c", SERVE, *args], check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def serve_folder(args, ann: FaissIndex, make, chunks: int, train, texts, k, rule, averaging) -> dict:
    """Saves the whole router (the bank's float16 rows, rewards and targets, the index, the rule)
    as ``zooter train`` would, then ``scale.py``'s fresh serving process loads it and routes
    ``texts`` one by one: the folder's load time and that process's own memory."""
    from scale import save_router, serve_saved

    rows = args.rows
    embeddings = torch.empty((rows, ann.index.d), dtype=torch.float16)
    for c in range(chunks):
        block = make(c)
        embeddings[c * args.chunk : c * args.chunk + block.shape[0]] = block.half()
    source = torch.arange(rows) % len(train)
    rewards, targets = reward_tensor(train)[source], make_targets(train, LabelConfig())[source]
    bank = NeighbourBank(embeddings, rewards, targets, k=k, **averaging)
    del embeddings, rewards, targets, source
    bank.index = ann
    router = ZooterRouter.from_encoder(experts=train.experts, device="cpu")
    router.bank = bank
    router.config.decision, router.config.neighbours = rule, bank.settings()
    saved = save_router(router, args.serve_folder)
    del router, bank  # the serving process alone holds the bank now
    return serve_saved(*saved, texts, args.serve_folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--factory", help="faiss index_factory string (default: ann_factory's pick)")
    parser.add_argument("--timed", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--serve", action="store_true", help="also save the whole router and load and route it in a fresh process"
    )
    parser.add_argument("--serve-folder", help="with --serve: save the router there and keep it")
    parser.add_argument(
        "--nprobe", type=lambda v: [int(x) for x in v.split(",")], default=[], help="also sweep these nprobe values"
    )
    args = parser.parse_args()
    faiss = import_faiss()
    torch.manual_seed(args.seed)
    train, test = read(LLMROUTER / "train.jsonl.gz"), read(LLMROUTER / "test.jsonl.gz")
    router = ZooterRouter.from_encoder(experts=train.experts, device="cpu")
    embedded = source_embeddings(router, train, test)
    base = torch.nn.functional.normalize(embedded["train"].float(), dim=-1)
    chunks = math.ceil(args.rows / args.chunk)

    def make(c: int) -> torch.Tensor:
        return chunk(c, args.chunk, args.rows, base, args.seed)

    # k and the decision rule, calibrated as training does on the first 100,000 rows
    prefix = min(args.rows, 100_000)
    first, prefix_rows = make_bank_rows(prefix, train, embedded["train"], random_vectors=False, seed=args.seed)
    config = TrainingConfig(index="exact", show_progress=False, seed=args.seed)
    fit = fit_bank(first, prefix_rows, make_targets(prefix_rows, LabelConfig()), config)
    k, rule = fit.bank.k, fit.rule
    averaging = {"temperature": fit.bank.temperature, "shrinkage": fit.bank.shrinkage}
    del first, fit
    print(f"k={k}, rule calibrated on {prefix} rows", flush=True)

    factory = args.factory or ann_factory(args.rows)
    started = time.perf_counter()
    index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    lists = faiss.extract_index_ivf(index).nlist
    sample = make(0)[: min(args.chunk, 64 * lists)]
    if sample.shape[0] < 39 * lists:
        sample = torch.cat([make(c) for c in range(math.ceil(39 * lists / args.chunk))])[: 64 * lists]
    index.train(sample.numpy())
    del sample
    trained = time.perf_counter() - started
    for c in range(chunks):
        index.add(make(c).numpy())
        print(f"added chunk {c + 1}/{chunks} ({index.ntotal} rows, {time.perf_counter() - started:.0f}s)", flush=True)
    build_s = time.perf_counter() - started
    scratch = Path(tempfile.mkdtemp(prefix="zooter-scale-"))
    index_path = scratch / "bank.faiss"
    faiss.write_index(index, str(index_path))  # a file, not a serialised copy in memory
    index_mb = index_path.stat().st_size / 2**20

    # the search setting, tuned as training tunes it: recall@k on bank rows searched with themselves left out
    generator = torch.Generator().manual_seed(args.seed + 2)
    tune_rows = torch.randint(0, args.rows, (200,), generator=generator).sort().values
    parts = []  # each chunk generated once; rows copied out, so that no view keeps a whole chunk alive
    for c in sorted({int(r) // args.chunk for r in tune_rows}):
        block = make(c)
        parts.extend(block[int(r) % args.chunk].clone() for r in tune_rows if int(r) // args.chunk == c)
        del block
    tune_vectors = torch.stack(parts)
    _, truth = exact_top(tune_vectors, k + 1, chunks, make)
    truth = torch.stack([t[t != r][:k] for t, r in zip(truth, tune_rows)])
    ann = FaissIndex(index, factory, {}, {})
    ann.tune_against(tune_vectors, truth, leave_out=tune_rows, target_recall=TARGET_RECALL)
    tried = ann.record["tried"]
    tried_nprobe = ann.search_params["nprobe"]
    print(f"tuned: {tried}", flush=True)

    # agreement with exact search on 1,000 queries
    copies = torch.randint(0, len(train), (500,), generator=generator)
    queries = torch.cat([embedded["test"].float(), noisy(base[copies], generator)])
    queries = torch.nn.functional.normalize(queries, dim=-1)
    exact_s, exact_i = exact_top(queries, k, chunks, make)
    ann_s, ann_i = ann.search(queries, k)
    # the bank's rewards and targets (its vectors are in the index): row i is query i mod 5,608's
    rewards, targets = reward_tensor(train), make_targets(train, LabelConfig())
    bank = NeighbourBank(torch.ones(len(train), 1), rewards, targets, k=k, shrinkage=3.0)
    exact_choice = decide(bank.average(exact_s, exact_i % len(train)).scores, train.experts, rule)

    def agreement_with_exact(sims: torch.Tensor, rows: torch.Tensor) -> dict[str, float]:
        choice = decide(bank.average(sims, rows % len(train)).scores, train.experts, rule)
        return agreement(choice, exact_choice, len(embedded["test"]))

    shares = agreement_with_exact(ann_s, ann_i)
    sweep = []
    for nprobe in args.nprobe:
        ann.set_search(nprobe=nprobe)
        sims, rows = ann.search(queries, k)
        one = statistics.median(timed_ms(ann.search, q.unsqueeze(0), k) for q in queries[: args.timed])
        sweep.append({"nprobe": nprobe, "agreement": agreement_with_exact(sims, rows), "lookup_b1_ms": round(one, 3)})
        print(f"nprobe {nprobe}: {sweep[-1]}", flush=True)
    ann.set_search(nprobe=tried_nprobe)

    # timings: one query's lookup and 64 queries', against the bare encoder forward
    one = [timed_ms(index.search, q.unsqueeze(0).numpy(), k) for q in queries[: args.timed]]
    batch = timed_ms(index.search, queries[:64].numpy(), k, repeats=3)
    forward = []
    for text in test.texts[: args.timed]:
        run = bare_forward(router, [text], 1)
        run()
        forward.append(timed_ms(run, repeats=2))
    result = {
        "rows": args.rows,
        "bank": "MiniLM embeddings of llmrouter_9model train + noise (cosine 0.9), generated in chunks",
        "factory": factory,
        "k": k,
        "search": {**ann.search_params, "recall": ann.record["recall"]},
        "tried": tried,
        "train_s": round(trained, 1),
        "build_s": round(build_s, 1),
        "index_mb": round(index_mb, 1),
        "peak_rss_mb": round(peak_mb(), 1),
        "serving_rss_mb": round(serving_mb(index_path, queries, ann.search_params["nprobe"], len(train.experts), k), 1),
        "lookup_b1_ms": round(statistics.median(one), 3),
        "lookup_b64_ms": round(batch, 2),
        "encoder_b1_ms": round(statistics.median(forward), 2),
        "recall_at_k": round(recall(ann_i, exact_i), 4),
        "agreement": shares["all"],
        "agreement_test": shares["test"],
        "agreement_copies": shares["copies"],
        "sweep": sweep,
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }
    if args.serve:
        del exact_s, exact_i, ann_s, ann_i
        result["serve"] = serve_folder(args, ann, make, chunks, train, test.texts[: args.timed], k, rule, averaging)
    shutil.rmtree(scratch)
    result["lookup_share_of_forward"] = round(result["lookup_b1_ms"] / result["encoder_b1_ms"], 3)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
