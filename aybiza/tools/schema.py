"""The JSON-schema subset tool arguments are declared in, and checked against before a tool runs.

An agent file declares each HTTP tool's arguments as a JSON schema object;
the same schema goes to the model (Bedrock's ``inputSchema.json``, OpenAI's
``parameters``). Models do not always keep to it, so the arguments they send
are checked here first, and a call that does not fit is answered with an
error result naming the problem — the model can then ask the caller, or call
again — instead of reaching the service.

Supported keywords (anything else in an agent file is a configuration
error, so a schema never silently means less than it says): ``type``
(``object``, ``string``, ``integer``, ``number``, ``boolean``, ``array``),
``description``, ``properties``, ``required``, ``additionalProperties``
(boolean), ``items``, ``enum``, ``minimum``, ``maximum``, ``minLength``,
``maxLength``, ``pattern``, ``minItems``, ``maxItems``, ``format`` and
``default`` (both passed to the model, not checked).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["check_schema", "problems"]

_TYPES = frozenset({"object", "string", "integer", "number", "boolean", "array"})
_KEYWORDS = frozenset({
    "type", "description", "properties", "required", "additionalProperties", "items", "enum", "minimum",
    "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "format", "default", "title",
})


def check_schema(schema: Mapping[str, Any], *, where: str = "parameters") -> None:
    """Raise ``ValueError`` naming the first thing in ``schema`` outside the supported subset."""
    if not isinstance(schema, Mapping):
        raise ValueError(f"{where} must be a JSON schema object")
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"{where}: unsupported schema keyword(s) {sorted(unknown)}")
    kind = schema.get("type")
    if kind not in _TYPES:
        raise ValueError(f"{where}: type must be one of {sorted(_TYPES)}, not {kind!r}")
    if "pattern" in schema:
        try:
            re.compile(str(schema["pattern"]))
        except re.error as error:
            raise ValueError(f"{where}: pattern is not a regular expression: {error}") from None
    if "enum" in schema and not isinstance(schema["enum"], list | tuple):
        raise ValueError(f"{where}: enum must be a list")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise ValueError(f"{where}: properties must be a mapping")
    for name, sub in properties.items():
        check_schema(sub, where=f"{where}.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list | tuple) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{where}: required must be a list of property names")
    missing = [r for r in required if r not in properties]
    if missing:
        raise ValueError(f"{where}: required names unknown properties {missing}")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        raise ValueError(f"{where}: additionalProperties must be true or false")
    if "items" in schema:
        check_schema(schema["items"], where=f"{where}[]")


def problems(value: Any, schema: Mapping[str, Any], *, where: str = "") -> list[str]:
    """What is wrong with ``value`` under ``schema`` (a checked schema), as short sentences; [] if nothing."""
    name = where or "the arguments"
    kind = schema.get("type")
    if not _is(value, kind):
        return [f"{name} must be {'an' if str(kind)[0] in 'aeiou' else 'a'} {kind}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{name} must be one of {list(schema['enum'])}")
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{name} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{name} must be at most {schema['maximum']}")
    elif kind == "string":
        if "minLength" in schema and len(value) < schema["minLength"]:
            found.append(f"{name} must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{name} must have at most {schema['maxLength']} characters")
        if "pattern" in schema and re.search(str(schema["pattern"]), value) is None:
            found.append(f"{name} must match {schema['pattern']}")
    elif kind == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            found.append(f"{name} must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{name} must have at most {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                found += problems(item, schema["items"], where=f"{name}[{index}]")
    elif kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        for required in schema.get("required", []):
            if required not in value:
                found.append(f"{_join(where, required)} is missing")
        if schema.get("additionalProperties") is False:
            found += [f"{_join(where, key)} is not an argument of this tool" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                found += problems(item, properties[key], where=_join(where, key))
    return found


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is(value: Any, kind: Any) -> bool:
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "array":
        return isinstance(value, list | tuple)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False
