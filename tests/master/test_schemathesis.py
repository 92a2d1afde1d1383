"""schemathesis against master's OpenAPI (real HTTP, real bucket): no 5xx, no schema violations.

Each operation gets a fresh master whose bucket holds a model with complete and incomplete versions.
Checks not run: ``positive_data_acceptance`` — schema-valid requests are legitimately refused by the
domain (422: a version not complete in the bucket; 412: an If-Match that is not the current generation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from google.cloud import storage
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.master.app import create_app
from services.master.settings import Settings
from tests.master.conftest import MasterHandle
from tests.master.support import put_version

TOKEN = "fuzz-token"


@pytest.fixture
def fuzz_master(
    tmp_path: Path, bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> Iterator[MasterHandle]:
    put_version(bucket, "ranker", 1)
    put_version(bucket, "ranker", 2)
    put_version(bucket, "ranker", 3, complete=False)
    (tmp_path / "fuzz.token").write_text(TOKEN)
    (tmp_path / "fuzz.admins").write_text(f"fuzz:{TOKEN}\n")
    yield start_master(
        token_file=tmp_path / "fuzz.token", admin_tokens_file=tmp_path / "fuzz.admins", node_timeout_seconds=0.3
    )


# The document is the same for every master (it depends on no setting); each test case then runs against a
# live master (schemathesis' lazy fixture loader does not support pytest 9 yet).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.auth()
class BearerToken:
    """The admin (and, in this test, fleet) token; schemathesis still sends cases without it."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return TOKEN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_master_api_conforms_to_its_schema(case: schemathesis.Case, fuzz_master: MasterHandle) -> None:
    case.call_and_validate(base_url=fuzz_master.url, excluded_checks=[positive_data_acceptance])
