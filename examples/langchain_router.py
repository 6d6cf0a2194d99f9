"""ChatZooterRouter in LangChain: an LCEL chain, streaming, batch, and an agent with two tools.

Runs offline: the experts are FakeExpertChatModel instances (swap in ChatOpenAI, ChatAnthropic, ...
for real use), and the router is trained in a few seconds on a small hand-made dataset with the
bundled all-MiniLM-L6-v2 encoder (or loaded with --router DIR from `zooter train`).

    python examples/langchain_router.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from zooter import RoutingDataset, RoutingExample, TrainingConfig, ZooterRouter, train_router
from zooter_langchain import ROUTE_EVENT, ChatZooterRouter, FakeExpertChatModel

TOPICS = {
    "coder": [
        "Why does my Python script raise a KeyError on this dict?",
        "Write a SQL query that finds duplicate emails in a users table.",
        "How do I reverse a linked list in C?",
        "Explain what a race condition is in multithreaded Java code.",
        "Fix this JavaScript promise that never resolves.",
        "How do I write a unit test with pytest fixtures?",
        "What does git rebase do compared with merge?",
        "Refactor this function to avoid the nested loops.",
    ],
    "writer": [
        "Write a short poem about autumn leaves.",
        "Draft a friendly email inviting my team to a picnic.",
        "Give me a catchy title for a blog post about gardening.",
        "Write a bedtime story about a brave little fox.",
        "Rewrite this paragraph so it sounds more formal.",
        "Compose a wedding toast for my best friend.",
        "Summarise the plot of a mystery novel in three sentences.",
        "Write song lyrics about a summer road trip.",
    ],
    "mathematician": [
        "What is the derivative of x^3 * sin(x)?",
        "Solve the equation 3x + 7 = 22.",
        "Prove that the square root of 2 is irrational.",
        "What is the probability of two sixes with two dice?",
        "Compute the integral of 1/x from 1 to e.",
        "How many ways can I arrange 5 books on a shelf?",
        "Find the eigenvalues of the matrix [[2, 1], [1, 2]].",
        "What is 17% of 240?",
    ],
}


def train_small_router() -> ZooterRouter:
    """A router trained on 24 queries x 3 variants, rewarding the topic's expert (about 10 s on a CPU)."""
    rows = []
    for i, (best, queries) in enumerate(itertools.product(TOPICS, range(len(TOPICS["coder"])))):
        for variant, prefix in enumerate(["", "Quick question: ", "Please help. "]):
            query = prefix + TOPICS[best][queries]
            rewards = {expert: 8.0 if expert == best else 3.0 for expert in TOPICS}
            rows.append(RoutingExample(id=f"{i}-{variant}", query=query, rewards=rewards))
    config = TrainingConfig(epochs=4, max_length=64, show_progress=False, seed=0)
    return train_router(RoutingDataset(rows), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", help="a saved router folder whose experts are coder, writer, mathematician")
    args = parser.parse_args()
    router = ZooterRouter.from_pretrained(args.router) if args.router else train_small_router()
    experts = {name: FakeExpertChatModel(name=name, model_name=f"fake-{name}") for name in router.experts}
    model = ChatZooterRouter(router=router, experts=experts)

    print("== LCEL chain: prompt | router | parser")
    chain = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")]) | model
    for question in ["How do I sort a list of tuples by the second item in Python?", "Write a haiku about rain."]:
        reply = chain.invoke({"question": question})
        meta = reply.response_metadata["zooter"]
        best = max(meta["probabilities"].values())
        print(f"{question!r}\n  -> {meta['expert']} (p={best:.2f}): {StrOutputParser().invoke(reply)}")

    print("\n== streaming (tokens come from the chosen expert's own stream)")
    for chunk in model.stream("What is the integral of x^2 from 0 to 3?"):
        print(f"[{chunk.content}]", end="", flush=True)
    print()

    print("\n== batch: one router pass for all inputs, then each expert")
    questions = ["Debug this segfault in my C program.", "Write a limerick about a cat.", "Solve 2x - 4 = 10."]
    for question, reply in zip(questions, model.batch(questions)):
        print(f"{reply.response_metadata['zooter']['expert']:>13}: {question}")

    print("\n== the decision as a callback event (astream_events)")

    async def show_events() -> None:
        async for event in model.astream_events("Prove that there are infinitely many primes.", version="v2"):
            if event["event"] == "on_custom_event" and event["name"] == ROUTE_EVENT:
                print(f"{ROUTE_EVENT}: expert={event['data']['expert']}")

    asyncio.run(show_events())

    print("\n== an agent with two tools (langchain.agents.create_agent)")
    try:
        from langchain.agents import create_agent
    except ImportError:
        print("skipped: pip install 'zooter-langchain[agents]'")
        return

    def calculator(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def weather(city: str) -> str:
        """Current weather for a city."""
        return f"sunny and 21 C in {city}"

    agent = create_agent(model, tools=[calculator, weather])
    result = agent.invoke({"messages": [HumanMessage("Use the calculator: what is 20 plus 22?")]})
    for message in result["messages"]:
        routed = message.response_metadata.get("zooter", {}).get("expert", "")
        calls = [c["name"] for c in getattr(message, "tool_calls", [])]
        print(f"{message.type:>5} {routed:>13} {calls or message.content}")


if __name__ == "__main__":
    main()
