"""The event contract in schemas/ is whole: every type has a schema, an example
that validates, and a place in the AsyncAPI document; the services validate
with the same files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from services.kit.envelope import SchemaRegistry

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EVENT_FILES = sorted((SCHEMAS / "events").glob("*.json"))


def asyncapi() -> dict:
    return yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_each_schema_is_draft_07_and_its_examples_validate(path):
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema.get("examples"), "one realistic example per type"
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    for example in schema["examples"]:
        errors = [e.message for e in validator.iter_errors(example)]
        assert errors == []


def test_every_event_type_is_in_the_asyncapi_document_and_every_message_has_its_schema():
    messages = asyncapi()["components"]["messages"]
    refs = {name: m["payload"].get("$ref") for name, m in messages.items()}
    assert {p.stem for p in EVENT_FILES} == set(messages)
    assert all(ref == f"./events/{name}.json" for name, ref in refs.items()), refs


def test_every_message_is_carried_by_a_channel():
    document = asyncapi()
    carried = set()
    for channel in document["channels"].values():
        for operation in ("publish", "subscribe"):
            message = channel.get(operation, {}).get("message", {})
            for ref in [message, *message.get("oneOf", [])]:
                if "$ref" in ref:
                    carried.add(ref["$ref"].rsplit("/", 1)[1])
    assert carried == set(document["components"]["messages"])


def test_the_services_registry_knows_every_type():
    assert SchemaRegistry(SCHEMAS).types == {p.stem for p in EVENT_FILES}
