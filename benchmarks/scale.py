"""Routing and training at scale: a neighbour bank of ``--rows`` rows, searched exactly and through faiss.

**Part 1: the bank.** The bank's rows are *real MiniLM embeddings plus small noise*: the bundled
all-MiniLM-L6-v2 embeds the 5,608 training queries of ``../shared/data/llmrouter_9model`` (cached
in ``.benchmarks/``), and row ``i`` is query ``i mod 5,608``'s embedding plus seeded Gaussian noise
(cosine about 0.9 to the query's own), renormalised, with that query's rewards for the 9 models.
With ``--random`` the rows are seeded random unit vectors instead (rewards still the queries').
The queries routed are the set's 500 real test queries.

Then, for each index kind (``exact``; the ANN kinds ``ivf`` (IVF, flat vectors), ``ivf-sq8``
(IVF, 8-bit vectors), ``hnsw`` (faiss HNSW32, only with ``--kinds``); and ``auto``, whatever
``zooter train`` picks at this size):

- ``encoder_b1_ms``: the bare encoder forward of one pre-tokenised query (median over the queries);
- ``route_b1_ms`` / ``route_b64_ms``: ``router.route`` of one query (median) / of 64 queries (best
  of 3), tokenising, encoder, index search, averaging and decision included;
- ``route_over_forward``: one query's route time over its bare encoder forward, the two timed in
  turn query by query (the fastest of ``--repeats`` each), median over the queries: what the
  lookup and the rest of routing add, measured so that load which comes and goes slows both alike;
- ``agreement``: the share of queries (the 500 test queries' embeddings plus 1,500 fresh noisy
  copies of training queries) whose decision equals exact search's, under the calibrated rule;
  ``agreement_test``: the same share among the 500 test queries alone (the harder part: the bank
  holds near-copies of every training query, and none of a test query);
- ``build_s``, ``index_mb``, and the tuned search setting with its measured recall;
- ``calibrate_s``: what ``zooter train`` does after the encoder pass (:func:`zooter.training.fit_bank`:
  index ``auto``, the leave-one-out calibration sample, the k sweep, the decision rule),
  split into ``index_s`` and ``calibration_s``; ``bank_mb``: embeddings, rewards and targets;
- with ``--serve``: the router saved (bank and ``auto`` index) and loaded by a fresh process that
  routes the timed queries one by one: its load time, its own memory after loading and after
  routing (``VmHWM`` its peak, ``RssAnon`` what it owns, ``RssFile`` file pages it maps, which the
  system can take back), one query's route time.

Prints one JSON object with ``--json``, then a markdown table.

**Part 2: ``zooter score`` local vs Ray** (``score_part``, through ``benchmarks/score_engines.py``):
the wall time of ``zooter score`` with a tiny reward model on ``--score-pairs`` real arena-bench
pairs, ``--engine local`` against ``--engine ray --workers 2``, and whether their rewards agree.

Usage::

    python benchmarks/scale.py --rows 100000 --json
    python benchmarks/scale.py --rows 1000000 --kinds exact,ivf,ivf-sq8,auto --json
    python benchmarks/scale.py --rows 1000000 --kinds exact,auto --score-pairs 0 --serve --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import SHARED_DATA, machine
from routing_throughput import bare_forward

from zooter.data import RoutingDataset, RoutingExample
from zooter.decide.policy import decide
from zooter.labels.targets import LabelConfig, make_targets
from zooter.model.index import ExactIndex, FaissIndex, ann_factory, build_index
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, fit_bank

LLMROUTER = SHARED_DATA / "llmrouter_9model"
CACHE = Path(__file__).resolve().parents[1] / ".benchmarks" / "scale-minilm-llmrouter.safetensors"
AGREEMENT_QUERIES = 2000
NOISE_COSINE = 0.9


def read(path: Path) -> RoutingDataset:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [RoutingExample.from_dict(json.loads(line)) for line in f if line.strip()]
    return RoutingDataset(rows, source=str(path))


def source_embeddings(router: ZooterRouter, train: RoutingDataset, test: RoutingDataset) -> dict[str, torch.Tensor]:
    """MiniLM embeddings of the training and test queries (computed once, then read from the cache)."""
    from safetensors.torch import load_file, save_file

    if CACHE.is_file():
        cached = load_file(str(CACHE))
        if cached["train"].shape[0] == len(train) and cached["test"].shape[0] == len(test):
            return cached
    embedded = {
        "train": router.embed_queries(train.texts, batch_size=32, show_progress=True).cpu(),
        "test": router.embed_queries(test.texts, batch_size=32, show_progress=True).cpu(),
    }
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    save_file(embedded, str(tmp))
    tmp.replace(CACHE)
    return embedded


def noisy(vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors at cosine about ``NOISE_COSINE`` to ``vectors``."""
    dim = vectors.shape[1]
    sigma = math.sqrt((1 / NOISE_COSINE**2 - 1) / dim)
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return torch.nn.functional.normalize(unit + sigma * torch.randn(unit.shape, generator=generator), dim=-1)


def make_bank_rows(
    rows: int, train: RoutingDataset, embedded: torch.Tensor, *, random_vectors: bool, seed: int
) -> tuple[torch.Tensor, RoutingDataset]:
    """``rows`` bank embeddings (float16) and a dataset with the rewards and tasks of their source queries."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.arange(rows) % len(train)
    out = torch.empty((rows, embedded.shape[1]), dtype=torch.float16)
    for start in range(0, rows, 100_000):
        part = source[start : start + 100_000]
        if random_vectors:
            block = torch.randn(len(part), embedded.shape[1], generator=generator)
            block = torch.nn.functional.normalize(block, dim=-1)
        else:
            block = noisy(embedded[part], generator)
        out[start : start + len(part)] = block.half()
    examples = train.examples
    dataset = RoutingDataset(
        [
            RoutingExample(id=f"r{i}", query="", rewards=examples[s].rewards, task=examples[s].task)
            for i, s in enumerate(source.tolist())
        ],
        experts=train.experts,
    )
    return out, dataset


def timed_ms(fn, *args, repeats: int = 1, **kwargs) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def paired_ms(router: ZooterRouter, texts: list[str], repeats: int) -> tuple[list[float], list[float]]:
    """Each text's ``router.route`` time (ms) and its ratio to the text's bare encoder forward, the
    two timed in turn ``repeats`` times, the fastest of each kept."""
    routes, ratios = [], []
    for text in texts:
        forward = bare_forward(router, [text], 1)
        forward()
        best_forward = best_route = math.inf
        for _ in range(repeats):
            best_forward = min(best_forward, timed_ms(forward))
            best_route = min(best_route, timed_ms(router.route, [text]))
        routes.append(best_route)
        ratios.append(best_route / best_forward)
    return routes, ratios


def ann_kind(kind: str, rows: int) -> str:
    """The faiss factory string of a benchmark ANN kind at ``rows`` rows."""
    ivf = ann_factory(rows).split(",")[0].split("_")[0]  # "IVF4096"
    return {"ivf": f"{ivf},Flat", "ivf-sq8": f"{ivf},SQ8", "hnsw": "HNSW32,Flat"}[kind]


def bank_part(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    train = read(Path(args.data) / "train.jsonl.gz")
    test = read(Path(args.data) / "test.jsonl.gz")
    router = ZooterRouter.from_encoder(experts=train.experts, device="cpu")
    embedded = source_embeddings(router, train, test)
    embeddings, dataset = make_bank_rows(
        args.rows, train, embedded["train"], random_vectors=args.random, seed=args.seed
    )
    targets = make_targets(dataset, LabelConfig())
    config = TrainingConfig(index="auto", show_progress=False, seed=args.seed)

    started = time.perf_counter()
    fit = fit_bank(embeddings, dataset, targets, config)
    calibrate_s = time.perf_counter() - started
    rule, bank = fit.rule, fit.bank
    auto_index = bank.index
    bank_mb = sum(t.numel() * t.element_size() for t in bank.tensors().values()) / 2**20
    print(f"fit_bank: {calibrate_s:.1f}s ({fit.summary}); k={bank.k}", flush=True)

    generator = torch.Generator().manual_seed(args.seed + 1)
    copies = torch.randint(0, len(train), (AGREEMENT_QUERIES - len(test),), generator=generator)
    queries = torch.cat([embedded["test"], noisy(embedded["train"][copies], generator)])
    texts = args.texts = test.texts

    encoder_b1 = []
    for text in texts[: args.timed]:
        run = bare_forward(router, [text], 1)
        run()
        encoder_b1.append(timed_ms(run, repeats=args.repeats))
    result: dict[str, Any] = {
        "rows": args.rows,
        "bank": "random unit vectors" if args.random else "MiniLM embeddings of llmrouter_9model train + noise",
        "k": bank.k,
        "encoder_b1_ms": round(statistics.median(encoder_b1), 2),
        "route_b1_ms": {},
        "route_b64_ms": {},
        "route_over_forward": {},
        "agreement": {},
        "agreement_test": {},
        "build_s": {},
        "index_mb": {},
        "search": {},
        "calibrate_s": round(calibrate_s, 1),
        "index_s": fit.summary["index_seconds"],
        "calibration_s": fit.summary["calibration_seconds"],
        "calibration": {key: rule.calibration.get(key) for key in ("rows", "standard_error", "gain", "sample")},
        "bank_mb": round(bank_mb, 1),
        "machine": machine(),
    }
    exact_choice: list[int] | None = None
    for kind in args.kinds.split(","):
        if kind == "auto":
            index = auto_index
            result["auto"] = auto_index.settings().get("factory", "exact")
            build = fit.summary["index_seconds"]
        elif kind == "exact":
            start = time.perf_counter()
            index = build_index(bank.embeddings, "exact")
            build = time.perf_counter() - start
        else:
            start = time.perf_counter()
            index = FaissIndex.build(bank.embeddings, factory=ann_kind(kind, args.rows), k=bank.k, seed=args.seed)
            build = time.perf_counter() - start
        bank.index = index
        router.bank = bank
        choice = decide(bank.estimate(queries).scores, train.experts, rule)
        if kind == "exact":
            exact_choice = choice
        if exact_choice is not None:
            shares = agreement(choice, exact_choice, len(test))
            result["agreement"][kind], result["agreement_test"][kind] = shares["all"], shares["test"]
        router.route(texts[:2])  # warm-up
        single, ratios = paired_ms(router, texts[: args.timed], args.repeats)
        result["route_b1_ms"][kind] = round(statistics.median(single), 2)
        result["route_over_forward"][kind] = round(statistics.median(ratios), 3)
        result["route_b64_ms"][kind] = round(timed_ms(router.route, texts[:64], batch_size=64, repeats=3), 1)
        result["build_s"][kind] = round(build, 1)
        result["index_mb"][kind] = round(index.memory_bytes() / 2**20, 1)
        settings = index.settings()
        if not isinstance(index, ExactIndex):
            found = {"factory": settings["factory"], **settings["search"], "recall": settings.get("recall")}
            result["search"][kind] = found
        print(
            f"{kind}: route b1 {result['route_b1_ms'][kind]} ms, b64 {result['route_b64_ms'][kind]} ms, "
            f"agreement {result['agreement'].get(kind)}",
            flush=True,
        )
        if args.nprobe and isinstance(index, FaissIndex):
            result.setdefault("sweep", {})[kind] = nprobe_sweep(args, router, bank, index, queries, exact_choice, rule)
        if kind != "auto":
            del index
            bank.index = auto_index
    if args.serve:
        router.config.decision, router.config.neighbours = rule, bank.settings()
        result["serve"] = serve_part(router, texts[: args.timed], args.serve_folder)
    return result


SERVE = """
import json, sys, statistics, time
from zooter.model.router import ZooterRouter

def status():
    fields = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    lines = [line.split() for line in open("/proc/self/status") if line.split(":")[0] in fields]
    return {line[0].rstrip(":"): round(int(line[1]) / 1024, 1) for line in lines}

started = time.perf_counter()
router = ZooterRouter.from_pretrained(sys.argv[1], device="cpu")
loaded = {"load_s": round(time.perf_counter() - started, 1), **status()}
texts = json.loads(sys.argv[2])
router.route(texts[:2])
times = []
for text in texts:
    start = time.perf_counter()
    router.route([text])
    times.append(1000 * (time.perf_counter() - start))
route_b1 = round(statistics.median(times), 2)
print(json.dumps({"after_load_mb": loaded, "after_routing_mb": status(), "route_b1_ms": route_b1}))
"""


def serve_part(router: ZooterRouter, texts: list[str], keep: str | None) -> dict[str, Any]:
    """Saves the router (bank and ``auto`` index), then a fresh process loads it with
    ``from_pretrained`` and routes ``texts`` one by one: the folder's load time, that process's own
    memory (``VmHWM`` its peak; ``RssAnon`` what it owns; ``RssFile`` file pages mapped, which the
    system can take back) and one query's route time. ``keep``: save there and keep it."""
    return serve_saved(*save_router(router, keep), texts, keep)


def save_router(router: ZooterRouter, keep: str | None) -> tuple[Path, dict[str, Any]]:
    """The folder ``router`` was saved in (``keep``, or a temporary one), and the save's figures."""
    import tempfile

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="scale-serve-")) / "router"
    start = time.perf_counter()
    router.save_pretrained(folder)
    saved = time.perf_counter() - start
    files = {p.name: round(p.stat().st_size / 2**20, 1) for p in folder.iterdir() if p.stat().st_size > 2**20}
    return folder, {"save_s": round(saved, 1), "files_mb": files}


def serve_saved(folder: Path, figures: dict[str, Any], texts: list[str], keep: str | None) -> dict[str, Any]:
    """Loads and routes the router saved in ``folder`` in a fresh process (see :func:`serve_part`)."""
    import shutil
    import subprocess
    import sys

    try:
        out = subprocess.run(
            [sys.executable, "-c", SERVE, str(folder), json.dumps(texts)], check=True, capture_output=True, text=True
        )
        served = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if not keep:
            shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"serve: {figures}; {served}", flush=True)
    return {**figures, **served}


def agreement(choice: list[int], exact_choice: list[int], tests: int) -> dict[str, float]:
    """The share of decisions equal to exact search's: of ``all`` queries, of the first ``tests``
    (the real ``test`` queries, which unlike the fresh copies have no near-copies in the bank), and
    of the fresh ``copies`` after them."""
    same = [a == b for a, b in zip(choice, exact_choice)]
    return {
        "all": round(sum(same) / len(same), 4),
        "test": round(sum(same[:tests]) / tests, 4),
        "copies": round(sum(same[tests:]) / max(1, len(same) - tests), 4),
    }


def nprobe_sweep(args, router, bank, index, queries, exact_choice, rule) -> list[dict[str, Any]]:
    """Agreement with exact search and one query's route time at each ``--nprobe`` value (the tuned
    setting restored after): how far the tuned setting is from the one the decisions need."""
    tuned = dict(index.search_params)
    texts = args.texts
    rows = []
    for nprobe in args.nprobe:
        index.set_search(nprobe=nprobe)
        choice = decide(bank.estimate(queries).scores, router.experts, rule)
        shares = agreement(choice, exact_choice, len(texts)) if exact_choice else {}
        agree, agree_test = shares.get("all"), shares.get("test")
        router.route(texts[:2])
        single, ratios = paired_ms(router, texts[: args.timed], args.repeats)
        rows.append({"nprobe": nprobe, "agreement": agree, "agreement_test": agree_test,
                     "route_b1_ms": round(statistics.median(single), 2),
                     "route_over_forward": round(statistics.median(ratios), 3)})  # fmt: skip
        print(f"  nprobe {nprobe}: {rows[-1]}", flush=True)
    index.set_search(**tuned)
    return rows


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['rows']:,} rows ({result['bank']}), k = {result['k']}; bare encoder forward, batch 1: "
        f"{result['encoder_b1_ms']} ms; bank {result['bank_mb']} MB; index + calibration "
        f"{result['calibrate_s']} s (index {result['index_s']} s, calibration {result['calibration_s']} s on "
        f"{result['calibration']['rows']:,} rows, standard error {result['calibration']['standard_error']:.4g})",
        "",
        "| index | route, 1 query ms | / encoder forward | route, 64 queries ms | agreement with exact | "
        "(test queries) | build s | index MB | search |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind, b1 in result["route_b1_ms"].items():
        search = result["search"].get(kind)
        knob = "" if search is None else ", ".join(f"{k}={v}" for k, v in search.items())
        name = f"auto ({result.get('auto')})" if kind == "auto" else kind
        lines.append(
            f"| {name} | {b1} | {result['route_over_forward'][kind]:.2f} | {result['route_b64_ms'][kind]} | "
            f"{result['agreement'].get(kind, '')} | {result['agreement_test'].get(kind, '')} | "
            f"{result['build_s'][kind]} | {result['index_mb'][kind]} | {knob} |"
        )
    return "\n".join(lines)


# -- part 2: `zooter score` local vs Ray ---------------------------------------------------------
def score_part(args: argparse.Namespace) -> dict[str, Any] | None:
    """Times ``zooter score`` (tiny reward model) with ``--engine local`` and ``--engine ray`` (2 workers).

    ``benchmarks/score_engines.py`` does the work (real arena-bench pairs, each engine's command in
    a fresh process, the rewards compared); ``--score-pairs 0`` skips this part.
    """
    if not args.score_pairs:
        return None
    from score_engines import score_part as time_score

    return time_score(pairs=args.score_pairs, workers=2, repeats=args.score_repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--kinds", default="exact,ivf,ivf-sq8,auto", help="index kinds: exact,ivf,ivf-sq8,hnsw,auto")
    parser.add_argument("--random", action="store_true", help="seeded random unit vectors instead of MiniLM + noise")
    parser.add_argument("--timed", type=int, default=50, help="single queries timed (median)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="times each single query is routed and run through the encoder"
    )
    parser.add_argument(
        "--nprobe",
        type=lambda text: [int(v) for v in text.split(",")],
        help="also measure agreement and route time of each faiss index kind at these nprobe values",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(LLMROUTER), help="the llmrouter_9model folder (train/test.jsonl.gz)")
    parser.add_argument("--score-pairs", type=int, default=2000, help="part 2's pairs to score (0: skip part 2)")
    parser.add_argument("--score-repeats", type=int, default=2, help="part 2's runs of each engine (median)")
    parser.add_argument(
        "--serve", action="store_true", help="also save the router and load and route it in a fresh process (memory)"
    )
    parser.add_argument("--serve-folder", help="with --serve: save the router there and keep it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if "exact" in kinds:  # agreement is measured against exact search: run it first
        args.kinds = ",".join(["exact", *(k for k in kinds if k != "exact")])
    result = bank_part(args)
    score = score_part(args)
    if score is not None:
        result["score"] = score
    if args.json:
        print(json.dumps(result))
    print()
    print(table(result))
    if score is not None:
        from score_engines import score_table

        print()
        print(score_table(score))


if __name__ == "__main__":
    main()
