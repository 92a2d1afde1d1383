"""models.config in the protobuf text format TF Serving parses (a ``ModelServerConfig``).

The same message goes into ``HandleReloadConfigRequest``, so the file and the RPC can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import text_format
from google.protobuf.message import Message

from services.common.errors import ConfigLintError
from services.common.tfs._generated import model_server_config_pb2 as config_pb2
from services.common.tfs.records import ModelEntry

EMPTY_CONFIG = "model_config_list {\n}\n"


def build_server_config(entries: Sequence[ModelEntry]) -> Message:
    """The ``ModelServerConfig`` message for ``entries`` (always a ``model_config_list``, maybe empty).

    A non-empty ``versions`` becomes a ``specific`` policy; an empty one writes no policy at all.
    """
    server_config = config_pb2.ModelServerConfig()
    config_list = server_config.model_config_list
    config_list.SetInParent()  # an empty list must still be written: it is "serve nothing", not "unset"
    for entry in entries:
        model = config_list.config.add()
        model.name = entry.name
        model.base_path = entry.base_path
        model.model_platform = entry.platform
        if entry.versions:
            model.model_version_policy.specific.versions.extend(entry.versions)
        for label, version in entry.labels.items():
            model.version_labels[label] = version
    message: Message = server_config
    return message


def render_config(entries: Sequence[ModelEntry]) -> str:
    """models.config text for ``entries``; ``[]`` gives ``"model_config_list {\\n}\\n"``.

    The output is deterministic (versions ascending, labels sorted), so equal entries give equal
    text and a caller can compare texts to decide whether a reload is needed. It does not lint: call
    :func:`services.common.tfs.lint_config` first.
    """
    return text_format.MessageToString(build_server_config(entries))


def parse_config(text: str) -> list[ModelEntry]:
    """Read models.config text back into entries, in file order.

    ``latest`` and ``all`` policies (and no policy) map to ``versions=()``: their details are not
    kept, so re-rendering such an entry writes no policy (TF Serving's ``latest`` of 1). Raises
    :class:`ConfigLintError` (``problems`` in ``extra``) for text TF Serving would not accept or that
    this subset cannot represent faithfully: a syntax error, a field outside the subset (e.g.
    ``logging_config``), an empty file, a ``custom_model_config``, or a ``specific`` policy with no
    versions.
    """
    server_config = config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, server_config)
    except text_format.ParseError as exc:
        raise _refused([f"not a ModelServerConfig in text format: {exc}"]) from exc
    if server_config.WhichOneof("config") != "model_config_list":
        raise _refused(["no model_config_list (an empty file is refused; write 'model_config_list {}')"])
    entries: list[ModelEntry] = []
    problems: list[str] = []
    for model in server_config.model_config_list.config:
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            problems.append(f"model {model.name!r}: a 'specific' policy with no versions")
            continue
        entries.append(
            ModelEntry(
                name=model.name,
                base_path=model.base_path,
                versions=tuple(policy.specific.versions),
                labels=dict(model.version_labels),
                platform=model.model_platform,
            )
        )
    if problems:
        raise _refused(problems)
    return entries


def _refused(problems: list[str]) -> ConfigLintError:
    return ConfigLintError("models.config refused: " + "; ".join(problems), problems=problems)
