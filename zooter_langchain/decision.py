"""``ZooterDecisionModel``: a Zooter router as LangChain's decision model, for ``ModelRouterMiddleware``.

``langchain.agents.middleware.ModelRouterMiddleware`` picks an agent's model by asking a
``langchain_core.decisions.BaseDecisionModel`` a ``Choice`` question whose labels are the model
choices. This decision model answers it with one encoder pass instead of an LLM call: the label is
the router's decision (``router.route``, the same decision :class:`~zooter_langchain.ChatZooterRouter`
makes), the probabilities are the router's, and the confidence is the chosen label's probability.
Each answer is a :class:`ZooterChoiceAnswer`: a ``ChoiceAnswer`` that also carries the router's
:class:`~zooter.decide.decision.RouteDecision` (its id, reason, scores and ranking) as ``decision``.

Example:
    >>> from langchain.agents import create_agent
    >>> from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware
    >>> from zooter_langchain import ZooterDecisionModel
    >>> middleware = ModelRouterMiddleware(  # doctest: +SKIP
    ...     choices={"coder": ModelChoice(coder, criteria="code"), "poet": ModelChoice(poet, criteria="verse")},
    ...     instructions="Pick the model that answers best.",
    ...     classifier=ZooterDecisionModel.from_pretrained("my-router"),
    ... )
    >>> agent = create_agent(coder, middleware=[middleware])  # doctest: +SKIP
    >>> agent.invoke({"messages": [("user", "Fix my regex")]})["model_route"].choice  # doctest: +SKIP
    'coder'
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.decisions import (
    BaseDecisionModel,
    Choice,
    ChoiceAnswer,
    ClassifierRequest,
    ClassifierResponse,
    Question,
    State,
)
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list, run_in_executor
from pydantic import ConfigDict, Field, TypeAdapter

from zooter.data import Query
from zooter.decide.decision import RouteDecision
from zooter.errors import ConfigError, ExpertMismatchError, ZooterError, name_list
from zooter_langchain._loading import FromPretrained
from zooter_langchain._messages import RouteOn, check_route_on, message_text, route_query

_QUESTION = TypeAdapter(Question)


class ZooterDecisionModel(BaseDecisionModel, FromPretrained):
    """Answers ``Choice`` questions over a router's experts with the router's decision.

    Each ``Choice`` label must be one of the router's experts, or a key of ``labels`` (which maps
    labels to experts). A question over some of the experts chooses among those. The answer's
    ``probabilities`` are the router's, over the question's labels (renormalised when they are only
    some of the experts); its ``confidence`` is the chosen label's probability. The question's
    instructions and criteria are not read: the router was trained on which expert answers best.

    Questions it cannot answer raise instead of guessing: another kind of question (``Noul``,
    ``Score``, ``Box``) raises :class:`~zooter.errors.ZooterError`, and a label the router cannot
    rank raises :class:`~zooter.errors.ExpertMismatchError` naming it. ``batch``/``abatch`` answer
    all requests with one router pass (one per distinct set of labels); the encoder always runs in
    a worker thread on the async paths (``ainvoke`` runs :meth:`_classify` in an executor).

    Args:
        router: a trained :class:`zooter.ZooterRouter`.
        labels: label -> expert, when the question's labels are not the experts' names.
        route_on: what a chat state is routed on: ``"last_human"`` (default), ``"conversation"``,
            or a function from the message list to a text.
        batch_size: queries per router forward (default: the router's ``default_batch_size``).
        model: the name traces report (``from_pretrained`` uses the folder or Hub id).

    Example:
        >>> classifier = ZooterDecisionModel(router=router)  # doctest: +SKIP
        >>> from langchain_core.decisions import Choice
        >>> question = Choice(instructions="Who answers?", criteria={"coder": None, "poet": None})
        >>> answer = classifier.invoke({"state": "fix my regex", "questions": {"who": question}})  # doctest: +SKIP
        >>> answer.choices["who"].choice, answer.choices["who"].confidence  # doctest: +SKIP
        ('coder', 0.93)
    """

    router: Any = Field(exclude=True)
    model: str = "zooter-router"
    labels: dict[str, str] | None = None
    route_on: RouteOn = "last_human"
    batch_size: int | None = Field(default=None, ge=1)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # checked here rather than in a pydantic validator, which would hide the names in a ValidationError
        check_route_on(self.route_on)
        if self.labels is not None:
            unknown = [expert for expert in self.labels.values() if expert not in self.router.experts]
            if unknown:
                raise ExpertMismatchError(
                    f"labels map to experts the router does not know: {name_list(unknown)} "
                    f"(its experts are {name_list(self.router.experts)})",
                    missing=[],
                    extra=unknown,
                )
            shared = [expert for expert, n in Counter(self.labels.values()).items() if n > 1]
            if shared:
                raise ConfigError(f"labels must name distinct experts; several labels map to {name_list(shared)}")

    @classmethod
    def _from_router(cls, router: Any, source: str, **kwargs: Any) -> ZooterDecisionModel:
        kwargs.setdefault("model", source)  # the router's folder or Hub id names the model in traces
        return cls(router=router, **kwargs)

    @property
    def _provider(self) -> str:
        return "zooter"

    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        (answer,) = self._answer([{"state": state, "questions": questions}])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def batch(
        self,
        inputs: list[ClassifierRequest],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[ClassifierResponse]:
        """Answer every request, with one router pass for all of them; each request is its own run."""
        configs = [self._traced_config(c) for c in get_config_list(config, len(inputs))]
        return self._batch_with_config(
            self._answer, inputs, configs, return_exceptions=return_exceptions, run_type="llm"
        )

    async def abatch(
        self,
        inputs: list[ClassifierRequest],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[ClassifierResponse]:
        """Async :meth:`batch`; the router runs in a worker thread, off the event loop."""
        configs = [self._traced_config(c) for c in get_config_list(config, len(inputs))]

        async def answer(requests: list[ClassifierRequest]) -> list[ClassifierResponse | Exception]:
            return await run_in_executor(None, self._answer, requests)

        return await self._abatch_with_config(
            answer, inputs, configs, return_exceptions=return_exceptions, run_type="llm"
        )

    # -- answering ---------------------------------------------------------------------------------
    def _answer(self, requests: Sequence[ClassifierRequest]) -> list[ClassifierResponse | Exception]:
        """Each request's answers (or the error that request raises), routing all of them together."""
        out: list[ClassifierResponse | Exception | None] = [None] * len(requests)
        asked: dict[tuple[str, ...], list[tuple[int, str, Query, dict[str, str]]]] = defaultdict(list)
        for i, request in enumerate(requests):
            try:
                query = self.state_query(request["state"])
                experts = {qid: self._experts_for(qid, q) for qid, q in self._questions(request).items()}
            except (ZooterError, KeyError, TypeError, ValueError) as e:
                out[i] = e if isinstance(e, ZooterError) else ZooterError(f"request {i} is malformed: {e}")
                continue
            for qid, label_experts in experts.items():
                asked[tuple(sorted(label_experts.values()))].append((i, qid, query, label_experts))
        answers: dict[int, dict[str, ChoiceAnswer]] = defaultdict(dict)
        for allowed, items in asked.items():  # one router pass per set of labels: one, in the usual batch
            queries = [query for _, _, query, _ in items]
            decisions = self.router.route(queries, allowed=list(allowed), batch_size=self.batch_size)
            for (i, qid, _, label_experts), decision in zip(items, decisions):
                answers[i][qid] = ZooterChoiceAnswer.of(label_experts, decision)
        return [
            result if result is not None else ClassifierResponse(model=self.model, answers=answers[i])
            for i, result in enumerate(out)
        ]

    def state_query(self, state: State) -> Query:
        """The query the router reads for a request's state (a text, a message, or a chat), in the core's form."""
        if isinstance(state, str):
            return state
        if isinstance(state, BaseMessage):
            return self.route_on([state]) if callable(self.route_on) else message_text(state)
        messages = state.get("messages") if isinstance(state, Mapping) else state
        if isinstance(messages, Sequence) and not isinstance(messages, str):
            try:
                return route_query(convert_to_messages(messages), self.route_on)
            except (ValueError, TypeError, NotImplementedError):
                pass  # not a chat: said below
        raise ZooterError(
            f"cannot read a query from a state of type {type(state).__name__}: ZooterDecisionModel routes on "
            "a text, a message, a list of messages, or a mapping whose 'messages' is one"
        )

    @staticmethod
    def _questions(request: ClassifierRequest) -> dict[str, Any]:
        """The request's questions, validated when given as plain dicts."""
        questions = dict(request["questions"])
        if not questions:
            raise ZooterError("a request needs at least one question")
        return {qid: _QUESTION.validate_python(q) if isinstance(q, Mapping) else q for qid, q in questions.items()}

    def _experts_for(self, qid: str, question: Any) -> dict[str, str]:
        """Label -> expert for a ``Choice`` question; raises for anything the router cannot answer."""
        if not isinstance(question, Choice):
            raise ZooterError(
                f"question {qid!r} is a {type(question).__name__}: ZooterDecisionModel answers only Choice "
                "questions over the router's experts (ask an LLM decision model the others)"
            )
        known = self.labels if self.labels is not None else {expert: expert for expert in self.router.experts}
        unknown = [label for label in question.criteria if label not in known]
        if unknown:
            hint = "" if self.labels is not None else " (map labels to experts with labels={label: expert})"
            raise ExpertMismatchError(
                f"question {qid!r} has labels the router cannot rank: {name_list(unknown)}; "
                f"it ranks {name_list(known)}{hint}",
                missing=[],
                extra=unknown,
            )
        return {label: known[label] for label in question.criteria}


class ZooterChoiceAnswer(ChoiceAnswer):
    """A ``ChoiceAnswer`` with the router's decision behind it.

    Attributes:
        decision: the :class:`~zooter.decide.decision.RouteDecision` the answer was made from (its
            ``id`` is what feedback on this choice is recorded against).
    """

    decision: RouteDecision = Field(exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @classmethod
    def of(cls, label_experts: dict[str, str], decision: RouteDecision) -> ZooterChoiceAnswer:
        """The answer over a question's labels: the decision's expert's label, probabilities
        renormalised over the labels."""
        raw = {label: decision.probabilities[expert] for label, expert in label_experts.items()}
        total = sum(raw.values())
        probs = {label: p / total if total > 0 else 1 / len(raw) for label, p in raw.items()}
        (label,) = [label for label, expert in label_experts.items() if expert == decision.expert]
        confidence = min(1.0, max(0.0, probs[label]))
        return cls(type="choice", choice=label, probabilities=probs, confidence=confidence, decision=decision)


__all__ = ["ZooterChoiceAnswer", "ZooterDecisionModel"]
