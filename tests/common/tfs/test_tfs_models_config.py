"""models.config: the text we render is what TF Serving's own message parses, and back."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow_serving.config import model_server_config_pb2 as up_config

from services.common.errors import ConfigLintError
from services.common.tfs import EMPTY_CONFIG, ModelEntry, lint_config, parse_config, render_config

GOLDEN = """\
model_config_list {
  config {
    name: "ranker"
    base_path: "/models/ranker"
    model_platform: "tensorflow"
    model_version_policy {
      specific {
        versions: 3
        versions: 7
      }
    }
    version_labels {
      key: "canary"
      value: 7
    }
    version_labels {
      key: "stable"
      value: 3
    }
  }
  config {
    name: "embedder"
    base_path: "/models/embedder"
    model_platform: "tensorflow"
  }
}
"""

ENTRIES = [
    ModelEntry(name="ranker", base_path="/models/ranker", versions=(7, 3, 7), labels={"stable": 3, "canary": 7}),
    ModelEntry(name="embedder", base_path="/models/embedder", versions=()),
]


def test_empty_config_is_an_empty_model_config_list_not_an_empty_file() -> None:
    assert render_config([]) == EMPTY_CONFIG == "model_config_list {\n}\n"
    assert parse_config(EMPTY_CONFIG) == []


def test_render_is_the_text_format_tf_serving_reads() -> None:
    text = render_config(ENTRIES)
    assert text == GOLDEN
    upstream = text_format.Parse(text, up_config.ModelServerConfig())
    ranker = upstream.model_config_list.config[0]
    assert list(ranker.model_version_policy.specific.versions) == [3, 7]
    assert dict(ranker.version_labels) == {"canary": 7, "stable": 3}
    assert ranker.model_platform == "tensorflow"
    assert not upstream.model_config_list.config[1].HasField("model_version_policy")


def test_parse_reads_text_written_by_upstream_including_latest_and_all() -> None:
    upstream = up_config.ModelServerConfig()
    specific = upstream.model_config_list.config.add(name="a", base_path="/m/a", model_platform="tensorflow")
    specific.model_version_policy.specific.versions.extend([2, 1])
    specific.version_labels["stable"] = 2
    latest = upstream.model_config_list.config.add(name="b", base_path="/m/b", model_platform="tensorflow")
    latest.model_version_policy.latest.num_versions = 3
    every = upstream.model_config_list.config.add(name="c", base_path="/m/c", model_platform="tensorflow")
    every.model_version_policy.all.SetInParent()
    assert parse_config(text_format.MessageToString(upstream)) == [
        ModelEntry(name="a", base_path="/m/a", versions=(1, 2), labels={"stable": 2}),
        ModelEntry(name="b", base_path="/m/b", versions=()),
        ModelEntry(name="c", base_path="/m/c", versions=()),
    ]


def test_parse_keeps_what_lint_must_see() -> None:
    # A missing platform is kept as "" so lint can refuse it (TF Serving answers INVALID_ARGUMENT).
    [entry] = parse_config('model_config_list { config { name: "a" base_path: "/m/a" } }')
    assert entry.platform == ""
    with pytest.raises(ConfigLintError):
        lint_config([entry], check_disk=False)


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-é", min_size=1, max_size=10)
_entries = st.builds(
    ModelEntry,
    name=_names,
    base_path=_names.map(lambda n: f"/models/{n}"),
    versions=st.lists(st.integers(0, 2**63 - 1), max_size=4).map(tuple),
    labels=st.dictionaries(_names, st.integers(0, 2**63 - 1), max_size=3),
    platform=st.sampled_from(["tensorflow", "other"]),
)


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(_entries, max_size=4))
def test_render_then_parse_round_trips(entries: list[ModelEntry]) -> None:
    text = render_config(entries)
    assert parse_config(text) == entries
    assert render_config(parse_config(text)) == text


def test_model_entry_normalises_versions_and_labels() -> None:
    entry = ModelEntry(name="m", base_path="/m", versions=(5, 1, 5), labels={"z": 5, "a": 1})
    assert entry.versions == (1, 5)
    assert list(entry.labels) == ["a", "z"]
    assert entry == ModelEntry(name="m", base_path="/m", versions=(1, 5), labels={"a": 1, "z": 5})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model_config_list { config { name: ", "text format"),
        ("", "no model_config_list"),
        ('custom_model_config { type_url: "x" }', "no model_config_list"),
        ('model_config_list { config { name: "a" logging_config {} } }', "logging_config"),
        ('model_config_list { config { name: "a" model_version_policy { specific {} } } }', "no versions"),
    ],
    ids=["syntax", "empty-file", "custom-config", "field-outside-subset", "specific-without-versions"],
)
def test_parse_refuses_what_it_cannot_represent(text: str, fragment: str) -> None:
    with pytest.raises(ConfigLintError) as caught:
        parse_config(text)
    assert fragment in caught.value.detail
    assert caught.value.extra["problems"]


# ---- lint: each rule with a refused and an accepted example ---------------------------------------


def _model_dir(root: Path, name: str, *versions: str) -> str:
    base = root / name
    base.mkdir()
    for version in versions:
        (base / version).mkdir()
    return str(base)


def _problems(entries: list[ModelEntry], *, check_disk: bool = True) -> list[str]:
    with pytest.raises(ConfigLintError) as caught:
        lint_config(entries, check_disk=check_disk)
    problems: list[str] = caught.value.extra["problems"]
    return problems


def test_lint_accepts_a_safe_config(tmp_path: Path) -> None:
    base = _model_dir(tmp_path, "m", "1", "2")
    lint_config([ModelEntry(name="m", base_path=base, versions=(1, 2), labels={"stable": 2})])
    lint_config([])


def test_lint_refuses_duplicate_names(tmp_path: Path) -> None:
    a, b = _model_dir(tmp_path, "a", "1"), _model_dir(tmp_path, "b", "1")
    problems = _problems([ModelEntry("m", a, (1,)), ModelEntry("m", b, (1,))])
    assert problems == ["duplicate model name 'm' (2 entries)"]
    lint_config([ModelEntry("m", a, (1,)), ModelEntry("n", b, (1,))])


def test_lint_refuses_relative_or_missing_base_path(tmp_path: Path) -> None:
    problems = _problems([ModelEntry("rel", "models/rel", (1,)), ModelEntry("none", "", (1,))], check_disk=False)
    assert any("'rel'" in p and "relative" in p for p in problems)
    assert any("'none'" in p and "missing base_path" in p for p in problems)
    lint_config([ModelEntry("abs", "/models/abs", (1,)), ModelEntry("gcs", "gs://b/m", (1,))], check_disk=False)


def test_lint_refuses_a_base_path_without_a_version_dir(tmp_path: Path) -> None:
    base = _model_dir(tmp_path, "m", "1.tmp", ".staging", "v2")
    (Path(base) / "3").write_text("a file is not a version directory")
    assert _problems([ModelEntry("m", base, ())]) == [f"model 'm': base_path {base} has no version directory"]
    assert "does not exist" in _problems([ModelEntry("gone", str(tmp_path / "gone"), ())])[0]
    (Path(base) / "4").mkdir()
    lint_config([ModelEntry("m", base, ())])


def test_lint_refuses_specific_versions_not_on_disk(tmp_path: Path) -> None:
    base = _model_dir(tmp_path, "m", "1", "002")
    assert _problems([ModelEntry("m", base, (1, 3))]) == [f"model 'm': version 3 is not on disk under {base}"]
    lint_config([ModelEntry("m", base, (1, 2))])  # 002 is version 2, as TF Serving reads it


def test_lint_refuses_two_directories_for_one_version(tmp_path: Path) -> None:
    base = _model_dir(tmp_path, "m", "7", "007")
    assert "ambiguous" in _problems([ModelEntry("m", base, (7,))])[0]


def test_lint_refuses_labels_on_versions_not_served() -> None:
    problems = _problems(
        [
            ModelEntry("m", "/m", (1,), labels={"stable": 1, "canary": 2}),
            ModelEntry("latest", "/l", (), labels={"stable": 4}),
        ],
        check_disk=False,
    )
    assert problems == [
        "model 'm': label 'canary' points at version 2, which is not served",
        "model 'latest': label 'stable' points at version 4, which is not served",
    ]
    lint_config([ModelEntry("m", "/m", (1, 2), labels={"stable": 1, "canary": 2})], check_disk=False)


def test_lint_refuses_unknown_platform_and_empty_name() -> None:
    problems = _problems(
        [ModelEntry("m", "/m", (1,), platform="pytorch"), ModelEntry("", "/x", (1,))], check_disk=False
    )
    assert problems == ["model 'm': platform 'pytorch' is not 'tensorflow'", "model #1: empty name"]


def test_lint_lists_every_problem_at_once(tmp_path: Path) -> None:
    base = _model_dir(tmp_path, "m", "1")
    entries = [
        ModelEntry("m", base, (1, 9), labels={"x": 8}),
        ModelEntry("m", "relative", (1,)),
        ModelEntry("n", str(tmp_path / "nowhere"), (1,)),
    ]
    with pytest.raises(ConfigLintError) as caught:
        lint_config(entries)
    assert len(caught.value.extra["problems"]) == 5
    assert caught.value.detail.startswith("models.config refused, 5 problem(s): ")
