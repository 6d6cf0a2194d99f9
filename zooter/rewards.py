"""Scoring expert answers: the reward stage of the pipeline (collect -> score -> label -> train).

Anything with a ``score(queries, responses)`` method is a :class:`RewardScorer`: a Hugging Face
reward model here, or a chat model acting as a judge in ``zooter_langchain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from zooter.data import Query


@runtime_checkable
class RewardScorer(Protocol):
    """Scores answers: one reward per ``(queries[i], responses[i])`` pair, higher is better.

    A scorer returns ``None`` for a pair it could not score (e.g. a judge's unparsable grade);
    such a pair is recorded as missing, never guessed.
    """

    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]: ...
