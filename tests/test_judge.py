"""The judge-based reward: strict grade parsing, MT-Bench prompt, missing grades recorded as missing."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from zooter.errors import ConfigError, MissingDependencyError, ZooterError
from zooter.rewards.scorers import RewardScorer
from zooter_langchain import AnsweringChatModel, FakeExpertChatModel, JudgeScorer, RewardRankingRunnable, parse_grade

# Replies in the shape GPT-4 gives to MT-Bench's single-answer grading prompt: an explanation, then
# the rating in double brackets (and the ways graders stray from that shape).
JUDGMENTS = [
    (
        "The assistant's answer is correct and well organised. It explains the difference between a process "
        "and a thread, gives a concrete example in Python, and notes the GIL's effect on CPU-bound work. It "
        "could have mentioned multiprocessing's start methods, but this is a minor omission.\n\nRating: [[8]]",
        8.0,
    ),
    (
        "The response fully answers the question: the proof by contradiction is complete and every step is "
        "justified. It is concise and accurate.\n\nRating: [[10]]",
        10.0,
    ),
    (
        "The assistant provides a relevant poem but it does not follow the requested ABAB rhyme scheme in the "
        "second stanza, and the final line repeats the first.\n\nRating: [[5.5]]",
        5.5,
    ),
    ("Explanation: The code has an off-by-one error in the loop bound and would crash on empty input. [[3]]", 3.0),
    ("The answer is helpful and accurate. Rating: [[7]]\n\nFinal rating: [[7]]", 7.0),  # the same grade twice
    (
        'Following the format "[[rating]]", I rate the response as follows. The answer is mostly accurate but '
        "shallow.\n\nRating: [[6]]",
        6.0,  # the judge quoting the format: "[[rating]]" is not a grade
    ),
    ("The response is accurate but lacks depth.\n\nRating: 7/10", None),  # no brackets
    ("Rating: [7]", None),  # single brackets: FastChat's fallback would read it, we do not
    ("The response is excellent in every respect.\n\nRating: [[11]]", None),  # out of range
    ("The answer is empty.\n\nRating: [[0]]", None),  # below the scale
    ("The first half deserves [[8]] but the code is wrong, so overall: Rating: [[4]]", None),  # two grades
    ("Rating: [[ 7 ]]", None),  # spaces inside the brackets
    ("Rating: [[7/10]]", None),
    ("Rating: [[-2]]", None),
    ("I'm sorry, but I can't evaluate this response.", None),
    # a reply that only echoes the prompt's own example ("Rating: [[5]]") has given no grade
    ('I must rate the response by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".', None),
    ('As asked, for example: "Rating: [[5]]". The proof is complete and clear.\n\nRating: [[9]]', 9.0),
    ("", None),
]


@pytest.mark.parametrize(("reply", "grade"), JUDGMENTS)
def test_parse_grade_reads_only_one_clear_bracketed_grade(reply: str, grade: float | None) -> None:
    assert parse_grade(reply) == grade


ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*)\n\[The End of Assistant's Answer\]", re.DOTALL)


class GradingJudge(AnsweringChatModel):
    """A grader that reads the answer out of the MT-Bench prompt and grades it by what it says.

    ``correct`` -> 9, ``wrong`` -> 2, ``rambling`` -> a reply without the bracketed grade,
    ``flaky`` -> a transient error on the first try, ``huge`` -> a request error every time.
    """

    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    tries: dict[str, int] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "grading-judge"

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.prompts.append(messages)
        match = ANSWER.search(str(messages[-1].content))
        answer = match.group(1) if match else ""
        self.tries[answer] = self.tries.get(answer, 0) + 1
        if "huge" in answer:
            raise ValueError("This model's maximum context length is 8192 tokens")
        if "flaky" in answer and self.tries[answer] == 1:
            raise ConnectionError("connection reset by peer")
        if "rambling" in answer:
            reply = "The response wanders off topic. I would give it a 4 out of 10."
        else:
            grade = 9 if "correct" in answer or "flaky" in answer else 2
            reply = f"The assistant's answer is {'accurate' if grade > 5 else 'inaccurate'}.\n\nRating: [[{grade}]]"
        return AIMessage(reply)


def test_the_judge_grades_each_answer_and_records_unparsable_replies_as_missing(caplog) -> None:
    grader = GradingJudge()
    judge = JudgeScorer(grader, backoff=0)
    assert isinstance(judge, RewardScorer)
    queries = ["What is 2 + 2?", "Capital of France?", "Explain TCP.", "Sort a list in Python."]
    responses = ["4, correct.", "Berlin (wrong).", "Well, rambling about networks...", "sorted(x), flaky but correct"]
    with caplog.at_level("WARNING"):
        assert judge.score(queries, responses) == [9.0, 2.0, None, 9.0]
    assert judge.stats == {"graded": 3, "unparsable": 1, "failed": 0}
    assert "4 out of 10" in caplog.text  # the unparsable reply is logged, so a user sees why
    assert grader.tries["sorted(x), flaky but correct"] == 2  # the transient error was retried


def test_judge_prompt_is_mt_bench_single_answer_grading_with_the_rubric() -> None:
    grader = GradingJudge()
    JudgeScorer(grader).score(["Name a prime number."], ["7 is prime, correct."])
    default = grader.prompts[-1]
    assert default[0].type == "system" and default[0].content == "You are a helpful assistant."
    text = str(default[-1].content)
    assert text.startswith("[Instruction]\nPlease act as an impartial judge")
    assert "helpfulness, relevance, accuracy, depth, creativity, and level of detail" in text
    assert '"[[rating]]", for example: "Rating: [[5]]"' in text
    assert "[Question]\nName a prime number.\n\n[The Start of Assistant's Answer]\n7 is prime, correct." in text

    rubric = "Judge only whether the code runs and is correct; ignore style."
    JudgeScorer(grader, rubric=rubric, system_prompt=None).score([[{"role": "user", "content": "hi"}]], ["correct"])
    custom = grader.prompts[-1]
    assert len(custom) == 1 and rubric in str(custom[0].content) and "creativity" not in str(custom[0].content)
    assert "Rating: [[5]]" in str(custom[0].content)  # the format the parser reads is always asked for
    assert "[Question]\nuser: hi\n" in str(custom[0].content)  # a chat query is shown as its turns


def test_a_failing_grader_call_is_missing_but_a_grader_that_always_fails_is_an_error() -> None:
    judge = JudgeScorer(GradingJudge(), backoff=0)
    judgments = judge.judge(["q1", "q2"], ["huge answer", "correct answer"])
    assert [j.grade for j in judgments] == [None, 9.0]
    assert "maximum context length" in (judgments[0].error or "")
    assert judge.stats["failed"] == 1
    with pytest.raises(ZooterError, match="every grader call failed"):
        JudgeScorer(FakeExpertChatModel(fail_every=1), max_retries=1, backoff=0).score(["q"], ["a"])
    with pytest.raises(ZooterError, match="2 queries but 1 responses"):
        judge.score(["q1", "q2"], ["a"])


def test_graders_replies_are_parsed_in_order() -> None:
    replies = [text for text, _ in JUDGMENTS[:4]] + ["Rating: 7/10"]
    judge = JudgeScorer(FakeListChatModel(responses=replies), max_concurrency=1)
    assert judge.score(["q"] * 5, ["a"] * 5) == [8.0, 10.0, 5.5, 3.0, None]


async def test_sync_score_works_inside_a_running_event_loop_and_ascore_is_async() -> None:
    judge = JudgeScorer(GradingJudge())
    assert judge.score(["q"], ["correct"]) == [9.0]
    assert await judge.ascore(["q", "q"], ["correct", "wrong"]) == [9.0, 2.0]


def test_the_judge_ranks_experts_in_reward_ranking() -> None:
    experts = {
        "confident": FakeExpertChatModel(name="wrong"),
        "careful": FakeExpertChatModel(name="correct"),
        "chatty": FakeExpertChatModel(name="rambling"),
    }
    ranker = RewardRankingRunnable(experts=experts, scorer=JudgeScorer(GradingJudge()))
    reply = ranker.invoke("What is 2 + 2?")
    meta = reply.response_metadata["reward_ranking"]
    assert meta["expert"] == "careful" and reply.content == "[correct] What is 2 + 2?"
    assert meta["scores"] == {"confident": 2.0, "careful": 9.0, "chatty": None}


def test_from_model_spec_reports_what_is_missing() -> None:
    pytest.importorskip("langchain")
    with pytest.raises(ConfigError, match="no-such-family"):
        JudgeScorer.from_model_spec("no-such-family")
    if importlib.util.find_spec("langchain_anthropic") is None:
        with pytest.raises(MissingDependencyError, match="langchain-anthropic"):
            JudgeScorer.from_model_spec("anthropic:claude-sonnet-4-5", model_kwargs={"temperature": 0})
    with pytest.raises(ConfigError, match="max_concurrency"):
        JudgeScorer(GradingJudge(), max_concurrency=0)


def test_zooter_score_with_a_judge_writes_a_dataset_with_missing_grades_left_out(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import json

    import zooter_langchain.models
    from zooter.cli import main
    from zooter.data import RoutingDataset
    from zooter.rewards.scoring import scored_pairs_path

    made: list[tuple[str, dict]] = []

    def factory(spec: str, **kwargs: Any) -> GradingJudge:  # stands in for init_chat_model: no provider here
        made.append((spec, kwargs))
        return GradingJudge()

    monkeypatch.setattr(zooter_langchain.models, "chat_model_from_spec", factory)
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": f"q{i}", "query": f"question {i}"}) + "\n" for i in range(3)))
    answers = {"a": ["correct", "correct", "wrong"], "b": ["wrong", "rambling", "correct"]}
    responses = tmp_path / "responses.jsonl"
    responses.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "model": model, "response": f"{word} answer"}) + "\n"
            for model, words in answers.items()
            for i, word in enumerate(words)
        )
    )
    out = tmp_path / "rewards.jsonl"
    args = [str(responses), "--queries", str(queries), "--judge", "openai:gpt-4o", "--output", str(out), "--quiet"]
    assert main(["score", *args]) == 0
    assert made == [("openai:gpt-4o", {"temperature": 0})]
    data = RoutingDataset.load(out)
    assert [ex.rewards for ex in data] == [{"a": 9.0, "b": 2.0}, {"a": 9.0}, {"a": 2.0, "b": 9.0}]
    assert "judge:" in scored_pairs_path(out).read_text().splitlines()[0]  # which grader the scores came from

    capsys.readouterr()
    assert main(["score", *args]) == 0  # the rerun asks again only for the grade it could not read
    assert "scored 1 pair with judge:" in capsys.readouterr().out
