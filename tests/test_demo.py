"""`zooter demo` on the bundled llmrouter_9model set, the data shipped for it, and what every command shares."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from zooter.cli import build_parser, main
from zooter.demo import resource

ROOT = Path(__file__).resolve().parents[1]
NINE = "llmrouter_9model"


def test_the_nine_model_set_ships_unchanged_with_its_licence() -> None:
    from zooter.demo import llmrouter_data

    train, test, prices = llmrouter_data()
    assert (len(train), len(test)) == (5608, 500)
    assert (len(set(train.tasks)), len(set(test.tasks))) == (14, 10)
    assert sorted(prices.experts) == sorted(train.experts) and len(train.experts) == 9
    notice = resource(f"{NINE}/NOTICE.md").read_text(encoding="utf-8")
    assert "MIT License" in notice and "ulab-uiuc/LLMRouter" in notice and "Copyright (c) 2024 U Lab @UIUC" in notice
    if (SHARED_DATA / NINE).is_dir():  # the project's copy of the source: the numbers are the same
        for name in ("train.jsonl.gz", "test.jsonl.gz", "experts.json"):
            shipped, source = resource(f"{NINE}/{name}"), SHARED_DATA / NINE / name
            opened = gzip.open if name.endswith(".gz") else open
            with opened(shipped, "rb") as a, opened(source, "rb") as b:
                assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), name


def test_the_wheel_takes_every_bundled_file() -> None:
    """Each file under zooter/resources matches pyproject's package-data, and NOTICE files its licence-files."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = project["tool"]["setuptools"]["package-data"]["zooter"]
    licence_files = project["project"]["license-files"]
    folder = ROOT / "zooter" / "resources"
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert any(p.name == "train.jsonl.gz" for p in files)
    for path in files:
        inside = path.relative_to(ROOT / "zooter").as_posix()
        assert any(fnmatch.fnmatch(inside, glob) for glob in package_data), f"{inside} is left out of the wheel"
        if path.name == "NOTICE.md":
            assert any(fnmatch.fnmatch(path.relative_to(ROOT).as_posix(), glob) for glob in licence_files)


@pytest.fixture(scope="module")
def demo_run(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `zooter demo --json --output --plot` run with a tiny encoder: its output, files and report."""
    import contextlib
    import io

    import zooter.demo

    folder = tmp_path_factory.mktemp("demo")
    reports = []
    real = zooter.demo.run_demo

    def keep(*args, **kwargs):
        reports.append(real(*args, **kwargs))
        return reports[-1]

    out, err = io.StringIO(), io.StringIO()
    argv = ["demo", "--json", "--encoder", tiny_encoder, "--output", str(folder / "router")]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setattr(zooter.demo, "run_demo", keep)
        code = main([*argv, "--plot", str(folder / "frontier.png")])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "folder": folder, "report": reports[0]}


def test_demo_json_reports_routing_costs_and_examples(demo_run: dict) -> None:
    assert demo_run["code"] == 0
    report = json.loads(demo_run["out"])  # stdout is one JSON object; the summary line goes to stderr
    assert report["data"] == "llmrouter" and (report["train_rows"], report["test_rows"]) == (5608, 500)
    # the data's own figures, whatever the router learnt
    assert report["best_single"]["expert"] == "llama-3.1-nemotron-51b-instruct"
    assert report["best_single"]["score"] == pytest.approx(0.5626, abs=5e-5)
    assert report["oracle"] == pytest.approx(0.7434, abs=5e-5)
    assert report["random"] < report["per_task_best"] < report["oracle"]
    routed, best = report["routed"], report["best_single"]["score"]
    assert report["gap_recovered"] == pytest.approx((routed - best) / (report["oracle"] - best))
    shares = report["routing_share"]
    assert len(shares) == 9 and sum(shares.values()) == pytest.approx(1.0)
    costs = report["costs"]
    assert set(costs["cost_to_reach"]) == {"50%", "80%", "95%", "100%"}
    assert costs["router"]["reward"] == pytest.approx(routed)  # quality-only routing is the frontier's λ = 0 end
    reach = costs["cost_to_reach"]["100%"]
    if reach is None:
        assert report["best_single_quality_cost"] is None
    else:
        assert reach["reward"] >= best - 1e-9
        assert report["best_single_quality_cost"] == reach["cost"] <= costs["best_single"]["cost"]
    assert [ex["task"] for ex in report["examples"]] == ["gsm8k", "human_eval", "trivia_qa"]
    assert all(ex["expert"] in shares and ex["expected_rewards"] and ex["reason"] for ex in report["examples"])
    assert demo_run["err"].strip().splitlines()[-1].startswith("zooter demo: routed ")
    assert (demo_run["folder"] / "frontier.png").read_bytes().startswith(b"\x89PNG")

    from zooter.model.router import ZooterRouter

    router = ZooterRouter.from_pretrained(demo_run["folder"] / "router")
    assert router.experts == list(shares) and router.costs is not None
    assert "| zooter (routed) |" in (demo_run["folder"] / "router" / "README.md").read_text(encoding="utf-8")


def test_demo_text_tells_the_whole_story(demo_run: dict) -> None:
    text = demo_run["report"].format_text()
    for part in ("llmrouter_9model", "best single (llama-3.1-nemotron-51b-instruct)", "per-task best", "oracle"):
        assert part in text
    assert "share of test queries routed to each model" in text and "cost-quality frontier" in text
    assert "best single model's quality" in text
    assert text.count("<- chosen") == 3 and "default expert: llama-3.1-nemotron-51b-instruct" in text


def test_the_arena_demo_still_runs_and_quiet_keeps_stderr_empty(tiny_encoder: str, capsys) -> None:
    assert main(["demo", "--data", "arena", "--encoder", tiny_encoder, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "arena-bench-v1" in captured.out and "best single" in captured.out
    assert "cost-quality frontier" not in captured.out  # no prices for this set
    assert captured.out.count("<- chosen") == 3
    assert captured.err == ""  # --quiet: no progress bar, no summary line


def test_plot_needs_prices_so_the_arena_demo_refuses_it(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--data", "arena", "--plot", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zooter demo: error:") and err.count("\n") == 1 and "prices" in err


def test_every_command_takes_quiet() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        if "-" in command.prefix_chars:  # not the stand-in for a command whose package is missing
            options = {s for a in command._actions for s in a.option_strings}
            assert "--quiet" in options, name


def test_a_command_ends_with_a_summary_line_unless_quiet(write_jsonl, tmp_path: Path, capsys) -> None:
    rows = [{"id": f"q{i}", "query": f"question {i}", "rewards": {"a": i % 2, "b": 1 - i % 2}} for i in range(20)]
    data = write_jsonl(rows)
    assert main(["split", str(data), "--output-dir", str(tmp_path / "parts")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zooter split: 20 rows split into")
    assert main(["split", str(data), "--output-dir", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
