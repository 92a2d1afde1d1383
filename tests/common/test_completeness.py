"""The completeness rule, property-based over generated listings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.completeness import RemoteObject, parse_version, scan_listing

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
QUIET = timedelta(seconds=60)
PREFIX = "models/"


def obj(name: str, age: float = 3600, size: int = 10, generation: int = 1) -> RemoteObject:
    return RemoteObject(name=PREFIX + name, size=size, generation=generation, updated=NOW - timedelta(seconds=age))


def version_objects(model: str, dir_name: str, shards: int, *, age: float = 3600, pb: str = "saved_model.pb"):
    base = f"{model}/{dir_name}/"
    objs = [obj(base + pb, age)]
    if shards:
        objs.append(obj(base + "variables/variables.index", age))
        objs += [obj(base + f"variables/variables.data-{k:05d}-of-{shards:05d}", age) for k in range(shards)]
    return objs


def scan(objects, marker=None):
    return scan_listing(objects, prefix=PREFIX, now=NOW, quiet_period=QUIET, marker=marker)


@settings(max_examples=200, deadline=None)
@given(shards=st.integers(1, 12), data=st.data())
def test_never_complete_while_a_shard_is_missing(shards: int, data: st.DataObject) -> None:
    objs = version_objects("m", "3", shards)
    shard_objs = [o for o in objs if "data-" in o.name]
    missing = data.draw(st.sampled_from(shard_objs))
    listing = [o for o in objs if o is not missing]
    result = scan(listing)
    assert result.models["m"].complete_versions == []
    assert "shards" in result.models["m"].incomplete[3]
    assert scan(objs).models["m"].complete_versions == [3]


@settings(max_examples=200, deadline=None)
@given(shards=st.integers(0, 6), young_age=st.floats(0, 59.9), data=st.data())
def test_never_complete_while_an_object_is_younger_than_quiet_period(
    shards: int, young_age: float, data: st.DataObject
) -> None:
    objs = version_objects("m", "1", shards)
    idx = data.draw(st.integers(0, len(objs) - 1))
    objs[idx] = obj(objs[idx].name[len(PREFIX) :], young_age)
    assert scan(objs).models["m"].complete_versions == []
    assert "quiet period" in scan(objs).models["m"].incomplete[1]


def test_model_without_variables_is_complete_by_pb_alone() -> None:
    assert scan(version_objects("m", "5", 0)).models["m"].complete_versions == [5]
    assert scan(version_objects("m", "5", 0, pb="saved_model.pbtxt")).models["m"].complete_versions == [5]


def test_no_saved_model_is_incomplete_and_index_needs_shards() -> None:
    objs = [o for o in version_objects("m", "1", 2) if "saved_model" not in o.name]
    assert "no saved_model" in scan(objs).models["m"].incomplete[1]
    only_index = [obj("m/2/saved_model.pb"), obj("m/2/variables/variables.index")]
    assert scan(only_index).models["m"].incomplete[2] == "variables.index without data shards"
    no_index = [obj("m/2/saved_model.pb"), obj("m/2/variables/variables.data-00000-of-00001")]
    assert scan(no_index).models["m"].incomplete[2] == "variables.index missing"


@settings(max_examples=100, deadline=None)
@given(zeros=st.integers(1, 5), version=st.integers(0, 10**6))
def test_leading_zeros_name_the_same_version(zeros: int, version: int) -> None:
    name = "0" * zeros + str(version)
    result = scan(version_objects("m", name, 1))
    assert result.models["m"].complete_versions == [version]
    assert result.models["m"].versions[version].dir_name == name


@settings(max_examples=100, deadline=None)
@given(version=st.integers(0, 10**6), zeros=st.integers(1, 3))
def test_two_names_for_one_version_are_ambiguous_and_neither_installs(version: int, zeros: int) -> None:
    objs = version_objects("m", str(version), 1) + version_objects("m", "0" * zeros + str(version), 1)
    result = scan(objs).models["m"]
    assert result.complete_versions == []
    assert sorted(result.ambiguous[version]) == sorted([str(version), "0" * zeros + str(version)])
    assert result.incomplete[version].startswith("ambiguous")


def test_marker_semantics() -> None:
    objs = version_objects("m", "1", 2, age=1)  # young: the marker overrides the quiet period
    assert scan(objs, marker="_COMPLETE").models["m"].incomplete[1] == "marker _COMPLETE not present"
    with_marker = [*objs, obj("m/1/_COMPLETE", age=0.5)]
    assert scan(with_marker, marker="_COMPLETE").models["m"].complete_versions == [1]
    rewritten = [*with_marker, obj("m/1/variables/variables.data-00000-of-00002", age=0.1)]
    rewritten = [
        o
        for o in rewritten
        if not (o.name.endswith("data-00000-of-00002") and o.updated < NOW - timedelta(seconds=0.5))
    ]
    assert "updated after marker" in scan(rewritten, marker="_COMPLETE").models["m"].incomplete[1]


@settings(max_examples=200, deadline=None)
@given(shards=st.integers(1, 12), marker=st.sampled_from([None, "_COMPLETE"]), data=st.data())
def test_shard_rule_holds_in_every_mode(shards: int, marker: str | None, data: st.DataObject) -> None:
    """Index present, some or none of the ``-of-N`` shards: incomplete, with or without a marker (a marker
    written before a big shard finished uploading must not make the version installable)."""
    objs = [*version_objects("m", "4", shards), obj("m/4/_COMPLETE", age=3000)]
    shard_objs = [o for o in objs if "data-" in o.name]
    kept = data.draw(st.lists(st.sampled_from(shard_objs), unique=True, max_size=shards - 1))
    listing = [o for o in objs if "data-" not in o.name or o in kept]
    reason = scan(listing, marker=marker).models["m"].incomplete[4]
    assert "shards" in reason, reason
    assert scan(objs, marker=marker).models["m"].complete_versions == [4]


def test_no_variables_needs_no_shard_in_either_mode_and_stray_shard_numbers_are_refused() -> None:
    for marker in (None, "_COMPLETE"):
        bare = [*version_objects("m", "2", 0), obj("m/2/_COMPLETE", age=3000)]
        assert scan(bare, marker=marker).models["m"].complete_versions == [2]
        only_index = [*bare, obj("m/2/variables/variables.index")]
        assert scan(only_index, marker=marker).models["m"].incomplete[2] == "variables.index without data shards"
    stray = [*version_objects("m", "3", 2), obj("m/3/variables/variables.data-00002-of-00002")]
    assert "beyond of-2" in scan(stray).models["m"].incomplete[3]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["m/", "m/1/", "m/1/variables/", "m/1/variables_$folder$", "m/1_$folder$"]), max_size=5)
)
def test_folder_placeholders_are_ignored(placeholders: list[str]) -> None:
    objs = version_objects("m", "1", 1) + [obj(p, age=0) for p in placeholders]
    assert scan(objs).models["m"].complete_versions == [1]


def test_reserved_invalid_and_non_numeric_names_are_not_models_or_versions() -> None:
    names = [
        "_fleet/state.json", ".tmp/1/saved_model.pb", "m/latest/saved_model.pb", "m/v2/saved_model.pb",
        "m/1.tmp/saved_model.pb", "bad name/1/saved_model.pb", "m/99999999999999999999/saved_model.pb",
        "README.md", "m/notes.txt",
    ]  # fmt: skip
    objs = [*version_objects("m", "1", 1), *(obj(n) for n in names)]
    result = scan(objs)
    assert set(result.models) == {"m"}
    assert result.models["m"].complete_versions == [1]
    ignored = {name for name, _ in result.ignored}
    assert PREFIX + "m/v2/saved_model.pb" in ignored
    assert PREFIX + "bad name/1/saved_model.pb" in ignored


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["../x", "a/../../x", "a//b", "./x", "a\\b", "x\x00y", "x\ny"]))
def test_names_escaping_the_version_dir_make_it_unsafe(bad: str) -> None:
    objs = [*version_objects("m", "1", 1), obj("m/1/" + bad)]
    assert "unsafe" in scan(objs).models["m"].incomplete[1]


@given(st.text(max_size=25))
def test_parse_version_accepts_only_int64_digit_strings(text: str) -> None:
    value = parse_version(text)
    if value is not None:
        assert text.isascii() and text.isdigit() and int(text) == value and value < 2**63
