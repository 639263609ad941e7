"""schemas/: the public message.status schema, the raw envelope and the AsyncAPI document."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from processors.model import (
    CHANNELS,
    ENGAGEMENT,
    ERROR_CATEGORIES,
    MILESTONES,
    STATUSES,
    ErrorInfo,
    rfc3339,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1_700_000_000.0


def load(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


@pytest.fixture(scope="module")
def status_validator() -> Draft202012Validator:
    schema = load("message.status.schema.json")
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def raw_validator() -> Draft202012Validator:
    schema = load("raw.envelope.schema.json")
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def valid_event() -> dict:
    return {
        "specversion": "1.0",
        "type": "message.status",
        "id": "7d1f0c4b9a2e",
        "source": "msgstatus/twilio",
        "subject": "twilio:SM123",
        "time": "2023-11-14T22:13:21.000Z",
        "datacontenttype": "application/json",
        "data": {
            "message_key": "twilio:SM123",
            "provider": "twilio",
            "provider_message_id": "SM123",
            "account": "AC123",
            "channel": "sms",
            "status": "delivered",
            "previous_status": "sent",
            "implied": [],
            "sequence": 2,
            "provider_status": "delivered",
            "error": None,
            "occurred_at": "2023-11-14T22:13:21.000Z",
            "observed_at": "2023-11-14T22:13:21.350Z",
            "emitted_at": "2023-11-14T22:13:21.402+00:00",
        },
    }


def errors(validator: Draft202012Validator, instance: dict) -> list[str]:
    return [e.message for e in validator.iter_errors(instance)]


# --- the schemas themselves ------------------------------------------------------------


@pytest.mark.parametrize("name", ["message.status.schema.json", "raw.envelope.schema.json"])
def test_schema_is_valid_draft_2020_12(name):
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_status_schema_vocabulary_matches_model():
    schema = load("message.status.schema.json")
    defs, data = schema["$defs"], schema["$defs"]["data"]["properties"]
    assert set(defs["status"]["enum"]) == STATUSES
    assert len(defs["status"]["enum"]) == len(STATUSES)
    assert set(defs["engagement_status"]["enum"]) == ENGAGEMENT
    assert set(defs["error"]["properties"]["category"]["enum"]) == ERROR_CATEGORIES
    assert set(data["channel"]["enum"]) == CHANNELS
    assert data["implied"]["items"]["enum"] == list(MILESTONES)
    assert schema["properties"]["type"]["enum"] == ["message.status", "message.engagement"]
    # every field is always there, except the mark only `msgstatus rebuild` sets
    assert set(schema["$defs"]["data"]["required"]) == set(data) - {"correction"}


# --- message.status: valid events ------------------------------------------------------


def test_valid_event(status_validator):
    assert errors(status_validator, valid_event()) == []


def test_valid_first_event_with_error_and_nulls(status_validator):
    event = valid_event()
    event["data"].update(
        status="undelivered",
        previous_status=None,
        implied=[],
        sequence=1,
        account=None,
        provider_status=None,
        occurred_at=None,
        error=ErrorInfo(code="30003", category="unreachable", description=None).to_dict(),
    )
    assert errors(status_validator, event) == []


def test_valid_jump_and_engagement(status_validator):
    event = valid_event()
    event["data"].update(status="read", previous_status=None, implied=["sent", "delivered"])
    assert errors(status_validator, event) == []

    engagement = valid_event()
    engagement["type"] = "message.engagement"
    engagement["data"].update(status="clicked", previous_status="read", sequence=4)
    assert errors(status_validator, engagement) == []


def test_times_made_by_model_rfc3339_validate(status_validator):
    event = valid_event()
    event["time"] = rfc3339(T0)
    event["data"].update(
        occurred_at=rfc3339(T0), observed_at=rfc3339(T0 + 0.5), emitted_at=rfc3339(T0 + 0.75)
    )
    assert errors(status_validator, event) == []


def test_cloudevents_extension_attribute_allowed(status_validator):
    event = valid_event()
    event["partitionkey"] = "twilio:SM123"
    assert errors(status_validator, event) == []


# --- message.status: invalid events ----------------------------------------------------


def _without_sequence(e):
    del e["data"]["sequence"]


def _without_specversion(e):
    del e["specversion"]


INVALID = {
    "missing sequence": _without_sequence,
    "sequence 0": lambda e: e["data"].update(sequence=0),
    "sequence not an integer": lambda e: e["data"].update(sequence=1.5),
    "unknown status": lambda e: e["data"].update(status="delivred"),
    "unknown previous_status": lambda e: e["data"].update(previous_status="bounced"),
    "unknown error category": lambda e: e["data"].update(
        error={"code": "1", "category": "bad_luck", "description": None}
    ),
    "extra error field": lambda e: e["data"].update(
        error={"code": "1", "category": "unknown", "description": None, "x": 1}
    ),
    "extra data field": lambda e: e["data"].update(retries=3),
    "unknown channel": lambda e: e["data"].update(channel="pigeon"),
    "implied not a milestone": lambda e: e["data"].update(implied=["queued"]),
    "implied repeated": lambda e: e["data"].update(implied=["sent", "sent"]),
    "bad message_key": lambda e: e["data"].update(message_key="SM123"),
    "observed_at not a time": lambda e: e["data"].update(observed_at="yesterday"),
    "observed_at a number": lambda e: e["data"].update(observed_at=T0),
    "account a number": lambda e: e["data"].update(account=42),
    "wrong specversion": lambda e: e.update(specversion="0.3"),
    "missing specversion": _without_specversion,
    "wrong type": lambda e: e.update(type="message.updated"),
    "wrong source": lambda e: e.update(source="twilio"),
    "wrong datacontenttype": lambda e: e.update(datacontenttype="text/plain"),
    "time without zone": lambda e: e.update(time="2023-11-14T22:13:21"),
    "engagement word as message.status": lambda e: e["data"].update(status="clicked"),
    "status word as message.engagement": lambda e: e.update(type="message.engagement"),
    "bad extension attribute name": lambda e: e.update({"Partition-Key": "x"}),
}


@pytest.mark.parametrize("mutate", INVALID.values(), ids=INVALID.keys())
def test_invalid_event_rejected(status_validator, mutate):
    event = valid_event()
    mutate(event)
    assert errors(status_validator, event), "schema accepted an invalid event"


@pytest.mark.parametrize(
    "field",
    [
        "message_key",
        "provider",
        "provider_message_id",
        "account",
        "channel",
        "status",
        "previous_status",
        "implied",
        "provider_status",
        "error",
        "occurred_at",
        "observed_at",
        "emitted_at",
    ],
)
def test_every_data_field_is_required(status_validator, field):
    event = valid_event()
    del event["data"][field]
    assert errors(status_validator, event)


# --- raw envelope ----------------------------------------------------------------------


def test_raw_envelope_example_is_valid(raw_validator):
    schema = load("raw.envelope.schema.json")
    assert schema["examples"]
    for example in schema["examples"]:
        assert errors(raw_validator, example) == []


def test_raw_envelope_polled_record(raw_validator):
    record = copy.deepcopy(load("raw.envelope.schema.json")["examples"][0])
    record["topic"] = "test-1234.raw.ryze"
    record["headers"].update(
        {
            "msgstatus-provider": "ryze",
            "msgstatus-method": "GET",
            "msgstatus-polled": "1",
            "msgstatus-received-at": "1700000000",
        }
    )
    assert errors(raw_validator, record) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["headers"].pop("msgstatus-provider"),
        lambda r: r["headers"].pop("msgstatus-received-at"),
        lambda r: r["headers"].update({"msgstatus-received-at": "2023-11-14T22:13:21Z"}),
        lambda r: r["headers"].update({"msgstatus-polled": "true"}),
        lambda r: r["headers"].update({"x-twilio-signature": "abc"}),  # needs the h- prefix
        lambda r: r.update(key="not hex"),
        lambda r: r.pop("value"),
    ],
    ids=[
        "no provider",
        "no received-at",
        "received-at not epoch",
        "polled not 1",
        "unprefixed header",
        "key not hex",
        "no value",
    ],
)
def test_raw_envelope_invalid(raw_validator, mutate):
    record = copy.deepcopy(load("raw.envelope.schema.json")["examples"][0])
    mutate(record)
    assert errors(raw_validator, record)


# --- AsyncAPI --------------------------------------------------------------------------


def test_asyncapi_document_names_every_topic_and_schema():
    text = (SCHEMAS / "asyncapi.yaml").read_text()
    assert text.startswith("asyncapi: 2.6.0\n")
    channels = set(re.findall(r"^  ([a-z.{}]+):$", text.split("\ncomponents:")[0], re.M))
    assert channels >= {
        "raw.{provider}",
        "status.canonical",
        "status.transitions",
        "message.status",
        "status.deadletter",
    }
    for ref in re.findall(r'\$ref: "\./([^"]+)"', text):
        assert (SCHEMAS / ref).is_file(), ref
    assert '$ref: "./message.status.schema.json"' in text
    assert "\t" not in text
