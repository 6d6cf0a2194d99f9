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

    python benchmarks/routing_throughput.py [--queries 1000] [--batch-sizes 1,8,64] [--int8]
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import best_of, demo_router, machine, real_queries

from zooter.demo import DEMO_EXPERTS
from zooter.model.encoder import autocast, half_dtype, length_sorted_batches
from zooter.model.router import ZooterRouter


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="1,8,64", help="comma-separated; CUDA also runs 256")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per figure; the fastest counts")
    parser.add_argument("--encoder", default=None, help="Hub id or folder; default: the bundled MiniLM")
    parser.add_argument("--int8", action="store_true", help="also measure int8 dynamic quantisation on CPU")
    parser.add_argument("--router", default=None, help="a trained router folder, for --int8 agreement")
    args = parser.parse_args()

    queries, source = real_queries(args.queries)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    result: dict = {"machine": machine(), "queries": source, "max_length": None}
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
