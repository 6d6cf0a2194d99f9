"""One round of feedback from the command line, against a full retrain from the command line.

On ``llmrouter_9model``: ``zooter train`` on 5,048 of the training rows (untimed), then one round of
560 new queries (the other training rows, drawn at random with ``--seed``; every expert's reward) is
merged with ``zooter update`` twice: as production feedback (each row with the vector the router
computed when it routed the query, as ``ChatZooterRouter``'s ``FeedbackLog`` keeps it) and as plain
rows (embedded by the update). Timed against ``zooter train`` on all 5,608 rows, each command a
fresh process (wall seconds: start-up, loading, the work, saving), and against two bare start-ups:
importing the CLI and torch (what every command pays), and with transformers' BERT too (what a
command that runs the encoder pays; an update whose rows carry their vectors never reads the
encoder), the fastest of ``--repeats`` of each. Then, in a process serving the start router (loaded
and routing), the update is picked up: ``router.reloaded()`` after ``zooter update`` saved over the
served folder, against loading the updated folder afresh and routing one query. Prints one JSON
object, then a markdown table.

Usage::

    python benchmarks/update_end_to_end.py [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED_DATA

from zooter._io import write_jsonl
from zooter.data import QueryVector
from zooter.model.router import ZooterRouter

ROUND = 560


def run(*command: str) -> float:
    """Wall seconds of one command in a fresh process (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def serving_pickup(work: Path, zooter: list[str]) -> dict[str, float]:
    """Seconds a process serving the start router takes to pick up a ``zooter update`` of its folder."""
    served = work / "served"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(work / "start-router", served)
    router = ZooterRouter.from_pretrained(served, device="cpu")
    probe = [r["query"] for r in _rows(work / "round.jsonl")[:8]]
    router.route(probe)
    started = time.perf_counter()
    assert router.reloaded() is router
    unchanged = time.perf_counter() - started
    run(*zooter, "update", str(served), str(work / "round-with-vectors.jsonl"), "--quiet")
    started = time.perf_counter()
    new = router.reloaded()
    reloaded = time.perf_counter() - started
    assert new.encoder is router.encoder and len(new.bank) == len(router.bank) + ROUND
    started = time.perf_counter()
    ZooterRouter.from_pretrained(served, device="cpu").route(probe[:1])
    fresh = time.perf_counter() - started
    return {
        "unchanged folder: reloaded()": unchanged,
        "after the update: reloaded()": reloaded,
        "a fresh load and one route": fresh,
    }


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "llmrouter_9model"), help="the llmrouter_9model folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="which training rows make the round")
    parser.add_argument("--work", help="a folder for the routers and files (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work or tempfile.mkdtemp(prefix="zooter-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    zooter = [sys.executable, "-m", "zooter.cli"]
    data = Path(args.data) / "train.jsonl.gz"
    with gzip.open(data, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    picked = set(random.Random(args.seed).sample(range(len(rows)), ROUND))  # a random round, as traffic is
    first = [r for i, r in enumerate(rows) if i not in picked]
    last = [r for i, r in enumerate(rows) if i in picked]
    write_jsonl(work / "start.jsonl", first)
    plain = [{"id": f"fb-{r['id']}", "query": r["query"], "rewards": r["rewards"]} for r in last]
    write_jsonl(work / "round.jsonl", plain)
    shutil.rmtree(work / "start-router", ignore_errors=True)
    run(*zooter, "train", str(work / "start.jsonl"), "--output", str(work / "start-router"), "--quiet")
    # what routing the round's queries computed: the vectors FeedbackLog keeps with each outcome
    router = ZooterRouter.from_pretrained(work / "start-router", device="cpu")
    vectors = router.estimate([r["query"] for r in plain]).vectors
    kept = [{**r, "vector": QueryVector.of(v, router.encoder_id).to_dict()} for r, v in zip(plain, vectors)]
    write_jsonl(work / "round-with-vectors.jsonl", kept)
    del router

    commands = {
        "full retrain": [*zooter, "train", str(data), "--output", str(work / "retrained"), "--quiet"],
        "update, vectors kept": [
            *zooter,
            "update",
            str(work / "start-router"),
            str(work / "round-with-vectors.jsonl"),
            "--output",
            str(work / "updated-kept"),
        ],
        "update, embedding": [
            *zooter,
            "update",
            str(work / "start-router"),
            str(work / "round.jsonl"),
            "--output",
            str(work / "updated-embedded"),
        ],
        "start-up: the CLI and torch": [sys.executable, "-c", "import zooter.cli, torch"],
        "start-up: the CLI, torch and BERT": [
            sys.executable,
            "-c",
            "import zooter.cli, torch; from transformers import BertModel",
        ],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    loads = [os.getloadavg()[:3]]
    for _ in range(args.repeats):
        for name, command in commands.items():
            seconds[name].append(run(*command))
    serving = {"unchanged folder: reloaded()": [], "after the update: reloaded()": [], "a fresh load and one route": []}
    for _ in range(args.repeats):
        for name, value in serving_pickup(work, zooter).items():
            serving[name].append(value)
    loads.append(os.getloadavg()[:3])
    best = {name: min(times) for name, times in seconds.items()}
    retrain = best["full retrain"]
    fastest = {name: min(times) for name, times in serving.items()}
    print(
        json.dumps(
            {"seconds": seconds, "fastest": best, "serving": serving, "serving_fastest": fastest}
            | {"load": loads, "round": ROUND, "start_rows": len(first)}
        )
    )
    print(f"\n| command (fastest of {args.repeats}) | seconds | share of a full retrain |\n|---|---:|---:|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} | {100 * value / retrain:.1f} % |")
    print(f"\n| in a serving process (fastest of {args.repeats}) | seconds |\n|---|---:|")
    for name, value in fastest.items():
        print(f"| {name} | {value:.4f} |")
    print(f"\nLoad average at the start and the end: {loads[0]} / {loads[1]}.")


if __name__ == "__main__":
    main()
