"""Zooter against the paper's baseline, reward-model ranking, on the demo's held-out prompts.

Both systems answer the held-out arena-bench-v1 prompts of ``zooter demo`` (59 prompts, six
experts). The experts are simulated from the shipped answers: each returns its real recorded
answer (``../shared/data/arena_bench_v1/responses.jsonl.gz``), with a latency and a token count
stated here, not measured:

- tokens: WordPiece tokens of all-MiniLM-L6-v2 (a stand-in for the providers' tokenizers);
- latency of one answer: ``--ttft`` seconds plus its tokens at ``--tokens-per-s``.

What is measured: each system's own code path (``ZooterRouterRunnable.invoke`` with the trained
demo router; ``RewardRankingRunnable.invoke`` asking every expert), the expert calls and tokens
they make, and the reward-model scorer's wall time per query (``RewardModelScorer`` on the six
answers of ``--cost-queries`` prompts). Without ``--reward-model`` the scorer is a reward model
with the shape of OpenAssistant/reward-model-deberta-v3-large-v2 (DeBERTa-v3-large, 435M) and
random weights: right for timing, meaningless as a judge. Quality is then that of ranking by
the recorded GPT-4 grades themselves, the best any reward model could do on this metric (it
equals the oracle); with ``--reward-model PATH`` the ranking uses that model's scores on every
prompt and its quality is measured too. Prints one JSON object.

    python benchmarks/vs_reward_ranking.py [--router DIR] [--reward-model PATH] [--cost-queries 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from _common import SHARED_DATA, demo_router, machine

from zooter.data import Query, query_text
from zooter.demo import demo_splits
from zooter.rewards.scorers import RewardModelScorer
from zooter_langchain import ReplayChatModel, RewardRankingRunnable, ZooterRouterRunnable

RESPONSES = SHARED_DATA / "arena_bench_v1" / "responses.jsonl.gz"


class RecordedGrades:
    """A scorer that returns the recorded GPT-4 grade of each (query, answer) pair."""

    def __init__(self, grades: dict[tuple[str, str], float]) -> None:
        self.grades = grades

    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        return [self.grades.get((query_text(q), r)) for q, r in zip(queries, responses)]


def deberta_large_shaped_scorer(tokenizer: Any) -> RewardModelScorer:
    """A reward model shaped like DeBERTa-v3-large (random weights), for timing only."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        max_relative_positions=-1,
        type_vocab_size=0,
        num_labels=1,
    )
    torch.manual_seed(0)
    return RewardModelScorer(
        DebertaV2ForSequenceClassification(config).eval(), tokenizer, name="deberta-v3-large-shaped"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default=None, help="a trained router folder; default: the demo's router")
    parser.add_argument("--reward-model", default=None, help="a real reward model (Hub id or folder)")
    parser.add_argument("--cost-queries", type=int, default=5, help="prompts whose scoring is timed")
    parser.add_argument("--ttft", type=float, default=0.5, help="stated seconds to an expert's first token")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="stated decoding speed of an expert")
    args = parser.parse_args()

    _, splits = demo_splits()
    test = splits.test.complete()  # prompts with a grade for all six experts
    experts = test.experts
    wanted = {ex.id for ex in test}
    answers: dict[str, dict[str, str]] = {}
    with gzip.open(RESPONSES, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["id"] in wanted and row["model"] in experts:
                answers.setdefault(row["id"], {})[row["model"]] = row["response"]
    rows = [ex for ex in test if len(answers.get(ex.id, {})) == len(experts)]

    router = demo_router(args.router)
    tokenizer = router.tokenizer

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def latency(text: str) -> float:
        return args.ttft + count_tokens(text) / args.tokens_per_s

    recorded = {
        name: ReplayChatModel(name=name, answers={ex.text: answers[ex.id][name] for ex in rows}) for name in experts
    }
    grades = {(ex.text, answers[ex.id][name]): ex.rewards[name] for ex in rows for name in experts}
    zooter = ZooterRouterRunnable(router=router, experts=recorded)
    ranking = RewardRankingRunnable(experts=recorded, scorer=RecordedGrades(grades))
    for ex in rows[:3]:  # warm-up
        zooter.invoke(ex.text)

    z_grade, z_tokens, z_overhead, z_wall = [], [], [], []
    r_grade, r_tokens, r_wall, r_calls, agree = [], [], [], [], []
    for ex in rows:
        start = time.perf_counter()
        reply = zooter.invoke(ex.text)
        overhead = time.perf_counter() - start
        chosen = reply.response_metadata["zooter"]["expert"]
        z_grade.append(ex.rewards[chosen])
        z_tokens.append(count_tokens(ex.text) + count_tokens(answers[ex.id][chosen]))
        z_overhead.append(overhead)
        z_wall.append(overhead + latency(answers[ex.id][chosen]))

        reply = ranking.invoke(ex.text)
        meta = reply.response_metadata["reward_ranking"]
        r_grade.append(ex.rewards[meta["expert"]])
        r_tokens.append(sum(count_tokens(ex.text) + count_tokens(answers[ex.id][name]) for name in experts))
        r_calls.append(meta["expert_calls"])
        r_wall.append(max(latency(answers[ex.id][name]) for name in experts))  # the experts run concurrently
        agree.append(ex.rewards[chosen] == ex.rewards[meta["expert"]])

    if args.reward_model:
        scorer = RewardModelScorer.from_pretrained(args.reward_model)
    else:
        scorer = deberta_large_shaped_scorer(tokenizer)
    scorer.score([rows[0].text], [answers[rows[0].id][experts[0]]])  # warm-up
    scoring = []
    for ex in rows[: args.cost_queries]:
        start = time.perf_counter()
        scorer.score([ex.text] * len(experts), [answers[ex.id][name] for name in experts])
        scoring.append(time.perf_counter() - start)
    scorer_s = statistics.mean(scoring)

    rm_quality = None
    if args.reward_model:  # a real reward model: its ranking's quality on every prompt
        rm_ranking = RewardRankingRunnable(experts=recorded, scorer=scorer)
        picks = [rm_ranking.invoke(ex.text).response_metadata["reward_ranking"]["expert"] for ex in rows]
        rm_quality = round(statistics.mean(ex.rewards[p] for ex, p in zip(rows, picks)), 3)

    per_expert = {name: statistics.mean(ex.rewards[name] for ex in rows) for name in experts}
    best_single = max(per_expert, key=per_expert.__getitem__)
    result = {
        "machine": machine(),
        "prompts": len(rows),
        "experts": len(experts),
        "stated": {"ttft_s": args.ttft, "tokens_per_s": args.tokens_per_s, "tokens": "all-MiniLM-L6-v2 WordPiece"},
        "scorer": scorer.name,
        "quality_mean_grade": {
            "zooter": round(statistics.mean(z_grade), 3),
            "reward_ranking_by_recorded_grades": round(statistics.mean(r_grade), 3),
            "reward_ranking_by_reward_model": rm_quality,
            "oracle": round(statistics.mean(max(ex.rewards.values()) for ex in rows), 3),
            f"best_single ({best_single})": round(per_expert[best_single], 3),
            "zooter_matches_ranking_grade": round(sum(agree) / len(agree), 3),
        },
        "zooter_per_query": {
            "expert_calls": 1,
            "reward_model_passes": 0,
            "tokens": round(statistics.mean(z_tokens), 1),
            "router_ms": round(statistics.median(z_overhead) * 1000, 2),
            "wall_s": round(statistics.mean(z_wall), 2),
        },
        "reward_ranking_per_query": {
            "expert_calls": statistics.mean(r_calls),
            "reward_model_passes": len(experts),
            "tokens": round(statistics.mean(r_tokens), 1),
            "scorer_s": round(scorer_s, 2),
            "scorer_s_measured_on": f"{len(scoring)} prompts x {len(experts)} answers, {scorer.device}",
            "wall_s": round(statistics.mean(r_wall) + scorer_s, 2),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
