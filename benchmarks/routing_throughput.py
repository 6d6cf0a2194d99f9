"""Routing throughput: ``router.route(texts)`` end to end against a bare encoder forward.

On the same real queries, in one run, queries/second of
(a) the encoder's forward pass alone on pre-tokenised, pre-padded, length-sorted batches (the
    practical ceiling: no tokenising, no head, no softmax, nothing copied back), and
(b) ``router.route(texts)``, tokenising included,
at each batch size, on CPU and (when present) on CUDA with bf16/fp16 autocast; ``ratio`` = (b)/(a).
With ``--int8``, the CPU figures are repeated with the encoder's linear layers quantised to int8
(dynamic quantisation), and the share of queries routed as by the fp32 router is reported; that
needs a trained router (``--router DIR``, e.g. from ``zooter demo --output DIR``; without one,
the demo's router is trained once, as ``zooter demo`` trains it, and kept in ``.benchmarks/``). Prints one JSON object.

With ``--onnx``, the CPU routing throughput (``router.route``, tokenising included) of every encoder
variant is measured instead: PyTorch fp32, PyTorch int8 (``router.quantize()``), ONNX Runtime fp32
and int8 (``backend="onnx"``, ``"onnx-int8"``), repeated ``--repeats`` times in turn (the variants
interleaved, so a busy machine slows them alike) and reported as medians with every sample; the
speed-up is each median over PyTorch fp32's, and ``agreement`` the share of queries routed as the
PyTorch fp32 router routes them. ``--train FILE`` trains the routers (defaults, cached in
``--cache``): one on PyTorch, and one with its bank embedded by ONNX int8 (``trained_onnx-int8``),
and ``--queries-file FILE`` routes a dataset's queries:

    python benchmarks/routing_throughput.py [--queries 1000] [--batch-sizes 1,8,64] [--int8]
    python benchmarks/routing_throughput.py --onnx --train ../shared/data/llmrouter_9model/train.jsonl.gz \
        --queries-file ../shared/data/llmrouter_9model/test.jsonl.gz --batch-sizes 64 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import DEMO_ROUTER, best_of, demo_router, machine, real_queries

from zooter.data import RoutingDataset
from zooter.demo import DEMO_EXPERTS
from zooter.model.encoder import autocast, half_dtype, length_sorted_batches
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router

VARIANTS = ("torch", "torch-int8", "onnx", "onnx-int8")


def bare_forward(router: ZooterRouter, queries: list[str], batch_size: int):
    """A closure running the encoder alone over ``queries``, tokenised and padded beforehand."""
    token_ids = router.tokenize(queries)
    batches = [router.collate([token_ids[i] for i in index]) for index in length_sorted_batches(token_ids, batch_size)]
    amp = half_dtype(router.device)

    @torch.inference_mode()
    def run() -> None:
        for input_ids, attention_mask in batches:
            with autocast(router.device, amp):
                router.encoder(input_ids=input_ids, attention_mask=attention_mask)

    return run


def measure(router: ZooterRouter, queries: list[str], batch_sizes: list[int], repeats: int) -> dict:
    figures = {}
    for batch_size in batch_sizes:
        run = bare_forward(router, queries, batch_size)
        run()  # warm-up (allocator, kernels)
        router.route(queries[: batch_size * 2], batch_size=batch_size)
        bare_s = best_of(repeats, run)
        route_s = best_of(repeats, router.route, queries, batch_size=batch_size)
        figures[str(batch_size)] = {
            "bare_qps": round(len(queries) / bare_s, 1),
            "route_qps": round(len(queries) / route_s, 1),
            "ratio": round(bare_s / route_s, 3),
        }
    return figures


def trained_router(train: str, backend: str, cache: Path) -> Path:
    """The folder of a router trained on ``train`` with the defaults, its bank embedded on ``backend`` (cached)."""
    folder = cache / f"{Path(train).parent.name}-{Path(train).name.split('.')[0]}-{backend}"
    if not (folder / "config.json").is_file():
        config = TrainingConfig(show_progress=False, device="cpu", backend=backend)
        train_router(RoutingDataset.load(train), config).save_pretrained(folder)
    return folder


def variant(router_dir: Path, name: str, threads: int | None) -> ZooterRouter:
    router = ZooterRouter.from_pretrained(router_dir, device="cpu", backend="torch")
    if name == "torch-int8":
        return router.quantize("int8")
    return router.set_backend(name, threads=threads) if name.startswith("onnx") else router


def measure_backends(
    router_dir: Path, queries: list, batch_sizes: list[int], repeats: int, threads: int | None
) -> dict:
    """Routing throughput of every variant, interleaved ``repeats`` times; medians, samples, agreement."""
    routers = {name: variant(router_dir, name, threads) for name in VARIANTS}
    reference = [d.expert for d in routers["torch"].route(queries, batch_size=64)]
    figures: dict = {}
    for name, router in routers.items():
        chosen = [d.expert for d in router.route(queries, batch_size=64)]  # also the warm-up
        figures[name] = {"agreement": round(sum(a == b for a, b in zip(reference, chosen)) / len(queries), 4)}
    for batch_size in batch_sizes:
        samples: dict[str, list[float]] = {name: [] for name in routers}
        for _ in range(repeats):
            for name, router in routers.items():
                start = time.perf_counter()
                router.route(queries, batch_size=batch_size)
                samples[name].append(len(queries) / (time.perf_counter() - start))
        base = statistics.median(samples["torch"])
        for name in routers:
            median = statistics.median(samples[name])
            figures[name][str(batch_size)] = {
                "route_qps": round(median, 1),
                "speedup": round(median / base, 2),
                "samples": [round(q, 1) for q in samples[name]],
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="1,8,64", help="comma-separated; CUDA also runs 256")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per figure; the fastest counts")
    parser.add_argument("--encoder", default=None, help="Hub id or folder; default: the bundled MiniLM")
    parser.add_argument("--int8", action="store_true", help="also measure int8 dynamic quantisation on CPU")
    parser.add_argument("--router", default=None, help="a trained router folder, for --int8 agreement")
    parser.add_argument("--onnx", action="store_true", help="compare PyTorch and ONNX Runtime, fp32 and int8, on CPU")
    parser.add_argument("--train", help="--onnx: train the routers on this dataset (defaults), cached in --cache")
    parser.add_argument("--queries-file", help="route this dataset's queries (all of them) instead")
    parser.add_argument("--threads", type=int, help="--onnx: ONNX Runtime's intra-op threads (default: its own)")
    parser.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / ".benchmarks"))
    args = parser.parse_args()

    if args.queries_file:
        queries, source = RoutingDataset.load(args.queries_file).texts, args.queries_file
    else:
        queries, source = real_queries(args.queries)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.onnx:
        result: dict = {"machine": machine(), "queries": source, "threads": args.threads or "default"}
        if args.train:
            router_dir = trained_router(args.train, "torch", Path(args.cache))
        else:
            demo_router(args.router, device="cpu")  # trains the demo's router once when no folder is given
            router_dir = Path(args.router) if args.router else DEMO_ROUTER
        result["router"] = str(router_dir)
        result["cpu"] = measure_backends(router_dir, queries, batch_sizes, args.repeats, args.threads)
        if args.train:  # the bank embedded by the int8 encoder too, as TrainingConfig(backend=...) does
            reference = ZooterRouter.from_pretrained(router_dir, device="cpu").route(queries, batch_size=64)
            folder = trained_router(args.train, "onnx-int8", Path(args.cache))
            chosen = ZooterRouter.from_pretrained(folder, backend="onnx-int8").route(queries, batch_size=64)
            agree = sum(a.expert == b.expert for a, b in zip(reference, chosen)) / len(queries)
            result["cpu"]["trained_onnx-int8"] = {"agreement": round(agree, 4)}
        print(json.dumps(result, indent=2))
        return
    result = {"machine": machine(), "queries": source, "max_length": None}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if args.int8 and device == "cpu":
            router = demo_router(args.router, device="cpu")
        else:
            router = ZooterRouter.from_encoder(args.encoder, experts=DEMO_EXPERTS, device=device)
        result["encoder"] = router.config.encoder
        result["max_length"] = router.config.max_length
        sizes = batch_sizes + ([256] if device == "cuda" and 256 not in batch_sizes else [])
        result[device] = measure(router, queries, sizes, args.repeats)
        if args.int8 and device == "cpu":
            fp32 = [d.expert for d in router.route(queries)]
            router.quantize("int8")
            int8 = [d.expert for d in router.route(queries)]
            result["cpu_int8"] = measure(router, queries, batch_sizes, args.repeats)
            result["cpu_int8"]["routing_agreement"] = round(sum(a == b for a, b in zip(fp32, int8)) / len(queries), 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
