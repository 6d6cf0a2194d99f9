"""Scorers: what turns one expert's answer to one query into a reward, higher is better.

Anything with a ``score(queries, responses)`` method is a :class:`RewardScorer`: a Hugging Face
reward model (:class:`RewardModelScorer`) here, or a chat model acting as a judge in
``zooter_langchain``. :func:`zooter.rewards.scoring.score_responses` runs one over a responses file.

Example:
    >>> from zooter.rewards.scorers import RewardModelScorer
    >>> scorer = RewardModelScorer.from_pretrained("OpenAssistant/reward-model-deberta-v3-large-v2")  # doctest: +SKIP
    >>> scorer.score(["What is 2 + 2?"], ["4."])  # doctest: +SKIP
    [3.1]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from zooter.data import Query, content_text, query_text
from zooter.errors import ConfigError, ZooterError
from zooter.model.encoder import position_limit

if TYPE_CHECKING:
    import torch

    from zooter.engines.loader import ModelLoader

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


def scorer_name(scorer: Any) -> str:
    """What a scorer's rewards are recorded as coming from: its ``name``, else its class."""
    return str(getattr(scorer, "name", None) or type(scorer).__qualname__)


def score_batch(scorer: RewardScorer, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
    """One batch of rewards, each a finite float or None: what every engine computes per batch.

    Raises:
        ZooterError: the scorer returned another number of scores than pairs.
    """
    scores = scorer.score(queries, responses)
    if len(scores) != len(queries):
        raise ZooterError(f"{scorer_name(scorer)} returned {len(scores)} scores for {len(queries)} pairs")
    return [as_reward(value) for value in scores]


def as_reward(value: Any) -> float | None:
    """``value`` as a reward: a finite float, or None for anything else (a failed grade, a NaN)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
        limit = position_limit(model, tokenizer)
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

        from zooter.model.encoder import dtype_argument, load_error, pick_device

        source = str(name_or_path)
        chosen = pick_device(device)
        weights_dtype = _weights_dtype(dtype, chosen)
        try:
            config = AutoConfig.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as e:
            raise load_error("the reward model", source, e) from e
        if config.num_labels != 1:  # say so before loading gigabytes of weights
            raise ConfigError(_labels_message(source, config.num_labels))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as e:
            raise load_error("the tokenizer of", source, e) from e
        kwargs: dict[str, Any] = {"revision": revision, **dtype_argument(weights_dtype)}
        try:
            try:
                model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="sdpa", **kwargs)
            except ValueError as e:
                if "sdpa" not in str(e).lower():
                    raise
                model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            raise load_error("the reward model", source, e) from e
        name = _model_name(source, revision)
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

    @classmethod
    def loader(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        use_chat_template: bool | None = None,
    ) -> ModelLoader:
        """How to load this reward model on a worker: :meth:`from_pretrained` with these arguments.

        An engine that runs elsewhere (:class:`zooter.engines.ray.RayEngine`) loads the model once
        per worker from this recipe, on the worker's own device.
        """
        from zooter.engines.loader import ModelLoader

        kwargs = {
            "revision": revision,
            "dtype": dtype,
            "batch_size": batch_size,
            "max_length": max_length,
            "use_chat_template": use_chat_template,
        }
        return ModelLoader(cls.from_pretrained, (str(name_or_path),), kwargs, name=_model_name(name_or_path, revision))

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

        from zooter.model.encoder import length_sorted_batches

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


def _model_name(source: str | Path, revision: str | None) -> str:
    return str(source) if revision is None else f"{source}@{revision}"


def _labels_message(source: str, num_labels: Any) -> str:
    return (
        f"{source!r} has {num_labels} output labels; a reward model is a sequence classifier with exactly one "
        "(num_labels=1, the reward logit). Is it a plain encoder or a multi-class classifier?"
    )


def _weights_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    import torch

    from zooter.model.encoder import half_dtype

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


__all__ = ["RESPONSE_SHARE", "RewardModelScorer", "RewardScorer", "as_reward", "score_batch", "scorer_name"]
