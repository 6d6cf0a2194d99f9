"""The reward stage's names, kept where earlier versions defined them.

The stage now lives in three modules, one concern each: :mod:`zooter.scorers` (what gives a
reward: :class:`RewardScorer`, :class:`RewardModelScorer`), :mod:`zooter.responses` (the responses
file the collect stage writes) and :mod:`zooter.scoring` (the resumable :func:`score_responses`).
This module re-exports them for code written against ``zooter.rewards``; new code imports them
from :mod:`zooter` or their own modules.
"""

from __future__ import annotations

from zooter.responses import SKIP_REASONS, ResponseRecord, SkippedPair, answering_models, read_responses
from zooter.scorers import RESPONSE_SHARE, RewardModelScorer, RewardScorer
from zooter.scoring import ScoreReport, score_responses, scored_pairs_path

__all__ = [
    "RESPONSE_SHARE",
    "SKIP_REASONS",
    "ResponseRecord",
    "RewardModelScorer",
    "RewardScorer",
    "ScoreReport",
    "SkippedPair",
    "answering_models",
    "read_responses",
    "score_responses",
    "scored_pairs_path",
]
