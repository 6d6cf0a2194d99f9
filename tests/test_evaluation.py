"""evaluate_choices and EvalReport on small tables whose every number is worked out by hand."""

from __future__ import annotations

import json

import pytest

from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ZooterError
from zooter.evaluation import EvalReport, SubsetScores, evaluate_choices

A, B, C = "alpha-7b", "beta-13b", "gamma-70b"


def table(rows: list[tuple[str, dict[str, float], str | None]]) -> RoutingDataset:
    return RoutingDataset(
        [RoutingExample(f"q{i}", f"query {i}", rewards, task=task) for i, (_, rewards, task) in enumerate(rows)],
        experts=[A, B, C],
    )


# Rewards (A, B, C), the routed choice, and the task:
#   q0 math : 3, 1, 2   -> A (3)     best of row: 3
#   q1 math : 1, 4, 1   -> B (4)     best of row: 4
#   q2 code : 2, 2, 5   -> A (2)     best of row: 5
#   q3 code : 0, 3, 1   -> B (3)     best of row: 3
#   q4 code : 1, -, 4   -> C         B has no reward: skipped everywhere
ROWS = [
    (A, {A: 3.0, B: 1.0, C: 2.0}, "math"),
    (B, {A: 1.0, B: 4.0, C: 1.0}, "math"),
    (A, {A: 2.0, B: 2.0, C: 5.0}, "code"),
    (B, {A: 0.0, B: 3.0, C: 1.0}, "code"),
    (C, {A: 1.0, C: 4.0}, "code"),
]
CHOICES = [choice for choice, _, _ in ROWS]


@pytest.fixture
def report() -> EvalReport:
    return evaluate_choices(table(ROWS), CHOICES)


def test_overall_scores(report):
    assert report.n == 4
    assert report.skipped == 1
    assert report.experts == [A, B, C]
    # per expert over q0..q3: A (3+1+2+0)/4 = 1.5, B (1+4+2+3)/4 = 2.5, C (2+1+5+1)/4 = 2.25
    assert report.per_expert == pytest.approx({A: 1.5, B: 2.5, C: 2.25})
    assert report.best_single["expert"] == B
    assert report.best_single["score"] == pytest.approx(2.5)
    # routed: (3 + 4 + 2 + 3)/4 = 3.0 ; oracle: (3 + 4 + 5 + 3)/4 = 3.75
    assert report.routed == pytest.approx(3.0)
    assert report.oracle == pytest.approx(3.75)
    # random: row means 6/3, 6/3, 9/3, 4/3 -> (2 + 2 + 3 + 4/3)/4 = 25/12
    assert report.random == pytest.approx(25 / 12)
    # gap recovered: (3.0 - 2.5)/(3.75 - 2.5) = 0.4
    assert report.gap_recovered == pytest.approx(0.4)
    # routed to A twice, B twice (the skipped row's C does not count)
    assert report.routing_share == pytest.approx({A: 0.5, B: 0.5, C: 0.0})


def test_per_task_scores(report):
    assert sorted(report.per_task) == ["code", "math"]
    code, math_ = report.per_task["code"], report.per_task["math"]
    assert isinstance(code, SubsetScores)

    # code (q2, q3; q4 skipped): A (2+0)/2 = 1, B (2+3)/2 = 2.5, C (5+1)/2 = 3
    assert code.n == 2
    assert code.per_expert == pytest.approx({A: 1.0, B: 2.5, C: 3.0})
    assert code.best_single == {"expert": C, "score": pytest.approx(3.0)}
    assert code.routed == pytest.approx(2.5)  # (2 + 3)/2
    assert code.oracle == pytest.approx(4.0)  # (5 + 3)/2
    assert code.random == pytest.approx(13 / 6)  # (9/3 + 4/3)/2
    assert code.gap_recovered == pytest.approx(-0.5)  # (2.5 - 3)/(4 - 3): worse than best single
    assert code.routing_share == pytest.approx({A: 0.5, B: 0.5, C: 0.0})

    # math (q0, q1): A (3+1)/2 = 2, B (1+4)/2 = 2.5, C (2+1)/2 = 1.5
    assert math_.n == 2
    assert math_.per_expert == pytest.approx({A: 2.0, B: 2.5, C: 1.5})
    assert math_.best_single == {"expert": B, "score": pytest.approx(2.5)}
    assert math_.routed == pytest.approx(3.5)  # (3 + 4)/2
    assert math_.oracle == pytest.approx(3.5)
    assert math_.random == pytest.approx(2.0)  # (6/3 + 6/3)/2
    assert math_.gap_recovered == pytest.approx(1.0)  # routed is the oracle here


def test_mtr_and_uplift_over_tasks(report):
    # code: C 3 (rank 1), zooter 2.5 and B 2.5 tie for ranks 2-3 (2.5 each), A 1 (rank 4)
    # math: zooter 3.5 (1), B 2.5 (2), A 2 (3), C 1.5 (4)
    assert report.mtr == pytest.approx({"zooter": (2.5 + 1) / 2, A: (4 + 3) / 2, B: (2.5 + 2) / 2, C: (1 + 4) / 2})
    # best on: code -> C, math -> zooter
    assert report.uplift == pytest.approx({"zooter": 0.5, A: 0.0, B: 0.0, C: 0.5})


def test_without_tasks_mtr_and_uplift_use_the_whole_set():
    untasked = [(choice, rewards, None) for choice, rewards, _ in ROWS]
    report = evaluate_choices(table(untasked), CHOICES)
    assert report.per_task == {}
    assert report.routed == pytest.approx(3.0)
    # whole set: zooter 3.0 (1), B 2.5 (2), C 2.25 (3), A 1.5 (4)
    assert report.mtr == pytest.approx({"zooter": 1.0, A: 4.0, B: 2.0, C: 3.0})
    assert report.uplift == pytest.approx({"zooter": 1.0, A: 0.0, B: 0.0, C: 0.0})


def test_ties_share_the_average_rank_and_all_count_as_best():
    rows = [
        (B, {A: 1.0, B: 4.0, C: 2.0}, None),
        (B, {A: 5.0, B: 2.0, C: 1.0}, None),
    ]
    # A (1+5)/2 = 3, B (4+2)/2 = 3, C 1.5, zooter always B = 3: a three-way tie for ranks 1-3
    report = evaluate_choices(table(rows), [B, B])
    assert report.mtr == pytest.approx({"zooter": 2.0, A: 2.0, B: 2.0, C: 4.0})
    assert report.uplift == pytest.approx({"zooter": 1.0, A: 1.0, B: 1.0, C: 0.0})
    assert report.best_single["expert"] == A  # first of equals, in expert order
    # oracle (5 + 4)/2 = 4.5 > 3: routed recovers none of the gap
    assert report.gap_recovered == pytest.approx(0.0)


def test_ties_up_to_float_rounding_share_the_rank():
    rows = [
        (A, {A: 0.1, B: 0.3, C: 0.0}, None),
        (A, {A: 0.2, B: 0.2, C: 0.0}, None),
        (A, {A: 0.3, B: 0.1, C: 0.0}, None),
    ]
    report = evaluate_choices(table(rows), [A, A, A])
    # zooter == A == B == 0.2 mathematically, so they share ranks 1-3
    assert report.uplift == pytest.approx({"zooter": 1.0, A: 1.0, B: 1.0, C: 0.0})
    assert report.mtr == pytest.approx({"zooter": 2.0, A: 2.0, B: 2.0, C: 4.0})


def test_gap_recovered_is_none_when_oracle_equals_best_single():
    rows = [
        (A, {A: 5.0, B: 1.0, C: 2.0}, "t1"),
        (B, {A: 4.0, B: 4.0, C: 0.0}, "t1"),
        (C, {A: 3.0, B: 2.0, C: 1.0}, "t2"),
    ]
    report = evaluate_choices(table(rows), [A, B, C])
    assert report.oracle == pytest.approx(report.best_single["score"])
    assert report.best_single["expert"] == A
    assert report.gap_recovered is None
    assert report.per_task["t1"].gap_recovered is None
    assert report.per_task["t2"].gap_recovered is None
    assert "n/a" in report.format_table()
    assert "n/a" in report.to_markdown()


def test_rows_without_a_task_form_their_own_group():
    rows = [
        (A, {A: 1.0, B: 0.0, C: 0.0}, "t"),
        (B, {A: 0.0, B: 1.0, C: 0.0}, None),
    ]
    report = evaluate_choices(table(rows), [A, B])
    assert sorted(report.per_task) == ["(none)", "t"]
    assert report.per_task["(none)"].n == 1
    assert report.uplift["zooter"] == 1.0


def test_wrong_number_of_choices():
    with pytest.raises(ZooterError, match="4 choices for 5 rows"):
        evaluate_choices(table(ROWS), CHOICES[:4])
    with pytest.raises(ZooterError):
        evaluate_choices(table(ROWS), [*CHOICES, A])


def test_unknown_expert_choice():
    choices = [A, B, "delta-1b", B, C]
    with pytest.raises(ZooterError, match="delta-1b"):
        evaluate_choices(table(ROWS), choices)


def test_no_complete_row_is_an_error():
    rows = [(A, {A: 1.0, B: 2.0}, None), (C, {C: 1.0}, None)]
    with pytest.raises(ZooterError, match="no row"):
        evaluate_choices(table(rows), [A, C])


# -- the report as data and as text ----------------------------------------------------------------


def test_to_dict_is_json_and_from_dict_round_trips(report):
    data = report.to_dict()
    text = json.dumps(data)
    again = EvalReport.from_dict(json.loads(text))
    assert again == report
    assert isinstance(again.per_task["code"], SubsetScores)
    assert again.per_task["code"].routed == pytest.approx(2.5)
    assert data["skipped"] == 1 and data["best_single"] == {"expert": B, "score": 2.5}


def test_from_dict_ignores_unknown_keys(report):
    data = report.to_dict()
    data["written_by"] = "a newer zooter"
    assert EvalReport.from_dict(data) == report


def test_round_trip_with_no_gap_and_no_tasks():
    rows = [(A, {A: 2.0, B: 1.0, C: 0.0}, None), (A, {A: 3.0, B: 1.0, C: 2.0}, None)]
    report = evaluate_choices(table(rows), [A, A])
    assert report.gap_recovered is None
    assert EvalReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def routed_scored(text: str) -> str:
    return next(line for line in text.splitlines() if "zooter" in line and "routed" in line)


def test_format_table(report):
    text = report.format_table()
    assert f"best single ({B})" in text
    assert "3.000" in routed_scored(text)
    assert "2.500" in text and "3.750" in text  # best single, oracle
    assert "40.0%" in text  # gap recovered
    assert "queries: 4" in text and "skipped for missing rewards: 1" in text
    assert "MTR over 2 tasks" in text


def test_to_markdown(report):
    text = report.to_markdown()
    assert text.startswith("| system | mean reward | routed share |")
    assert f"best single ({B})" in text
    assert "| 3.000 |" in routed_scored(text)
    assert f"| {A} | 1.500 | 50.0% |" in text
    assert f"| {C} | 2.250 | 0.0% |" in text
    assert "40.0%" in text
    assert "MTR over 2 tasks: 1.75" in text


def test_routed_score_is_formatted_to_three_decimals():
    rows = [
        (A, {A: 1.0, B: 0.0, C: 0.0}, None),
        (A, {A: 1.0, B: 2.0, C: 0.0}, None),
        (C, {A: 0.0, B: 0.0, C: 0.5}, None),
    ]
    report = evaluate_choices(table(rows), [A, A, C])
    assert report.routed == pytest.approx(2.5 / 3)  # (1 + 1 + 0.5)/3 = 0.8333...
    assert "0.833" in routed_scored(report.format_table())
    assert "0.833" in routed_scored(report.to_markdown())


def test_an_expert_named_like_the_routed_system_is_rejected():
    ds = RoutingDataset([RoutingExample("1", "q", {"zooter": 1.0, "b": 2.0})])
    with pytest.raises(ZooterError, match="zooter"):
        evaluate_choices(ds, ["b"])
