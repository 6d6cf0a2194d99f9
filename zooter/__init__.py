"""zooter: reward-guided routing among several LLMs (the Zooter method, arXiv:2311.08692).

Importing this package loads neither torch nor transformers; each public name below is imported on
first use.

Example:
    >>> from zooter import RoutingDataset, TrainingConfig, train_router
    >>> data = RoutingDataset.load("rewards.jsonl")  # doctest: +SKIP
    >>> router = train_router(data, TrainingConfig(epochs=4))  # doctest: +SKIP
    >>> router.route(["Why is the sky blue?"])[0].expert  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooter._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "RoutingDataset": "zooter.data",
    "RoutingExample": "zooter.data",
    "QueryVector": "zooter.data",
    "DatasetSplits": "zooter.data",
    "load_queries": "zooter.data",
    "load_rows": "zooter.data",
    "UpdateReport": "zooter.lifecycle",
    "LabelConfig": "zooter.labels.targets",
    "LabelEnhancer": "zooter.labels.targets",
    "make_targets": "zooter.labels.targets",
    "soft_targets": "zooter.labels.targets",
    "Tagger": "zooter.labels.tagging",
    "DataTagger": "zooter.labels.tagging",
    "ClusterTagger": "zooter.labels.tagging",
    "TagEnhancer": "zooter.labels.tagging",
    "ZooterRouter": "zooter.model.router",
    "RouterConfig": "zooter.model.router",
    "RouteDecision": "zooter.decide.decision",
    "Explorer": "zooter.decide.explore",
    "Estimates": "zooter.model.neighbours",
    "TrainingConfig": "zooter.training",
    "train_router": "zooter.training",
    "EvalReport": "zooter.evaluation",
    "evaluate": "zooter.evaluation",
    "evaluate_choices": "zooter.evaluation",
    "RewardScorer": "zooter.rewards.scorers",
    "RewardModelScorer": "zooter.rewards.scorers",
    "read_responses": "zooter.rewards.responses",
    "ResponseRecord": "zooter.rewards.responses",
    "SkippedPair": "zooter.rewards.responses",
    "ScoreReport": "zooter.rewards.scoring",
    "score_responses": "zooter.rewards.scoring",
    "scored_pairs_path": "zooter.rewards.scoring",
    "CostReport": "zooter.evaluation",
    "evaluate_costs": "zooter.evaluation",
    "CostTable": "zooter.decide.costs",
    "CostTarget": "zooter.decide.costs",
    "ExpertCost": "zooter.decide.costs",
    "SelectionReport": "zooter.evaluation",
    "evaluate_selection": "zooter.evaluation",
    "evaluate_rankings": "zooter.evaluation",
    "DecisionRule": "zooter.decide.policy",
    "SelectionPolicy": "zooter.decide.policy",
    "Selection": "zooter.decide.policy",
    "select_top": "zooter.decide.policy",
    "ZooterError": "zooter.errors",
    "DataError": "zooter.errors",
    "ConfigError": "zooter.errors",
    "ExpertMismatchError": "zooter.errors",
    "MissingDependencyError": "zooter.errors",
    "DEFAULT_ENCODER": "zooter.model.encoder",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from zooter.data import DatasetSplits, QueryVector, RoutingDataset, RoutingExample, load_queries, load_rows
    from zooter.decide.costs import CostTable, CostTarget, ExpertCost
    from zooter.decide.decision import RouteDecision
    from zooter.decide.explore import Explorer
    from zooter.decide.policy import DecisionRule, Selection, SelectionPolicy, select_top
    from zooter.errors import ConfigError, DataError, ExpertMismatchError, MissingDependencyError, ZooterError
    from zooter.evaluation import (
        CostReport,
        EvalReport,
        SelectionReport,
        evaluate,
        evaluate_choices,
        evaluate_costs,
        evaluate_rankings,
        evaluate_selection,
    )
    from zooter.labels.tagging import ClusterTagger, DataTagger, TagEnhancer, Tagger
    from zooter.labels.targets import LabelConfig, LabelEnhancer, make_targets, soft_targets
    from zooter.lifecycle import UpdateReport
    from zooter.model.encoder import DEFAULT_ENCODER
    from zooter.model.neighbours import Estimates
    from zooter.model.router import RouterConfig, ZooterRouter
    from zooter.rewards.responses import ResponseRecord, SkippedPair, read_responses
    from zooter.rewards.scorers import RewardModelScorer, RewardScorer
    from zooter.rewards.scoring import ScoreReport, score_responses, scored_pairs_path
    from zooter.training import TrainingConfig, train_router


__getattr__, __dir__ = lazy_exports("zooter", _EXPORTS, globals())
