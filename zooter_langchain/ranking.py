"""``ChatRewardRanker``, the paper's baseline: ask every expert, score every answer, keep the best.

``RewardRankingRunnable`` is the same class under its earlier name, kept as an alias.

It is the quality reference a router is compared with, and its cost is what routing saves: each
call makes one call per expert plus one scorer pass over all their answers, where a
:class:`~zooter_langchain.ChatZooterRouter` makes one small encoder pass and one expert call.

Example:
    >>> from zooter.rewards.scorers import RewardModelScorer
    >>> from zooter_langchain import ChatRewardRanker
    >>> ranker = ChatRewardRanker(  # doctest: +SKIP
    ...     experts={"gpt-4o-mini": gpt, "haiku": haiku, "mixtral": mixtral},
    ...     scorer=RewardModelScorer.from_pretrained("OpenAssistant/reward-model-deberta-v3-large-v2"),
    ... )
    >>> reply = ranker.invoke("Prove that sqrt(2) is irrational")  # doctest: +SKIP
    >>> reply.response_metadata["reward_ranking"]  # doctest: +SKIP
    {'expert': 'gpt-4o-mini', 'scores': {'gpt-4o-mini': 2.1, 'haiku': 1.4, 'mixtral': 0.3}, ...}
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables.config import ContextThreadPoolExecutor
from pydantic import ConfigDict, Field

from zooter.data import Query
from zooter.errors import ZooterError
from zooter_langchain._messages import message_text, messages_to_query
from zooter_langchain._retry import describe
from zooter_langchain._tracing import child_callbacks, ls_params, model_name

logger = logging.getLogger(__name__)


class ChatRewardRanker(BaseChatModel):
    """A chat model that asks every expert, scores all their answers, and returns the best one.

    Every answer carries ``response_metadata["reward_ranking"]``: the chosen ``expert``, every
    answering expert's score (``None`` where the scorer could not score it), ``expert_calls`` made,
    ``failed`` experts with their errors, and ``usage`` summed over all experts (the cost of the
    call; the returned message's own ``usage_metadata`` stays the chosen expert's). Experts that
    raise are skipped; if all raise, or the scorer scores no answer, the call raises.

    ``RewardRankingRunnable`` is this class under its earlier name (an alias, kept for existing code).

    Args:
        experts: expert name -> chat model.
        scorer: a :class:`zooter.rewards.scorers.RewardScorer` (a reward model, a
            :class:`~zooter_langchain.JudgeScorer`...). Its async ``ascore`` is used when it has
            one; otherwise ``score`` runs in a worker thread off the event loop. Each call makes
            one scorer call over all the answers.
        max_concurrency: expert calls in flight at once (default: all experts at once).

    Example:
        >>> experts = {"a": model_a, "b": model_b}  # doctest: +SKIP
        >>> ranker = ChatRewardRanker(experts=experts, scorer=JudgeScorer(grader))  # doctest: +SKIP
        >>> chain = prompt | ranker | StrOutputParser()  # doctest: +SKIP
    """

    experts: dict[str, Any]
    scorer: Any = Field(exclude=True)
    max_concurrency: int | None = Field(default=None, ge=1)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        if not self.experts:
            raise ZooterError("ChatRewardRanker needs at least one expert")
        if not callable(getattr(self.scorer, "score", None)):
            raise ZooterError(f"scorer {type(self.scorer).__name__} has no score(queries, responses) method")

    @property
    def _llm_type(self) -> str:
        return "zooter-reward-ranking"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "experts": {name: model_name(model, name) for name, model in self.experts.items()},
            "scorer": type(self.scorer).__name__,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return ls_params("reward-ranking", stop)

    # -- the BaseChatModel hooks ---------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config = {"callbacks": child_callbacks(run_manager)} if run_manager is not None else {}

        def ask(name: str) -> BaseMessage | Exception:
            try:
                return self.experts[name].invoke(messages, config, stop=stop, **kwargs)
            except Exception as e:  # one expert down does not sink the call: it is skipped and recorded
                return e

        with ContextThreadPoolExecutor(max_workers=self.max_concurrency or len(self.experts)) as pool:
            replies = dict(zip(self.experts, pool.map(ask, self.experts)))
        answers, failed = self._answers(replies)
        return self._result(answers, self.scorer.score(*self._pairs(messages, answers)), failed)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config = {"callbacks": child_callbacks(run_manager)} if run_manager is not None else {}
        semaphore = asyncio.Semaphore(self.max_concurrency or len(self.experts))

        async def ask(name: str) -> BaseMessage | Exception:
            async with semaphore:
                try:
                    return await self.experts[name].ainvoke(messages, config, stop=stop, **kwargs)
                except Exception as e:
                    return e

        replies = dict(zip(self.experts, await asyncio.gather(*(ask(name) for name in self.experts))))
        answers, failed = self._answers(replies)
        queries, responses = self._pairs(messages, answers)
        ascore = getattr(self.scorer, "ascore", None)
        if ascore is not None and inspect.iscoroutinefunction(ascore):
            scores = await ascore(queries, responses)
        else:  # a reward model's forward pass must not block the event loop
            scores = await asyncio.to_thread(self.scorer.score, queries, responses)
        return self._result(answers, scores, failed)

    # -- helpers -----------------------------------------------------------------------------------
    def _answers(self, replies: dict[str, Any]) -> tuple[dict[str, BaseMessage], dict[str, str]]:
        answers: dict[str, BaseMessage] = {}
        failed: dict[str, str] = {}
        for name, reply in replies.items():
            if isinstance(reply, BaseMessage):
                answers[name] = reply
            elif isinstance(reply, Exception):
                failed[name] = describe(reply)
                logger.warning("expert %s failed (%s); ranking the others", name, failed[name])
            else:
                failed[name] = f"returned {type(reply).__name__}, not a chat message"
        if not answers:
            cause = next((r for r in replies.values() if isinstance(r, Exception)), None)
            detail = "; ".join(f"{name}: {error}" for name, error in failed.items())
            raise ZooterError(f"every expert failed: {detail}") from cause
        return answers, failed

    @staticmethod
    def _pairs(messages: list[BaseMessage], answers: dict[str, BaseMessage]) -> tuple[list[Query], list[str]]:
        """What the scorer reads: the call's query once per answer, and each answer's text."""
        return [messages_to_query(messages)] * len(answers), [message_text(m) for m in answers.values()]

    def _result(
        self, answers: dict[str, BaseMessage], scores: Sequence[float | None], failed: dict[str, str]
    ) -> ChatResult:
        scores = list(scores)
        if len(scores) != len(answers):
            raise ZooterError(f"the scorer returned {len(scores)} scores for {len(answers)} answers")
        by_expert = {name: None if s is None else float(s) for name, s in zip(answers, scores)}
        scored = {name: s for name, s in by_expert.items() if s is not None}
        if not scored:
            raise ZooterError(f"the scorer could not score any of the {len(answers)} answers ({list(answers)})")
        best = max(scored, key=scored.__getitem__)  # ties: the first expert in the order given
        usage: UsageMetadata | None = None
        for message in answers.values():
            if getattr(message, "usage_metadata", None):
                usage = add_usage(usage, message.usage_metadata)
        message = answers[best]
        metadata = {
            "model_name": model_name(self.experts[best], best),
            **message.response_metadata,
            "reward_ranking": {
                "expert": best,
                "scores": by_expert,
                "expert_calls": len(answers) + len(failed),
                "failed": failed,
                "usage": dict(usage) if usage else None,
            },
        }
        message = message.model_copy(update={"response_metadata": metadata})
        return ChatResult(generations=[ChatGeneration(message=message)])


RewardRankingRunnable = ChatRewardRanker
"""The earlier name of :class:`ChatRewardRanker`, kept as an alias."""

__all__ = ["ChatRewardRanker", "RewardRankingRunnable"]
