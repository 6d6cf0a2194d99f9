"""Every Python snippet in the README and in docs/*.md runs, file by file, in order, as a user pasting
them into one session would.

Offline and fast by construction: each file runs in a fresh copy of a working folder that holds what
the snippets take as given (``demo-router``, what ``zooter demo --output demo-router`` writes;
``my-router``, a router over the arena demo's six experts; ``rewards.jsonl``; ``queries.jsonl``;
the tool-use examples); the names a snippet leaves to the reader (``coder_model``, ``gpt``,
``calculator``, ``queries``...) are bound to fake chat models and the tool example's tools;
``"provider:model"`` chat models are a fake grader; the default encoder is a tiny one; and the
reward model's Hub id names a folder holding a tiny reward model, so the real loading code runs. A
snippet that truly needs the network can be marked by putting ``<!-- readme-test: skip (the
reason) -->`` on the line above its fence: it is then not run, and the test says so. No snippet
needs that today.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from conftest import build_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
SKIP = "<!-- readme-test: skip"


def python_snippets(path: Path = README) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` for each ```python block of a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    snippets = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].rstrip("\n").rpartition("\n")[2].strip()
        snippets.append((line, textwrap.dedent(match.group(2)), above.startswith(SKIP)))
    return snippets


def offline_names() -> dict[str, object]:
    """What the snippets take as given, as offline stand-ins."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from zooter_langchain import FakeExpertChatModel

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from tool_selection import TOOLS
    finally:
        sys.path.remove(str(ROOT / "examples"))
    names: dict[str, object] = {
        name: FakeExpertChatModel(name=name)
        for name in ("coder_model", "writer_model", "gpt", "haiku", "gpt35", "claude", "mixtral", "model")
    }
    names |= {
        name: FakeExpertChatModel(name=name, model_name=model)
        for name, model in (
            ("nemotron", "llama-3.1-nemotron-51b-instruct"),
            ("llama", "llama-3.1-8b-instruct"),
            ("qwen", "qwen2.5-7b-instruct"),
        )
    }
    names["my_chat_model"] = FakeListChatModel(responses=["Correct, and it runs.\n\nRating: [[8]]"])
    names["queries"] = ["Convert 3 miles to km", "Email Ana the agenda", "What is 2 ** 10?"]
    names.update({tool.name: tool for tool in TOOLS})
    return names


def given_objects(code: str) -> dict[str, object]:
    """The objects a doc's snippets take as given (``router``, ``experts``, ``selector``), built when used.

    Runs in the working folder: ``router`` is ``my-router`` (the arena demo's six experts), ``experts``
    a fake chat model for each of them, ``selector`` a tool selector trained on the tool-use examples.
    """
    from zooter_langchain import FakeExpertChatModel

    names: dict[str, object] = {}
    if re.search(r"\b(router|experts)\b", code):
        from zooter import ZooterRouter

        names["router"] = router = ZooterRouter.from_pretrained("my-router")
        names["experts"] = {name: FakeExpertChatModel(name=name) for name in router.experts}
    if re.search(r"\bselector\b", code):
        from zooter import LabelConfig, RoutingDataset, TrainingConfig, train_router
        from zooter_langchain import ZooterToolSelector

        tools = RoutingDataset.load("examples/data/tool_use.jsonl")
        config = TrainingConfig(labels=LabelConfig(temperature=0.25), show_progress=False)
        names["selector"] = ZooterToolSelector(train_router(tools, config), k=2)
    return names


@pytest.fixture(scope="module")
def prepared(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder every file's snippets start from (copied afresh for each file)."""
    from zooter.cli import main
    from zooter.demo import demo_data_path, demo_splits
    from zooter.training import TrainingConfig, train_router

    folder = tmp_path_factory.mktemp("readme")
    rows = [json.loads(line) for line in demo_data_path().read_text(encoding="utf-8").splitlines()[:40]]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"id": r["id"], "query": r["query"]}) + "\n" for r in rows[:4])
    )
    (folder / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_tiny_encoder(folder / "OpenAssistant" / "reward-model-deberta-v3-large-v2", num_labels=1)
    (folder / "examples" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "data" / "tool_use.jsonl", folder / "examples" / "data")
    # what the README's first command writes, with the tiny encoder
    assert main(["demo", "--output", str(folder / "demo-router"), "--encoder", tiny_encoder, "--quiet"]) == 0
    _, splits = demo_splits()
    config = TrainingConfig(encoder=tiny_encoder, show_progress=False)
    train_router(splits.train, config, validation=splits.validation).save_pretrained(folder / "my-router")
    return folder


def test_the_readme_links_every_doc() -> None:
    """A new docs/<topic>.md gets a line in the README's Documentation list (this test says which)."""
    text = README.read_text(encoding="utf-8")
    missing = [doc.name for doc in DOCS if f"](docs/{doc.name})" not in text]
    assert missing == [], f"add a line for {missing} to the README's Documentation list"
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).resolve().is_file(), f"{doc.name} links to {target}, which is missing"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_snippet_runs(
    path: Path, prepared: Path, tmp_path: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    import zooter.model.encoder
    import zooter_langchain.models

    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    monkeypatch.chdir(work)
    default = zooter.model.encoder.resolve_encoder
    monkeypatch.setattr(
        zooter.model.encoder, "resolve_encoder", lambda name=None: tiny_encoder if name is None else default(name)
    )
    monkeypatch.setattr(
        zooter_langchain.models,
        "chat_model_from_spec",
        lambda spec, **kwargs: FakeListChatModel(responses=["Right.\n\nRating: [[9]]"]),
    )

    namespace = offline_names()
    snippets = python_snippets(path)
    namespace.update(given_objects(" ".join(code for _, code, _ in snippets)))
    if path == README:
        assert len(snippets) >= 3
    name = path.relative_to(ROOT).as_posix()
    skipped = []
    for line, code, skip in snippets:
        if skip:
            skipped.append(line)
            continue
        try:
            exec(compile(code, f"{name}:{line}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"the snippet at {name}:{line} fails: {type(e).__name__}: {e}") from e
    if skipped:
        warnings.warn(f"{name}: snippets marked to skip, not run: lines {skipped}", stacklevel=1)
