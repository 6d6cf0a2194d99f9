"""Scoring expert answers: the reward stage of the pipeline (collect -> score -> label -> train).

Anything with a ``score(queries, responses)`` method is a :class:`RewardScorer`: a Hugging Face
reward model (:class:`RewardModelScorer`) here, or a chat model acting as a judge in
``zooter_langchain``. :func:`score_responses` runs a scorer over a responses file
(``{"id", "model", "response"}`` a line, as the collect stage writes it) and writes the dataset
``zooter train`` reads, resuming where an interrupted run stopped.

Example:
    >>> from zooter.rewards import RewardModelScorer, score_responses
    >>> name = "OpenAssistant/reward-model-deberta-v3-large-v2"
    >>> scorer = RewardModelScorer.from_pretrained(name)  # doctest: +SKIP
    >>> report = score_responses("responses.jsonl", "queries.jsonl", scorer, "rewards.jsonl")  # doctest: +SKIP
    >>> print(report.format_summary())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from zooter._io import _parse_line, drop_torn_tail, open_text, refuse_overwriting_inputs, write_jsonl
from zooter.data import Query, RoutingExample, content_text, load_queries, query_text
from zooter.errors import ConfigError, DataError, ZooterError, name_list

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: The share of ``max_length`` a response keeps (if it is that long) even when the query is longer.
RESPONSE_SHARE = 0.25


@runtime_checkable
class RewardScorer(Protocol):
    """Scores answers: one reward per ``(queries[i], responses[i])`` pair, higher is better.

    A scorer returns ``None`` for a pair it could not score (e.g. a judge's unparsable grade);
    such a pair is recorded as missing, never guessed.
    """

    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]: ...


# -- the reward model ---------------------------------------------------------------------------
class RewardModelScorer:
    """A Hugging Face sequence-classification reward model with one output logit.

    The model reads each (query, response) pair the way it was trained to: through the
    tokenizer's chat template when it has one (Skywork-Reward style: the query as the user turn,
    or a chat query's own messages, then the response as the assistant turn), else as a text pair
    (``tokenizer(query, response)``, the OpenAssistant DeBERTa reward models' usage). The logit is
    the reward.

    Pairs longer than ``max_length`` tokens lose the end of the response: the query is kept whole
    as long as the response still gets ``RESPONSE_SHARE`` of the window (or all of itself, if it
    is shorter). A query longer than that loses its *beginning* instead, because the request a
    response answers is usually at the end (a pasted document or program followed by the
    question; a chat's latest turn), and a reward read from a response cut to nothing would
    score the query, not the answer.

    Args:
        model: a ``transformers`` sequence-classification model with ``num_labels == 1``.
        tokenizer: its tokenizer.
        name: what the scores came from (recorded beside resumable output).
        batch_size: pairs per forward pass.
        max_length: tokens per pair; by default what the model can read.
        use_chat_template: None to use the tokenizer's chat template when it has one; False for
            the text-pair encoding; True to require the template.
        show_progress: show a progress bar over the batches of one :meth:`score` call.

    Example:
        >>> name = "OpenAssistant/reward-model-deberta-v3-large-v2"
        >>> scorer = RewardModelScorer.from_pretrained(name)  # doctest: +SKIP
        >>> rewards = scorer.score(["What is 2 + 2?"] * 2, ["4.", "Probably 5."])  # doctest: +SKIP
        >>> rewards[0] > rewards[1]  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        use_chat_template: bool | None = None,
        show_progress: bool = False,
    ) -> None:
        from zooter.router import _position_limit

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 8:
            raise ConfigError(f"max_length must be >= 8 tokens, got {max_length}")
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise ConfigError(_labels_message(name or type(model).__name__, num_labels))
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ConfigError(
                f"use_chat_template=True, but the tokenizer of {name or 'the model'} has no chat template"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.batch_size = batch_size
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self.show_progress = show_progress
        limit = _position_limit(model, tokenizer)
        if max_length is None:
            max_length = limit
        elif limit is not None and max_length > limit:
            logger.warning("max_length %d exceeds what %s can read; using %d", max_length, self.name, limit)
            max_length = limit
        self.max_length: int | None = max_length
        #: Running counts of encoded pairs longer than ``max_length``, and of those whose query was cut too.
        self.pairs_truncated = 0
        self.queries_truncated = 0
        self.pad_id = _pad_id(model, tokenizer)
        if tokenizer.pad_token_id is None and model.config.pad_token_id is None:
            logger.warning(
                "%s defines no padding token; padding with token %d. A model that pools its last token finds it "
                "by looking for padding, so a pair ending in that token is read one token short",
                self.name,
                self.pad_id,
            )
        if model.config.pad_token_id is None:
            # decoder reward models find each row's last token by looking for padding: tell them what it is
            model.config.pad_token_id = self.pad_id

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        use_chat_template: bool | None = None,
        show_progress: bool = False,
    ) -> RewardModelScorer:
        """Load a reward model and its tokenizer from a Hub id or a local folder.

        Args:
            name_or_path: Hub id (e.g. ``Skywork/Skywork-Reward-Llama-3.1-8B-v0.2``) or folder.
            revision: Hub revision (branch, tag or commit).
            device: where to run; CUDA when present by default.
            dtype: weights' dtype (``"bfloat16"``, ``"float16"``, ``"float32"`` or a torch dtype);
                by default bf16 (fp16 without bf16 support) on CUDA, fp32 on CPU.
            batch_size, max_length, use_chat_template, show_progress: see the class.

        Raises:
            ConfigError: the model has more or fewer than one output label, or a bad setting.
            ZooterError: the model or tokenizer cannot be loaded (not found, offline, ...).
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from zooter.encoder import _wrap_load_error, dtype_argument, pick_device

        source = str(name_or_path)
        chosen = pick_device(device)
        weights_dtype = _weights_dtype(dtype, chosen)
        try:
            config = AutoConfig.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as e:
            raise _wrap_load_error("the reward model", source, e) from e
        if config.num_labels != 1:  # say so before loading gigabytes of weights
            raise ConfigError(_labels_message(source, config.num_labels))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as e:
            raise _wrap_load_error("the tokenizer of", source, e) from e
        kwargs: dict[str, Any] = {"revision": revision, **dtype_argument(weights_dtype)}
        try:
            try:
                model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="sdpa", **kwargs)
            except ValueError as e:
                if "sdpa" not in str(e).lower():
                    raise
                model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            raise _wrap_load_error("the reward model", source, e) from e
        name = source if revision is None else f"{source}@{revision}"
        logger.info("loaded reward model %s on %s in %s", name, chosen, weights_dtype)
        return cls(
            model.to(chosen),
            tokenizer,
            name=name,
            batch_size=batch_size,
            max_length=max_length,
            use_chat_template=use_chat_template,
            show_progress=show_progress,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, queries: Sequence[Query], responses: Sequence[str]) -> list[dict[str, list[int]]]:
        """What the model reads for each pair: ``input_ids`` (and ``token_type_ids`` for text pairs).

        Every pair fits ``max_length``; see the class for what a long pair loses.
        """
        _check_pairs(queries, responses)
        if not queries:
            return []
        if self.use_chat_template:
            texts = [self._chat_text(q, r) for q, r in zip(queries, responses)]
            encoded = self.tokenizer(texts, add_special_tokens=False, return_token_type_ids=False, verbose=False)
        else:
            encoded = self.tokenizer([query_text(q) for q in queries], list(responses), verbose=False)
        keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        rows = [{k: encoded[k][i] for k in keys} for i in range(len(queries))]
        limit = self.max_length
        if limit is None:
            return rows
        long = [i for i, row in enumerate(rows) if len(row["input_ids"]) > limit]
        cut_queries = 0
        for i in long:
            rows[i], query_cut = self._fit(queries[i], responses[i], limit)
            cut_queries += query_cut
        if long:
            logger.info(
                "%d of %d pairs were longer than %d tokens: responses cut (%d queries too)",
                len(long),
                len(rows),
                limit,
                cut_queries,
            )
        self.pairs_truncated += len(long)
        self.queries_truncated += cut_queries
        return rows

    def _chat_text(self, query: Query, response: str) -> str:
        if isinstance(query, str):
            messages = [{"role": "user", "content": query}]
        else:
            messages = [{"role": m.get("role", "user"), "content": content_text(m.get("content"))} for m in query]
        messages.append({"role": "assistant", "content": response})
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _render(self, query: Query, response: str) -> dict[str, list[int]]:
        if self.use_chat_template:
            text = self._chat_text(query, response)
            encoded = self.tokenizer(text, add_special_tokens=False, return_token_type_ids=False, verbose=False)
        else:
            encoded = self.tokenizer(query_text(query), response, verbose=False)
        return {k: encoded[k] for k in ("input_ids", "token_type_ids") if k in encoded}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _drop_front(self, query: Query, n: int) -> Query:
        """``query`` without its first ``n`` tokens (a chat loses them from its oldest messages)."""
        if isinstance(query, str):
            return self._text(self._ids(query)[n:])
        kept = []
        for message in query:
            content = content_text(message.get("content"))
            if n > 0:
                ids = self._ids(content)
                cut = min(n, len(ids))
                # an emptied message stays: templates often insist that roles alternate
                content, n = self._text(ids[cut:]), n - cut
            kept.append({"role": message.get("role", "user"), "content": content})
        return kept

    def _query_length(self, query: Query, response_ids: list[int]) -> int:
        """Tokens a pair spends on the query and the special or template tokens around it."""
        # measured with the response's first token: a text pair with an empty second text loses its last separator
        first = response_ids[:1]
        return len(self._render(query, self._text(first))["input_ids"]) - len(first)

    def _fit(self, query: Query, response: str, limit: int) -> tuple[dict[str, list[int]], bool]:
        """Encode a too-long pair within ``limit`` tokens; also says whether the query was cut."""
        response_ids = self._ids(response)
        reserve = min(len(response_ids), int(limit * RESPONSE_SHARE))
        query_cut = False
        base = self._query_length(query, response_ids)
        # re-measure after each cut: decoding and re-encoding a cut text can shift a token or two
        for _ in range(4):
            if base + reserve <= limit:
                break
            query, query_cut = self._drop_front(query, base + reserve - limit), True
            base = self._query_length(query, response_ids)
        keep = max(limit - base, 0)
        for _ in range(8):
            encoded = self._render(query, self._text(response_ids[:keep]))
            over = len(encoded["input_ids"]) - limit
            if over <= 0:
                return encoded, query_cut
            if keep == 0:
                break
            keep = max(keep - over, 0)
        raise ConfigError(
            f"max_length={limit} is too small for {self.name}: even with the query cut and no response, "
            f"a pair takes {len(self._render(query, '')['input_ids'])} tokens"
        )

    # -- scoring -------------------------------------------------------------------------------
    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        """The reward of each ``(queries[i], responses[i])`` pair, in input order.

        Pairs are encoded in one tokenizer call, sorted by length and run in batches of
        ``batch_size`` under ``torch.inference_mode``. A non-finite logit (an fp16 overflow) is
        returned as None: a missing score, not a number to train on.
        """
        import torch

        from zooter.encoder import length_sorted_batches

        rows = self.encode(queries, responses)
        scores: list[float | None] = [None] * len(rows)
        batches: Iterator[list[int]] | list[list[int]] = length_sorted_batches(
            [row["input_ids"] for row in rows], self.batch_size
        )
        if self.show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(list(batches), desc="scoring", unit="batch")
        with torch.inference_mode():
            for index in batches:
                logits = self.model(**self._collate([rows[i] for i in index])).logits
                for i, value in zip(index, logits[:, 0].float().cpu().tolist()):
                    scores[i] = value if math.isfinite(value) else None
        bad = sum(1 for s in scores if s is None)
        if bad:
            logger.warning("%d of %d rewards were not finite numbers; recorded as missing", bad, len(scores))
        return scores

    def _collate(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        longest = max(len(row["input_ids"]) for row in rows)
        batch = {"input_ids": torch.full((len(rows), longest), self.pad_id, dtype=torch.long)}
        batch["attention_mask"] = torch.zeros((len(rows), longest), dtype=torch.long)
        if "token_type_ids" in rows[0]:
            batch["token_type_ids"] = torch.zeros((len(rows), longest), dtype=torch.long)
        for r, row in enumerate(rows):
            n = len(row["input_ids"])
            batch["attention_mask"][r, :n] = 1
            for key, values in row.items():
                batch[key][r, :n] = torch.as_tensor(values, dtype=torch.long)
        device = self.device
        return {k: v.to(device) for k, v in batch.items()}


def _labels_message(source: str, num_labels: Any) -> str:
    return (
        f"{source!r} has {num_labels} output labels; a reward model is a sequence classifier with exactly one "
        "(num_labels=1, the reward logit). Is it a plain encoder or a multi-class classifier?"
    )


def _weights_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    import torch

    from zooter.encoder import half_dtype

    if dtype is None:
        return half_dtype(device) or torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    chosen = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(chosen, torch.dtype) or not chosen.is_floating_point:
        raise ConfigError(f"dtype={dtype!r} is not a floating-point torch dtype; try 'bfloat16' or 'float32'")
    return chosen


def _pad_id(model: Any, tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, model.config.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _check_pairs(queries: Sequence[Query], responses: Sequence[str]) -> None:
    if isinstance(queries, str) or isinstance(responses, str):
        raise TypeError("score takes lists: wrap a single query and response each in a list")
    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} queries but {len(responses)} responses; expected one per query")


# -- responses files ----------------------------------------------------------------------------
#: Why a pair was not scored, by reason code (the codes are stable; the words are for people).
SKIP_REASONS = {
    "malformed": "malformed line",
    "collect_failure": "the collect stage recorded a failure",
    "empty_response": "empty response",
    "duplicate": "duplicate (id, model) pair",
    "unknown_id": "response id not among the queries",
    "unscored": "the scorer returned no score",
}


@dataclass(frozen=True)
class ResponseRecord:
    """One expert's answer to one query, as read from a responses file."""

    id: str
    model: str
    response: str
    line: int


@dataclass(frozen=True)
class SkippedPair:
    """A responses line or ``(id, model)`` pair that got no reward, and why (``reason`` is a SKIP_REASONS key)."""

    reason: str
    detail: str
    path: str | None = None
    line: int | None = None
    id: str | None = None
    model: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        if self.id is not None:
            where.append(f"id {self.id!r}")
        if self.model is not None:
            where.append(f"model {self.model!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.detail}" if prefix else self.detail


def read_responses(path: str | Path) -> tuple[list[ResponseRecord], list[SkippedPair]]:
    """Read a responses JSONL file (``{"id", "model", "response"}`` a line), keeping what is usable.

    Bad lines do not stop the read: each is returned as a :class:`SkippedPair` naming the file,
    line and field. A line with an ``"error"`` and no ``"response"`` is a failure the collect stage
    recorded; it is reported only if no line holds an answer for the same pair (a retried pair
    has both). A repeated ``(id, model)`` pair keeps its first answer.

    Returns:
        ``(records, skipped)``, each in file order.

    Raises:
        DataError: the file is missing or unreadable, or not one line of it is a usable answer.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    records: list[ResponseRecord] = []
    skipped: list[SkippedPair] = []
    failures: list[SkippedPair] = []
    first_line: dict[tuple[str, str], int] = {}
    line_no = 0
    try:
        with open_text(path) as f:
            for line_no, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                item = _response_line(text, path, line_no)
                if isinstance(item, SkippedPair):
                    (failures if item.reason == "collect_failure" else skipped).append(item)
                    continue
                key = (item.id, item.model)
                if key in first_line:
                    skipped.append(
                        _skip("duplicate", f"the pair was already answered on line {first_line[key]}", path, item)
                    )
                    continue
                first_line[key] = line_no
                if not item.response.strip():
                    skipped.append(_skip("empty_response", "the response is empty", path, item))
                    continue
                records.append(item)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=path, line=line_no + 1) from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read the file ({type(e).__name__}: {e})", path=path) from None
    skipped += [f for f in failures if (f.id, f.model) not in first_line]
    skipped.sort(key=lambda s: s.line or 0)
    if not records:
        first = f"; first problem: {skipped[0]}" if skipped else ""
        raise DataError(
            f"no usable answer in the file (expected {{'id', 'model', 'response'}} lines){first}", path=path
        )
    return records, skipped


def _skip(reason: str, detail: str, path: Path, record: ResponseRecord) -> SkippedPair:
    return SkippedPair(reason, detail, str(path), record.line, record.id, record.model)


def _response_line(text: str, path: Path, line_no: int) -> ResponseRecord | SkippedPair:
    def bad(detail: str, field_name: str | None = None, rid: str | None = None, model: str | None = None):
        return SkippedPair("malformed", detail, str(path), line_no, rid, model, field_name)

    try:
        row = _parse_line(text, path, line_no)
    except DataError as e:
        return bad(str(e).split(": ", 1)[-1])
    raw_id = row.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        return bad(f"expected a non-empty string id, got {raw_id!r:.80}", "id")
    rid = str(raw_id)
    model = row.get("model")
    if not isinstance(model, str) or not model:
        return bad(f"expected a non-empty string model name, got {model!r:.80}", "model", rid)
    if "response" not in row and row.get("error") is not None:
        return SkippedPair("collect_failure", f"{row['error']!s:.200}", str(path), line_no, rid, model, "error")
    response = row.get("response")
    if not isinstance(response, str):
        return bad(f"expected the answer as a string, got {response!r:.80}", "response", rid, model)
    return ResponseRecord(rid, model, response, line_no)


# -- the score stage ----------------------------------------------------------------------------
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


def answering_models(records: Sequence[ResponseRecord], experts: Sequence[str] | None, path: str | Path) -> list[str]:
    """The models that answer in ``records``, in order of appearance.

    Raises:
        DataError: an expert of ``experts`` has no answer in the file.
    """
    models = list(dict.fromkeys(r.model for r in records))
    unknown = [e for e in experts or () if e not in models]
    if unknown:
        raise DataError(
            f"no answers from experts {name_list(unknown)}; the file answers for {name_list(models)}",
            path=path,
            field="model",
        )
    return models


def scored_pairs_path(output_path: str | Path) -> Path:
    """The side file beside ``output_path`` that records every pair scored so far."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + ".scored.jsonl")


def score_responses(
    responses_path: str | Path,
    queries_path: str | Path,
    scorer: RewardScorer,
    output_path: str | Path,
    *,
    experts: Sequence[str] | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
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
        scorer: any :class:`RewardScorer`; its ``name`` attribute, if any, is recorded in the side
            file, and a rerun with another scorer is refused rather than mixing two reward scales.
        output_path: the dataset to write (gzip when the name ends in ``.gz``).
        experts: score only these models' answers (and fail if one has none); default: every model.
        batch_size: pairs per ``scorer.score`` call (and per write); default: the scorer's
            ``batch_size`` attribute, else 16.
        show_progress: a progress bar over the pairs to score.

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
                _skip("unknown_id", f"no query with this id in {queries_path}", Path(responses_path), record)
            )
    name = str(getattr(scorer, "name", None) or type(scorer).__qualname__)
    side = scored_pairs_path(output_path)
    done = _read_scored_pairs(side, name)
    # a pair the scorer gave no score (a judge call that kept failing, an unparsable grade) is asked
    # again on a rerun, as the collect stage retries its failures; a later line supersedes it
    resumed = sum(1 for r in pairs if done.get((r.id, r.model)) is not None)
    pending = [r for r in pairs if done.get((r.id, r.model)) is None]
    if resumed:
        logger.info("resuming: %d of %d pairs already scored in %s", resumed, len(pairs), side)
    if pending:
        _score_pending(pending, by_id, scorer, side, name, done, batch_size, show_progress)

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
            skipped.append(_skip("unscored", f"{name} returned no score", Path(responses_path), record))
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
    scorer: RewardScorer,
    side: Path,
    name: str,
    done: dict[tuple[str, str], float | None],
    batch_size: int | None,
    show_progress: bool,
) -> None:
    """Score ``pending`` in batches, appending each batch to the side file (and ``done``) as it finishes."""
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    size = batch_size or getattr(scorer, "batch_size", None) or 16
    # longest first, as the scorer itself batches: little padding within each call
    pending = sorted(pending, key=lambda r: len(by_id[r.id].text) + len(r.response), reverse=True)
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(pending), desc="scoring", unit="pair")
    new_file = not side.exists() or side.stat().st_size == 0
    side.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(side, "a", encoding="utf-8") as f:
            if new_file:
                f.write(json.dumps({"scorer": name}, ensure_ascii=False) + "\n")
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                scores = scorer.score([by_id[r.id].query for r in chunk], [r.response for r in chunk])
                if len(scores) != len(chunk):
                    raise ZooterError(f"{name} returned {len(scores)} scores for {len(chunk)} pairs")
                lines = []
                for record, value in zip(chunk, scores):
                    reward = _as_reward(value)
                    done[(record.id, record.model)] = reward
                    lines.append(json.dumps({"id": record.id, "model": record.model, "reward": reward}) + "\n")
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())  # a batch on disk is a batch a rerun never repeats
                if progress is not None:
                    progress.update(len(chunk))
    finally:
        if progress is not None:
            progress.close()


def _as_reward(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
        row = _parse_line(text, side, line_no)
        if line_no == 1:
            if row.get("scorer") != name:
                raise DataError(
                    f"holds scores from {row.get('scorer')!r}, not {name!r}; pass another --output, "
                    "or delete this file to score everything again",
                    path=side,
                )
            continue
        rid, model, reward = row.get("id"), row.get("model"), row.get("reward")
        if not isinstance(rid, str) or not isinstance(model, str) or _as_reward(reward) != reward:
            raise DataError(
                "expected {'id': str, 'model': str, 'reward': number or null}; the file was changed by hand? "
                "delete it to score everything again",
                path=side,
                line=line_no,
            )
        done[(rid, model)] = reward
    return done
