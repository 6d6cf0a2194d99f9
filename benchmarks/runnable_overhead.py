"""Added latency of ZooterRouterRunnable.invoke over calling the chosen expert directly.

Experts are FakeExpertChatModel with no latency, so the difference is the router's own cost:
tokenising, one encoder forward (all-MiniLM-L6-v2 by default), the head, and the adapter.
Queries are real prompts from the shipped arena-bench-v1 data. Prints one JSON object.

    python benchmarks/runnable_overhead.py [--calls 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import machine, percentile

from zooter.data import RoutingDataset
from zooter.demo import DEMO_EXPERTS, demo_data_path
from zooter.model.router import ZooterRouter
from zooter_langchain import FakeExpertChatModel, ZooterRouterRunnable


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    queries = RoutingDataset.load(demo_data_path(), experts=DEMO_EXPERTS).texts
    router = ZooterRouter.from_encoder(experts=DEMO_EXPERTS, device=args.device)  # routing cost does not need training
    experts = {name: FakeExpertChatModel(name=name) for name in DEMO_EXPERTS}
    model = ZooterRouterRunnable(router=router, experts=experts)

    calls = [queries[i % len(queries)] for i in range(args.calls)]
    for q in calls[:10]:  # warm-up
        model.invoke(q)
    routed, direct, bare = [], [], []
    for q in calls:
        expert = experts[model.decide([q])[0].expert]
        direct.append(timed(expert.invoke, q))
        routed.append(timed(model.invoke, q))
        ids, mask = router.collate(router.tokenize([q]))
        with torch.inference_mode():
            bare.append(timed(router.encoder, input_ids=ids, attention_mask=mask))
    added = [r - d for r, d in zip(routed, direct)]

    inputs = [queries[i % len(queries)] for i in range(args.batch)]
    model.batch(inputs[:8])
    batch_s = timed(model.batch, inputs)
    loop_s = timed(lambda: [model.invoke(q) for q in inputs])

    ms = 1000.0
    print(
        json.dumps(
            {
                "machine": machine(),
                "device": str(router.device),
                "encoder": router.config.encoder,
                "max_length": router.config.max_length,
                "calls": args.calls,
                "invoke_ms": {"median": statistics.median(routed) * ms, "p95": percentile(routed, 0.95) * ms},
                "expert_direct_ms": {"median": statistics.median(direct) * ms, "p95": percentile(direct, 0.95) * ms},
                "added_ms": {"median": statistics.median(added) * ms, "p95": percentile(added, 0.95) * ms},
                "bare_encoder_forward_ms": {"median": statistics.median(bare) * ms},
                "added_over_bare_forward": statistics.median(added) / statistics.median(bare),
                f"batch_{args.batch}_s": batch_s,
                f"invoke_x{args.batch}_s": loop_s,
                "batch_speedup": loop_s / batch_s,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
