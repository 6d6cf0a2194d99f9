"""Training throughput: ``train_router`` against a bare forward+backward of the encoder.

Both run on the demo's training rows (arena-bench-v1, six experts) in the same length-grouped,
seeded batches. (a) is the encoder's forward and backward alone (no head, no loss beyond a sum,
no optimiser), the practical ceiling; (b) is ``train_router`` with the default settings (its
own clock, ``training_summary.train_seconds``, which leaves out loading the encoder).
``ratio`` = (b)/(a) in examples/second. Prints one JSON object.

    python benchmarks/training_throughput.py [--epochs 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import machine, sync

from zooter.data import RoutingDataset
from zooter.demo import DEMO_EXPERTS, demo_data_path
from zooter.model.encoder import autocast, half_dtype
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, _batches, train_router


def bare_forward_backward(rows: RoutingDataset, config: TrainingConfig) -> float:
    """Seconds for ``config.epochs`` passes of forward+backward over the same batches."""
    router = ZooterRouter.from_encoder(
        config.encoder, experts=rows.experts, max_length=config.max_length, device=config.device
    )
    router.train()
    token_ids = router.tokenize([ex.query for ex in rows])
    lengths = [len(ids) for ids in token_ids]
    generator = torch.Generator().manual_seed(config.seed)
    amp = half_dtype(router.device) if config.mixed_precision else None
    sync()
    start = time.perf_counter()
    for _ in range(config.epochs):
        for index in _batches(lengths, config.batch_size, generator, config.group_by_length):
            input_ids, attention_mask = router.collate([token_ids[i] for i in index])
            with autocast(router.device, amp):
                hidden = router.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            hidden.float().sum().backward()
            router.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--encoder", default=None)
    args = parser.parse_args()

    rows = RoutingDataset.load(demo_data_path(), experts=DEMO_EXPERTS).split(test_fraction=0.2, seed=0).train
    config = TrainingConfig(epochs=args.epochs, device=args.device, encoder=args.encoder, show_progress=False)
    examples = len(rows) * args.epochs
    bare_s = bare_forward_backward(rows, config)
    router = train_router(rows, config)
    train_s = router.config.training_summary["train_seconds"]
    print(
        json.dumps(
            {
                "machine": machine(),
                "device": str(router.device),
                "encoder": router.config.encoder,
                "rows": len(rows),
                "epochs": args.epochs,
                "batch_size": config.batch_size,
                "max_length": config.max_length,
                "bare_forward_backward_eps": round(examples / bare_s, 2),
                "train_router_eps": round(examples / train_s, 2),
                "ratio": round(bare_s / train_s, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
