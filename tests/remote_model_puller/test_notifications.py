"""Bucket notifications as the puller reads them: GCS's attributes → an event, a sync target, and whether
a listing already covers it (so duplicates and reordered deliveries cost nothing). No server needed."""

from __future__ import annotations

import pytest

from services.local_fleet.pubsub import PACKAGE, PubSubEmulator
from services.remote_model_puller.listing import FLEET_TARGET
from services.remote_model_puller.notifications import BucketEvent, NotANotification, target_of
from services.remote_model_puller.settings import Settings


def attributes(name: str, kind: str = "OBJECT_FINALIZE", generation: str = "7", bucket: str = "b") -> dict[str, str]:
    # What GCS sends (fake-gcs-server sends the same, plus eventTime / overwroteGeneration).
    return {
        "eventType": kind,
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": generation,
        "payloadFormat": "JSON_API_V1",
        "overwroteGeneration": "6",
    }


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("models/ranker/3/saved_model.pb", "ranker"),
        ("models/ranker/003/variables/variables.index", "ranker"),
        ("models/_fleet/state.json", FLEET_TARGET),
        ("models/_fleet/golden/ranker.json", FLEET_TARGET),
        ("models/_fleet/audit/2026-ranker-1.json", None),  # an audit record changes nothing on a node
        ("models/README", None),
        ("models/.tmp/x/1/saved_model.pb", None),
        ("other/ranker/1/saved_model.pb", None),
    ],
)
def test_each_object_maps_to_the_sync_it_needs(name: str, target: str | None) -> None:
    event = BucketEvent.from_attributes(attributes(name))
    assert target_of(event, bucket="b", prefix="models/") == target


def test_another_buckets_events_are_not_ours() -> None:
    event = BucketEvent.from_attributes(attributes("models/ranker/1/saved_model.pb", bucket="elsewhere"))
    assert target_of(event, bucket="b", prefix="models/") is None


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectGeneration": "1"}, "objectId"),
        ({**attributes("models/m/1/x"), "eventType": "PING"}, "eventType"),
        ({**attributes("models/m/1/x"), "objectGeneration": "abc"}, "objectGeneration"),
        ({}, "eventType"),
    ],
)
def test_a_message_that_is_not_a_notification_is_refused_with_the_reason(attrs: dict[str, str], reason: str) -> None:
    with pytest.raises(NotANotification, match=reason):
        BucketEvent.from_attributes(attrs)


def test_a_listing_covers_new_generations_removals_and_stale_deliveries() -> None:
    name = "models/m/1/saved_model.pb"
    listed = {name: 8}
    finalize = BucketEvent.from_attributes(attributes(name, generation="8"))
    assert finalize.reflected_in(listed) and finalize.reflected_in({name: 9})
    assert not BucketEvent.from_attributes(attributes(name, generation="9")).reflected_in(listed)
    # A removal of generation 7 arriving after 8 was listed (reordered): nothing left to do.
    assert BucketEvent.from_attributes(attributes(name, "OBJECT_DELETE", "7")).reflected_in(listed)
    assert not BucketEvent.from_attributes(attributes(name, "OBJECT_DELETE", "8")).reflected_in(listed)
    assert BucketEvent.from_attributes(attributes(name, "OBJECT_DELETE", "8")).reflected_in({})


def test_events_are_opt_in_and_each_node_gets_its_own_subscription() -> None:
    assert not Settings(hostname="n").events_enabled
    assert not Settings(hostname="n", events_project="p", events_topic="").events_enabled
    settings = Settings(hostname="gpu node/7", events_project="p", events_topic="t")
    assert settings.events_enabled and settings.subscription_id() == "modelfleet-puller-gpu-node-7"
    assert Settings(hostname="n", events_subscription="mine").subscription_id() == "mine"


def test_without_the_emulator_package_the_fixture_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match=PACKAGE):
        PubSubEmulator().start()
