"""A judge-based reward: any chat model grades each answer 1-10, MT-Bench style.

For users without a GPU reward model. The grader gets the MT-Bench single-answer grading prompt
(Zheng et al. 2023, "Judging LLM-as-a-Judge"; FastChat's ``single-v1``): an impartial judge that
explains first, then rates the answer 1-10 as ``Rating: [[5]]``. The grade is parsed strictly
(:func:`parse_grade`); a reply without a clear grade is recorded as missing (``None``), never
guessed.

Example:
    >>> from zooter_langchain import JudgeScorer
    >>> judge = JudgeScorer.from_model_spec("openai:gpt-4o", model_kwargs={"temperature": 0})  # doctest: +SKIP
    >>> judge.score(["What is 2 + 2?"], ["4, because 2 + 2 = 4."])  # doctest: +SKIP
    [9.0]
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from zooter.data import Query, query_text
from zooter.errors import ConfigError, ZooterError
from zooter_langchain._aio import run_sync
from zooter_langchain._messages import message_text
from zooter_langchain._retry import RetriesExhausted, call_with_retries, describe, is_transient
from zooter_langchain._tracing import model_name

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_RUBRIC = (
    "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, "
    "and level of detail of the response."
)
# FastChat's MT-Bench "single-v1" prompt, with the criteria sentence replaceable (the rubric)
PROMPT_TEMPLATE = (
    "[Instruction]\n"
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. {rubric} Begin your evaluation by providing a short explanation. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 "
    'by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n'
    "[Question]\n{question}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
PROMPT_EXAMPLE = '"Rating: [[5]]"'  # the template's example grade, quotes included: echoed, it is no grade
MIN_GRADE, MAX_GRADE = 1.0, 10.0
_GRADE = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")


def parse_grade(text: str) -> float | None:
    """The grade in a judge's reply, or ``None`` when there is no single clear grade.

    The rule: a grade is a number in double square brackets, ``[[7]]`` or ``[[7.5]]`` (digits,
    optionally a decimal part; no sign, spaces or fraction). The reply must hold at least one, all
    of them the same number, and that number must lie in 1..10. So ``"Rating: [[7]]"`` -> 7.0 and a
    repeated ``[[7]]`` -> 7.0, but ``"Rating: 7/10"``, ``"[[11]]"``, ``"[[0]]"``, ``"[[ 7 ]]"`` and a
    reply with both ``[[6]]`` and ``[[8]]`` -> ``None``. Bracketed words (a judge quoting the
    format, ``"[[rating]]"``) are not grades and are ignored, and so is the prompt's own example,
    ``"Rating: [[5]]"`` in double quotes, when the judge echoes the instructions: the grade must
    come from the judge's own words.

    This is stricter than FastChat, which falls back to the first ``[N]`` in single brackets: that
    fallback also reads list markers and citations such as ``[1]`` as grades.
    """
    values = {float(m) for m in _GRADE.findall(text.replace(PROMPT_EXAMPLE, ""))}
    if len(values) != 1:
        return None
    (grade,) = values
    return grade if MIN_GRADE <= grade <= MAX_GRADE else None


@dataclass(frozen=True)
class Judgment:
    """One graded answer: the grade (``None`` when missing), the grader's reply, or its error."""

    grade: float | None
    text: str | None = None
    error: str | None = None


class JudgeScorer:
    """Scores answers with a chat model acting as an MT-Bench-style judge (grades 1-10).

    A :class:`zooter.rewards.scorers.RewardScorer`: ``score`` (and async ``ascore``) return one grade per
    ``(query, response)`` pair, ``None`` where the grader's reply holds no clear grade or the call
    kept failing. Grader calls run concurrently (``max_concurrency``) and transient errors (rate
    limits, time-outs, 5xx) are retried with exponential backoff. ``stats`` counts the outcomes.

    Args:
        grader: the judge's chat model (a strong model at temperature 0, as MT-Bench used GPT-4).
        rubric: what the judge should weigh; replaces MT-Bench's criteria sentence. The prompt
            always asks for the ``Rating: [[N]]`` form that :func:`parse_grade` reads.
        system_prompt: the judge's system message (MT-Bench: "You are a helpful assistant.").
        max_concurrency: grader calls in flight at once.
        max_retries: retries of a grader call after a transient error.
        backoff: seconds before the first retry (doubling, with jitter).
        retry_if: which errors to retry (default: :func:`zooter_langchain._retry.is_transient`).

    Attributes:
        name: ``"judge:<grader model name>"``, recorded by the score stage beside its output.

    Example:
        >>> judge = JudgeScorer(ChatAnthropic(model="claude-sonnet-4-5", temperature=0))  # doctest: +SKIP
        >>> judge.score(["Name a prime."], ["9"])  # doctest: +SKIP
        [2.0]
    """

    def __init__(
        self,
        grader: Any,
        *,
        rubric: str = DEFAULT_RUBRIC,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        max_concurrency: int = 8,
        max_retries: int = 3,
        backoff: float = 1.0,
        retry_if: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or backoff < 0:
            raise ConfigError(
                f"need max_concurrency >= 1, max_retries >= 0 and backoff >= 0; "
                f"got {max_concurrency}, {max_retries}, {backoff}"
            )
        self.grader = grader
        self.rubric = rubric.strip()
        self.system_prompt = system_prompt
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.retry_if = retry_if
        self.stats = {"graded": 0, "unparsable": 0, "failed": 0}
        # what the grades came from: the score stage refuses to mix two judges' scales in one file
        self.name = f"judge:{model_name(grader, type(grader).__name__)}"

    @classmethod
    def from_model_spec(cls, spec: str, *, model_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> JudgeScorer:
        """A judge whose grader is the ``provider:model`` chat model (``langchain``'s ``init_chat_model``).

        Args:
            spec: e.g. ``"openai:gpt-4o"`` or ``"anthropic:claude-sonnet-4-5"``.
            model_kwargs: passed to the chat model, e.g. ``{"temperature": 0}``.
            kwargs: :class:`JudgeScorer` arguments (``rubric``, ``max_concurrency``...).

        Raises:
            MissingDependencyError: ``langchain`` or the provider's package is not installed.
            ConfigError: the spec names no known provider.
        """
        from zooter_langchain.models import chat_model_from_spec

        return cls(chat_model_from_spec(spec, **(model_kwargs or {})), **kwargs)

    def prompt(self, query: Query, response: str) -> list[BaseMessage]:
        """The messages the grader gets for one answer."""
        text = PROMPT_TEMPLATE.format(rubric=self.rubric, question=query_text(query), answer=response)
        system = [SystemMessage(self.system_prompt)] if self.system_prompt else []
        return [*system, HumanMessage(text)]

    # -- grading ---------------------------------------------------------------------------------
    async def ajudge(self, queries: Sequence[Query], responses: Sequence[str]) -> list[Judgment]:
        """Grade every ``(queries[i], responses[i])``; one :class:`Judgment` each, in order.

        Raises:
            ZooterError: the lengths differ, or every grader call failed (a wrong model name or
                key fails every call: that is reported, not turned into missing grades).
        """
        if len(queries) != len(responses):
            raise ZooterError(f"got {len(queries)} queries but {len(responses)} responses")
        if not queries:
            return []
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def grade(query: Query, response: str) -> Judgment:
            async with semaphore:
                try:
                    reply, _ = await call_with_retries(
                        lambda: self.grader.ainvoke(self.prompt(query, response)),
                        max_retries=self.max_retries,
                        backoff=self.backoff,
                        retry_if=self.retry_if,
                        what="grader",
                    )
                except RetriesExhausted as e:
                    return Judgment(None, error=describe(e.error))
            text = message_text(reply) if isinstance(reply, BaseMessage) else str(reply)
            return Judgment(parse_grade(text), text=text)

        judgments = await asyncio.gather(*(grade(q, r) for q, r in zip(queries, responses)))
        return self._tally(judgments)

    def _tally(self, judgments: list[Judgment]) -> list[Judgment]:
        failed = [j for j in judgments if j.error is not None]
        if len(failed) == len(judgments):
            raise ZooterError(f"every grader call failed; the first: {failed[0].error}")
        unparsable = [j for j in judgments if j.error is None and j.grade is None]
        self.stats["graded"] += len(judgments) - len(failed) - len(unparsable)
        self.stats["unparsable"] += len(unparsable)
        self.stats["failed"] += len(failed)
        if failed:
            logger.warning("%d of %d grader calls failed (first: %s)", len(failed), len(judgments), failed[0].error)
        for j in unparsable[:3]:  # a few examples say whether the grader ignores the format
            logger.warning("no clear [[1-10]] grade in the grader's reply: %r", _tail(j.text or ""))
        if len(unparsable) > 3:
            logger.warning("... %d replies without a clear grade in all", len(unparsable))
        return judgments

    def judge(self, queries: Sequence[Query], responses: Sequence[str]) -> list[Judgment]:
        """Synchronous :meth:`ajudge`; works inside a running event loop too (it runs in a thread)."""
        return run_sync(lambda: self.ajudge(queries, responses))

    async def ascore(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        """One grade per pair, ``None`` where missing (see :meth:`ajudge`)."""
        return [j.grade for j in await self.ajudge(queries, responses)]

    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        """One grade per pair, ``None`` where missing (see :meth:`ajudge`)."""
        return [j.grade for j in self.judge(queries, responses)]

    def __repr__(self) -> str:
        return f"JudgeScorer(grader={type(self.grader).__name__}, max_concurrency={self.max_concurrency})"


def _tail(text: str, n: int = 120) -> str:
    return text if len(text) <= n else "..." + text[-n:]


__all__ = ["JudgeScorer", "Judgment", "parse_grade"]
