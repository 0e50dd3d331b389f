"""JSON Schema export of the event model, kept in docs/ for non-Python producers."""

from __future__ import annotations

import json
from pathlib import Path

from touchstream.schemas.touchpoint import TouchpointEvent

SCHEMA_FILE = Path("docs") / "touchpoint-event.schema.json"


def render() -> str:
    schema = TouchpointEvent.model_json_schema(mode="validation")
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(path: Path = SCHEMA_FILE) -> Path:
    path.write_text(render(), encoding="utf-8")
    return path
