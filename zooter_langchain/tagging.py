"""Open-ended intent tags from a chat model, in the style of InsTag, for tag-based label enhancement.

:class:`ChatModelTagger` asks any LangChain chat model for a JSON list of short intent tags per query,
normalises them (case, punctuation, simple plurals) and merges near-duplicates across the batch, so
"Python programming", "python-programming" and "Python programmings" become one tag. Replies are
cached on disk (JSONL, one line per reply, keyed by a hash of the model's identity, the prompt and the
query), so a rerun costs no LLM call and an interrupted run resumes where it stopped.

The tags go into the dataset's ``tags`` field; train on them with ``zooter train --tags data``
(or ``LabelConfig(tags="data")``).

Example:
    >>> from langchain.chat_models import init_chat_model  # doctest: +SKIP
    >>> from zooter.data import RoutingDataset
    >>> from zooter_langchain.tagging import ChatModelTagger
    >>> tagger = ChatModelTagger(init_chat_model("gpt-4o-mini"), cache_path="tags-cache.jsonl")  # doctest: +SKIP
    >>> tagged = tagger.tag_dataset(RoutingDataset.load("rewards.jsonl"))  # doctest: +SKIP
    >>> tagged.save("rewards.tagged.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zooter.data import Query, RoutingDataset, RoutingExample, query_text
from zooter.errors import ConfigError
from zooter_langchain._aio import run_sync

logger = logging.getLogger(__name__)

INSTAG_PROMPT = """You are a helpful assistant. Identify the intentions behind the user query below as \
short tags (one to three words each, e.g. "python programming", "algebra", "creative writing", \
"email drafting"). Give between 1 and 6 tags, from the most to the least important.
Reply with a JSON list of strings and nothing else.

User query:
{query}"""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_SEPARATORS = re.compile(r"[_\-/\\|:;,.]+")
_NOT_WORD = re.compile(r"[^\w\s]+")


def parse_tags(reply: str) -> list[str] | None:
    """The tags in a model's reply, or None if it holds no readable JSON list.

    Accepts a JSON list of strings, a list of ``{"tag": ...}`` objects (InsTag's own format), or an
    object with a ``"tags"`` list; the JSON may be wrapped in a code fence or surrounded by prose.
    """
    text = reply.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    value = _loads(text)
    if value is None and "[" in text and "]" in text:
        value = _loads(text[text.index("[") : text.rindex("]") + 1])
    if isinstance(value, dict):
        value = value.get("tags")
    if not isinstance(value, list):
        return None
    tags = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("tag")
        if isinstance(item, str) and item.strip():
            tags.append(item.strip())
        elif item is not None:
            return None  # numbers, nested lists: not a tag list
    return tags


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def fold_plural(word: str) -> str:
    """A simple English singular: ``queries -> query``, ``boxes -> box``, ``tags -> tag``; ``analysis`` stays."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("s"):
        return word[:-1]
    return word


def normalize_tag(tag: str) -> str:
    """Lowercase, punctuation and separators to spaces, whitespace collapsed, each word singular."""
    text = _NOT_WORD.sub(" ", _SEPARATORS.sub(" ", tag.lower()))
    return " ".join(fold_plural(word) for word in text.split())


def merge_near_duplicates(tags: Iterable[str], *, similarity: float = 0.9) -> dict[str, str]:
    """Map each (normalised) tag to the canonical tag of its group.

    Two tags merge when they are equal without spaces (``e mail``/``email``) or their
    ``difflib`` similarity ratio is at least ``similarity``. The most frequent tag of a group is
    its canonical form (ties: alphabetical), so the mapping does not depend on input order.
    """
    counts = Counter(tags)
    canonical: list[str] = []
    squashed: dict[str, str] = {}
    mapping: dict[str, str] = {}
    for tag, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        key = tag.replace(" ", "")
        target = squashed.get(key)
        if target is None and similarity < 1.0:
            matcher = difflib.SequenceMatcher(b=tag, autojunk=False)
            for other in canonical:
                matcher.set_seq1(other)
                if matcher.real_quick_ratio() >= similarity and matcher.ratio() >= similarity:
                    target = other
                    break
        if target is None:
            target = tag
            canonical.append(tag)
        squashed.setdefault(key, target)
        mapping[tag] = target
    return mapping


def model_identity(model: Any) -> str:
    """A stable description of a chat model (class and identifying parameters) for cache keys."""
    cls = type(model)
    params = getattr(model, "_identifying_params", None)
    if params is None:
        logger.warning("%s has no _identifying_params; pass model_id= so cached replies stay per model", cls.__name__)
        params = {}
    return json.dumps({"class": f"{cls.__module__}.{cls.__qualname__}", **dict(params)}, sort_keys=True, default=str)


class ChatModelTagger:
    """Tags queries with open-ended intent tags from a chat model, cached on disk.

    Args:
        model: a LangChain chat model (or any runnable taking messages and returning a message).
        cache_path: JSONL file of raw replies; read at the start, appended to as replies arrive.
            None: no cache.
        prompt: the request, with ``{query}`` where the query's text goes.
        max_concurrency: LLM calls in flight at once.
        similarity: near-duplicate threshold for merging tags (1.0: merge only equal tags).
        model_id: names the model in cache keys instead of its class and parameters.
        show_progress: show a progress bar over the LLM calls.

    Malformed replies give the query no tags (with a warning); they are cached like any reply, so
    rerunning does not ask again: delete the cache file, or those lines, to retry them.

    Example:
        >>> from zooter_langchain.tagging import ChatModelTagger
        >>> tagger = ChatModelTagger(chat_model, cache_path="tags.jsonl")  # doctest: +SKIP
        >>> tagger.tag_queries(["Fix my Python regex", "Write a sonnet"])  # doctest: +SKIP
        [('python programming', 'regex'), ('poetry', 'creative writing')]
    """

    def __init__(
        self,
        model: Any,
        *,
        cache_path: str | Path | None = None,
        prompt: str = INSTAG_PROMPT,
        max_concurrency: int = 8,
        similarity: float = 0.9,
        model_id: str | None = None,
        show_progress: bool = False,
    ) -> None:
        if "{query}" not in prompt:
            raise ConfigError("prompt must contain '{query}' where the query goes")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not 0.0 < similarity <= 1.0:
            raise ConfigError(f"similarity must be in (0, 1], got {similarity}")
        self.model = model
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.prompt = prompt
        self.max_concurrency = max_concurrency
        self.similarity = similarity
        self.model_id = model_id or model_identity(model)
        self.show_progress = show_progress
        self.calls = 0  # LLM calls made by this tagger
        self._cache: dict[str, str] | None = None

    # -- the cache ------------------------------------------------------------------------------
    def cache_key(self, text: str) -> str:
        payload = json.dumps([self.model_id, self.prompt, text])
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _load_cache(self) -> dict[str, str]:
        if self._cache is not None:
            return self._cache
        cache: dict[str, str] = {}
        if self.cache_path is not None and self.cache_path.is_file():
            with open(self.cache_path, encoding="utf-8") as f:
                for line_no, line in enumerate(f, start=1):
                    try:
                        entry = json.loads(line)
                        cache[entry["key"]] = entry["reply"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        # a run killed mid-write leaves a partial last line; that query is asked again
                        if line.strip():
                            logger.warning("%s:%d: unreadable cache line skipped", self.cache_path, line_no)
        self._cache = cache
        return cache

    # -- asking the model -----------------------------------------------------------------------
    async def _ask(self, text: str, semaphore: asyncio.Semaphore) -> str:
        from langchain_core.messages import HumanMessage

        async with semaphore:
            self.calls += 1
            message = await self.model.ainvoke([HumanMessage(self.prompt.replace("{query}", text))])
        return message.text if hasattr(message, "text") else str(message)

    async def _replies(self, texts: Sequence[str]) -> dict[str, str]:
        """Reply per key for ``texts``: from the cache, else from the model (appended to the cache)."""
        cache = self._load_cache()
        missing = {}
        for text in texts:
            key = self.cache_key(text)
            if key not in cache:
                missing.setdefault(key, text)
        if missing:
            logger.info("asking %s for tags of %d queries (%d cached)", self.model_id, len(missing), len(texts))
            await self._ask_all(missing, cache)
        return cache

    async def _ask_all(self, missing: dict[str, str], cache: dict[str, str]) -> None:
        semaphore = asyncio.Semaphore(self.max_concurrency)
        with contextlib.ExitStack() as stack:
            out = None
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                out = stack.enter_context(open(self.cache_path, "a", encoding="utf-8"))
            progress = None
            if self.show_progress:
                from tqdm.auto import tqdm

                progress = stack.enter_context(tqdm(total=len(missing), desc="tagging queries", unit="query"))

            async def one(key: str, text: str) -> None:
                reply = await self._ask(text, semaphore)
                cache[key] = reply
                if out is not None:  # each reply is on disk as soon as it arrives: a crash loses none
                    out.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
                    out.flush()
                if progress is not None:
                    progress.update(1)

            # every call runs to its end, so the replies that did arrive are cached before an error surfaces
            results = await asyncio.gather(*(one(k, t) for k, t in missing.items()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            logger.error("%d of %d tagging calls failed; the replies received are cached", len(errors), len(missing))
            raise errors[0]

    # -- tagging --------------------------------------------------------------------------------
    async def atag_queries(self, queries: Sequence[Query]) -> list[tuple[str, ...]]:
        """Normalised, merged tags for each query (async; up to ``max_concurrency`` calls at once)."""
        texts = [query_text(q) for q in queries]
        replies = await self._replies(texts)
        raw: list[list[str]] = []
        for text in texts:
            reply = replies[self.cache_key(text)]
            tags = parse_tags(reply)
            if tags is None:
                logger.warning("no JSON tag list in the reply for %r: %r; no tags for it", text[:60], reply[:120])
                tags = []
            raw.append([t for t in (normalize_tag(tag) for tag in tags) if t])
        mapping = merge_near_duplicates((t for tags in raw for t in dict.fromkeys(tags)), similarity=self.similarity)
        return [tuple(dict.fromkeys(mapping[t] for t in tags)) for tags in raw]

    def tag_queries(self, queries: Sequence[Query]) -> list[tuple[str, ...]]:
        """Blocking :meth:`atag_queries` (works inside a running event loop too)."""
        return run_sync(lambda: self.atag_queries(queries))

    async def atag_dataset(self, dataset: RoutingDataset, *, keep_existing: bool = False) -> RoutingDataset:
        """``dataset`` with each row's ``tags`` set to its model tags (after its own, with ``keep_existing``)."""
        tags = await self.atag_queries([row.query for row in dataset])
        rows = [
            RoutingExample(
                row.id,
                row.query,
                row.rewards,
                tuple(dict.fromkeys([*row.tags, *new])) if keep_existing else new,
                row.task,
            )
            for row, new in zip(dataset, tags)
        ]
        return RoutingDataset(rows, experts=dataset.experts, source=dataset.source)

    def tag_dataset(self, dataset: RoutingDataset, *, keep_existing: bool = False) -> RoutingDataset:
        """Blocking :meth:`atag_dataset`."""
        return run_sync(lambda: self.atag_dataset(dataset, keep_existing=keep_existing))


__all__ = ["INSTAG_PROMPT", "ChatModelTagger", "fold_plural", "merge_near_duplicates", "normalize_tag", "parse_tags"]
