"""The score stage of the pipeline (collect -> score -> label -> train), resumable.

:func:`score_responses` runs a :class:`~zooter.rewards.scorers.RewardScorer` over a responses file
(:mod:`zooter.rewards.responses`) and writes the dataset ``zooter train`` reads, resuming where an
interrupted run stopped: every batch of scores is on disk before the next one starts.

Example:
    >>> from zooter.rewards.scorers import RewardModelScorer
    >>> from zooter.rewards.scoring import score_responses
    >>> scorer = RewardModelScorer.from_pretrained("OpenAssistant/reward-model-deberta-v3-large-v2")  # doctest: +SKIP
    >>> report = score_responses("responses.jsonl", "queries.jsonl", scorer, "rewards.jsonl")  # doctest: +SKIP
    >>> print(report.format_summary())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooter._io import drop_torn_tail, parse_json_line, refuse_overwriting_inputs, write_jsonl
from zooter.data import RoutingExample, load_queries
from zooter.engines import Engine, LocalEngine, ModelLoader
from zooter.errors import ConfigError, DataError
from zooter.rewards.responses import SKIP_REASONS, ResponseRecord, SkippedPair, answering_models, read_responses
from zooter.rewards.scorers import RewardScorer, as_reward, scorer_name

logger = logging.getLogger(__name__)


@dataclass
class ScoreReport:
    """What :func:`score_responses` did: pairs scored now and earlier, pairs skipped and why.

    Attributes:
        output: the dataset file written.
        scored_pairs_file: the side file of every pair scored so far (what a rerun resumes from).
        scorer: the scorer's name.
        experts: the experts of the output, in order.
        rows: queries written (those with at least one reward).
        scored: pairs scored by this run.
        resumed: pairs taken from an earlier run's side file.
        skipped: pairs that got no reward, each with its reason.
        queries_without_rewards: ids of queries that got no reward at all, so are not in the output.
        ignored_models: answers of models outside ``experts``, per model.
    """

    output: str
    scored_pairs_file: str
    scorer: str
    experts: list[str]
    rows: int
    scored: int
    resumed: int
    skipped: list[SkippedPair] = field(default_factory=list)
    queries_without_rewards: list[str] = field(default_factory=list)
    ignored_models: dict[str, int] = field(default_factory=dict)

    def skip_counts(self) -> dict[str, int]:
        """Skipped pairs per reason code."""
        return dict(Counter(s.reason for s in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "scored_pairs_file": self.scored_pairs_file,
            "scorer": self.scorer,
            "experts": list(self.experts),
            "rows": self.rows,
            "scored": self.scored,
            "resumed": self.resumed,
            "skipped": self.skip_counts(),
            "queries_without_rewards": list(self.queries_without_rewards),
            "ignored_models": dict(self.ignored_models),
        }

    def format_summary(self, *, max_details: int = 10) -> str:
        """A few lines for people: what was written, then each skipped pair (up to ``max_details``)."""
        lines = [
            f"scored {_pairs(self.scored)} with {self.scorer}"
            f" ({self.resumed} more resumed from {self.scored_pairs_file})",
            f"wrote {self.rows} queries x {len(self.experts)} experts to {self.output}",
        ]
        if self.ignored_models:
            lines.append(f"ignored answers of models outside --experts: {self.ignored_models}")
        if self.skipped:
            counts = ", ".join(f"{n} {SKIP_REASONS.get(r, r)}" for r, n in self.skip_counts().items())
            lines.append(f"skipped {_pairs(len(self.skipped))}: {counts}")
            lines += [f"  {s}" for s in self.skipped[:max_details]]
            if len(self.skipped) > max_details:
                lines.append(f"  ... and {len(self.skipped) - max_details} more")
        if self.queries_without_rewards:
            shown = ", ".join(self.queries_without_rewards[:max_details])
            more = len(self.queries_without_rewards) - max_details
            lines.append(
                f"{len(self.queries_without_rewards)} queries got no reward and are not in the output: {shown}"
                + (f" ... and {more} more" if more > 0 else "")
            )
        return "\n".join(lines)


def _pairs(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"


def scored_pairs_path(output_path: str | Path) -> Path:
    """The side file beside ``output_path`` that records every pair scored so far."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + ".scored.jsonl")


def score_responses(
    responses_path: str | Path,
    queries_path: str | Path,
    scorer: RewardScorer | ModelLoader,
    output_path: str | Path,
    *,
    experts: Sequence[str] | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    engine: Engine | None = None,
) -> ScoreReport:
    """Score every expert's answer to every query and write the dataset ``zooter train`` reads.

    Resumable: each batch of scores is appended and flushed to a side file beside the output
    (:func:`scored_pairs_path`) before the next batch starts, and a rerun scores only the
    ``(id, model)`` pairs that file lacks, so an interrupted run loses at most one batch. The
    output (``{"id", "query", "rewards", "tags"?, "task"?}`` a line, queries in file order) is
    written atomically at the end, from the side file, and only holds pairs of the current inputs.

    Args:
        responses_path: the answers, ``{"id", "model", "response"}`` a line (see :func:`read_responses`).
        queries_path: the queries (a dataset or a bare query file; tags and task are carried over,
            rewards already in it are not).
        scorer: any :class:`RewardScorer`, or a :class:`~zooter.engines.ModelLoader` that builds one
            (:meth:`RewardModelScorer.loader`; what the Ray engine needs, to load it on each worker);
            its ``name`` attribute, if any, is recorded in the side file, and a rerun with another
            scorer is refused rather than mixing two reward scales.
        output_path: the dataset to write (gzip when the name ends in ``.gz``).
        experts: score only these models' answers (and fail if one has none); default: every model.
        batch_size: pairs per ``scorer.score`` call (and per write); default: the scorer's
            ``batch_size`` attribute, else 16.
        show_progress: a progress bar over the pairs to score.
        engine: where the scorer runs (:func:`zooter.engines.make_engine`): this process by default,
            or Ray workers; the side file, the resuming and the output are the same either way.

    Raises:
        DataError: unreadable inputs, an expert without answers, no query left with a reward, or
            a side file from another scorer.
    """
    refuse_overwriting_inputs([output_path, scored_pairs_path(output_path)], [responses_path, queries_path])
    queries = load_queries(queries_path)
    by_id = {q.id: q for q in queries}
    records, skipped = read_responses(responses_path)
    models = answering_models(records, experts, responses_path)
    ignored: dict[str, int] = {}
    if experts is not None:
        experts = list(dict.fromkeys(experts))
        ignored = dict(Counter(r.model for r in records if r.model not in experts))
        records = [r for r in records if r.model in experts]
        skipped = [s for s in skipped if s.model is None or s.model in experts]
    else:
        experts = models
    pairs = []
    for record in records:
        if record.id in by_id:
            pairs.append(record)
        else:
            skipped.append(
                SkippedPair.of("unknown_id", f"no query with this id in {queries_path}", Path(responses_path), record)
            )
    name = scorer_name(scorer)
    side = scored_pairs_path(output_path)
    done = _read_scored_pairs(side, name)
    # a pair the scorer gave no score (a judge call that kept failing, an unparsable grade) is asked
    # again on a rerun, as the collect stage retries its failures; a later line supersedes it
    resumed = sum(1 for r in pairs if done.get((r.id, r.model)) is not None)
    pending = [r for r in pairs if done.get((r.id, r.model)) is None]
    if resumed:
        logger.info("resuming: %d of %d pairs already scored in %s", resumed, len(pairs), side)
    if pending:
        _score_pending(pending, by_id, scorer, side, name, done, batch_size, show_progress, engine or LocalEngine())

    current = {(r.id, r.model): r for r in pairs}  # the side file may hold pairs the inputs no longer have
    rows = []
    without: list[str] = []
    for query in queries:
        rewards = {
            m: done[(query.id, m)] for m in experts if (query.id, m) in current and done[(query.id, m)] is not None
        }
        if rewards:
            rows.append(RoutingExample(query.id, query.query, rewards, query.tags, query.task).to_dict())
        else:
            without.append(query.id)
    for key, record in current.items():
        if done[key] is None:
            skipped.append(SkippedPair.of("unscored", f"{name} returned no score", Path(responses_path), record))
    skipped.sort(key=lambda s: s.line or 0)
    if not rows:
        raise DataError(f"no query got a reward; nothing to write ({len(skipped)} pairs skipped)", path=responses_path)
    write_jsonl(output_path, rows)
    return ScoreReport(
        output=str(output_path),
        scored_pairs_file=str(side),
        scorer=name,
        experts=list(experts),
        rows=len(rows),
        scored=len(pending),
        resumed=resumed,
        skipped=skipped,
        queries_without_rewards=without,
        ignored_models=ignored,
    )


def _score_pending(
    pending: list[ResponseRecord],
    by_id: dict[str, RoutingExample],
    scorer: RewardScorer | ModelLoader,
    side: Path,
    name: str,
    done: dict[tuple[str, str], float | None],
    batch_size: int | None,
    show_progress: bool,
    engine: Engine,
) -> None:
    """Score ``pending`` on ``engine``, appending each batch to the side file (and ``done``) as it finishes."""
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    loader_size = scorer.kwargs.get("batch_size") if isinstance(scorer, ModelLoader) else None
    size = batch_size or getattr(scorer, "batch_size", None) or loader_size or 16
    # longest first, as the scorer itself batches: little padding within each call
    pending = sorted(pending, key=lambda r: len(by_id[r.id].text) + len(r.response), reverse=True)
    progress: Any = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(pending), desc="scoring", unit="pair")
    new_file = not side.exists() or side.stat().st_size == 0
    side.parent.mkdir(parents=True, exist_ok=True)
    batches = engine.score(scorer, [by_id[r.id].query for r in pending], [r.response for r in pending], batch_size=size)
    try:
        with open(side, "a", encoding="utf-8") as f:
            if new_file:
                f.write(json.dumps({"scorer": name}, ensure_ascii=False) + "\n")
            for index, rewards in batches:
                lines = []
                for i, reward in zip(index, rewards):
                    record = pending[i]
                    done[(record.id, record.model)] = reward
                    lines.append(json.dumps({"id": record.id, "model": record.model, "reward": reward}) + "\n")
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())  # a batch on disk is a batch a rerun never repeats
                if progress is not None:
                    progress.update(len(index))
    finally:
        if hasattr(batches, "close"):
            batches.close()  # an engine's session (a Ray started for the run) ends here, even on an error
        if progress is not None:
            progress.close()


def _read_scored_pairs(side: Path, name: str) -> dict[tuple[str, str], float | None]:
    """The pairs an earlier run scored, from its side file; a line cut short by a kill is dropped."""
    if not side.is_file():
        return {}
    drop_torn_tail(side)
    data = side.read_bytes()
    done: dict[tuple[str, str], float | None] = {}
    lines = data.decode("utf-8").splitlines()
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row = parse_json_line(text, side, line_no)
        if line_no == 1:
            if row.get("scorer") != name:
                raise DataError(
                    f"holds scores from {row.get('scorer')!r}, not {name!r}; pass another --output, "
                    "or delete this file to score everything again",
                    path=side,
                )
            continue
        rid, model, reward = row.get("id"), row.get("model"), row.get("reward")
        if not isinstance(rid, str) or not isinstance(model, str) or as_reward(reward) != reward:
            raise DataError(
                "expected {'id': str, 'model': str, 'reward': number or null}; the file was changed by hand? "
                "delete it to score everything again",
                path=side,
                line=line_no,
            )
        done[(rid, model)] = reward
    return done


__all__ = ["ScoreReport", "score_responses", "scored_pairs_path"]
