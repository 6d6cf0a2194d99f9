"""RoutingDataset: loading, validation errors a user can act on, views, splits and atomic saving."""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import pytest
from conftest import keyword_rows

import zooter._io
from zooter.data import RoutingDataset, RoutingExample, load_queries, query_text
from zooter.errors import DataError, ExpertMismatchError

ROWS = [
    {
        "id": "q1",
        "query": "Prove that sqrt(2) is irrational",
        "rewards": {"mathbot": 7.5, "coder": 3.0, "poet": 1.0},
        "tags": ["math", "proof"],
        "task": "math",
    },
    {"id": "q2", "query": "Write a regex for dates", "rewards": {"mathbot": 2, "coder": 9, "poet": 0.5}},
    {
        "id": "q3",
        "query": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "A haiku about rain"},
        ],
        "rewards": {"mathbot": 1.25, "coder": 2.0, "poet": 8.0},
        "tags": ["poetry"],
        "task": "writing",
    },
]


def error_of(path: Path) -> DataError:
    with pytest.raises(DataError) as info:
        RoutingDataset.load(path)
    return info.value


def assert_names(err: DataError, path: Path, line: int) -> None:
    """The message points at ``file:line`` so a user can open the faulty line."""
    assert err.path == str(path)
    assert err.line == line
    assert f"{path}:{line}" in str(err)


# -- loading and saving ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_save_load_round_trip_keeps_every_field(write_jsonl, tmp_path, name):
    original = RoutingDataset.load(write_jsonl(ROWS, "source.jsonl"))
    target = tmp_path / "out" / name
    original.save(target)

    if name.endswith(".gz"):  # really gzip, not plain text with a .gz name
        with gzip.open(target, "rt", encoding="utf-8") as f:
            assert len(f.read().splitlines()) == 3

    loaded = RoutingDataset.load(target)
    assert [ex.id for ex in loaded] == ["q1", "q2", "q3"]
    assert loaded.experts == ["mathbot", "coder", "poet"]
    assert [ex.query for ex in loaded] == [row["query"] for row in ROWS]
    assert [ex.rewards for ex in loaded] == [
        {"mathbot": 7.5, "coder": 3.0, "poet": 1.0},
        {"mathbot": 2.0, "coder": 9.0, "poet": 0.5},
        {"mathbot": 1.25, "coder": 2.0, "poet": 8.0},
    ]
    assert [ex.tags for ex in loaded] == [("math", "proof"), (), ("poetry",)]
    assert loaded.tasks == ["math", None, "writing"]
    assert loaded.examples == original.examples
    assert loaded.source == str(target)


def test_load_reads_gzip_written_by_hand(tmp_path):
    path = tmp_path / "rewards.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in ROWS:
            f.write(json.dumps(row) + "\n")
    assert [ex.id for ex in RoutingDataset.load(path)] == ["q1", "q2", "q3"]


def test_blank_lines_are_skipped_and_line_numbers_count_them(write_jsonl):
    path = write_jsonl([ROWS[0], "", "   ", ROWS[1], '{"id": "bad", "query": "q", "rewards": {"mathbot": "x"}}'])
    err = error_of(path)
    assert_names(err, path, 5)
    assert len(RoutingDataset.load(write_jsonl([ROWS[0], "", ROWS[1]]))) == 2


def test_integer_ids_become_strings(write_jsonl):
    path = write_jsonl([{"id": 7, "query": "q", "rewards": {"a": 1, "b": 2}}])
    assert RoutingDataset.load(path)[0].id == "7"


def test_load_with_experts_selects_them(write_jsonl):
    ds = RoutingDataset.load(write_jsonl(ROWS), experts=["poet", "mathbot"])
    assert ds.experts == ["poet", "mathbot"]
    assert ds[0].rewards == {"poet": 1.0, "mathbot": 7.5}


# -- chat queries -----------------------------------------------------------------------------


def test_chat_query_text_is_role_colon_content_lines(write_jsonl):
    ds = RoutingDataset.load(write_jsonl(ROWS))
    assert ds[2].query == ROWS[2]["query"]
    assert ds[2].text == "system: Be brief.\nuser: A haiku about rain"
    assert ds.texts == ["Prove that sqrt(2) is irrational", "Write a regex for dates", ds[2].text]


def test_query_text_keeps_only_text_blocks_of_multimodal_content():
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "this picture?"},
            ],
        },
        {"role": "assistant", "content": "A cat."},
    ]
    assert query_text(chat) == "user: What is in this picture?\nassistant: A cat."
    assert query_text("plain text") == "plain text"


@pytest.mark.parametrize(
    "query",
    [
        [],
        [{"content": "no role"}],
        [{"role": "user"}],
        [{"role": 3, "content": "x"}],
        ["just a string in a list"],
        42,
        None,
    ],
)
def test_malformed_chat_query_is_a_data_error(write_jsonl, query):
    path = write_jsonl([ROWS[0], {"id": "c1", "query": query, "rewards": {"a": 1, "b": 2}}])
    err = error_of(path)
    assert_names(err, path, 2)
    assert err.record_id == "c1"
    assert err.field == "query"
    assert "'c1'" in str(err) and "'query'" in str(err)


@pytest.mark.parametrize("content", [5, None])
def test_a_chat_row_that_loads_has_a_text(write_jsonl, content):
    # Either the row is rejected where it enters (DataError naming file, line and field), or its
    # text can be read; a dataset that loads but crashes when routed is the one wrong outcome.
    path = write_jsonl(
        [ROWS[0], {"id": "c1", "query": [{"role": "assistant", "content": content}], "rewards": {"a": 1, "b": 2}}]
    )
    try:
        ds = RoutingDataset.load(path)
    except DataError as err:
        assert_names(err, path, 2)
        assert err.field == "query"
    else:
        assert ds[1].text.startswith("assistant:")


# -- bad input: every error names the file and line -------------------------------------------


def test_malformed_json_line(write_jsonl):
    path = write_jsonl([ROWS[0], ROWS[1], '{"id": "q3", "query": "oops",'])
    err = error_of(path)
    assert_names(err, path, 3)
    assert "malformed JSON" in str(err)


def test_json_array_line_is_not_an_object(write_jsonl):
    path = write_jsonl([ROWS[0], '["q2", "query", {"a": 1}]'])
    err = error_of(path)
    assert_names(err, path, 2)
    assert "JSON object" in str(err) and "list" in str(err)


def test_missing_query(write_jsonl):
    path = write_jsonl([ROWS[0], {"id": "nq", "rewards": {"a": 1, "b": 2}}])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("nq", "query")
    assert "'nq'" in str(err) and "'query'" in str(err) and "missing" in str(err)


@pytest.mark.parametrize("query", ["", "   \n"])
def test_empty_query(write_jsonl, query):
    path = write_jsonl([{"id": "e", "query": query, "rewards": {"a": 1, "b": 2}}])
    err = error_of(path)
    assert_names(err, path, 1)
    assert (err.record_id, err.field) == ("e", "query")
    assert "empty" in str(err)


@pytest.mark.parametrize("raw_id", [None, "", True, 1.5, ["x"]])
def test_bad_or_missing_id(write_jsonl, raw_id):
    row = {"query": "q", "rewards": {"a": 1, "b": 2}}
    if raw_id is not None:
        row["id"] = raw_id
    path = write_jsonl([ROWS[0], row])
    err = error_of(path)
    assert_names(err, path, 2)
    assert err.field == "id"


@pytest.mark.parametrize(
    ("rewards_text", "value_text"),
    [
        ('{"x": "7", "y": 1}', "'7'"),
        ('{"x": true, "y": 1}', "True"),
        ('{"x": [1], "y": 1}', "[1]"),
    ],
)
def test_non_numeric_reward(write_jsonl, rewards_text, value_text):
    path = write_jsonl([ROWS[0], '{"id": "a", "query": "q", "rewards": ' + rewards_text + "}"])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("a", "rewards.x")
    assert "'rewards.x'" in str(err) and "'a'" in str(err)
    assert "number" in str(err) and value_text in str(err)


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        # finite in JSON and in Python, but infinite in float32 (or its square is): it must not become "missing"
        ("1e39", "within ±1e+15"),
        ("-3.5e38", "within ±1e+15"),
        ("2e15", "within ±1e+15"),
        ("1" + "0" * 40, "within ±1e+15"),
    ],
)
def test_a_reward_float32_sums_cannot_hold_is_refused(write_jsonl, token, says):
    path = write_jsonl([ROWS[0], '{"id":"a","query":"q","rewards":{"x":' + token + ',"y":1}}'])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("a", "rewards.x")
    assert says in str(err)


def test_a_reward_at_the_float32_limit_is_read(write_jsonl):
    assert RoutingDataset.load(write_jsonl([ROWS[0], {"id": "a", "query": "q", "rewards": {"x": -1e15, "y": 1}}]))


def test_a_number_python_will_not_read_is_refused_by_line(write_jsonl):
    path = write_jsonl([ROWS[0], '{"id":"a","query":"q","rewards":{"x":' + "9" * 5000 + ',"y":1}}'])
    err = error_of(path)
    assert_names(err, path, 2)
    assert "too many digits" in str(err)


@pytest.mark.parametrize("rewards", [None, {}, [1, 2], {"a": None, "b": None}])
def test_rewards_missing_empty_or_all_null(write_jsonl, rewards):
    row = {"id": "r", "query": "q"}
    if rewards is not None:
        row["rewards"] = rewards
    path = write_jsonl([ROWS[0], row])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("r", "rewards")


def test_an_expert_whose_every_reward_is_null_is_warned_about_or_refused_when_named(write_jsonl, caplog):
    # issue 20 item 10: it used to vanish from the experts without a word
    rows = [{**row, "rewards": {**row["rewards"], "ghost": None}} for row in ROWS]
    path = write_jsonl(rows)
    with caplog.at_level(logging.WARNING, logger="zooter.data"):
        assert RoutingDataset.load(path).experts == ["mathbot", "coder", "poet"]
    assert "every reward of ['ghost'] is null" in caplog.text
    with pytest.raises(DataError, match=r"every reward of \['ghost'\] is null") as info:
        RoutingDataset.load(path, experts=["mathbot", "ghost"])
    assert info.value.path == str(path) and info.value.field == "rewards"


def test_null_reward_is_a_missing_reward(write_jsonl):
    ds = RoutingDataset.load(write_jsonl([{"id": "n", "query": "q", "rewards": {"a": 1, "b": None}}, ROWS[1]]))
    assert ds[0].rewards == {"a": 1.0}


@pytest.mark.parametrize("tags", ["math", ["math", 3], {"math": 1}, 5])
def test_bad_tags_type(write_jsonl, tags):
    path = write_jsonl([ROWS[0], {"id": "t", "query": "q", "rewards": {"a": 1, "b": 2}, "tags": tags}])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("t", "tags")
    assert "list of strings" in str(err)


@pytest.mark.parametrize("tags", [False, 0, "", {}])
def test_falsy_non_list_tags_are_rejected(write_jsonl, tags):
    path = write_jsonl([ROWS[0], {"id": "t", "query": "q", "rewards": {"a": 1, "b": 2}, "tags": tags}])
    err = error_of(path)
    assert_names(err, path, 2)
    assert err.field == "tags"


def test_bad_task_type(write_jsonl):
    path = write_jsonl([ROWS[0], {"id": "t", "query": "q", "rewards": {"a": 1, "b": 2}, "task": 3}])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("t", "task")


@pytest.mark.parametrize(
    ("vector", "said"),
    [
        ("AAA=", "encoder"),
        ({"encoder": "sha256:x"}, "encoder"),
        ({"encoder": "", "float16": "AAA="}, "encoder's id"),
        ({"encoder": "sha256:x", "float16": "not base64!"}, "not valid base64"),
        ({"encoder": "sha256:x", "float16": "AAAA"}, "whole number of float16"),  # 3 bytes
    ],
)
def test_bad_query_vector(write_jsonl, vector, said):
    path = write_jsonl([ROWS[0], {"id": "v", "query": "q", "rewards": {"a": 1, "b": 2}, "vector": vector}])
    err = error_of(path)
    assert_names(err, path, 2)
    assert (err.record_id, err.field) == ("v", "vector") and said in str(err)


def test_fewer_than_two_experts_in_the_whole_file(write_jsonl):
    path = write_jsonl([{"id": f"s{i}", "query": f"q{i}", "rewards": {"only": float(i)}} for i in range(3)])
    err = error_of(path)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert "at least 2 experts" in str(err) and "only" in str(err)


def test_duplicate_ids_name_both_lines(write_jsonl):
    path = write_jsonl([ROWS[0], ROWS[1], {**ROWS[2], "id": "q1"}])
    err = error_of(path)
    assert_names(err, path, 3)
    assert err.record_id == "q1"
    assert "duplicate" in str(err)
    assert "line 1" in str(err)  # where the id was first seen


def test_duplicate_ids_in_code_are_rejected():
    ex = RoutingExample("x", "q", {"a": 1.0, "b": 2.0})
    with pytest.raises(DataError, match="duplicate"):
        RoutingDataset([ex, ex])


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(content, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    err = error_of(path)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert "no rows" in str(err)


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "missing.jsonl"
    err = error_of(path)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert "no such file" in str(err)


def test_data_errors_are_value_errors(write_jsonl):
    with pytest.raises(ValueError):
        RoutingDataset.load(write_jsonl(["not json"]))


# -- missing rewards ---------------------------------------------------------------------------


def test_missing_rewards_are_allowed_masked_and_reported(write_jsonl, caplog):
    rows = [
        {"id": "a", "query": "q a", "rewards": {"x": 1, "y": 2, "z": 3}},
        {"id": "b", "query": "q b", "rewards": {"x": 4, "z": 6}},
        {"id": "c", "query": "q c", "rewards": {"y": 5}},
        {"id": "d", "query": "q d", "rewards": {"x": 7, "y": 8, "z": 9}},
    ]
    path = write_jsonl(rows)
    with caplog.at_level(logging.WARNING, logger="zooter.data"):
        ds = RoutingDataset.load(path)
    assert ds.experts == ["x", "y", "z"]
    matrix = ds.reward_matrix()
    assert matrix[0] == [1.0, 2.0, 3.0]
    assert matrix[1][0] == 4.0 and math.isnan(matrix[1][1]) and matrix[1][2] == 6.0
    assert math.isnan(matrix[2][0]) and matrix[2][1] == 5.0 and math.isnan(matrix[2][2])
    assert matrix[3] == [7.0, 8.0, 9.0]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "zooter.data"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "2 of 4 rows" in message
    assert "3 rewards missing" in message
    assert str(path) in message


def test_complete_dataset_logs_no_warning(write_jsonl, caplog):
    with caplog.at_level(logging.WARNING, logger="zooter.data"):
        RoutingDataset.load(write_jsonl(ROWS))
    assert not [r for r in caplog.records if r.name == "zooter.data"]


def test_complete_keeps_only_rows_with_every_reward():
    ds = RoutingDataset(
        [
            RoutingExample("a", "q", {"x": 1.0, "y": 2.0}),
            RoutingExample("b", "q", {"x": 1.0}),
            RoutingExample("c", "q", {"y": 1.0, "x": 3.0}),
            RoutingExample("d", "q", {"y": 1.0}),
        ]
    )
    full = ds.complete()
    assert [ex.id for ex in full] == ["a", "c"]
    assert full.experts == ["x", "y"]
    assert all(not math.isnan(r) for row in full.reward_matrix() for r in row)


# -- experts: selection and matching -------------------------------------------------------------


def gappy_dataset() -> RoutingDataset:
    return RoutingDataset(
        [
            RoutingExample("a", "qa", {"x": 1.0, "y": 2.0, "z": 3.0}),
            RoutingExample("b", "qb", {"x": 4.0}),
            RoutingExample("c", "qc", {"z": 5.0, "y": 6.0}, tags=("t",), task="k"),
        ],
        source="mem.jsonl",
    )


def test_select_experts_keeps_requested_order_and_drops_empty_rows(caplog):
    with caplog.at_level(logging.WARNING, logger="zooter.data"):
        picked = gappy_dataset().select_experts(["z", "y", "z"])
    assert picked.experts == ["z", "y"]
    assert [ex.id for ex in picked] == ["a", "c"]  # "b" has no reward from z or y
    assert list(picked[0].rewards) == ["z", "y"]
    assert picked[0].rewards == {"z": 3.0, "y": 2.0}
    assert picked.reward_matrix() == [[3.0, 2.0], [5.0, 6.0]]
    assert (picked[1].tags, picked[1].task, picked[1].query) == (("t",), "k", "qc")
    assert any("1 rows" in r.getMessage() for r in caplog.records)


def test_select_experts_unknown_name():
    with pytest.raises(ExpertMismatchError) as info:
        gappy_dataset().select_experts(["x", "ghost", "phantom"])
    assert info.value.missing == ["ghost", "phantom"]
    assert "ghost" in str(info.value)
    assert isinstance(info.value, DataError)


def test_check_experts_names_missing_and_extra():
    ds = gappy_dataset()
    ds.check_experts(["x", "y", "z"])
    ds.check_experts(["z", "x", "y"])  # order does not matter
    with pytest.raises(ExpertMismatchError) as info:
        ds.check_experts(["x", "y", "w"])
    assert info.value.missing == ["w"]
    assert info.value.extra == ["z"]
    assert "'w'" in str(info.value) and "'z'" in str(info.value)


def test_check_experts_allow_subset():
    ds = gappy_dataset()
    with pytest.raises(ExpertMismatchError) as info:
        ds.check_experts(["x", "y", "z", "w"])
    assert info.value.missing == ["w"] and info.value.extra == []
    ds.check_experts(["x", "y", "z", "w"], allow_subset=True)
    # a subset means the data covers part of the router; data experts the router lacks still fail
    with pytest.raises(ExpertMismatchError) as info:
        ds.check_experts(["x", "y"], allow_subset=True)
    assert info.value.extra == ["z"]


# -- split -----------------------------------------------------------------------------------


def ids(ds: RoutingDataset) -> set[str]:
    return {ex.id for ex in ds}


def keyword_dataset(n: int = 100) -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(row) for row in keyword_rows(n)])


def test_split_is_deterministic_and_independent_of_file_order():
    ds = keyword_dataset()
    first = ds.split(validation_fraction=0.1, test_fraction=0.2, seed=3)
    again = ds.split(validation_fraction=0.1, test_fraction=0.2, seed=3)
    shuffled = RoutingDataset(list(reversed(ds.examples))[::2] + list(reversed(ds.examples))[1::2])
    other = shuffled.split(validation_fraction=0.1, test_fraction=0.2, seed=3)
    for name in ("train", "validation", "test"):
        assert [ex.id for ex in first.as_dict()[name]] == [ex.id for ex in again.as_dict()[name]]
        assert ids(first.as_dict()[name]) == ids(other.as_dict()[name])


def test_split_parts_are_disjoint_cover_all_and_have_rounded_sizes():
    ds = keyword_dataset(97)
    splits = ds.split(validation_fraction=0.13, test_fraction=0.27, seed=0)
    train, val, test = ids(splits.train), ids(splits.validation), ids(splits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == ids(ds)
    assert len(test) == round(97 * 0.27) == 26
    assert len(val) == round(97 * 0.13) == 13
    assert len(train) == 97 - 26 - 13
    # each part keeps file order and the full expert list
    order = [ex.id for ex in ds]
    for part in splits.as_dict().values():
        part_ids = [ex.id for ex in part]
        assert part_ids == sorted(part_ids, key=order.index)
        assert part.experts == ds.experts


def test_split_with_zero_fractions_keeps_everything_in_train():
    ds = keyword_dataset(10)
    splits = ds.split(validation_fraction=0.0, test_fraction=0.0)
    assert len(splits.train) == 10 and len(splits.validation) == 0 and len(splits.test) == 0


def test_split_seed_changes_the_split():
    ds = keyword_dataset()
    a = ds.split(test_fraction=0.2, seed=0)
    b = ds.split(test_fraction=0.2, seed=1)
    assert len(a.test) == len(b.test) == 20
    assert ids(a.test) != ids(b.test)


def test_split_stratified_by_task_keeps_every_task_share():
    rows = [
        RoutingExample(f"{task}-{i}", f"query {i}", {"a": 1.0, "b": 2.0}, task=task)
        for task in ("alpha", "beta", "gamma", "delta")
        for i in range(50)
    ]
    ds = RoutingDataset(rows)
    for seed in (0, 1, 2):
        splits = ds.split(validation_fraction=0.1, test_fraction=0.2, seed=seed, stratify_by_task=True)
        for task in ("alpha", "beta", "gamma", "delta"):
            assert splits.test.tasks.count(task) == 10
            assert splits.validation.tasks.count(task) == 5
            assert splits.train.tasks.count(task) == 35


def test_stratified_split_of_many_small_tasks_keeps_the_overall_sizes():
    # 10 tasks of 2 rows: rounding per task would put nothing in test; the overall sizes must hold
    rows = [RoutingExample(f"t{t}-{i}", "q", {"a": 1.0, "b": 2.0}, task=f"t{t}") for t in range(10) for i in range(2)]
    splits = RoutingDataset(rows).split(validation_fraction=0.1, test_fraction=0.2, seed=0, stratify_by_task=True)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (14, 2, 4)
    assert len(set(splits.test.tasks)) == 4  # spread over tasks, one row each


def test_split_that_leaves_no_training_rows_is_an_error():
    with pytest.raises(DataError, match="no training rows"):
        keyword_dataset(2).split(validation_fraction=0.45, test_fraction=0.45)


@pytest.mark.parametrize(
    ("validation_fraction", "test_fraction"),
    [(-0.1, 0.2), (0.1, -0.2), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.6, 0.7), (float("nan"), 0.2)],
)
def test_split_rejects_invalid_fractions(validation_fraction, test_fraction):
    with pytest.raises(DataError, match="fraction"):
        keyword_dataset(10).split(validation_fraction=validation_fraction, test_fraction=test_fraction)


# -- atomic saving ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_failed_save_leaves_existing_file_and_no_temp_files(tmp_path, monkeypatch, name):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / name
    target.write_bytes(b"the previous version\n")
    ds = keyword_dataset(20)

    real_dumps = json.dumps
    calls = {"n": 0}

    def failing_dumps(obj, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk full")
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(zooter._io.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="disk full"):
        ds.save(target)
    monkeypatch.undo()

    assert calls["n"] == 4  # it did fail part-way, after writing some rows
    assert target.read_bytes() == b"the previous version\n"
    assert sorted(p.name for p in folder.iterdir()) == [name]

    # and the next, successful save replaces it and also leaves nothing else behind
    ds.save(target)
    assert [ex.id for ex in RoutingDataset.load(target)] == [ex.id for ex in ds]
    assert sorted(p.name for p in folder.iterdir()) == [name]


def test_failed_first_save_creates_no_file(tmp_path, monkeypatch):
    def failing_dumps(obj, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(zooter._io.json, "dumps", failing_dumps)
    with pytest.raises(RuntimeError):
        keyword_dataset(5).save(tmp_path / "new.jsonl")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_load_queries_reads_bare_queries_and_datasets_alike(write_jsonl):
    path = write_jsonl(
        [
            {"id": "a", "query": "first", "task": "t"},
            {"id": "b", "query": [{"role": "user", "content": "second"}], "rewards": {"m1": 1.0}},
        ]
    )
    queries = load_queries(path)
    assert [q.id for q in queries] == ["a", "b"]
    assert queries[0].rewards == {} and queries[0].task == "t"
    assert queries[1].text == "user: second" and queries[1].rewards == {"m1": 1.0}


def test_load_queries_still_validates_what_is_there(write_jsonl):
    path = write_jsonl([{"id": "a", "query": "ok"}, {"id": "a", "query": "again"}])
    with pytest.raises(DataError, match="duplicate id") as info:
        load_queries(path)
    assert info.value.line == 2
    with pytest.raises(DataError, match="rewards"):
        load_queries(write_jsonl([{"id": "a", "query": "ok", "rewards": {"m": "high"}}], name="bad.jsonl"))
