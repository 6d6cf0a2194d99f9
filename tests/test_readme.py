"""Every Python snippet in the README runs, in order, as a user pasting them into one session would.

Offline and fast by construction: the names a snippet leaves to the reader (``coder_model``,
``gpt``, ``calculator``, ``queries``...) are bound to fake chat models and the tool example's tools;
``"provider:model"`` chat models are a fake grader; the default encoder is a tiny one; and the
reward model's Hub id names a folder in the working directory holding a tiny reward model, so the
real loading code runs. A snippet that truly needs the network can be marked by putting
``<!-- readme-test: skip (the reason) -->`` on the line above its fence: it is then not run, and
the test says so. No snippet needs that today.
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
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
SKIP = "<!-- readme-test: skip"


def python_snippets() -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` for each ```python block of the README, in order."""
    text = README.read_text(encoding="utf-8")
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
        for name in ("coder_model", "writer_model", "gpt", "haiku", "gpt35", "claude", "mixtral")
    }
    names["my_chat_model"] = FakeListChatModel(responses=["Correct, and it runs.\n\nRating: [[8]]"])
    names["queries"] = ["Convert 3 miles to km", "Email Ana the agenda", "What is 2 ** 10?"]
    names.update({tool.name: tool for tool in TOOLS})
    return names


def test_every_python_snippet_in_the_readme_runs(
    tmp_path: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    import zooter.model.encoder
    import zooter_langchain.models
    from zooter.demo import demo_data_path

    monkeypatch.chdir(tmp_path)
    rows = [json.loads(line) for line in demo_data_path().read_text(encoding="utf-8").splitlines()[:4]]
    Path("queries.jsonl").write_text("".join(json.dumps({"id": r["id"], "query": r["query"]}) + "\n" for r in rows))
    build_tiny_encoder(tmp_path / "OpenAssistant" / "reward-model-deberta-v3-large-v2", num_labels=1)
    (tmp_path / "examples" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "data" / "tool_use.jsonl", tmp_path / "examples" / "data")
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
    snippets = python_snippets()
    assert len(snippets) >= 8
    skipped = []
    for line, code, skip in snippets:
        if skip:
            skipped.append(line)
            continue
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"the README's snippet at line {line} fails: {type(e).__name__}: {e}") from e
    if skipped:
        warnings.warn(f"README snippets marked to skip, not run: lines {skipped}", stacklevel=1)
