"""Shared fixtures: tiny encoders built from configs and saved like Hub models, synthetic data."""

from __future__ import annotations

import os

# Tests never reach the Hub: everything they load is built here and saved to a temp folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TOPICS = {
    "mathbot": ["integral", "equation", "algebra", "probability", "derivative", "matrix"],
    "coder": ["python", "function", "compile", "regex", "segfault", "javascript"],
    "poet": ["poem", "sonnet", "haiku", "story", "lyrics", "metaphor"],
}
FILLER = [
    "please",
    "help",
    "me",
    "with",
    "this",
    "a",
    "the",
    "my",
    "about",
    "quick",
    "question",
    "for",
    "today",
    "i",
    "need",
    "some",
    "on",
    "write",
    "explain",
    "short",
    "simple",
    "good",
    "now",
    "and",
]


def keyword_rows(n: int, *, seed: int = 0, noise: float = 1.0) -> list[dict]:
    """Rows whose best expert is decided by one topic keyword hidden among filler words."""
    rng = random.Random(seed)
    experts = list(TOPICS)
    rows = []
    for i in range(n):
        best = experts[i % len(experts)]
        words = rng.sample(FILLER, rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(TOPICS[best]))
        rewards = {e: (8.0 if e == best else 3.0) + rng.uniform(-noise, noise) for e in experts}
        rows.append({"id": f"q{i}", "query": " ".join(words), "rewards": rewards, "task": best})
    return rows


def build_tiny_encoder(
    folder: Path,
    *,
    seed: int = 0,
    words: list[str] | None = None,
    num_labels: int | None = None,
    chat_template: str | None = None,
) -> Path:
    """A 2-layer BERT with hidden size 32 and a word-level vocabulary, saved like a Hub model.

    ``words`` replaces the default vocabulary; with ``num_labels`` the model is a sequence classifier
    (``num_labels=1``: a reward model); ``chat_template`` is saved with the tokenizer.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    if words is None:
        words = [*FILLER, *(w for ws in TOPICS.values() for w in ws)]
        words += ["hello", "world", "longer", "sentence", "words", "x", "?", ".", ","]
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    import inspect

    # transformers 5 takes the vocabulary as `vocab`; 4.x as `vocab_file`
    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: str(folder / "vocab.txt")}, do_lower_case=True)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    if num_labels is None:
        BertModel(config).save_pretrained(str(folder))
    else:
        config.num_labels = num_labels
        # wider than BERT's 0.02 so that different inputs get visibly different outputs
        config.initializer_range = 0.3
        BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def record_file(folder: Path, name: str) -> None:
    """Record ``name``'s current size and sha256 in the router folder's ``config.json``.

    What a hand edit that also fixes the checksum does: the tests that change a file this way reach
    the checks behind the checksum (a file the checksum alone refuses says only that it changed).
    """
    import hashlib
    import json

    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    data = (folder / name).read_bytes()
    config["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a tiny BERT encoder folder (built once per session)."""
    return str(build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture
def write_jsonl(tmp_path: Path):
    """Write rows (dicts, or raw strings for malformed lines) to a JSONL file in tmp_path."""
    import json

    def write(rows: list, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text(
            "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8"
        )
        return path

    return write


# Source for a subprocess script (after its imports): from `kill_at_step(point)` on, the process is
# SIGKILLed just before its `point`th file step (0: never): a file flushed, a rename, a link, a removal
# or a text written. It returns a one-item list that counts the steps taken.
KILL_AT_STEP = r"""
def kill_at_step(point):
    import os, pathlib, shutil, signal

    steps = [0]

    def kill_point(real):
        def step(*args, **kwargs):
            steps[0] += 1
            if steps[0] == point:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return step

    for owner, name in [(os, "fsync"), (os, "replace"), (os, "link"), (shutil, "rmtree"), (pathlib.Path, "write_text")]:
        setattr(owner, name, kill_point(getattr(owner, name)))
    return steps
"""


def distill_config(encoder: str, *, epochs: int, max_length: int):
    """A quick CPU training config for a distilled head on a tiny encoder (no progress bar)."""
    from zooter.training import TrainingConfig

    return TrainingConfig(
        method="distill",
        encoder=encoder,
        epochs=epochs,
        lr=3e-3,
        head_lr=3e-3,
        max_length=max_length,
        device="cpu",
        show_progress=False,
    )


@pytest.fixture(scope="session")
def keyword_router(tiny_encoder: str):
    """A tiny router trained to send math/code/writing keywords to mathbot/coder/poet."""
    from zooter.data import RoutingDataset, RoutingExample
    from zooter.training import train_router

    data = RoutingDataset([RoutingExample.from_dict(r) for r in keyword_rows(300, seed=11)])
    return train_router(data, distill_config(tiny_encoder, epochs=10, max_length=32))


class EventLoopWatch:
    """Slows a router's encoder and counts how often the event loop ticks meanwhile.

    Use as ``async with EventLoopWatch(router, monkeypatch) as watch``: after the block,
    ``watch.threads`` are the threads the encoder ran in and ``watch.ticks`` the loop's ticks, which
    keep coming only if the encoder stayed off the loop.
    """

    def __init__(self, router, monkeypatch: pytest.MonkeyPatch, delay: float = 0.2) -> None:
        import threading
        import time

        self.loop_thread = threading.get_ident()
        self.threads: list[int] = []
        self.ticks = 0
        original = router.forward

        def slow_forward(*args, **kwargs):
            self.threads.append(threading.get_ident())
            time.sleep(delay)
            return original(*args, **kwargs)

        monkeypatch.setattr(router, "forward", slow_forward)

    async def __aenter__(self) -> EventLoopWatch:
        import asyncio

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.01)
                self.ticks += 1

        self._task = asyncio.create_task(tick())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()

    @property
    def off_the_loop(self) -> bool:
        """Whether the encoder ran, and never in the event loop's thread."""
        return bool(self.threads) and self.loop_thread not in self.threads
