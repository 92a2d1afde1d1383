"""Every credential a GCP user has, loaded by the one loader and used by every bucket client.

fake-gcs-server ignores auth, so it sits behind a gate that answers 401 unless the request carries a
token the stand-in token server issued and has not revoked: a listing, master's write, a native media
read and an SDK read that pass the gate prove each client sent a real token from that credential.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import storage

from services.common import gcs
from services.common.credentials import (
    READ_ONLY_SCOPE,
    READ_WRITE_SCOPE,
    CredentialsError,
    TokenSource,
    load_credentials,
)
from services.common.errors import BucketPermissionDenied
from services.common.network import BucketNetwork
from services.remote_model_puller.app import create_app, make_downloader, media_tokens
from services.remote_model_puller.download import ObjectSpec, Progress
from services.remote_model_puller.media import MediaReader
from services.remote_model_puller.settings import Settings
from tests.remote_model_puller.conftest import tree, upload_version, write_fake_model
from tests.remote_model_puller.proxy import Misbehaviour, gcs_proxy
from tests.support.gcs import FakeGcs
from tests.support.tokens import REFRESH_TOKEN, SUBJECT_TOKEN, TokenServer, token_server

DATA = os.urandom(1_300_000)  # two ranges
OBJECT = "models/ranker/1/variables/variables.data-00000-of-00001"


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with token_server() as server:
        yield server


@pytest.fixture
def gate(fake_gcs: FakeGcs, tokens: TokenServer) -> Iterator[tuple[str, Misbehaviour]]:
    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.authorize = tokens.accepts
        yield url, rules


@pytest.fixture
def stored(bucket: storage.Bucket) -> ObjectSpec:
    blob = bucket.blob(OBJECT)
    blob.upload_from_string(DATA)
    blob.reload()
    return ObjectSpec(OBJECT, "data", len(DATA), int(blob.generation or 0), blob.crc32c)


def write_credentials(kind: str, directory: Path, tokens: TokenServer) -> Path:
    """A credentials file of ``kind`` as GCP hands it out, its token endpoint pointed at the stand-in."""
    directory.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any]
    if kind == "authorized_user":  # what `gcloud auth application-default login` writes (no token_uri)
        info = {
            "type": "authorized_user",
            "account": "",
            "client_id": "764086051850-test.apps.googleusercontent.com",
            "client_secret": "test-secret",
            "quota_project_id": "test-project",
            "refresh_token": REFRESH_TOKEN,
            "universe_domain": "googleapis.com",
        }
    elif kind == "service_account":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tokens.public_key_pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        info = {
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "k1",
            "private_key": pem.decode(),
            "client_email": "puller@test-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{tokens.url}/token",
        }
    else:  # workload/workforce identity federation: an STS exchange of a token read from a file
        subject = directory / "subject-token"
        subject.write_text(SUBJECT_TOKEN)
        info = {
            "type": "external_account",
            # A workforce-pool audience: with a workload pool's (projects/<number>/...) google-auth also
            # asks cloudresourcemanager.googleapis.com for the project id at load time.
            "audience": "//iam.googleapis.com/locations/global/workforcePools/pool/providers/test",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": f"{tokens.url}/token",
            "credential_source": {"file": str(subject)},
        }
    path = directory / "application_default_credentials.json"
    path.write_text(json.dumps(info))
    return path


def settings_for(
    gate_url: str, bucket: storage.Bucket, tmp_path: Path, tokens: TokenServer | None = None, **values: Any
) -> Settings:
    return Settings(
        remote_model_directory=f"gs://{bucket.name}/models",
        storage_emulator_host=gate_url,
        local_model_directory=tmp_path / "local",
        state_dir=tmp_path / "state",
        download_range_bytes=1 << 20,
        download_buffer_bytes=64 * 1024,
        gcs_timeout_seconds=5,
        gcs_token_uri=f"{tokens.url}/token" if tokens is not None else None,
        **values,
    )


def download(settings: Settings, spec: ObjectSpec, dest: Path, client: storage.Client) -> bytes:
    native = settings.download_engine == "native"
    auth = media_tokens(settings, load_credentials(settings, scopes=[READ_ONLY_SCOPE])) if native else None
    downloader = make_downloader(settings, auth, client)
    try:
        downloader.download_version([spec], dest, progress=Progress(spec.size), cancel=threading.Event())
    finally:
        downloader.close()
    return (dest / spec.relative).read_bytes()


@pytest.mark.parametrize("kind", ["authorized_user", "service_account", "external_account"])
def test_each_credential_file_type_serves_listing_writes_and_both_download_engines(
    kind: str,
    gate: tuple[str, Misbehaviour],
    tokens: TokenServer,
    bucket: storage.Bucket,
    stored: ObjectSpec,
    tmp_path: Path,
) -> None:
    gate_url, rules = gate
    path = write_credentials(kind, tmp_path / "gcloud", tokens)
    # The runbook's place for the user's file; the others through GOOGLE_APPLICATION_CREDENTIALS.
    where = {"cloudsdk_config": path.parent} if kind == "authorized_user" else {"google_application_credentials": path}
    grants_before = len(tokens.grants)
    settings = settings_for(gate_url, bucket, tmp_path, tokens, **where)

    client = gcs.make_client(settings, scopes=[READ_WRITE_SCOPE])  # master's client
    listed = list(gcs.list_objects(client, bucket.name, "models/", timeout=5))
    assert [o.name for o in listed] == [OBJECT]
    generation = gcs.write_object(
        client, bucket.name, "models/_fleet/state.json", b"{}", if_generation_match=0, timeout=5
    )
    assert generation > 0
    assert download(settings, stored, tmp_path / "native", client) == DATA
    sdk = settings.model_copy(update={"download_engine": "sdk"})
    assert download(sdk, stored, tmp_path / "sdk", gcs.make_client(sdk)) == DATA

    assert rules.unauthorized == 0, "every request carried a valid token"
    assert set(tokens.grants[grants_before:]) == {kind}, "tokens came from this credential's own grant"


def test_without_credentials_the_gate_refuses_and_the_error_says_so(
    gate: tuple[str, Misbehaviour], bucket: storage.Bucket, stored: ObjectSpec, tmp_path: Path
) -> None:
    gate_url, rules = gate
    settings = settings_for(gate_url, bucket, tmp_path)  # emulator, no file, auto: anonymous
    assert load_credentials(settings, scopes=[READ_WRITE_SCOPE]) is None
    with pytest.raises(BucketPermissionDenied, match="HTTP 401"):
        download(settings, stored, tmp_path / "out", gcs.make_client(settings))
    # One read per range (two ranges may already be in flight when the first 401 stops the version);
    # none is retried: without a token there is nothing to refresh.
    assert 1 <= rules.unauthorized <= 2


def test_a_broken_credentials_file_is_a_clear_error(tmp_path: Path, bucket: storage.Bucket) -> None:
    path = tmp_path / "creds.json"
    path.write_text('{"type": "service_account", "client_email": "x"}')
    settings = settings_for("http://127.0.0.1:9", bucket, tmp_path, google_application_credentials=path)
    with pytest.raises(CredentialsError, match=str(path)):
        load_credentials(settings, scopes=[READ_WRITE_SCOPE])


def media_reader(gate_url: str, bucket: storage.Bucket, source: TokenSource) -> MediaReader:
    return MediaReader(endpoint=gate_url, bucket=bucket.name, timeout=5, buffer_bytes=64 * 1024, auth=source)


def read_all(reader: MediaReader, spec: ObjectSpec) -> None:
    reader.read_range(spec.name, spec.generation, 0, spec.size, lambda *a: None, lambda: False)


def test_media_tokens_are_refreshed_before_expiry_and_once_on_a_401(
    gate: tuple[str, Misbehaviour], tokens: TokenServer, bucket: storage.Bucket, stored: ObjectSpec, tmp_path: Path
) -> None:
    gate_url, rules = gate
    settings = settings_for(gate_url, bucket, tmp_path, tokens, cloudsdk_config=tmp_path / "gcloud")
    write_credentials("authorized_user", tmp_path / "gcloud", tokens)
    credentials = load_credentials(settings, scopes=[READ_WRITE_SCOPE])
    assert credentials is not None
    clock = [datetime(2000, 1, 1)]  # the process's idea of now (naive UTC, like google-auth's expiry)
    source = TokenSource(credentials, network=BucketNetwork(), margin_seconds=300, clock=lambda: clock[0])
    reader = media_reader(gate_url, bucket, source)

    read_all(reader, stored)  # no token yet: the first use fetches one
    first = credentials.token
    assert source.refreshes == 1 and credentials.expiry is not None
    clock[0] = credentials.expiry - timedelta(seconds=600)  # well before expiry: the token is reused
    read_all(reader, stored)
    assert source.refreshes == 1 and credentials.token == first
    clock[0] = credentials.expiry - timedelta(seconds=299)  # within the margin: refreshed before it lapses
    read_all(reader, stored)
    assert source.refreshes == 2 and credentials.token != first
    assert rules.unauthorized == 0

    tokens.revoke_all()  # the server stops accepting the token the client still holds
    clock[0] = credentials.expiry - timedelta(seconds=600)
    read_all(reader, stored)
    assert rules.unauthorized == 1 and source.refreshes == 3, "one 401, one refresh, then the read passed"

    rules.authorize = lambda header: False  # refreshed tokens are refused too: permission, not staleness
    with pytest.raises(BucketPermissionDenied, match="HTTP 401"):
        read_all(reader, stored)
    assert rules.unauthorized == 3 and source.refreshes == 4, "exactly one refresh and one retry"


def test_sdk_client_refreshes_once_on_a_401(
    gate: tuple[str, Misbehaviour], tokens: TokenServer, bucket: storage.Bucket, stored: ObjectSpec, tmp_path: Path
) -> None:
    gate_url, rules = gate
    path = write_credentials("service_account", tmp_path / "sa", tokens)
    client = gcs.make_client(settings_for(gate_url, bucket, tmp_path, google_application_credentials=path))
    assert [o.name for o in gcs.list_objects(client, bucket.name, "models/", timeout=5)] == [OBJECT]
    issued, refused = len(tokens.issued), rules.unauthorized
    tokens.revoke_all()
    assert [o.name for o in gcs.list_objects(client, bucket.name, "models/", timeout=5)] == [OBJECT]
    # google-auth's session refreshes on the 401 and sends again (its own policy allows two refreshes;
    # under CPU load it was seen to use both, so the counts are bounds, not exact).
    assert 1 <= rules.unauthorized - refused <= 2 and len(tokens.issued) > issued


PROBE = """
import json, threading
from pathlib import Path
from services.common import gcs
from services.common.credentials import READ_WRITE_SCOPE, load_credentials
from services.remote_model_puller.app import make_downloader, media_tokens
from services.remote_model_puller.download import ObjectSpec, Progress
from services.remote_model_puller.settings import Settings

settings = Settings()
credentials = load_credentials(settings, scopes=[READ_WRITE_SCOPE])
client = gcs.client_with(settings, credentials)  # one credentials object for both clients, as in the puller
listed = list(gcs.list_objects(client, settings.bucket_name, "models/", timeout=5))
gcs.write_object(client, settings.bucket_name, "models/_fleet/state.json", b"{}", if_generation_match=0, timeout=5)
spec = ObjectSpec(listed[0].name, "data", listed[0].size, listed[0].generation, listed[0].crc32c)
downloader = make_downloader(settings, media_tokens(settings, credentials), client)
downloader.download_version([spec], settings.local_model_directory, progress=Progress(spec.size),
                            cancel=threading.Event())
size = (settings.local_model_directory / "data").stat().st_size
print(json.dumps({"type": type(credentials).__module__, "bytes": size}))
"""


def test_the_metadata_server_serves_a_process_without_a_credentials_file(
    gate: tuple[str, Misbehaviour], tokens: TokenServer, bucket: storage.Bucket, stored: ObjectSpec, tmp_path: Path
) -> None:
    """google-auth reads GCE_METADATA_HOST when it is imported: a fresh process, as on a GCE node."""
    gate_url, rules = gate
    host = tokens.url.removeprefix("http://")
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")}
    env.update(
        GCE_METADATA_HOST=host,
        GCE_METADATA_IP=host,
        CLOUDSDK_CONFIG=str(tmp_path / "empty-gcloud"),  # no gcloud ADC file: the chain reaches the metadata server
        FLEET_GCS_AUTH="google",
        STORAGE_EMULATOR_HOST=gate_url,
        REMOTE_MODEL_DIRECTORY=f"gs://{bucket.name}/models",
        LOCAL_MODEL_DIRECTORY=str(tmp_path / "local"),
        FLEET_STATE_DIR=str(tmp_path / "state"),
    )
    (tmp_path / "empty-gcloud").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"type": "google.auth.compute_engine.credentials", "bytes": len(DATA)}
    assert "metadata" in tokens.grants and rules.unauthorized == 0


async def test_the_puller_app_uses_one_credentials_object_for_listing_and_downloads(
    gate: tuple[str, Misbehaviour], tokens: TokenServer, bucket: storage.Bucket, tmp_path: Path
) -> None:
    gate_url, rules = gate
    upload_version(bucket, write_fake_model(tmp_path / "src", 3), "ranker", "3")
    write_credentials("authorized_user", tmp_path / "gcloud", tokens)
    settings = settings_for(
        gate_url,
        bucket,
        tmp_path,
        tokens,
        cloudsdk_config=tmp_path / "gcloud",
        quiet_period_seconds=0,
        disk_margin_bytes=0,
        master_url="http://127.0.0.1:9",
    )
    (tmp_path / "state").mkdir()
    app = create_app(settings, start_workers=False)
    async with app.router.lifespan_context(app):
        worker = app.state.runtime.worker
        assert await worker.run_now(), worker.last_error
        media = worker.downloader.reader
    assert tree(settings.local_model_directory / "ranker" / "3") == tree(tmp_path / "src" / "3")
    assert rules.unauthorized == 0 and media.requests == 4
    # The listing fetched the token; the media reads used it: one credentials object behind both clients.
    assert media._auth.refreshes == 0 and media._auth.credentials.token in tokens.issued
