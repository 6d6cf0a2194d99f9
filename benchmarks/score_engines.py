"""``zooter score`` on the local engine against Ray Data with 2 workers: wall time, and the same rewards.

The pairs are real: arena-bench-v1's answers (``../shared/data/arena_bench_v1``: 300 prompts, 16
models' answers each), the first ``--pairs`` of them. The reward model is a *tiny* one built here and
saved like a Hub model (a 2-layer BERT, hidden size ``--hidden``, word-level vocabulary of the
data, random weights: the timings are what matters, not the rewards). Each engine runs the real
command in a fresh process, as a user runs it (``python -m zooter.cli score ...``), so the wall time
includes loading the model and, for Ray, starting a local Ray (``ray.init()``) and its 2 actors. The
runs alternate (a busy machine slows both alike) and the median counts. The rewards of the two runs
are compared pair by pair.

    python benchmarks/score_engines.py [--pairs 2000] [--workers 2] [--repeats 2] [--json]

``score_part()`` is what ``benchmarks/scale.py`` calls for its second part.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import SHARED_DATA, machine

ARENA = SHARED_DATA / "arena_bench_v1"


def write_inputs(folder: Path, pairs: int) -> tuple[Path, Path, list[str]]:
    """The first ``pairs`` answers of arena-bench-v1 and their prompts, as ``zooter score`` reads them."""
    prompts = {r["id"]: r["query"] for r in map(json.loads, (ARENA / "rewards.jsonl").read_text().splitlines())}
    with gzip.open(ARENA / "responses.jsonl.gz", "rt", encoding="utf-8") as f:
        answers = [a for a in map(json.loads, f) if a["id"] in prompts][:pairs]
    ids = list(dict.fromkeys(a["id"] for a in answers))
    queries, responses = folder / "queries.jsonl", folder / "responses.jsonl"
    queries.write_text("".join(json.dumps({"id": i, "query": prompts[i]}) + "\n" for i in ids), encoding="utf-8")
    responses.write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    texts = [prompts[i] for i in ids] + [a["response"] for a in answers]
    return queries, responses, texts


def build_reward_model(folder: Path, texts: list[str], hidden: int) -> Path:
    """A 2-layer BERT sequence classifier with one logit (a reward model's shape), saved like a Hub model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = Counter(w for text in texts for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(w for w, _ in words.most_common(8000))]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 4,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def run_score(queries: Path, responses: Path, model: Path, output: Path, *engine: str) -> float:
    """``zooter score`` in a fresh process; its wall time in seconds."""
    for stale in (output, output.with_name(output.name + ".scored.jsonl")):
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", "zooter.cli", "score", str(responses), "--queries", str(queries),
               "--reward-model", str(model), "--output", str(output), "--quiet", *engine]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"zooter score {' '.join(engine)} failed:\n{done.stderr[-3000:]}")
    return round(wall, 2)


def rewards_of(path: Path) -> dict[tuple[str, str], float]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {(r["id"], m): v for r in rows for m, v in r["rewards"].items()}


def score_part(pairs: int = 2000, workers: int = 2, repeats: int = 2, hidden: int = 128) -> dict[str, Any]:
    """Times ``zooter score`` with ``--engine local`` and ``--engine ray --workers N``; checks equal rewards."""
    folder = Path(tempfile.mkdtemp(prefix="zooter-score-bench-"))
    try:
        queries, responses, texts = write_inputs(folder, pairs)
        model = build_reward_model(folder / "reward-model", texts, hidden)
        engines = {"local": (), f"ray_{workers}_workers": ("--engine", "ray", "--workers", str(workers))}
        samples: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(repeats):
            for name, flags in engines.items():  # interleaved: a busy machine slows both alike
                samples[name].append(run_score(queries, responses, model, folder / f"{name}.jsonl", *flags))
        local, ray = (rewards_of(folder / f"{name}.jsonl") for name in engines)
        result: dict[str, Any] = {
            "pairs": pairs,
            "reward_model": f"BERT 2 layers, hidden {hidden}, random weights",
            "same_pairs": sorted(local) == sorted(ray),
            "max_abs_reward_diff": max(abs(local[k] - ray[k]) for k in local) if local.keys() == ray.keys() else None,
        }
        for name, values in samples.items():
            median = statistics.median(values)
            result[name] = {"wall_s": round(median, 2), "pairs_per_s": round(pairs / median, 1), "samples": values}
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def score_table(result: dict[str, Any]) -> str:
    lines = [
        f"`zooter score`, {result['pairs']} real arena-bench pairs, tiny reward model ({result['reward_model']})",
        "",
        "| engine | wall (s), median | pairs/s | samples (s) |",
        "|---|---:|---:|---|",
    ]
    for name, figures in result.items():
        if isinstance(figures, dict) and "samples" in figures:
            samples = ", ".join(str(s) for s in figures["samples"])
            lines.append(f"| {name} | {figures['wall_s']} | {figures['pairs_per_s']} | {samples} |")
    lines.append("")
    lines.append(f"same pairs: {result['same_pairs']}; largest reward difference: {result['max_abs_reward_diff']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128, help="the tiny reward model's hidden size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"machine": machine(), **score_part(args.pairs, args.workers, args.repeats, args.hidden)}
    if args.json:
        print(json.dumps(result))
        print()
    print(score_table(result))


if __name__ == "__main__":
    main()
