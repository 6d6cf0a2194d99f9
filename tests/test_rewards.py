"""The score stage: a tiny reward model, saved like a Hub model, scores real arena-bench answers."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SHARED_DATA, build_tiny_encoder

from zooter.cli import main
from zooter.data import RoutingDataset
from zooter.errors import ConfigError, DataError, ZooterError
from zooter.rewards.responses import read_responses
from zooter.rewards.scorers import RewardModelScorer, RewardScorer
from zooter.rewards.scoring import score_responses, scored_pairs_path

ROOT = Path(__file__).resolve().parents[1]
ARENA = SHARED_DATA / "arena_bench_v1"
MODELS = ["gpt-3.5-turbo", "claude-2.1", "Starling-LM-7B-alpha"]
# A template in the shape of real ones: every turn, its role and content between special tokens.
CHAT_TEMPLATE = "{% for m in messages %}[CLS] {{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"


def build_tiny_reward_model(
    folder: Path, texts: list[str], *, chat_template: str | None = None, num_labels: int = 1
) -> Path:
    """A tiny BERT sequence classifier with a vocabulary drawn from ``texts`` (letters spell the rest)."""
    words = Counter(w for text in texts for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()))
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["user", "assistant", "system", ":", *chars, *(f"##{c}" for c in chars)]
    vocab += [w for w, _ in words.most_common(1500)]
    return build_tiny_encoder(folder, words=vocab, num_labels=num_labels, chat_template=chat_template)


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """8 real prompts (a bare query file) and the real answers of 3 models to them (24 pairs)."""
    if not (ARENA / "responses.jsonl.gz").is_file():
        pytest.skip(f"shared data not found at {ARENA}")
    rows = [json.loads(line) for line in (ARENA / "rewards.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if all(m in r["rewards"] for m in MODELS)][:8]
    ids = {r["id"] for r in rows}
    with gzip.open(ARENA / "responses.jsonl.gz", "rt", encoding="utf-8") as f:
        answers = [a for a in map(json.loads, f) if a["id"] in ids and a["model"] in [*MODELS, "claude-1"]]
    folder = tmp_path_factory.mktemp("arena")
    queries = folder / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": r["id"], "query": r["query"], "task": "arena"}) + "\n" for r in rows))
    responses = folder / "responses.jsonl"
    responses.write_text("".join(json.dumps(a) + "\n" for a in answers))
    query_of = {r["id"]: r["query"] for r in rows}
    pairs = [(query_of[a["id"]], a["response"]) for a in answers if a["model"] in MODELS]
    return SimpleNamespace(queries=queries, responses=responses, rows=rows, answers=answers, pairs=pairs)


@pytest.fixture(scope="module")
def pair_rm(arena: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> str:
    texts = [r["query"] for r in arena.rows] + [a["response"] for a in arena.answers]
    return str(build_tiny_reward_model(tmp_path_factory.mktemp("pair-rm"), texts))


@pytest.fixture(scope="module")
def chat_rm(arena: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> str:
    texts = [r["query"] for r in arena.rows] + [a["response"] for a in arena.answers]
    return str(build_tiny_reward_model(tmp_path_factory.mktemp("chat-rm"), texts, chat_template=CHAT_TEMPLATE))


@pytest.fixture(scope="module", params=["pair", "chat"])
def any_rm(request: pytest.FixtureRequest, pair_rm: str, chat_rm: str) -> str:
    return pair_rm if request.param == "pair" else chat_rm


def score_args(arena: SimpleNamespace, model: str, output: Path, *extra: str) -> list[str]:
    return ["score", str(arena.responses), "--queries", str(arena.queries), "--reward-model", model,
            "--output", str(output), "--device", "cpu", "--quiet", *extra]  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_dataset(got: list[dict], expected: list[dict]) -> None:
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    for a, b in zip(got, expected):
        assert {k: v for k, v in a.items() if k != "rewards"} == {k: v for k, v in b.items() if k != "rewards"}
        assert list(a["rewards"]) == list(b["rewards"])
        torch.testing.assert_close(list(a["rewards"].values()), list(b["rewards"].values()), rtol=1e-5, atol=1e-5)


# -- the reward model ---------------------------------------------------------------------------
def test_score_cli_writes_a_dataset_that_zooter_train_accepts(
    arena: SimpleNamespace, pair_rm: str, tiny_encoder: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "rewards.jsonl"
    assert main(score_args(arena, pair_rm, out, "--experts", ",".join(MODELS), "--batch-size", "4")) == 0
    summary = capsys.readouterr().out
    assert "scored 24 pairs" in summary and "ignored answers of models outside --experts: {'claude-1': 8}" in summary

    data = RoutingDataset.load(out)
    assert [ex.id for ex in data] == [r["id"] for r in arena.rows]
    assert data.experts == MODELS and all(len(ex.rewards) == 3 for ex in data)
    assert {ex.task for ex in data} == {"arena"}
    # each reward is the model's score of that very (query, answer) pair
    scorer = RewardModelScorer.from_pretrained(pair_rm, device="cpu")
    answer = {(a["id"], a["model"]): a["response"] for a in arena.answers}
    keys = [(ex.id, m) for ex in data for m in MODELS]
    expected = scorer.score([data[[e.id for e in data].index(i)].query for i, _ in keys], [answer[k] for k in keys])
    got = [data[[e.id for e in data].index(i)].rewards[m] for i, m in keys]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    router = tmp_path / "router"
    code = main(["train", str(out), "--output", str(router), "--encoder", tiny_encoder, "--epochs", "1",
                 "--batch-size", "4", "--max-length", "32", "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    assert json.loads((router / "config.json").read_text())["experts"] == MODELS


def test_batch_scores_equal_one_by_one_in_input_order(arena: SimpleNamespace, any_rm: str) -> None:
    scorer = RewardModelScorer.from_pretrained(any_rm, device="cpu", batch_size=5)
    pairs = arena.pairs[::2]  # 12 pairs of 8 prompts: long and short ones, several answers to a prompt
    queries, responses = zip(*pairs)
    batched = scorer.score(queries, responses)
    one_by_one = [scorer.score([q], [r])[0] for q, r in pairs]
    assert len(set(batched)) > 1  # the rewards tell answers apart, so a mix-up would show
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)
    reversed_order = scorer.score(queries[::-1], responses[::-1])
    torch.testing.assert_close(reversed_order[::-1], batched, rtol=1e-5, atol=1e-5)
    assert scorer.score([], []) == []


def test_pair_encoding_is_the_model_cards_usage(pair_rm: str) -> None:
    """OpenAssistant's reward models: ``model(**tokenizer(question, answer)).logits[0]``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = RewardModelScorer.from_pretrained(pair_rm, device="cpu")
    assert not scorer.use_chat_template
    question, answer = "what is the capital of france ?", "the capital of france is paris ."
    tokenizer, model = (
        AutoTokenizer.from_pretrained(pair_rm),
        AutoModelForSequenceClassification.from_pretrained(pair_rm),
    )
    with torch.inference_mode():
        expected = model(**tokenizer(question, answer, return_tensors="pt")).logits[0, 0].item()
    assert scorer.score([question], [answer])[0] == pytest.approx(expected, abs=1e-5)


def test_chat_template_reads_the_query_then_the_answer_as_the_assistant_turn(chat_rm: str) -> None:
    """Skywork-Reward style: the conversation ends with the answer as the assistant's turn."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = RewardModelScorer.from_pretrained(chat_rm, device="cpu")
    assert scorer.use_chat_template
    chat = [
        {"role": "system", "content": "be brief ."},
        {"role": "user", "content": "what is python ?"},
        {"role": "assistant", "content": "a language ."},
        {"role": "user", "content": [{"type": "text", "text": "who made it ?"}]},  # content blocks: text kept
    ]
    answer = "guido van rossum ."
    tokenizer = scorer.tokenizer
    texts = [tokenizer.decode(row["input_ids"]) for row in scorer.encode(["what is python ?", chat], [answer] * 2)]
    assert texts[0] == "[CLS] user : what is python? [SEP] [CLS] assistant : guido van rossum. [SEP]"
    assert texts[1] == (
        "[CLS] system : be brief. [SEP] [CLS] user : what is python? [SEP] [CLS] assistant : a language. [SEP] "
        "[CLS] user : who made it? [SEP] [CLS] assistant : guido van rossum. [SEP]"
    )
    # the same reward transformers' own chat-template path gives
    model = AutoModelForSequenceClassification.from_pretrained(chat_rm)
    conversation = [{"role": "user", "content": "what is python ?"}, {"role": "assistant", "content": answer}]
    inputs = AutoTokenizer.from_pretrained(chat_rm).apply_chat_template(conversation, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**inputs).logits[0, 0].item()
    assert scorer.score(["what is python ?"], [answer])[0] == pytest.approx(expected, abs=1e-5)


def test_truncation_keeps_the_query_and_as_much_of_the_answer_as_fits(arena: SimpleNamespace, any_rm: str) -> None:
    scorer = RewardModelScorer.from_pretrained(any_rm, device="cpu", max_length=64)
    tokenizer = scorer.tokenizer
    answer = max((r for _, r in arena.pairs), key=len)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert len(answer_ids) > 200
    query = "why does my python function return none ?"
    [row] = scorer.encode([query], [answer])
    text = tokenizer.decode(row["input_ids"])
    assert len(row["input_ids"]) in (63, 64)  # full, give or take a word piece that did not fit
    assert "why does my python function return none?" in text
    assert tokenizer.decode(answer_ids[:20]) in text
    assert text.endswith("[SEP]")  # the end of the template (or the pair's last separator) survives

    # a query longer than the window keeps its end, and the answer still gets a quarter of it
    long_query = " ".join(["please"] * 100) + " now explain this integral ?"
    [row] = scorer.encode([long_query], [answer])
    text = tokenizer.decode(row["input_ids"])
    assert len(row["input_ids"]) <= 64
    assert "now explain this integral?" in text and text.count("please") < 100
    assert tokenizer.decode(answer_ids[:16]) in text

    short = scorer.encode(["hello world"], ["hello"])[0]["input_ids"]  # fits: untouched
    assert tokenizer.decode(short).count("hello") == 2


def test_weights_load_in_the_asked_dtype(arena: SimpleNamespace, pair_rm: str) -> None:
    fp32 = RewardModelScorer.from_pretrained(pair_rm, device="cpu")
    bf16 = RewardModelScorer.from_pretrained(pair_rm, device="cpu", dtype="bfloat16")
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    queries, responses = zip(*arena.pairs[:6])
    torch.testing.assert_close(bf16.score(queries, responses), fp32.score(queries, responses), atol=0.1, rtol=0.05)
    with pytest.raises(ConfigError, match="floating-point"):
        RewardModelScorer.from_pretrained(pair_rm, device="cpu", dtype="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_scores_in_half_precision_match_cpu(arena: SimpleNamespace, pair_rm: str) -> None:
    gpu = RewardModelScorer.from_pretrained(pair_rm)
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).dtype in (torch.bfloat16, torch.float16)
    queries, responses = zip(*arena.pairs)
    cpu = RewardModelScorer.from_pretrained(pair_rm, device="cpu").score(queries, responses)
    torch.testing.assert_close(gpu.score(queries, responses), cpu, atol=0.1, rtol=0.05)


def test_a_model_without_exactly_one_logit_is_refused(tiny_encoder: str, tmp_path: Path, capsys) -> None:
    three = build_tiny_reward_model(tmp_path / "three", ["a b c"], num_labels=3)
    with pytest.raises(ConfigError, match=r"has 3 output labels; a reward model .* exactly one"):
        RewardModelScorer.from_pretrained(three, device="cpu")
    with pytest.raises(ConfigError, match="plain encoder"):  # a bare encoder has no reward head
        RewardModelScorer.from_pretrained(tiny_encoder, device="cpu")


def test_a_hub_id_offline_gives_a_clear_error(write_jsonl, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ZooterError, match="not a local folder; as a Hub id it needs network access"):
        RewardModelScorer.from_pretrained("zooter-tests/no-such-reward-model", device="cpu")
    queries = write_jsonl([{"id": "q1", "query": "hi"}], "queries.jsonl")
    responses = write_jsonl([{"id": "q1", "model": "a", "response": "hello"}], "responses.jsonl")
    code = main(["score", str(responses), "--queries", str(queries), "--reward-model",
                 "zooter-tests/no-such-reward-model", "--output", str(queries.parent / "out.jsonl")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "zooter score: error: could not load the reward model 'zooter-tests/no-such-reward-model'" in err


# -- bad input ----------------------------------------------------------------------------------
def test_read_responses_reports_bad_lines_and_keeps_the_rest(write_jsonl) -> None:
    path = write_jsonl(
        [
            {"id": "a", "model": "m1", "response": "fine"},
            '{"id": "b", "model": ',
            {"id": "b", "response": "no model"},
            {"id": "b", "model": "m1", "response": 5},
            {"id": "c", "model": "m1", "error": "RateLimitError: 429"},
            {"id": "a", "model": "m1", "response": "second answer"},
            {"id": "d", "model": "m1", "response": "  \n"},
            {"id": "e", "model": "m1", "error": "TimeoutError"},  # failed, then retried successfully
            {"id": "e", "model": "m1", "response": "retried"},
            "[1, 2]",
            {"id": 7, "model": "m2", "response": "numeric ids are read as strings"},
        ],
        "responses.jsonl",
    )
    records, skipped = read_responses(path)
    assert [(r.id, r.model, r.response, r.line) for r in records] == [
        ("a", "m1", "fine", 1),
        ("e", "m1", "retried", 9),
        ("7", "m2", "numeric ids are read as strings", 11),
    ]
    assert [(s.reason, s.line, s.field) for s in skipped] == [
        ("malformed", 2, None),
        ("malformed", 3, "model"),
        ("malformed", 4, "response"),
        ("collect_failure", 5, "error"),
        ("duplicate", 6, None),
        ("empty_response", 7, None),
        ("malformed", 10, None),
    ]
    assert str(skipped[3]) == f"{path}:5, id 'c', model 'm1', field 'error': RateLimitError: 429"
    assert "already answered on line 1" in str(skipped[4])
    assert "expected a JSON object" in str(skipped[6])

    only_bad = write_jsonl([{"id": "q", "query": "a rewards file passed by mistake", "rewards": {"a": 1}}], "bad.jsonl")
    with pytest.raises(DataError, match=r"no usable answer .* first problem: .*bad.jsonl:1, id 'q', field 'model'"):
        read_responses(only_bad)


def test_a_strict_read_refuses_a_malformed_line_but_skips_a_torn_last_one(
    write_jsonl, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # issue 20 item 12: `zooter train --responses` reports no skips, so a cut line must not vanish
    good = [{"id": str(i), "model": "m1", "response": "an answer"} for i in range(3)]
    cut = write_jsonl([good[0], '{"id": "1", "model": "m1", "resp', good[2]], "cut.jsonl")
    assert len(read_responses(cut)[0]) == 2  # the lenient read (zooter score reports the skip)
    with pytest.raises(DataError, match=r"cut.jsonl:2: malformed JSON"):
        read_responses(cut, strict=True)
    # the torn last line a collect run still appending leaves: skipped, with a warning naming it
    torn = tmp_path / "torn.jsonl"
    torn.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"id": "3", "model": "m1", "res')
    records, _ = read_responses(torn, strict=True)
    assert [r.id for r in records] == ["0", "1", "2"]
    assert "torn.jsonl:4: skipping the last line, which lacks its newline" in caplog.text
    with pytest.raises(DataError, match="is a folder"):
        read_responses(tmp_path)


def test_score_skips_bad_pairs_reports_them_and_scores_the_rest(
    arena: SimpleNamespace, pair_rm: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    answers = [a for a in arena.answers if a["model"] in MODELS[:2]]
    lost = arena.rows[-1]["id"]  # every answer to this query is bad, so it cannot be a dataset row
    lines = [json.dumps(a) for a in answers if a["id"] != lost]
    lines += [
        json.dumps({"id": lost, "model": MODELS[0], "error": "APIConnectionError"}),
        json.dumps({"id": lost, "model": MODELS[1], "response": ""}),
        json.dumps({"id": "not-a-query", "model": MODELS[0], "response": "an answer to nothing"}),
        '{"id": "broken',
    ]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("\n".join(lines) + "\n")
    out = tmp_path / "rewards.jsonl"
    args = ["score", str(responses), "--queries", str(arena.queries), "--reward-model", pair_rm,
            "--output", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(args) == 0
    summary = capsys.readouterr().out
    n = len(lines)
    assert "scored 14 pairs" in summary
    assert (
        "skipped 4 pairs: 1 the collect stage recorded a failure, 1 empty response, "
        "1 response id not among the queries, 1 malformed line"
    ) in summary
    assert f"responses.jsonl:{n - 3}, id '{lost}', model '{MODELS[0]}', field 'error': APIConnectionError" in summary
    assert f"responses.jsonl:{n}, field" not in summary and f"responses.jsonl:{n}: malformed JSON" in summary
    assert f"1 queries got no reward and are not in the output: {lost}" in summary
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [r["id"] for r in arena.rows[:-1]]
    assert all(set(r["rewards"]) == set(MODELS[:2]) for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--experts", "gpt-3.5-turbo,no-such-model"], "no answers from experts ['no-such-model']"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--max-length", "4"], "max_length must be >= 8"),
    ],
)
def test_score_cli_bad_settings_exit_2_with_one_line(
    arena: SimpleNamespace, pair_rm: str, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    assert main(score_args(arena, pair_rm, tmp_path / "out.jsonl", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out.jsonl").exists()


def test_score_cli_missing_responses_file_exits_2(arena: SimpleNamespace, tmp_path: Path, capsys) -> None:
    args = ["score", str(tmp_path / "nope.jsonl"), "--queries", str(arena.queries), "--reward-model", "unused",
            "--output", str(tmp_path / "out.jsonl")]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"zooter score: error: {tmp_path / 'nope.jsonl'}: no such file"


# -- resuming ------------------------------------------------------------------------------------
class LengthScorer:
    """A stand-in judge: reward = answer length; no score for answers containing ``refuse``."""

    def __init__(self, name: str = "length") -> None:
        self.name = name
        self.batch_size = 2
        self.seen: list[str] = []

    def score(self, queries, responses):
        self.seen += list(responses)
        return [None if "refuse" in r else float(len(r)) for r in responses]


def test_missing_scores_stay_missing_and_a_rerun_asks_only_new_and_unscored_pairs(write_jsonl, tmp_path: Path) -> None:
    queries = write_jsonl([{"id": f"q{i}", "query": f"question {i}", "tags": ["t"]} for i in range(3)], "q.jsonl")
    answers = [
        {"id": "q0", "model": "a", "response": "four"},
        {"id": "q0", "model": "b", "response": "I refuse"},
        {"id": "q1", "model": "a", "response": "xy"},
        {"id": "q1", "model": "b", "response": "xyz"},
        {"id": "q2", "model": "a", "response": "refuse"},
    ]
    responses = write_jsonl(answers, "responses.jsonl")
    assert isinstance(LengthScorer(), RewardScorer)
    scorer = LengthScorer()
    out = tmp_path / "out.jsonl"
    report = score_responses(responses, queries, scorer, out)
    assert (report.scored, report.resumed, report.rows) == (5, 0, 2)
    assert report.skip_counts() == {"unscored": 2} and report.queries_without_rewards == ["q2"]
    assert read_rows(out) == [
        {"id": "q0", "query": "question 0", "rewards": {"a": 4.0}, "tags": ["t"]},
        {"id": "q1", "query": "question 1", "rewards": {"a": 2.0, "b": 3.0}, "tags": ["t"]},
    ]

    # q2 gets a second answer: that pair is new, and the two pairs without a score are asked again
    write_jsonl([*answers, {"id": "q2", "model": "b", "response": "seven!!"}], "responses.jsonl")
    rerun = LengthScorer()
    report = score_responses(responses, queries, rerun, out)
    assert sorted(rerun.seen) == ["I refuse", "refuse", "seven!!"]
    assert (report.scored, report.resumed, report.rows) == (3, 3, 3)
    assert read_rows(out)[2]["rewards"] == {"b": 7.0}
    assert report.skip_counts() == {"unscored": 2}  # still no score: still reported, never guessed

    with pytest.raises(DataError, match="holds scores from 'length', not 'other'"):
        score_responses(responses, queries, LengthScorer("other"), out)


def test_an_output_that_is_an_input_is_refused_before_scoring(write_jsonl, tmp_path: Path) -> None:
    queries = write_jsonl([{"id": "q0", "query": "question 0"}], "q.jsonl")
    responses = write_jsonl([{"id": "q0", "model": "a", "response": "x"}], "out.jsonl.scored.jsonl")
    before = {p: p.read_bytes() for p in (queries, responses)}
    scorer = LengthScorer()
    for output in (responses, queries, tmp_path / "out.jsonl"):  # the last one's side file is the responses
        with pytest.raises(ZooterError, match="is the input"):
            score_responses(responses, queries, scorer, output)
    assert {p: p.read_bytes() for p in before} == before and not scorer.seen


def test_a_line_cut_short_by_a_kill_is_scored_again(write_jsonl, tmp_path: Path) -> None:
    queries = write_jsonl([{"id": f"q{i}", "query": f"question {i}"} for i in range(4)], "q.jsonl")
    answers = [{"id": f"q{i}", "model": m, "response": "x" * (i + 1)} for i in range(4) for m in "ab"]
    responses = write_jsonl(answers, "responses.jsonl")
    out = tmp_path / "out.jsonl"
    score_responses(responses, queries, LengthScorer(), out)
    expected = read_rows(out)
    side = scored_pairs_path(out)
    lines = side.read_text().splitlines(keepends=True)
    side.write_text("".join(lines[:-2]) + lines[-2][:15])  # the last record lost, the one before it cut short
    out.unlink()
    scorer = LengthScorer()
    report = score_responses(responses, queries, scorer, out)
    assert (report.scored, report.resumed) == (2, 6)
    assert read_rows(out) == expected
    records = [json.loads(line) for line in side.read_text().splitlines()[1:]]
    assert sorted((r["id"], r["model"]) for r in records) == sorted((a["id"], a["model"]) for a in answers)


# The real CLI, except that from its 4th batch on the reward model hangs: the test kills it there.
HANGING_SCORE = """
import runpy, sys, time
from zooter.rewards import scorers

score, calls = scorers.RewardModelScorer.score, []

def hanging_score(self, queries, responses):
    calls.append(len(queries))
    if len(calls) > 3:
        time.sleep(600)
    return score(self, queries, responses)

scorers.RewardModelScorer.score = hanging_score
sys.argv = ["zooter", *sys.argv[1:]]
runpy.run_module("zooter.cli", run_name="__main__")
"""


def test_a_killed_run_resumes_and_scores_every_pair_exactly_once(
    arena: SimpleNamespace, pair_rm: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    extra = ("--experts", ",".join(MODELS), "--batch-size", "2")
    reference = tmp_path / "reference.jsonl"
    assert main(score_args(arena, pair_rm, reference, *extra)) == 0

    out = tmp_path / "rewards.jsonl"
    side = scored_pairs_path(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_SCORE, *score_args(arena, pair_rm, out, *extra)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not (side.is_file() and len(side.read_text().splitlines()) >= 1 + 3 * 2):
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the run never wrote its first three batches"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()  # the output is written at the end, whole, or not at all

    capsys.readouterr()
    assert main(score_args(arena, pair_rm, out, *extra)) == 0  # the rerun
    summary = capsys.readouterr().out
    assert "scored 18 pairs" in summary and "(6 more resumed" in summary
    records = [json.loads(line) for line in side.read_text().splitlines()[1:]]
    pairs = Counter((r["id"], r["model"]) for r in records)
    assert set(pairs) == {(a["id"], a["model"]) for a in arena.answers if a["model"] in MODELS}
    assert set(pairs.values()) == {1}
    assert_same_dataset(read_rows(out), read_rows(reference))
