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
    "LabelConfig": "zooter.labels",
    "LabelEnhancer": "zooter.labels",
    "soft_targets": "zooter.labels",
    "Tagger": "zooter.tagging",
    "DataTagger": "zooter.tagging",
    "ClusterTagger": "zooter.tagging",
    "TagEnhancer": "zooter.tagging",
    "ZooterRouter": "zooter.router",
    "RouterConfig": "zooter.router",
    "RouteDecision": "zooter.router",
    "TrainingConfig": "zooter.training",
    "train_router": "zooter.training",
    "EvalReport": "zooter.evaluation",
    "evaluate": "zooter.evaluation",
    "evaluate_choices": "zooter.evaluation",
    "RewardScorer": "zooter.scorers",
    "RewardModelScorer": "zooter.scorers",
    "read_responses": "zooter.responses",
    "ScoreReport": "zooter.scoring",
    "score_responses": "zooter.scoring",
    "SelectionReport": "zooter.evaluation",
    "evaluate_selection": "zooter.evaluation",
    "evaluate_rankings": "zooter.evaluation",
    "SelectionPolicy": "zooter.policy",
    "Selection": "zooter.policy",
    "select_top": "zooter.policy",
    "ZooterError": "zooter.errors",
    "DataError": "zooter.errors",
    "ConfigError": "zooter.errors",
    "ExpertMismatchError": "zooter.errors",
    "DEFAULT_ENCODER": "zooter.encoder",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from zooter.data import DatasetSplits, RoutingDataset, RoutingExample
    from zooter.encoder import DEFAULT_ENCODER
    from zooter.errors import ConfigError, DataError, ExpertMismatchError, ZooterError
    from zooter.evaluation import (
        EvalReport,
        SelectionReport,
        evaluate,
        evaluate_choices,
        evaluate_rankings,
        evaluate_selection,
    )
    from zooter.labels import LabelConfig, LabelEnhancer, soft_targets
    from zooter.policy import Selection, SelectionPolicy, select_top
    from zooter.responses import read_responses
    from zooter.router import RouteDecision, RouterConfig, ZooterRouter
    from zooter.scorers import RewardModelScorer, RewardScorer
    from zooter.scoring import ScoreReport, score_responses
    from zooter.tagging import ClusterTagger, DataTagger, TagEnhancer, Tagger
    from zooter.training import TrainingConfig, train_router


__getattr__, __dir__ = lazy_exports("zooter", _EXPORTS, globals())
