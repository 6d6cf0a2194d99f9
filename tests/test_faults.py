"""Fault injection through the real ``zooter`` command, one process per case.

Each case runs the CLI on a fresh copy of a small workspace (a tiny encoder, a tiny reward model, a
trained router, data files) with one thing wrong, and checks what a user relies on: exit code 2,
exactly one line on stderr that names the problem, and every file in the workspace byte-identical
afterwards (nothing written, nothing cut, nothing left behind).

Starting Python with torch and transformers costs seconds, so the cases run in processes forked
from one warm process that has imported them; each child then runs ``python -m zooter.cli`` as
its own ``__main__``, with its own stdin, stdout, stderr and exit code. Cases that depend on the
environment at import time (the Hub's settings) start a fresh interpreter instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import KILL_AT_STEP, build_tiny_encoder, keyword_rows

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# The warm process: imports the heavy packages once, then forks one child per case read from stdin.
WARM = r"""
import json, os, runpy, sys, traceback
import torch, transformers, safetensors.torch  # noqa: F401  (the slow imports, paid once)
import zooter.data, zooter.model.router, zooter.rewards.scoring, zooter.training  # noqa: F401
sys.modules.pop("zooter.cli", None)  # runpy runs it as __main__, fresh

for line in sys.stdin:
    case = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(case["cwd"])
            for fd, name, flags in ((0, case["stdin"], os.O_RDONLY), (1, case["stdout"], os.O_WRONLY),
                                    (2, case["stderr"], os.O_WRONLY)):
                os.dup2(os.open(name, flags), fd)
            if case["script"]:
                sys.argv = [case["script"], *case["argv"]]
                runpy.run_path(case["script"], run_name="__main__")
            else:
                sys.argv = ["zooter", *case["argv"]]
                runpy.run_module("zooter.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Zooter:
    """Runs ``zooter ARGV`` in a child process and returns its exit code, stdout and stderr."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.runs = 0
        self.warm: subprocess.Popen[str] | None = None
        if hasattr(os, "fork"):
            self.warm = subprocess.Popen(
                [sys.executable, "-c", WARM], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )

    def __call__(
        self,
        *argv: str | Path,
        cwd: Path,
        stdin: str = "",
        env: dict[str, str] | None = None,
        script: Path | None = None,
    ) -> Result:
        """``zooter ARGV`` (or ``python SCRIPT ARGV``) in ``cwd``; ``env`` asks for a fresh interpreter."""
        argv = tuple(str(a) for a in argv)
        self.runs += 1
        files = {name: self.scratch / f"{self.runs}.{name}" for name in ("stdin", "stdout", "stderr")}
        files["stdin"].write_text(stdin, encoding="utf-8")
        files["stdout"].touch()
        files["stderr"].touch()
        if self.warm is None or env is not None:  # a fresh interpreter
            with open(files["stdin"]) as f_in:
                done = subprocess.run(
                    [sys.executable, *([str(script)] if script else ["-m", "zooter.cli"]), *argv],
                    cwd=cwd,
                    stdin=f_in,
                    capture_output=True,
                    text=True,
                    env={**ENV, **(env or {})},
                    timeout=300,
                )
            return Result(done.returncode, done.stdout, done.stderr)
        assert self.warm.stdin is not None and self.warm.stdout is not None
        case = {"argv": argv, "cwd": str(cwd), "script": str(script or ""), **{k: str(v) for k, v in files.items()}}
        self.warm.stdin.write(json.dumps(case) + "\n")
        self.warm.stdin.flush()
        reply = self.warm.stdout.readline()
        assert reply, "the warm process died"
        read = {k: files[k].read_text(encoding="utf-8") for k in ("stdout", "stderr")}
        return Result(json.loads(reply), read["stdout"], read["stderr"])

    def close(self) -> None:
        if self.warm is not None:
            assert self.warm.stdin is not None
            self.warm.stdin.close()
            self.warm.wait(timeout=60)


@pytest.fixture(scope="module")
def zooter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zooter]:
    runner = Zooter(tmp_path_factory.mktemp("runs"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace every case starts from (copied afresh for each)."""
    from zooter.data import RoutingDataset, RoutingExample
    from zooter.training import TrainingConfig, train_router

    ws = tmp_path_factory.mktemp("workspace")
    encoder = build_tiny_encoder(ws / "encoder")
    build_tiny_encoder(ws / "reward-model", num_labels=1)
    rows = keyword_rows(24, seed=3)
    write_lines(ws / "data.jsonl", rows)
    write_lines(ws / "queries.jsonl", [{"id": r["id"], "query": r["query"]} for r in rows])
    answers = [{"id": r["id"], "model": m, "response": f"{m} says {r['query']}"} for r in rows for m in r["rewards"]]
    write_lines(ws / "responses.jsonl", answers)
    data = RoutingDataset([RoutingExample.from_dict(r) for r in rows])
    config = TrainingConfig(encoder=str(encoder), epochs=1, max_length=32, device="cpu", show_progress=False)
    train_router(data, config).save_pretrained(ws / "router")
    return ws


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def ws(original: Path, tmp_path: Path) -> Path:
    """A fresh copy of the workspace."""
    copy = tmp_path / "ws"
    shutil.copytree(original, copy, symlinks=True)
    return copy


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a link's target, a folder's mark."""
    entries: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            entries[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            entries[key] = "dir"
        else:
            entries[key] = path.read_bytes()
    return entries


def assert_refused(result: Result, *words: str) -> None:
    """Exit code 2 and one line on stderr naming the problem (each of ``words``), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("zooter "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


TRAIN = ("train", "data.jsonl", "--encoder", "encoder", "--max-length", "32", "--epochs", "2", "--quiet")
SCORE = ("score", "responses.jsonl", "--queries", "queries.jsonl", "--reward-model", "reward-model", "--quiet")

# (case id, command line run in the workspace, words the one error line must hold, setup in the workspace)
CASES = [
    # 1. an output that is one of the command's inputs
    ("score-output-is-responses", (*SCORE, "--output", "responses.jsonl"), ["responses.jsonl", "input"], None),
    ("score-output-is-queries", (*SCORE, "--output", "queries.jsonl"), ["queries.jsonl", "input"], None),
    ("score-output-links-to-input", (*SCORE, "--output", "link.jsonl"), ["link.jsonl", "input"], "link"),
    (
        "collect-output-is-queries",
        ("collect", "queries.jsonl", "--expert", "a=openai:gpt-4o-mini", "--output", "queries.jsonl"),
        ["queries.jsonl", "input"],
        None,
    ),
    (
        "collect-failures-is-queries",
        (
            "collect",
            "queries.jsonl",
            "--expert",
            "a=openai:gpt-4o-mini",
            "--output",
            "o.jsonl",
            "--failures",
            "./queries.jsonl",
        ),
        ["queries.jsonl", "input"],
        None,
    ),
    (
        "split-output-is-input",
        ("split", "parts/train.jsonl", "--output-dir", "parts"),
        ["train.jsonl", "input"],
        "parts",
    ),
    # 3. non-finite numbers: refused as options, and when training diverges (nothing saved)
    ("train-lr-inf", (*TRAIN, "--output", "new", "--lr=inf"), ["--lr", "finite"], None),
    ("train-beta-nan", (*TRAIN, "--output", "new", "--tags", "task", "--beta", "nan"), ["--beta", "finite"], None),
    ("split-fraction-inf", ("split", "data.jsonl", "--output-dir", "s", "--test-fraction=-inf"), ["finite"], None),
    (
        "train-diverges",
        (*TRAIN, "--output", "new", "--method", "distill", "--lr", "1e30"),
        ["diverged", "lr=1e+30"],
        None,
    ),
    # 2. a router folder that lacks part of its tokenizer
    ("route-no-tokenizer-json", ("route", "router", "hello"), ["tokenizer.json"], "no-tokenizer"),
    ("route-nan-router", ("route", "router", "hello", "--json"), ["non-finite", "model.safetensors"], "nan-router"),
    # 6. the output location is checked before any model is loaded or trained
    ("split-output-dir-is-a-file", ("split", "data.jsonl", "--output-dir", "afile"), ["afile", "is a file"], "afile"),
    (
        "split-output-dir-under-a-file",
        ("split", "data.jsonl", "--output-dir", "afile/sub"),
        ["afile", "is a file"],
        "afile",
    ),
    ("score-output-is-a-folder", (*SCORE, "--output", "router"), ["router", "is a folder"], None),
    ("score-output-under-a-file", (*SCORE, "--output", "afile/out.jsonl"), ["afile", "is a file"], "afile"),
    ("train-output-under-a-file", (*TRAIN, "--output", "afile/sub"), ["afile", "is a file"], "afile"),
    ("train-output-is-a-file", (*TRAIN, "--output", "afile"), ["afile", "is a file"], "afile"),
    ("train-output-is-a-project", (*TRAIN, "--output", "encoder"), ["encoder", "not a router folder"], None),
    ("demo-output-under-a-file", ("demo", "--output", "afile/r", "--epochs", "0"), ["afile", "is a file"], "afile"),
    (
        "collect-output-under-a-file",
        ("collect", "queries.jsonl", "--expert", "a=openai:gpt-4o-mini", "--output", "afile/o.jsonl"),
        ["afile", "is a file"],
        "afile",
    ),
    # 10. one line, exit 2, for every one of these
    (
        "train-one-expert",
        (*TRAIN, "--output", "new", "--experts", "coder", "--validation", "data.jsonl"),
        ["at least 2 experts"],
        None,
    ),
    ("train-no-expert", (*TRAIN, "--output", "new", "--experts", ","), ["at least 2 experts"], None),
    ("eval-many-unknown-experts", ("eval", "router", "wide.jsonl"), ["more", "experts differ"], "wide"),
    ("eval-data-is-a-folder", ("eval", "router", "encoder"), ["encoder", "is a folder"], None),
    ("train-data-is-a-folder", (*TRAIN, "--output", "new", "--validation", "router"), ["router", "is a folder"], None),
    # 4. a file that is not a responses file, given as collect's output, is refused whole
    (
        "collect-output-is-another-queries-file",
        ("collect", "queries.jsonl", "--expert", "a=openai:gpt-4o-mini", "--output", "other.jsonl"),
        ["other.jsonl:1", "responses record"],
        "other",
    ),
    # the cases that already held, kept holding
    ("eval-malformed-line", ("eval", "router", "bad.jsonl"), ["bad.jsonl:2", "malformed JSON"], "bad"),
    ("eval-not-utf8", ("eval", "router", "binary.jsonl"), ["binary.jsonl", "not UTF-8"], "binary"),
    ("eval-not-gzip", ("eval", "router", "fake.jsonl.gz"), ["fake.jsonl.gz", "cannot read"], "fake-gz"),
    ("eval-missing-file", ("eval", "router", "missing.jsonl"), ["missing.jsonl", "no such file"], None),
    ("eval-batch-size-0", ("eval", "router", "data.jsonl", "--batch-size", "0"), ["batch_size"], None),
    ("route-bad-device", ("route", "router", "hello", "--device", "gpu"), ["not a device"], None),
    ("route-missing-router", ("route", "./missing-router", "hello"), ["missing-router"], None),
    ("route-an-encoder-folder", ("route", "encoder", "hello"), ["not a router folder"], None),
    ("route-unknown-allowed", ("route", "router", "hello", "--allowed", "nobody"), ["nobody"], None),
    ("train-epochs-0", (*TRAIN, "--output", "new", "--epochs", "0"), ["epochs"], None),
    ("train-missing-data", ("train", "missing.jsonl", "--output", "new"), ["missing.jsonl", "no such file"], None),
    ("score-unknown-expert", (*SCORE, "--output", "out.jsonl", "--experts", "nobody"), ["nobody"], None),
    (
        "score-missing-responses",
        ("score", "nothing.jsonl", *SCORE[2:], "--output", "out.jsonl"),
        ["nothing.jsonl"],
        None,
    ),
    (
        "collect-bad-spec",
        ("collect", "queries.jsonl", "--expert", "a", "--output", "o.jsonl"),
        ["NAME=PROVIDER:MODEL"],
        None,
    ),
    # bad price files and cost options: refused before any training, naming the field
    (
        "train-costs-missing-expert",
        (*TRAIN, "--output", "new", "--costs", "c-missing.json"),
        ["c-missing.json", "poet"],
        "costs",
    ),
    (
        "train-costs-negative",
        (*TRAIN, "--output", "new", "--costs", "c-negative.json"),
        ["c-negative.json", "mathbot.input_price_per_mtok", ">= 0", "-1"],
        "costs",
    ),
    (
        "train-costs-not-a-number",
        (*TRAIN, "--output", "new", "--costs", "c-text.json"),
        ["c-text.json", "coder.output_price_per_mtok", "number", "cheap"],
        "costs",
    ),
    (
        "train-costs-not-json",
        (*TRAIN, "--output", "new", "--costs", "c-broken.json"),
        ["c-broken.json", "JSON"],
        "costs",
    ),
    ("train-target-without-costs", (*TRAIN, "--output", "new", "--target-quality", "0.9"), ["--costs"], None),
    (
        "train-target-share-malformed",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--target-share", "coder"),
        ["EXPERTS=FRACTION"],
        "costs",
    ),
    (
        "train-cost-weight-on-distill",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--cost-weight", "1", "--method", "distill"),
        ["neighbours"],
        "costs",
    ),
    # issue 20 item 8: a price no float holds, or one whose product overflows, refused before training
    (
        "train-costs-400-digit-price",
        (*TRAIN, "--output", "new", "--costs", "c-huge.json"),
        ["c-huge.json", "mathbot.input_price_per_mtok", "401 digits"],
        "costs",
    ),
    (
        "train-costs-overflowing-product",
        (*TRAIN, "--output", "new", "--costs", "c-overflow.json", "--target-cost", "0.001"),
        ["c-overflow.json", "mathbot.output_price_per_mtok", "<= 1e+09"],
        "costs",
    ),
    # issue 20 item 9: a reward finite in JSON but beyond what float32 sums hold
    (
        "train-reward-beyond-float32",
        ("train", "big.jsonl", *TRAIN[2:], "--output", "new"),
        ["big.jsonl:1", "rewards.mathbot", "1e+15", "1e+39"],
        "big-rewards",
    ),
    # issue 20 item 11: a responses file of other experts
    (
        "train-responses-of-other-experts",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--responses", "r-other.jsonl"),
        ["r-other.jsonl", "no answer from any of the experts", "gpt-4"],
        "costs",
    ),
    # issue 20 item 12: a cut line in the middle of --responses, and a folder given as the file
    (
        "train-responses-cut-line",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--responses", "r-cut.jsonl"),
        ["r-cut.jsonl:3", "malformed JSON"],
        "costs",
    ),
    (
        "train-responses-is-a-folder",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--responses", "router"),
        ["router", "is a folder"],
        "costs",
    ),
    # issue 20 item 13: checked before training (the missing encoder would be loaded first otherwise),
    # an image kind matplotlib cannot write, and argparse's own errors in one line
    (
        "train-target-share-unknown-expert",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--target-share", "gpt-4=0.5", "--encoder", "gone"),
        ["gpt-4", "share_experts"],
        "costs",
    ),
    (
        "eval-plot-unknown-image-kind",
        ("eval", "router", "data.jsonl", "--costs", "c-good.json", "--plot", "f.xyz"),
        ["f.xyz", "png"],
        "costs",
    ),
    (
        "train-two-targets",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--target-cost", "1", "--target-quality", "0.9"),
        ["--target-quality", "not allowed with", "--help"],
        "costs",
    ),
    (
        "train-cost-weight-not-a-number",
        (*TRAIN, "--output", "new", "--costs", "c-good.json", "--cost-weight", "abc"),
        ["--cost-weight", "'abc'"],
        "costs",
    ),
    ("train-without-arguments", ("train",), ["required", "--output"], None),
    # issue 20 item 10: an expert named explicitly that has no reward; λ fitted on a handful of rows
    (
        "train-expert-all-null",
        ("train", "sparse.jsonl", *TRAIN[2:], "--output", "new", "--experts", "mathbot,ghost"),
        ["sparse.jsonl", "ghost", "null"],
        "sparse",
    ),
    ("eval-plot-without-prices", ("eval", "router", "data.jsonl", "--plot", "f.png"), ["--plot", "--costs"], None),
    ("route-cost-weight-without-prices", ("route", "router", "hello", "--cost-weight", "2"), ["set_costs"], None),
    # issue 20 item 5: a negative budget is refused, as a negative cost weight is
    ("route-negative-max-cost", ("route", "router", "hello", "--max-cost", "-1"), ["--max-cost", ">= 0", "-1"], None),
    # issue 20 item 3: config.json sections checked where they load, naming the file and the field
    (
        "route-config-default-expert-unknown",
        ("route", "router", "hello"),
        ["config.json", "decision.default_expert", "nobody"],
        "config-default-expert",
    ),
    (
        "route-config-penalised-unknown",
        ("route", "router", "hello"),
        ["config.json", "costs.calibration.penalised", "nobody"],
        "config-penalised",
    ),
    (
        "route-config-cost-weight-text",
        ("route", "router", "hello"),
        ["config.json", "costs.cost_weight", "abc"],
        "config-cost-weight",
    ),
    # keeping a router current: bad feedback is refused whole, the router untouched
    (
        "update-unknown-expert",
        ("update", "router", "fb-unknown.jsonl"),
        ["fb-unknown.jsonl", "id 'f2'", "stranger", "add-expert"],
        "feedback",
    ),
    ("update-row-without-reward", ("update", "router", "fb-empty.jsonl"), ["fb-empty.jsonl:2", "rewards"], "feedback"),
    ("update-another-routers-data", ("update", "router", "fb-other.jsonl"), ["another router"], "feedback"),
    ("update-missing-file", ("update", "router", "missing.jsonl"), ["missing.jsonl", "no such file"], None),
    ("add-expert-known-name", ("add-expert", "router", "coder", "fb-new.jsonl"), ["already"], "feedback"),
    ("add-expert-no-reward-for-it", ("add-expert", "router", "newbie", "fb-good.jsonl"), ["newbie"], "feedback"),
    ("remove-expert-unknown", ("remove-expert", "router", "nobody"), ["nobody"], None),
]


def edit_config(ws: Path, **changes: object) -> None:
    path = ws / "router" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))


def setup_case(ws: Path, setup: str | None) -> None:
    if setup == "link":
        (ws / "link.jsonl").symlink_to("responses.jsonl")
    elif setup == "nan-router":
        from conftest import record_file
        from safetensors.torch import load_file, save_file

        weights = load_file(ws / "router" / "model.safetensors")
        weights["encoder.pooler.dense.weight"][0, 0] = float("nan")
        save_file(weights, ws / "router" / "model.safetensors", metadata={"format": "pt"})
        record_file(ws / "router", "model.safetensors")  # the checksum fixed too: the weights are refused
    elif setup == "no-tokenizer":
        (ws / "router" / "tokenizer.json").unlink()
    elif setup == "other":  # a queries file whose last line lacks its newline
        (ws / "other.jsonl").write_text((ws / "queries.jsonl").read_text().rstrip("\n"))
    elif setup == "bad":
        (ws / "bad.jsonl").write_text((ws / "data.jsonl").read_text().splitlines()[0] + '\n{"id": "b", oops}\n')
    elif setup == "binary":
        (ws / "binary.jsonl").write_bytes(b"\xff\xfe not utf-8")
    elif setup == "fake-gz":
        (ws / "fake.jsonl.gz").write_bytes(b"not gzip")
    elif setup == "afile":
        (ws / "afile").write_text("not a folder\n")
    elif setup == "wide":
        rows = [json.loads(line) for line in (ws / "data.jsonl").read_text().splitlines()]
        for row in rows:
            row["rewards"].update({f"expert-{i}": 1.0 for i in range(3000)})
        write_lines(ws / "wide.jsonl", rows)
    elif setup == "costs":
        good = {name: {"input_price_per_mtok": 1.0} for name in ("mathbot", "coder", "poet")}
        (ws / "c-good.json").write_text(json.dumps(good))
        (ws / "c-missing.json").write_text(json.dumps({k: v for k, v in good.items() if k != "poet"}))
        (ws / "c-negative.json").write_text(json.dumps({**good, "mathbot": {"input_price_per_mtok": -1}}))
        (ws / "c-text.json").write_text(json.dumps({**good, "coder": {"output_price_per_mtok": "cheap"}}))
        (ws / "c-broken.json").write_text('{"mathbot": ')
        (ws / "c-huge.json").write_text(json.dumps({**good, "mathbot": {"input_price_per_mtok": int("9" * 401)}}))
        overflow = {"output_price_per_mtok": 1e300, "expected_output_tokens": 1e300}
        (ws / "c-overflow.json").write_text(json.dumps({**good, "mathbot": overflow}))
        answers = (ws / "responses.jsonl").read_text().splitlines(keepends=True)
        (ws / "r-cut.jsonl").write_text("".join([*answers[:2], answers[2][:25] + "\n", *answers[3:]]))
        other = [{"id": "q0", "model": name, "response": "hi"} for name in ("gpt-4", "claude")]
        write_lines(ws / "r-other.jsonl", other)
    elif setup == "sparse":
        rows = [json.loads(line) for line in (ws / "data.jsonl").read_text().splitlines()]
        for i, row in enumerate(rows):
            row["rewards"].update(rare=10.0 if i == 0 else None, ghost=None)
        write_lines(ws / "sparse.jsonl", rows)
        prices = {name: {"input_price_per_mtok": 1.0} for name in ("mathbot", "coder", "poet", "rare")}
        (ws / "c-sparse.json").write_text(json.dumps(prices))
    elif setup == "big-rewards":
        rows = [json.loads(line) for line in (ws / "data.jsonl").read_text().splitlines()]
        rows[0]["rewards"]["mathbot"] = 1e39
        write_lines(ws / "big.jsonl", rows)
    elif setup is not None and setup.startswith("config-"):
        prices = {name: {"cost_per_call": 1e-6} for name in ("mathbot", "coder", "poet")}
        edit_config(
            ws,
            **{
                "config-default-expert": {"decision": {"default_expert": "nobody", "margin": 0.0}},
                "config-penalised": {
                    "costs": {
                        "prices": prices,
                        "cost_weight": 1.0,
                        "calibration": {"unit": "calls", "penalised": ["nobody"]},
                    }
                },
                "config-cost-weight": {"costs": {"prices": prices, "cost_weight": "abc"}},
            }[setup],
        )
    elif setup == "feedback":
        good = {"id": "f1", "query": "a new integral question", "rewards": {"mathbot": 7.0}}
        write_lines(ws / "fb-good.jsonl", [good])
        write_lines(ws / "fb-unknown.jsonl", [good, {**good, "id": "f2", "rewards": {"stranger": 1.0}}])
        write_lines(ws / "fb-empty.jsonl", [good, {**good, "id": "f2", "rewards": {}}])
        write_lines(ws / "fb-other.jsonl", [{**good, "rewards": {"gpt-4": 1.0, "claude-2": 0.0}}])
        write_lines(ws / "fb-new.jsonl", [{**good, "rewards": {"coder": 1.0}}])
    elif setup == "parts":
        (ws / "parts").mkdir()
        shutil.copy(ws / "data.jsonl", ws / "parts" / "train.jsonl")


@pytest.mark.parametrize(("argv", "words", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(
    zooter: Zooter, ws: Path, argv: tuple[str, ...], words: list[str], setup: str | None
) -> None:
    setup_case(ws, setup)
    before = snapshot(ws)
    result = zooter(*argv, cwd=ws)
    assert_refused(result, *words)
    assert snapshot(ws) == before


@pytest.mark.parametrize("free", [["mathbot", "coder", "poet"], ["mathbot"]], ids=["all-free", "best-free"])
def test_eval_costs_with_a_free_best_expert_says_n_a_where_no_ratio_exists(
    zooter: Zooter, ws: Path, free: list[str]
) -> None:
    # issue 20 item 7: self-hosted experts cost nothing; mathbot is the best single expert on data.jsonl
    prices = {name: {"input_price_per_mtok": 0.0 if name in free else 2.0} for name in ("mathbot", "coder", "poet")}
    (ws / "free.json").write_text(json.dumps(prices))
    result = zooter("eval", "router", "data.jsonl", "--costs", "free.json", "--quiet", cwd=ws)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best single mathbot" in result.stdout
    assert "95% of the best single expert's quality: 0 USD / 1k queries (n/a: the best single expert is free)" in (
        result.stdout
    )
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_a_plot_that_cannot_be_written_is_refused_before_evaluating(zooter: Zooter, ws: Path) -> None:
    # issue 20 item 13: permission bits do not show it (root passes them): /proc takes no new file
    setup_case(ws, "costs")
    before = snapshot(ws)
    result = zooter("eval", "router", "data.jsonl", "--costs", "c-good.json", "--plot", "/proc/frontier.png", cwd=ws)
    assert_refused(result, "cannot write /proc/frontier.png")
    assert ".tmp" not in result.stderr and result.stdout == ""  # the user's path, before any evaluation
    assert snapshot(ws) == before


def test_a_cost_target_on_a_sparse_expert_is_refused_before_training(zooter: Zooter, ws: Path) -> None:
    # issue 20 item 10: 'rare' has one reward in 24 rows; λ was fitted on that one row. The missing
    # encoder would be loaded before training: the refusal comes first. The data's warnings come before it.
    setup_case(ws, "sparse")
    before = snapshot(ws)
    argv = ("train", "sparse.jsonl", *TRAIN[2:], "--output", "new", "--costs", "c-sparse.json", "--target-cost", "1")
    result = zooter(*argv, "--encoder", "gone", cwd=ws)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("zooter train: error: only 1 of 24") and "rare has 1" in last, last
    assert "every reward of ['ghost'] is null" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(ws) == before


def test_an_error_line_stays_short(zooter: Zooter, ws: Path) -> None:
    setup_case(ws, "wide")
    result = zooter("eval", "router", "wide.jsonl", cwd=ws)
    assert_refused(result, "and 2,990 more")
    assert len(result.stderr) < 600


@pytest.mark.parametrize(
    "argv",
    [(*TRAIN, "--output", "new", "--encoder", "nobody/no-such-encoder"), ("route", "nobody/no-such-router", "hello")],
)
def test_an_unreachable_hub_fails_at_once_in_one_line(zooter: Zooter, ws: Path, argv: tuple[str, ...]) -> None:
    before = snapshot(ws)
    # online, but nothing listens at the Hub's address: no retries, no Hub warning first
    offline = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = zooter(*argv, cwd=ws, env=offline)
    assert_refused(result, "nobody/no-such-", "Hub")
    assert snapshot(ws) == before


def test_a_damaged_training_log_is_a_warning_not_a_failure(zooter: Zooter, ws: Path) -> None:
    (ws / "router" / "training_log.jsonl").write_bytes(b'{"step": 1}\n{"step": 2, "lo\xff')
    result = zooter("route", "router", "write a haiku", "--json", cwd=ws)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["expert"] in {"mathbot", "coder", "poet"}
    assert "training_log.jsonl" in result.stderr


# A real save of a changed router, killed (SIGKILL) just before its Nth step: a file written, a
# file or folder flushed, a rename, a removal. Prints how many steps a whole save takes.
SAVE_KILLED_AT = (
    r"""
import sys
import torch
from zooter.model.router import ZooterRouter
"""
    + KILL_AT_STEP
    + r"""
source, target, point = sys.argv[1], sys.argv[2], int(sys.argv[3])
router = ZooterRouter.from_pretrained(source, device="cpu")
with torch.no_grad():
    router.head.bias.copy_(torch.tensor([9.0, 0.0, 0.0]))  # the new router sends everything to mathbot
steps = kill_at_step(point)
router.save_pretrained(target)
print(steps[0])
"""
)


def test_a_save_killed_at_any_point_leaves_a_whole_router(zooter: Zooter, ws: Path, tmp_path: Path) -> None:
    import signal

    import torch

    from zooter.model.router import ZooterRouter

    script = tmp_path / "save_killed_at.py"
    script.write_text(SAVE_KILLED_AT, encoding="utf-8")
    queries = ["write a haiku", "python regex", "an integral"]
    old = ZooterRouter.from_pretrained(ws / "router", device="cpu").predict_proba(queries)
    (ws / "router" / "NOTES.txt").write_text("mine")
    target, source = ws / "router", tmp_path / "source"
    shutil.copytree(target, source)
    whole = zooter(source, tmp_path / "counted", "0", cwd=ws, script=script)
    assert whole.returncode == 0, whole.stderr
    steps = int(whole.stdout)
    assert steps >= 5
    for point in range(1, steps + 1):
        killed = zooter(source, target, str(point), cwd=ws, script=script)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        router = ZooterRouter.from_pretrained(target, device="cpu")  # puts back a router set aside
        probs = router.predict_proba(queries)
        assert torch.equal(probs, old) or bool((probs[:, 0] > 0.99).all()), point  # the old router or the new
        assert (target / "NOTES.txt").read_text() == "mine"
        router.save_pretrained(target)  # a later save clears what the killed one left
        assert sorted(p.name for p in ws.iterdir() if p.name.startswith(".router")) == [], point
        if not torch.equal(probs, old):  # start the next point from the old router again
            shutil.rmtree(target)
            shutil.copytree(source, target)


def test_a_query_without_text_routes_as_in_the_api_with_a_warning(zooter: Zooter, ws: Path) -> None:
    from zooter.model.router import ZooterRouter

    expected = ZooterRouter.from_pretrained(ws / "router", device="cpu").route([""])[0]
    result = zooter("route", "router", "  ", "--json", cwd=ws)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["expert"] == expected.expert
    assert "no text" in result.stderr


def test_update_merges_feedback_in_place_and_says_what_changed(zooter: Zooter, ws: Path) -> None:
    from zooter.model.router import ZooterRouter

    write_lines(
        ws / "fb.jsonl",
        [
            {"id": "q1", "query": "x", "rewards": {"coder": 0.0}},
            {"id": "n1", "query": "a new regex question", "rewards": {"coder": 9.0}},
        ],
    )
    result = zooter("update", "router", "fb.jsonl", "--quiet", cwd=ws)
    assert result.returncode == 0, result.stderr
    assert "rows: 24 -> 25 (1 new, 1 merged)" in result.stdout and "margin:" in result.stdout
    router = ZooterRouter.from_pretrained(ws / "router", device="cpu")
    assert len(router.bank) == 25 and router.bank.ids[-1] == "n1"
    assert router.config.neighbours.updates == 1
    assert router.config.neighbours.sources[-1]["path"] == "fb.jsonl"
    removed = zooter("remove-expert", "router", "poet", "--output", "smaller", cwd=ws)
    assert removed.returncode == 0, removed.stderr
    assert "experts: 3 -> 2 (removed ['poet'])" in removed.stdout
    # retiring an expert reads no weights: the new folder links the encoder's file
    assert os.path.samestat(os.stat(ws / "router" / "model.safetensors"), os.stat(ws / "smaller" / "model.safetensors"))
    assert ZooterRouter.from_pretrained(ws / "smaller", device="cpu").experts == ["mathbot", "coder"]
    write_lines(ws / "poet.jsonl", [{"id": "q2", "query": "x", "rewards": {"poet": 5.0}}])
    added = zooter("add-expert", "smaller", "poet", "poet.jsonl", cwd=ws)
    assert added.returncode == 0, added.stderr
    assert ZooterRouter.from_pretrained(ws / "smaller", device="cpu").experts == ["mathbot", "coder", "poet"]


# A real update of a router folder in place, killed (SIGKILL) just before its Nth step.
UPDATE_KILLED_AT = SAVE_KILLED_AT.replace(
    """with torch.no_grad():
    router.head.bias.copy_(torch.tensor([9.0, 0.0, 0.0]))  # the new router sends everything to mathbot
""",
    """from zooter.data import RoutingExample
""",
).replace(
    "router.save_pretrained(target)",
    """router.update([RoutingExample.from_dict({"id": "new", "query": "a fresh haiku", "rewards": {"poet": 9.0}})])
router.save_pretrained(target)""",
)


# The same with routed feedback, as `zooter update` loads it: the encoder is never read, and the
# save links its weights file (a step the kill can fall on too).
UPDATE_WITH_VECTORS_KILLED_AT = (
    UPDATE_KILLED_AT.replace(
        'ZooterRouter.from_pretrained(source, device="cpu")',
        'ZooterRouter.from_pretrained(source, device="cpu", lazy_encoder=True)',
    )
    .replace(
        '"rewards": {"poet": 9.0}})])',
        """"rewards": {"poet": 9.0},
    "vector": QueryVector.of(torch.ones(router.bank.embeddings.shape[1]), router.encoder_id).to_dict()})])
assert router.encoder_deferred""",
    )
    .replace("from zooter.data import RoutingExample", "from zooter.data import QueryVector, RoutingExample")
)


@pytest.mark.parametrize("script_text", [UPDATE_KILLED_AT, UPDATE_WITH_VECTORS_KILLED_AT], ids=["embedded", "routed"])
def test_an_update_killed_at_any_point_leaves_the_old_or_the_new_router(
    zooter: Zooter, ws: Path, tmp_path: Path, script_text: str
) -> None:
    import signal

    from zooter.model.router import ZooterRouter

    assert "router.update(" in script_text and "head.bias" not in script_text
    script = tmp_path / "update_killed_at.py"
    script.write_text(script_text, encoding="utf-8")
    target, source = ws / "router", tmp_path / "source"
    shutil.copytree(target, source)
    whole = zooter(source, tmp_path / "counted", "0", cwd=ws, script=script)
    assert whole.returncode == 0, whole.stderr
    steps = int(whole.stdout)
    assert steps >= 5
    for point in range(1, steps + 1):
        killed = zooter(source, target, str(point), cwd=ws, script=script)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        router = ZooterRouter.from_pretrained(target, device="cpu")  # puts back a router set aside
        rows = len(router.bank)
        assert rows in (24, 25), point  # the old router or the new, whole
        assert router.config.neighbours.rows == rows and (router.bank.ids[-1] == "new") == (rows == 25)
        if rows == 25:
            shutil.rmtree(target)
            shutil.copytree(source, target)
