"""The chat-model tagger: parsing replies, normalising and merging tags, the disk cache, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ConfigError
from zooter.labels.tagging import DataTagger, TagEnhancer
from zooter.labels.targets import make_targets
from zooter_langchain.fake import AnsweringChatModel
from zooter_langchain.tagging import (
    ChatModelTagger,
    fold_plural,
    merge_near_duplicates,
    normalize_tag,
    parse_tags,
)


class ScriptedTagModel(AnsweringChatModel):
    """Replies with the script entry whose key occurs in the prompt; records calls and concurrency."""

    script: dict[str, str]
    default: str = "[]"
    fail_on: str | None = None
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-tagger"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"script": self.script}

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        prompt = messages[-1].text
        self.calls += 1
        self.prompts.append(prompt)
        if self.fail_on is not None and self.fail_on in prompt:
            raise RuntimeError("provider unavailable")
        reply = next((r for key, r in self.script.items() if key in prompt), self.default)
        return AIMessage(content=reply)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # let other calls start, so the concurrency bound is exercised
            return self._generate(messages, stop, run_manager, **kwargs)
        finally:
            self.in_flight -= 1


SCRIPT = {
    "regex": '["Python Programming", "regular expressions"]',
    "segfault": '```json\n["python programming", "Debugging"]\n```',
    "sonnet": 'Sure! Tags: ["Creative-Writing", "poetry"] hope this helps',
    "haiku": '[{"tag": "creative writing", "explanation": "a poem"}, {"tag": "Poems", "explanation": "form"}]',
    "integral": '{"tags": ["Calculus", "math"]}',
}
QUERIES = [
    "fix my regex please",
    "why does my C code segfault",
    "write a sonnet about rain",
    "a haiku on autumn",
    "compute this integral",
]


def test_parse_tags_reads_plain_fenced_prose_instag_and_object_replies():
    assert parse_tags('["a", "b"]') == ["a", "b"]
    assert parse_tags('```json\n["a"]\n```') == ["a"]
    assert parse_tags('Here you go: ["a", "b"].') == ["a", "b"]
    assert parse_tags('[{"tag": "a", "explanation": "x"}]') == ["a"]
    assert parse_tags('{"tags": ["a"]}') == ["a"]
    assert parse_tags("[]") == []


@pytest.mark.parametrize("reply", ["I cannot help with that.", '["unclosed', "[1, 2]", '{"tag": "a"}', "", "[[]]"])
def test_parse_tags_rejects_malformed_replies(reply: str):
    assert parse_tags(reply) is None


def test_normalisation_folds_case_punctuation_and_plurals():
    assert normalize_tag("  Python-Programming!! ") == "python programming"
    assert normalize_tag("Regular_Expressions") == "regular expression"
    assert normalize_tag("Data Analysis") == "data analysis"
    assert [fold_plural(w) for w in ["queries", "boxes", "tags", "class", "analysis", "bus", "api"]] == [
        "query",
        "box",
        "tag",
        "class",
        "analysis",
        "bus",
        "api",
    ]


def test_near_duplicates_merge_onto_the_most_frequent_form():
    tags = ["email writing", "e mail writing", "email writing", "creative writing", "creative writting", "poetry"]
    mapping = merge_near_duplicates(tags, similarity=0.9)
    assert mapping["e mail writing"] == "email writing"
    assert mapping["creative writting"] == mapping["creative writing"]  # a typo: ratio 0.97
    assert mapping["poetry"] == "poetry"
    assert mapping["creative writing"] != mapping["email writing"]  # ratio 0.69: different intents stay apart
    assert merge_near_duplicates(["creative writing", "creative writting"], similarity=1.0) == {
        "creative writing": "creative writing",
        "creative writting": "creative writting",
    }
    # the canonical choice does not depend on the input order
    assert merge_near_duplicates(list(reversed(tags))) == mapping


def test_tags_are_normalised_and_merged_across_queries(tmp_path: Path):
    model = ScriptedTagModel(script=SCRIPT)
    tags = ChatModelTagger(model, cache_path=tmp_path / "cache.jsonl").tag_queries(QUERIES)
    assert tags == [
        ("python programming", "regular expression"),
        ("python programming", "debugging"),
        ("creative writing", "poetry"),
        ("creative writing", "poem"),
        ("calculus", "math"),
    ]
    assert model.calls == len(QUERIES)


def test_a_rerun_reads_the_cache_and_makes_no_call(tmp_path: Path):
    cache = tmp_path / "cache.jsonl"
    first_model = ScriptedTagModel(script=SCRIPT)
    first = ChatModelTagger(first_model, cache_path=cache).tag_queries([*QUERIES, QUERIES[0]])
    assert first_model.calls == len(QUERIES)  # a repeated query is asked once
    assert len(cache.read_text().splitlines()) == len(QUERIES)

    second_model = ScriptedTagModel(script=SCRIPT)
    second = ChatModelTagger(second_model, cache_path=cache).tag_queries([*QUERIES, QUERIES[0]])
    assert second == first and second_model.calls == 0

    # a new query costs one call and is appended; the old lines stay
    third_model = ScriptedTagModel(script=SCRIPT)
    ChatModelTagger(third_model, cache_path=cache).tag_queries([*QUERIES, "another regex"])
    assert third_model.calls == 1 and len(cache.read_text().splitlines()) == len(QUERIES) + 1


def test_the_cache_is_keyed_by_model_and_prompt(tmp_path: Path):
    cache = tmp_path / "cache.jsonl"
    ChatModelTagger(ScriptedTagModel(script=SCRIPT), cache_path=cache).tag_queries(QUERIES[:2])
    other_model = ScriptedTagModel(script={**SCRIPT, "regex": '["regex"]'})  # different parameters
    ChatModelTagger(other_model, cache_path=cache).tag_queries(QUERIES[:2])
    assert other_model.calls == 2
    other_prompt = ScriptedTagModel(script=SCRIPT)
    ChatModelTagger(other_prompt, cache_path=cache, prompt="Tags for: {query}").tag_queries(QUERIES[:2])
    assert other_prompt.calls == 2
    assert other_prompt.prompts[0] == "Tags for: fix my regex please"


def test_malformed_replies_give_no_tags_and_a_warning(tmp_path: Path, caplog):
    model = FakeListChatModel(responses=['["Math"]', "Sorry, I can't do JSON.", '["unclosed', "[42]"])
    tagger = ChatModelTagger(model, cache_path=tmp_path / "c.jsonl", max_concurrency=1)
    with caplog.at_level(logging.WARNING, logger="zooter_langchain.tagging"):
        tags = tagger.tag_queries(["q1", "q2", "q3", "q4"])
    assert tags == [("math",), (), (), ()]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("no JSON tag list" in w for w in warnings)


def test_a_truncated_cache_line_is_skipped_and_that_query_asked_again(tmp_path: Path, caplog):
    cache = tmp_path / "cache.jsonl"
    ChatModelTagger(ScriptedTagModel(script=SCRIPT), cache_path=cache).tag_queries(QUERIES[:2])
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    model = ScriptedTagModel(script=SCRIPT)
    with caplog.at_level(logging.WARNING):
        tags = ChatModelTagger(model, cache_path=cache).tag_queries(QUERIES[:2])
    assert model.calls == 1 and tags[1] == ("python programming", "debugging")
    assert "unreadable cache line" in caplog.text


def test_calls_run_concurrently_within_the_bound(tmp_path: Path):
    model = ScriptedTagModel(script=SCRIPT)
    queries = [f"regex question {i}" for i in range(12)]
    ChatModelTagger(model, max_concurrency=3).tag_queries(queries)
    assert model.calls == 12
    assert 1 < model.max_in_flight <= 3


def test_a_failing_call_raises_after_the_others_are_cached(tmp_path: Path):
    cache = tmp_path / "cache.jsonl"
    failing = ScriptedTagModel(script=SCRIPT, fail_on="sonnet")
    with pytest.raises(RuntimeError, match="provider unavailable"):
        ChatModelTagger(failing, cache_path=cache).tag_queries(QUERIES)
    assert len(cache.read_text().splitlines()) == len(QUERIES) - 1
    retry = ScriptedTagModel(script=SCRIPT)
    ChatModelTagger(retry, cache_path=cache).tag_queries(QUERIES)
    assert retry.calls == 1  # only the failed query


def test_the_sync_wrapper_works_inside_a_running_event_loop():
    async def inside() -> list[tuple[str, ...]]:
        return ChatModelTagger(ScriptedTagModel(script=SCRIPT)).tag_queries(QUERIES[:1])

    assert asyncio.run(inside()) == [("python programming", "regular expression")]


def test_tag_dataset_feeds_the_data_tagger(tmp_path: Path):
    rows = [
        RoutingExample(f"r{i}", q, {"a": float(i % 2), "b": 1.0 - i % 2}, tags=("own",), task="t")
        for i, q in enumerate(QUERIES)
    ]
    data = RoutingDataset(rows)
    tagger = ChatModelTagger(ScriptedTagModel(script=SCRIPT), cache_path=tmp_path / "c.jsonl")
    tagged = tagger.tag_dataset(data)
    assert [r.tags for r in tagged][:2] == [
        ("python programming", "regular expression"),
        ("python programming", "debugging"),
    ]
    assert [(r.id, r.rewards, r.task) for r in tagged] == [(r.id, r.rewards, r.task) for r in data]
    assert tagger.tag_dataset(data, keep_existing=True)[0].tags == ("own", "python programming", "regular expression")
    # the tags drive the enhancement: r0 and r1 share "python programming"
    enhancer = TagEnhancer(DataTagger(), beta=0.5)
    targets = make_targets(tagged, enhancer=enhancer)
    assert enhancer.tag_counts["python programming"] == 2
    assert targets[0].tolist() != make_targets(data)[0].tolist()
    path = tmp_path / "tagged.jsonl"
    tagged.save(path)
    assert json.loads(path.read_text().splitlines()[0])["tags"] == ["python programming", "regular expression"]


def test_bad_settings_are_refused():
    model = ScriptedTagModel(script=SCRIPT)
    with pytest.raises(ConfigError, match="query"):
        ChatModelTagger(model, prompt="no placeholder")
    with pytest.raises(ConfigError, match="max_concurrency"):
        ChatModelTagger(model, max_concurrency=0)
    with pytest.raises(ConfigError, match="similarity"):
        ChatModelTagger(model, similarity=0.0)
