"""The core's boundaries: no LangChain in ``zooter``, the adapter's commands found through entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import zooter.cli
from zooter.cli import ADAPTER_INSTALL, COMMANDS_GROUP, SCORERS_GROUP, main, registered


def test_no_zooter_module_imports_the_adapter_or_langchain() -> None:
    code = """
import importlib, json, pkgutil, sys
import zooter
names = [m.name for m in pkgutil.walk_packages(zooter.__path__, "zooter.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.startswith(("zooter_langchain", "langchain")))
print(json.dumps({"imported": names, "leaked": leaked}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert {"zooter.cli", "zooter.model.router", "zooter.rewards.scoring", "zooter.labels.tagging"} <= set(
        result["imported"]
    )
    assert result["leaked"] == []


def test_no_import_cycles_in_the_core() -> None:
    """Every import counts, at module level or inside a function or TYPE_CHECKING block."""
    import ast

    import zooter

    root = Path(zooter.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        # the package itself only re-exports lazily (and holds __version__): not an edge
        graph[name] = {d for d in deps if d.startswith("zooter.") and d != name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph.get(start, ()))

    cyclic = sorted(name for name in graph if reaches(name, name, {name}))
    assert cyclic == []


def test_the_adapter_registers_collect_and_the_judge() -> None:
    commands, scorers = registered(COMMANDS_GROUP), registered(SCORERS_GROUP)
    assert commands["collect"].value == "zooter_langchain.cli:add_collect_command"
    assert scorers["judge"].value == "zooter_langchain.cli:judge_scorer"
    assert callable(commands["collect"].load()) and callable(scorers["judge"].load())


@pytest.fixture
def without_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if only the core were installed: no package registers anything."""
    monkeypatch.setattr(zooter.cli, "entry_points", lambda group: [])


def _one_line_naming_the_extra(capsys: pytest.CaptureFixture[str], command: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith(f"zooter {command}: error:") and err.count("\n") == 1
    assert ADAPTER_INSTALL in err


def test_collect_without_the_adapter_names_the_extra(without_adapter, tmp_path: Path, capsys) -> None:
    argv = ["collect", "q.jsonl", "--expert", "a=openai:gpt-4o-mini", "--output", str(tmp_path / "o.jsonl")]
    assert main(argv) == 2
    _one_line_naming_the_extra(capsys, "collect")
    assert main(["collect", "--help"]) == 2  # even asking for help says what to install
    _one_line_naming_the_extra(capsys, "collect")
    assert not (tmp_path / "o.jsonl").exists()


def test_score_with_a_judge_without_the_adapter_names_the_extra(without_adapter, tmp_path: Path, capsys) -> None:
    argv = ["score", "r.jsonl", "--queries", "q.jsonl", "--judge", "openai:gpt-4o", "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    _one_line_naming_the_extra(capsys, "score")


def test_a_registered_command_that_cannot_be_imported_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    broken = EntryPoint("collect", "no_such_adapter_module:add_collect_command", COMMANDS_GROUP)
    monkeypatch.setattr(zooter.cli, "entry_points", lambda group: [broken] if group == COMMANDS_GROUP else [])
    assert main(["collect", "q.jsonl"]) == 2
    _one_line_naming_the_extra(capsys, "collect")
