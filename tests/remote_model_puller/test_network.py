"""The bucket clients on a real network: fake-gcs-server over https with its own CA (REQUESTS_CA_BUNDLE /
SSL_CERT_FILE), through an HTTP CONNECT proxy (HTTPS_PROXY / NO_PROXY), 429 and 5xx retried with jittered
backoff within a deadline — for both download engines (FLEET_DOWNLOAD_ENGINE=native|sdk)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage
from pydantic import ValidationError

from services.common import gcs
from services.common.credentials import READ_ONLY_SCOPE, load_credentials
from services.common.errors import BucketError
from services.remote_model_puller.app import make_downloader, media_tokens
from services.remote_model_puller.download import ObjectSpec, Progress
from services.remote_model_puller.settings import Settings
from tests.remote_model_puller.proxy import gcs_proxy
from tests.support.connect_proxy import connect_proxy
from tests.support.gcs import FakeGcs
from tests.support.tlsca import TlsFiles, make_test_ca

DATA = os.urandom(1_500_000)  # two ranges of 1 MiB
NAME = "models/ranker/1/variables/variables.data-00000-of-00001"
ENGINES = ["native", "sdk"]
NETWORK_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def https_gcs(tls_files: TlsFiles) -> Iterator[tuple[FakeGcs, ObjectSpec]]:
    """fake-gcs-server with ``-scheme https`` and a certificate from the test CA, one object stored."""
    server = FakeGcs(tls=(tls_files.cert_file, tls_files.key_file, tls_files.ca_file))
    server.start()
    try:
        bucket = server.client().create_bucket("tls-models")
        blob = bucket.blob(NAME)
        blob.upload_from_string(DATA)
        blob.reload()
        yield server, ObjectSpec(NAME, "data", len(DATA), int(blob.generation or 0), blob.crc32c)
    finally:
        server.close()


@pytest.fixture(autouse=True)
def clean_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NETWORK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def settings_for(endpoint: str, bucket: str, tmp_path: Path, **values: Any) -> Settings:
    """Settings as a container gets them: the network variables come from the environment."""
    return Settings(
        remote_model_directory=f"gs://{bucket}/models",
        storage_emulator_host=endpoint,
        local_model_directory=tmp_path / "local",
        state_dir=tmp_path / "state",
        download_range_bytes=1 << 20,
        download_buffer_bytes=256 * 1024,
        gcs_timeout_seconds=5,
        **values,
    )


def fetch(settings: Settings, spec: ObjectSpec, dest: Path) -> bytes:
    """List through the SDK client, then download with the configured engine; the file's bytes."""
    credentials = load_credentials(settings, scopes=[READ_ONLY_SCOPE])
    client = gcs.client_with(settings, credentials)
    assert [o.name for o in gcs.list_objects(client, settings.bucket_name, "models/", timeout=5)] == [spec.name]
    downloader = make_downloader(settings, media_tokens(settings, credentials), client)
    try:
        downloader.download_version([spec], dest, progress=Progress(spec.size), cancel=threading.Event())
    finally:
        downloader.close()
        gcs.close_client(client)
    return (dest / spec.relative).read_bytes()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_https_emulator_is_trusted_through_the_ca_bundle_variable(
    https_gcs: tuple[FakeGcs, ObjectSpec],
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine: str,
    variable: str,
) -> None:
    server, spec = https_gcs
    monkeypatch.setenv(variable, str(tls_files.ca_file))
    settings = settings_for(server.url, "tls-models", tmp_path, download_engine=engine)
    assert settings.ca_bundle() == tls_files.ca_file
    assert fetch(settings, spec, tmp_path / "out") == DATA


@pytest.mark.parametrize("engine", ENGINES)
def test_an_untrusted_certificate_is_refused_clearly(
    https_gcs: tuple[FakeGcs, ObjectSpec], tmp_path: Path, engine: str
) -> None:
    server, spec = https_gcs
    settings = settings_for(server.url, "tls-models", tmp_path, download_engine=engine, download_attempts=1)
    downloader = make_downloader(settings, None, gcs.make_client(settings))
    with pytest.raises(BucketError, match=r"CERTIFICATE_VERIFY_FAILED|SSLError") as caught:
        downloader.download_version([spec], tmp_path / "out", progress=Progress(spec.size), cancel=threading.Event())
    downloader.close()
    assert "read " + NAME in str(caught.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_https_proxy_carries_listing_and_downloads_and_no_proxy_bypasses_it(
    https_gcs: tuple[FakeGcs, ObjectSpec],
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine: str,
) -> None:
    server, spec = https_gcs
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.ca_file))
    with connect_proxy() as (proxy_url, log):
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        settings = settings_for(server.url, "tls-models", tmp_path, download_engine=engine)
        assert fetch(settings, spec, tmp_path / "through") == DATA
        assert log.tunnels and set(log.tunnels) == {f"127.0.0.1:{server.port}"}
        assert not log.refused
        # Every connection went through a tunnel: the listing's, and each download thread's.
        assert len(log.tunnels) >= 2

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        tunnels = len(log.tunnels)
        settings = settings_for(server.url, "tls-models", tmp_path, download_engine=engine)
        assert fetch(settings, spec, tmp_path / "direct") == DATA
        assert len(log.tunnels) == tunnels, "NO_PROXY bypassed the proxy"


@pytest.mark.parametrize("engine", ENGINES)
def test_429_and_5xx_are_retried_with_backoff_then_succeed(
    fake_gcs: FakeGcs, bucket: storage.Bucket, tmp_path: Path, engine: str
) -> None:
    blob = bucket.blob(NAME)
    blob.upload_from_string(DATA[:100_000])
    blob.reload()
    spec = ObjectSpec(NAME, "data", 100_000, int(blob.generation or 0), blob.crc32c)
    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.fail_next = [503, 429, 500]
        settings = settings_for(url, bucket.name, tmp_path, download_engine=engine, download_attempts=4)
        assert fetch(settings, spec, tmp_path / "out") == DATA[:100_000]
    assert rules.media_reads[NAME] == 4 and not rules.fail_next


def test_retries_stop_at_the_deadline_with_the_last_error(
    fake_gcs: FakeGcs, bucket: storage.Bucket, tmp_path: Path
) -> None:
    blob = bucket.blob(NAME)
    blob.upload_from_string(b"x" * 1000)
    blob.reload()
    spec = ObjectSpec(NAME, "data", 1000, int(blob.generation or 0), blob.crc32c)
    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.fail_next = [503] * 100
        settings = settings_for(url, bucket.name, tmp_path, download_attempts=10, download_retry_deadline_seconds=0.5)
        with pytest.raises(BucketError, match="HTTP 503"):
            fetch(settings, spec, tmp_path / "out")
    assert 2 <= rules.media_reads[NAME] < 10, "retried, but no new try started after the deadline"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HTTPS_PROXY", "socks5://127.0.0.1:1080", "http:// proxy URL"),
        ("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem", "is not a readable file"),
        ("FLEET_DOWNLOAD_ENGINE", "gsutil", "native"),
    ],
)
def test_bad_network_settings_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        settings_for("http://127.0.0.1:9", "b", tmp_path)
