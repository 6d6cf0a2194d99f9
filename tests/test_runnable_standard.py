"""LangChain's standard chat-model suites, run on a router over offline fake experts."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import build_tiny_encoder
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from zooter.model.router import ZooterRouter
from zooter_langchain import FakeExpertChatModel, ZooterRouterRunnable


@functools.lru_cache(maxsize=1)
def _router() -> ZooterRouter:
    folder = Path(tempfile.mkdtemp(prefix="zooter-standard-"))
    return ZooterRouter.from_encoder(str(build_tiny_encoder(folder)), experts=["a", "b"], device="cpu")


class _RouterOverFakeExperts:
    """What both standard suites are told about the model under test."""

    @property
    def chat_model_class(self) -> type[ZooterRouterRunnable]:
        return ZooterRouterRunnable

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "router": _router(),
            "experts": {"a": FakeExpertChatModel(name="a"), "b": FakeExpertChatModel(name="b")},
        }

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True


class TestZooterRouterUnit(_RouterOverFakeExperts, ChatModelUnitTests):
    pass


# What an echoing fake expert cannot do: these tests check a real LLM's judgement or a provider's
# features, not the router's plumbing (which the tests in test_runnable.py cover).
_NEEDS_A_REAL_LLM = {
    "test_tool_calling_with_no_arguments": "the fake expert picks a tool only when the question names it",
    "test_structured_few_shot_examples": "needs a model that follows few-shot examples",
    "test_structured_output": "needs a model that writes a joke into the schema's fields",
    "test_structured_output_async": "needs a model that writes a joke into the schema's fields",
    "test_structured_output_optional_param": "needs a model that fills a schema from free text",
    "test_structured_output_pydantic_2_v1": "needs a model that fills a schema from free text",
    "test_tool_message_histories_list_content": "needs a model that reads tool results it did not ask for",
    "test_bind_runnables_as_tools": "needs a model that chooses a runnable tool from its description",
    "test_unicode_tool_call_integration": "needs a model that writes unicode tool arguments from instructions",
    "test_agent_loop": "needs a model that decides when the agent's task is done",
    "test_stop_sequence": "the fake expert ignores stop sequences (the router passes them through)",
    "test_tool_calling": "needs a model that calls magic_function for an arithmetic question it never names",
    "test_tool_calling_async": "needs a model that calls magic_function for an arithmetic question it never names",
    "test_tool_choice": "needs a provider's tool_choice semantics",
}


class TestZooterRouterIntegration(_RouterOverFakeExperts, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _skip_what_needs_a_real_llm(self, request: pytest.FixtureRequest) -> None:
        reason = _NEEDS_A_REAL_LLM.get(request.function.__name__)
        if reason:
            pytest.skip(reason)

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return False
