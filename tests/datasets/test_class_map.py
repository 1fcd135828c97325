"""choose_classes: classes of an export cleaned (unused dropped, duplicates merged, dense ids)
and picked, ordered, renamed and merged by a --classes file."""

from __future__ import annotations

import json

import pytest

from segcli.data.class_map import choose_classes
from segcli.data.format import IGNORE_INDEX
from segcli.errors import UsageError


def write(tmp_path, content) -> object:
    path = tmp_path / "classes.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_unused_category_dropped_with_a_note():
    # Roboflow's parent category: listed first, used by no annotation
    choice = choose_classes([("car-damages", 0), ("dent", 5), ("scratch", 2)])
    assert choice.names == ("background", "dent", "scratch")
    assert choice.ids == {"dent": 1, "scratch": 2}
    assert any("'car-damages'" in note and "dropped" in note for note in choice.notes)


def test_same_name_merged_into_one_class():
    choice = choose_classes([("dent", 3), ("scratch", 1), ("dent", 2)])
    assert choice.names == ("background", "dent", "scratch")
    assert choice.ids == {"dent": 1, "scratch": 2}
    assert any("'dent' listed twice: merged" in note for note in choice.notes)


def test_a_duplicate_with_no_use_of_its_own_still_keeps_the_class():
    choice = choose_classes([("dent", 0), ("dent", 4)])
    assert choice.names == ("background", "dent")
    assert not any("dropped" in note for note in choice.notes)


def test_ids_dense_in_first_seen_order_and_stable():
    found = [("zebra", 1), ("unused", 0), ("apple", 2), ("mango", 7)]
    first = choose_classes(found)
    assert first.names == ("background", "zebra", "apple", "mango")
    assert sorted(first.ids.values()) == [1, 2, 3]
    assert choose_classes(found) == first


def test_a_source_named_background_is_class_0():
    choice = choose_classes([("background", 4), ("dent", 1)])
    assert choice.names == ("background", "dent")
    assert choice.ids == {"background": 0, "dent": 1}
    custom = choose_classes([("_background_", 4), ("dent", 1)], background="_background_")
    assert custom.names == ("_background_", "dent")
    assert custom.ids["_background_"] == 0


def test_classes_file_picks_orders_renames_and_merges(tmp_path):
    path = write(
        tmp_path, {"names": ["bg", "scratch", "dent"], "map": {"gocuk": "dent", "cizik": "scratch"}}
    )
    found = [("dent", 2), ("gocuk", 3), ("cizik", 1), ("glass", 4), ("lamp", 1)]
    choice = choose_classes(found, classes_file=path)
    assert choice.names == ("bg", "scratch", "dent")
    assert choice.ids == {"dent": 2, "gocuk": 2, "cizik": 1, "glass": 0, "lamp": 0}
    notes = "\n".join(choice.notes)
    assert "'dent' and 'gocuk' merged into 'dent'" in notes
    assert "'cizik' renamed 'scratch'" in notes
    assert "2 name(s) not in classes.json (5 annotations) -> background" in notes


def test_classes_file_others_ignore(tmp_path):
    path = write(tmp_path, {"names": ["background", "dent"]})
    choice = choose_classes([("dent", 1), ("glass", 2)], classes_file=path, others="ignore")
    assert choice.ids == {"dent": 1, "glass": IGNORE_INDEX}
    assert any("ignore (255" in note for note in choice.notes)


def test_classes_file_map_to_background(tmp_path):
    path = write(tmp_path, {"names": ["background", "dent"], "map": {"dirt": "background"}})
    choice = choose_classes([("dent", 1), ("dirt", 2)], classes_file=path, others="ignore")
    assert choice.ids == {"dent": 1, "dirt": 0}


def test_classes_file_notes_unused_class_and_unmatched_map(tmp_path):
    path = write(tmp_path, {"names": ["background", "dent", "rust"], "map": {"pas": "rust"}})
    choice = choose_classes([("dent", 1)], classes_file=path)
    assert choice.names == ("background", "dent", "rust")
    notes = "\n".join(choice.notes)
    assert "class 'rust' of classes.json is used by no annotation" in notes
    assert "maps 'pas', which no annotation uses" in notes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ([1, 2], "must hold a JSON object"),
        ({"map": {}}, '"names" must list'),
        ({"names": ["background"]}, '"names" must list'),
        ({"names": ["background", 3]}, '"names" must list'),
        ({"names": ["background", "dent", "dent"]}, "lists 'dent' more than once"),
        ({"names": ["background", "dent"], "map": {"a": "rust"}}, "maps 'a' to 'rust'"),
        ({"names": ["background", "dent"], "map": ["a"]}, '"map" must be an object'),
        ({"names": ["background", "dent"], "nmaes": 1}, "unknown key(s) 'nmaes'"),
        ('{"names": ["bg", "dent"], "map": {"a": "dent", "a": "bg"}}', "maps 'a' more than once"),
    ],
)
def test_bad_classes_file_is_a_usage_error_naming_it(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(UsageError) as caught:
        choose_classes([("dent", 1)], classes_file=path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_missing_classes_file_and_bad_others(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(UsageError, match="nope.json"):
        choose_classes([("dent", 1)], classes_file=missing)
    with pytest.raises(UsageError, match="--others 'drop'"):
        choose_classes([("dent", 1)], others="drop")
