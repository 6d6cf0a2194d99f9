"""A Zooter router picks an agent's model through LangChain's ModelRouterMiddleware.

``ModelRouterMiddleware`` (langchain >= 1.5) asks a decision model which of the agent's models
should run; ``ZooterDecisionModel`` answers with one encoder pass instead of an LLM call. The
answer (label, probabilities, confidence) lands in the agent's state as ``model_route`` and in
traces as the decision model's run.

Runs offline: the models are FakeExpertChatModel instances (swap in ChatOpenAI, ChatAnthropic, ...
for real use), and the router is the small one ``langchain_router.py`` trains in a few seconds
(or a saved router folder with --router DIR whose experts are coder, writer, mathematician).

    python examples/model_router_middleware.py
"""

from __future__ import annotations

import argparse
import asyncio
import warnings
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.decisions import Choice, ClassifierResponse
from langchain_core.messages import HumanMessage
from langchain_router import train_small_router

from zooter_langchain import FakeExpertChatModel, ZooterDecisionModel

CRITERIA = {
    "coder": "Programming, debugging and software questions.",
    "writer": "Creative writing, emails and rewording.",
    "mathematician": "Calculations, equations and proofs.",
}
QUESTIONS = [
    "Why does my Python script raise a KeyError on this dict?",
    "Write a short poem about the first snow.",
    "What is the derivative of x^2 * cos(x)?",
]


class DecisionTrace(BaseCallbackHandler):
    """What a tracer sees of each routing decision: the decision model's run and its answer."""

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if isinstance(outputs, ClassifierResponse):
            answer = outputs.choices["model_route"]
            print(f"   trace: {outputs.model} chose {answer.choice} (confidence {answer.confidence:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", help="a saved router folder whose experts are coder, writer, mathematician")
    args = parser.parse_args()
    if args.router:
        classifier = ZooterDecisionModel.from_pretrained(args.router)
    else:
        classifier = ZooterDecisionModel(router=train_small_router(), model="small-example-router")
    models = {name: FakeExpertChatModel(name=name, model_name=f"fake-{name}") for name in CRITERIA}
    warnings.filterwarnings("ignore", message="The middleware `ModelRouterMiddleware` is in beta")
    middleware = ModelRouterMiddleware(
        choices={name: ModelChoice(model=models[name], criteria=criteria) for name, criteria in CRITERIA.items()},
        instructions="Choose the model that answers this request best.",
        classifier=classifier,
    )
    agent = create_agent(models["writer"], middleware=[middleware])

    print("== create_agent with ModelRouterMiddleware(classifier=ZooterDecisionModel)")
    for question in QUESTIONS:
        print(f"-> {question}")
        state = agent.invoke({"messages": [HumanMessage(question)]}, config={"callbacks": [DecisionTrace()]})
        route = state["model_route"]
        probabilities = ", ".join(f"{label} {p:.2f}" for label, p in route.probabilities.items())
        print(f"   state: model_route={route.choice} ({probabilities})")
        print(f"   reply: {state['messages'][-1].content}")

    print("== async: the encoder runs in a worker thread, off the event loop")
    state = asyncio.run(agent.ainvoke({"messages": [HumanMessage("Solve 2x + 3 = 11.")]}))
    print(f"   model_route={state['model_route'].choice}: {state['messages'][-1].content}")

    print("== batch: many requests, one router pass")
    who = Choice(instructions="Which model answers best?", criteria=CRITERIA)
    responses = classifier.batch([{"state": q, "questions": {"who": who}} for q in QUESTIONS])
    print("  ", [response.choices["who"].choice for response in responses])


if __name__ == "__main__":
    main()
