"""LangChain adapter for zooter: the routing chat model, the router as a decision model, collecting
answers, judge rewards, reward ranking, an agent tool selector and an LLM intent tagger.

It depends on :mod:`zooter`, never the other way round. Importing this package loads neither
LangChain nor torch; each public name is imported on first use. ``ZooterRouterRunnable`` and
``RewardRankingRunnable`` are the earlier names of ``ChatZooterRouter`` and ``ChatRewardRanker``,
kept as aliases.

Example:
    >>> from zooter_langchain import ChatZooterRouter
    >>> model = ChatZooterRouter.from_pretrained("my-router", experts={...})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooter import __version__
from zooter._lazy import lazy_exports

# public name -> its module; every name in a module's __all__ is here (tests/test_package.py checks)
_EXPORTS = {
    "ChatZooterRouter": "zooter_langchain.runnable",
    "ZooterRouterRunnable": "zooter_langchain.runnable",
    "ROUTE_EVENT": "zooter_langchain.runnable",
    "ZooterDecisionModel": "zooter_langchain.decision",
    "ZooterChoiceAnswer": "zooter_langchain.decision",
    "AnsweringChatModel": "zooter_langchain.fake",
    "FakeExpertChatModel": "zooter_langchain.fake",
    "ReplayChatModel": "zooter_langchain.fake",
    "acollect_responses": "zooter_langchain.collect",
    "collect_responses": "zooter_langchain.collect",
    "CollectReport": "zooter_langchain.collect",
    "CollectFailure": "zooter_langchain.collect",
    "default_failures_path": "zooter_langchain.collect",
    "read_collected": "zooter_langchain.collect",
    "JudgeScorer": "zooter_langchain.judge",
    "Judgment": "zooter_langchain.judge",
    "parse_grade": "zooter_langchain.judge",
    "ChatRewardRanker": "zooter_langchain.ranking",
    "RewardRankingRunnable": "zooter_langchain.ranking",
    "chat_model_from_spec": "zooter_langchain.models",
    "parse_expert_specs": "zooter_langchain.models",
    "ZooterToolSelector": "zooter_langchain.tool_selection",
    "ZooterToolSelectorRunnable": "zooter_langchain.tool_selection",
    "ToolSelection": "zooter_langchain.tool_selection",
    "check_tool_names": "zooter_langchain.tool_selection",
    "ZooterToolSelectorMiddleware": "zooter_langchain.tool_middleware",
    "TOOL_SELECTION_EVENT": "zooter_langchain.tool_middleware",
    "METADATA_KEY": "zooter_langchain.tool_middleware",
    "FeedbackLog": "zooter_langchain.feedback",
    "DECISIONS_SUFFIX": "zooter_langchain.feedback",
    "default_decisions_path": "zooter_langchain.feedback",
    "ChatModelTagger": "zooter_langchain.tagging",
    "INSTAG_PROMPT": "zooter_langchain.tagging",
    "fold_plural": "zooter_langchain.tagging",
    "merge_near_duplicates": "zooter_langchain.tagging",
    "normalize_tag": "zooter_langchain.tagging",
    "parse_tags": "zooter_langchain.tagging",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from zooter_langchain.collect import (
        CollectFailure,
        CollectReport,
        acollect_responses,
        collect_responses,
        default_failures_path,
        read_collected,
    )
    from zooter_langchain.decision import ZooterChoiceAnswer, ZooterDecisionModel
    from zooter_langchain.fake import AnsweringChatModel, FakeExpertChatModel, ReplayChatModel
    from zooter_langchain.feedback import DECISIONS_SUFFIX, FeedbackLog, default_decisions_path
    from zooter_langchain.judge import JudgeScorer, Judgment, parse_grade
    from zooter_langchain.models import chat_model_from_spec, parse_expert_specs
    from zooter_langchain.ranking import ChatRewardRanker, RewardRankingRunnable
    from zooter_langchain.runnable import ROUTE_EVENT, ChatZooterRouter, ZooterRouterRunnable
    from zooter_langchain.tagging import (
        INSTAG_PROMPT,
        ChatModelTagger,
        fold_plural,
        merge_near_duplicates,
        normalize_tag,
        parse_tags,
    )
    from zooter_langchain.tool_middleware import METADATA_KEY, TOOL_SELECTION_EVENT, ZooterToolSelectorMiddleware
    from zooter_langchain.tool_selection import (
        ToolSelection,
        ZooterToolSelector,
        ZooterToolSelectorRunnable,
        check_tool_names,
    )


__getattr__, __dir__ = lazy_exports("zooter_langchain", _EXPORTS, globals())
