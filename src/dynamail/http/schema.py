"""Type-checked request bodies, described once for validation and OpenAPI.

A body is a :class:`Body` of named fields; each field knows how to check a
decoded JSON value (type, size, depth) and how to describe itself as a JSON
Schema fragment.  Handlers receive only values that passed the check, so a
wrong type is a ``400 bad_request`` before any operation runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dynamail.http.errors import ApiError
from dynamail.http.limits import (
    MAX_JSON_DEPTH,
    MAX_SETTING_KEY,
    MAX_SETTINGS_KEYS,
    MAX_STRING,
)


class Field:
    description: str = ""
    required: bool = False

    def check(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class Str(Field):
    description: str = ""
    required: bool = False
    max_length: int = MAX_STRING

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ApiError("bad_request", f"{where} must be a string")
        if len(value) > self.max_length:
            raise ApiError("bad_request", f"{where} is longer than {self.max_length} characters")
        if "\x00" in value:
            raise ApiError("bad_request", f"{where} contains a NUL character")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length, "description": self.description}


@dataclass
class Bool(Field):
    description: str = ""
    required: bool = False

    def check(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise ApiError("bad_request", f"{where} must be true or false")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean", "description": self.description}


@dataclass
class StrList(Field):
    description: str = ""
    required: bool = False
    max_items: int = 100
    max_length: int = 128

    def check(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or len(value) > self.max_items:
            raise ApiError("bad_request", f"{where} must be a list of at most {self.max_items} strings")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item or len(item) > self.max_length:
                raise ApiError("bad_request", f"{where} must contain only non-empty strings")
            out.append(item)
        return out

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {"type": "string", "maxLength": self.max_length},
            "maxItems": self.max_items,
            "description": self.description,
        }


@dataclass
class AlertList(Field):
    """A list of alerts: objects with ``text`` and optionally ``time``."""

    description: str = ""
    required: bool = False
    max_items: int = 1000

    def check(self, value: Any, where: str) -> list[dict[str, str]]:
        if not isinstance(value, list) or len(value) > self.max_items:
            raise ApiError("bad_request", f"{where} must be a list of at most {self.max_items} alerts")
        out: list[dict[str, str]] = []
        for item in value:
            if not isinstance(item, dict) or set(item) - {"text", "time", "stamp"} or "text" not in item:
                raise ApiError("bad_request", f"{where}: each alert is an object with text (and time)")
            alert: dict[str, str] = {}
            for key, limit in (("text", MAX_STRING), ("time", 64), ("stamp", 64)):
                if key in item:
                    v = item[key]
                    if not isinstance(v, str) or len(v) > limit or "\x00" in v:
                        raise ApiError("bad_request", f"{where}: alert {key} must be a string")
                    alert[key] = v
            out.append(alert)
        return out

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "maxItems": self.max_items,
            "description": self.description,
            "items": {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}, "time": {"type": "string", "format": "date-time"}},
            },
        }


def _check_json_value(value: Any, where: str, depth: int) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ApiError("bad_request", f"{where} is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError("bad_request", f"{where} is not a finite number")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ApiError("bad_request", f"{where} is too long")
        return value
    if isinstance(value, list):
        if len(value) > MAX_SETTINGS_KEYS:
            raise ApiError("bad_request", f"{where} has too many items")
        return [_check_json_value(v, where, depth + 1) for v in value]
    if isinstance(value, dict):
        return _check_dict(value, where, depth + 1)
    raise ApiError("bad_request", f"{where} has an unsupported type")


def _check_dict(value: Any, where: str, depth: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError("bad_request", f"{where} must be an object")
    if len(value) > MAX_SETTINGS_KEYS:
        raise ApiError("bad_request", f"{where} has more than {MAX_SETTINGS_KEYS} keys")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_SETTING_KEY:
            raise ApiError("bad_request", f"{where} has an invalid key")
        if any(ord(ch) < 32 or ch in "/\\" for ch in key):
            raise ApiError("bad_request", f"{where} key {key!r} contains a forbidden character")
        out[key] = _check_json_value(item, f"{where}.{key}", depth)
    return out


@dataclass
class Settings(Field):
    """A settings (or preferences) dictionary: string keys, JSON values.
    The value ``"default"`` removes a key so the inherited value applies."""

    description: str = "settings dictionary; the value \"default\" removes a key"
    required: bool = False

    def check(self, value: Any, where: str) -> dict[str, Any]:
        return _check_dict(value, where, 1)

    def json_schema(self) -> dict[str, Any]:
        return {"$ref": "#/components/schemas/Settings"}


@dataclass
class Body:
    fields: dict[str, Field] = field(default_factory=dict)
    description: str = ""

    def check(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ApiError("bad_request", "the request body must be a JSON object")
        unknown = set(data) - set(self.fields)
        if unknown:
            raise ApiError("bad_request", f"unknown field {sorted(unknown)[0]!r}")
        out: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if name not in data:
                if spec.required:
                    raise ApiError("bad_request", f"field {name!r} is required")
                continue
            out[name] = spec.check(data[name], name)
        return out

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: spec.json_schema() for name, spec in self.fields.items()},
            "required": [name for name, spec in self.fields.items() if spec.required],
        }


@dataclass
class SettingsBody(Body):
    """A body that *is* a settings dictionary (PATCH/PUT of settings)."""

    def check(self, data: Any) -> dict[str, Any]:
        return _check_dict(data, "body", 1)

    def json_schema(self) -> dict[str, Any]:
        return {"$ref": "#/components/schemas/Settings"}
