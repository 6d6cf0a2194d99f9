"""The ``zooter`` command: exit codes, one-line errors, and the ``--json`` shapes scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import keyword_rows

from zooter.cli import main


@pytest.fixture(scope="module")
def trained_dir(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A router trained through the CLI, and its held-out test file."""
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in keyword_rows(240, seed=1)))
    assert main(["split", str(data), "--output-dir", str(folder / "splits"), "--seed", "0"]) == 0
    code = main(
        [
            "train", str(folder / "splits" / "train.jsonl"),
            "--output", str(folder / "router"),
            "--validation", str(folder / "splits" / "validation.jsonl"),
            "--encoder", tiny_encoder, "--method", "distill",
            "--epochs", "20", "--batch-size", "16", "--lr", "3e-3", "--max-length", "32",
            "--temperature", "1.0", "--seed", "0", "--device", "cpu", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return folder / "router", folder / "splits" / "test.jsonl"


def test_split_writes_three_disjoint_files(trained_dir: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    splits = trained_dir[1].parent
    ids = {
        name: {json.loads(line)["id"] for line in (splits / f"{name}.jsonl").read_text().splitlines()}
        for name in ("train", "validation", "test")
    }
    assert [len(ids[n]) for n in ("train", "validation", "test")] == [168, 24, 48]
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])


def test_eval_json_has_the_documented_fields(trained_dir: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    router, test = trained_dir
    capsys.readouterr()
    assert main(["eval", str(router), str(test), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("n", "experts", "routed", "oracle", "random", "best_single", "per_expert", "gap_recovered",
                "routing_share", "per_task", "mtr", "uplift"):  # fmt: skip
        assert key in report, key
    assert report["n"] == 48
    assert report["experts"] == ["mathbot", "coder", "poet"]
    assert set(report["best_single"]) == {"expert", "score"}
    assert report["routed"] > report["best_single"]["score"]
    assert set(report["per_task"]) == {"mathbot", "coder", "poet"}
    # each expert wins only its own task; the router ranks better than every one of them overall
    assert report["mtr"]["zooter"] < min(report["mtr"][e] for e in report["experts"])


def test_eval_table(trained_dir: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    router, test = trained_dir
    capsys.readouterr()
    assert main(["eval", str(router), str(test), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "zooter (routed)" in out and "oracle" in out and "gap recovered" in out


def test_route_prints_expert_and_probabilities(trained_dir: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    router, _ = trained_dir
    capsys.readouterr()
    assert main(["route", str(router), "please explain this integral", "write a haiku", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["expert"] for line in lines] == ["mathbot", "poet"]
    assert all(abs(sum(line["probabilities"].values()) - 1) < 1e-4 for line in lines)
    assert main(["route", str(router), "python regex"]) == 0
    assert "-> coder" in capsys.readouterr().out
    assert main(["route", str(router), "haiku", "--allowed", "mathbot,coder", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expert"] in {"mathbot", "coder"}


def test_bad_input_exits_2_with_one_line(trained_dir: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    router, test = trained_dir
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "query": "q", "rewards": {"mathbot": 1, "coder": 2, "poet": 3}}\n{"id": "b", oops}\n')
    capsys.readouterr()
    assert main(["eval", str(router), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bad}:2" in err and "malformed JSON" in err

    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "a", "query": "q", "rewards": {"mathbot": 1, "coder": 2, "judge": 3}}\n')
    assert main(["eval", str(router), str(other)]) == 2
    err = capsys.readouterr().err
    assert "poet" in err and "judge" in err

    assert main(["route", str(tmp_path / "nowhere")]) == 2
    assert main(["train", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "r")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", str(test), "--output", str(tmp_path / "r"), "--epochs", "0"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_eval_can_drop_data_experts_the_router_lacks(trained_dir, tmp_path: Path, capsys) -> None:
    router, test = trained_dir
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    for row in rows:
        row["rewards"]["judge"] = 1.0
    wider = tmp_path / "wider.jsonl"
    wider.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(router), str(wider), "--quiet"]) == 2
    assert main(["eval", str(router), str(wider), "--quiet", "--drop-extra-experts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experts"] == ["mathbot", "coder", "poet"]


def test_usage_errors_exit_2_and_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "zooter.cli", "train"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
    result = subprocess.run([sys.executable, "-m", "zooter.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "zooter-langchain" in result.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b'{"id": "a", "query": "q", "rewards": {"x": 1' + b"0" * 400 + b', "y": 1}}', "finite"),
    ],
)
def test_unreadable_files_exit_2(trained_dir, tmp_path: Path, capsys, content: bytes, expected: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    assert main(["eval", str(trained_dir[0]), str(bad)]) == 2
    assert expected in capsys.readouterr().err
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(b"not gzip")
    assert main(["eval", str(trained_dir[0]), str(gz)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bad_options_exit_2(trained_dir, capsys) -> None:
    router, test = trained_dir
    assert main(["eval", str(router), str(test), "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["route", str(router), "hi", "--device", "gpu"]) == 2
    assert "not a device" in capsys.readouterr().err


def test_train_applies_experts_to_the_validation_file_too(trained_dir, tiny_encoder: str, tmp_path: Path) -> None:
    splits = trained_dir[0].parent / "splits"
    code = main(
        [
            "train", str(splits / "train.jsonl"), "--experts", "mathbot,coder",
            "--validation", str(splits / "validation.jsonl"),
            "--output", str(tmp_path / "two"), "--encoder", tiny_encoder, "--epochs", "1", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "two" / "config.json").read_text())["experts"] == ["mathbot", "coder"]


def test_json_output_never_holds_nan(trained_dir, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from zooter.model.router import RouteDecision, ZooterRouter

    def nan_route(self, queries, **kwargs):
        return [RouteDecision("poet", {"mathbot": float("nan"), "coder": float("inf"), "poet": 0.5}) for _ in queries]

    monkeypatch.setattr(ZooterRouter, "route", nan_route)
    capsys.readouterr()
    assert main(["route", str(trained_dir[0]), "hello", "--json"]) == 0

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    line = json.loads(capsys.readouterr().out, parse_constant=strict)
    assert line["probabilities"] == {"mathbot": None, "coder": None, "poet": 0.5}


def test_the_command_line_reference_lists_every_command_and_option() -> None:
    """docs/cli.md's synopsis names every command and each of its options (``--quiet``, which every
    command takes, is documented once under it; hidden options are left out)."""
    import argparse
    import re

    from zooter.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    synopsis = text.split("```text", 1)[1].split("```", 1)[0]
    blocks = {m.group(1): m.group(0) for m in re.finditer(r"^zooter ([\w-]+).*(?:\n(?!zooter ).*)*", synopsis, re.M)}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in sub.choices if name not in blocks]
    for name, command in sub.choices.items():
        shown = [action for action in command._actions if action.help != argparse.SUPPRESS]
        options = {o for action in shown for o in action.option_strings if o.startswith("--")}
        missing += [f"{name} {o}" for o in sorted(options - {"--help", "--quiet"}) if o not in blocks.get(name, "")]
    assert not missing, f"docs/cli.md does not list: {missing}"
