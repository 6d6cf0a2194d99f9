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
    "DatasetSplits": "zooter.data",
    "load_queries": "zooter.data",
    "LabelConfig": "zooter.labels",
    "LabelEnhancer": "zooter.labels",
    "make_targets": "zooter.labels",
    "soft_targets": "zooter.labels",
    "Tagger": "zooter.tagging",
    "DataTagger": "zooter.tagging",
    "ClusterTagger": "zooter.tagging",
    "TagEnhancer": "zooter.tagging",
    "ZooterRouter": "zooter.router",
    "RouterConfig": "zooter.router",
    "RouteDecision": "zooter.router",
    "Estimates": "zooter.neighbours",
    "TrainingConfig": "zooter.training",
    "train_router": "zooter.training",
    "EvalReport": "zooter.evaluation",
    "evaluate": "zooter.evaluation",
    "evaluate_choices": "zooter.evaluation",
    "RewardScorer": "zooter.scorers",
    "RewardModelScorer": "zooter.scorers",
    "read_responses": "zooter.responses",
    "ResponseRecord": "zooter.responses",
    "SkippedPair": "zooter.responses",
    "ScoreReport": "zooter.scoring",
    "score_responses": "zooter.scoring",
    "scored_pairs_path": "zooter.scoring",
    "CostReport": "zooter.evaluation",
    "evaluate_costs": "zooter.evaluation",
    "CostTable": "zooter.costs",
    "CostTarget": "zooter.costs",
    "ExpertCost": "zooter.costs",
    "SelectionReport": "zooter.evaluation",
    "evaluate_selection": "zooter.evaluation",
    "evaluate_rankings": "zooter.evaluation",
    "DecisionRule": "zooter.policy",
    "SelectionPolicy": "zooter.policy",
    "Selection": "zooter.policy",
    "select_top": "zooter.policy",
    "ZooterError": "zooter.errors",
    "DataError": "zooter.errors",
    "ConfigError": "zooter.errors",
    "ExpertMismatchError": "zooter.errors",
    "MissingDependencyError": "zooter.errors",
    "DEFAULT_ENCODER": "zooter.encoder",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from zooter.costs import CostTable, CostTarget, ExpertCost
    from zooter.data import DatasetSplits, RoutingDataset, RoutingExample, load_queries
    from zooter.encoder import DEFAULT_ENCODER
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
    from zooter.labels import LabelConfig, LabelEnhancer, make_targets, soft_targets
    from zooter.neighbours import Estimates
    from zooter.policy import DecisionRule, Selection, SelectionPolicy, select_top
    from zooter.responses import ResponseRecord, SkippedPair, read_responses
    from zooter.router import RouteDecision, RouterConfig, ZooterRouter
    from zooter.scorers import RewardModelScorer, RewardScorer
    from zooter.scoring import ScoreReport, score_responses, scored_pairs_path
    from zooter.tagging import ClusterTagger, DataTagger, TagEnhancer, Tagger
    from zooter.training import TrainingConfig, train_router


__getattr__, __dir__ = lazy_exports("zooter", _EXPORTS, globals())
