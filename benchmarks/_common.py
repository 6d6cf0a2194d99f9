"""What the benchmark scripts share: the real queries they run on, cached encoder vectors, timing and percentiles."""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch

from zooter.data import RoutingDataset
from zooter.demo import DEMO_EXPERTS, demo_data_path, demo_splits
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router


def minilm_vectors(path: Path, dataset: RoutingDataset) -> tuple[torch.Tensor, float]:
    """The bundled MiniLM's pooled vectors of ``dataset``'s queries (as training embeds them) and the
    seconds that encoder pass took, read from ``path`` when it holds the same ids, else computed and
    written there (temp file, then rename)."""
    ids = [ex.id for ex in dataset]
    if path.is_file():
        saved = torch.load(path)
        if saved["ids"] == ids:
            return saved["embeddings"].float(), float(saved["seconds"])
    _, embed = _bundled_pass(dataset)
    started = time.perf_counter()
    vectors = embed().cpu()
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"ids": ids, "embeddings": vectors, "seconds": seconds}, tmp)
    os.replace(tmp, path)
    return vectors, seconds


def encoder_pass_seconds(dataset: RoutingDataset, repeats: int = 2) -> tuple[float | None, float, str]:
    """The seconds the bundled MiniLM's pass over ``dataset``'s queries takes now (as training embeds
    them), the fastest of ``repeats`` (None for 0 repeats): a timing taken in this run, on this
    machine's present load, rather than the one :func:`minilm_vectors` recorded when its cache was
    written. Also the seconds its first ``encoder_id`` took (hashing the weights, once per process)
    and the id."""
    router, embed = _bundled_pass(dataset)
    started = time.perf_counter()
    encoder_id = router.encoder_id
    hashing = time.perf_counter() - started
    seconds = best_of(repeats, embed) if repeats else None
    return seconds, hashing, encoder_id


def _bundled_pass(dataset: RoutingDataset):
    """The bundled MiniLM as training loads it, and the pass over ``dataset``'s queries (a call)."""
    router = ZooterRouter.from_encoder(None, experts=dataset.experts, max_length=256, device="cpu")
    queries = [ex.query for ex in dataset]
    return router, lambda: router.embed_queries(queries, batch_size=router.default_batch_size * 4)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROUTELLM = SHARED_DATA / "routellm_mmlu_gsm8k" / "rewards.jsonl.gz"


def real_queries(n: int, *, seed: int = 0) -> tuple[list[str], str]:
    """``n`` real prompts and where they came from.

    All 300 arena-bench-v1 prompts (bundled with the package: long, varied chat prompts), topped up
    with a seeded sample of RouteLLM's MMLU/GSM8K questions from ``../shared/data`` when it is there
    (shorter, exam-style), so the lengths are a realistic mix; without it the arena prompts repeat.
    """
    arena = RoutingDataset.load(demo_data_path(), experts=DEMO_EXPERTS).texts
    queries = arena[:n]
    source = f"{len(queries)} arena-bench-v1"
    if len(queries) < n and ROUTELLM.is_file():
        with gzip.open(ROUTELLM, "rt", encoding="utf-8") as f:
            pool = [json.loads(line)["query"] for line in f if line.strip()]
        extra = random.Random(seed).sample(pool, min(n - len(queries), len(pool)))
        queries += extra
        source += f" + {len(extra)} routellm_mmlu_gsm8k (seed {seed})"
    while len(queries) < n:  # no shared data: repeat the arena prompts
        queries.append(arena[len(queries) % len(arena)])
    return queries, source


DEMO_ROUTER = Path(__file__).resolve().parents[1] / ".benchmarks" / "demo-router"


def demo_router(path: str | None = None, *, device: str | None = None) -> ZooterRouter:
    """A trained router: ``path``, or the demo's router (trained once as ``zooter demo`` does, then cached)."""
    if path is None and not (DEMO_ROUTER / "config.json").is_file():
        _, splits = demo_splits()
        config = TrainingConfig(show_progress=False, device=device)
        train_router(splits.train, config, validation=splits.validation).save_pretrained(DEMO_ROUTER)
    return ZooterRouter.from_pretrained(path or DEMO_ROUTER, device=device)


def machine() -> dict[str, Any]:
    info = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def best_of(repeats: int, fn, *args, **kwargs) -> float:
    """The fastest of ``repeats`` timed calls, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn(*args, **kwargs)
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
