"""Reads JSON request bodies and validates their fields, answering 400 like OpenAI."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from starlette.requests import Request

from tollhouse_simulator.errors import INVALID_JSON, bad_request

Body = dict[str, Any]

_JSON_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "an unknown type")


async def read_json(request: Request, allowed: Collection[str]) -> Body:
    """The request's JSON object; unknown fields are refused as OpenAI does."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request(INVALID_JSON) from None
    if not isinstance(data, dict):
        raise bad_request(
            "Invalid type for request body: expected an object, but got "
            f"{json_type(data)} instead.",
            code="invalid_type",
        )
    for key in data:
        if key not in allowed:
            raise bad_request(
                f"Unrecognized request argument supplied: {key}", code="unknown_parameter"
            )
    return data


def invalid_type(param: str, expected: str, value: object) -> Exception:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> Exception:
    return bad_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def required_str(body: Body, key: str, prefix: str = "") -> str:
    if body.get(key) is None:
        raise missing(prefix + key)
    value = optional_str(body, key, prefix=prefix)
    assert value is not None
    return value


def optional_str(
    body: Body, key: str, *, max_length: int | None = None, prefix: str = ""
) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_type(prefix + key, "a string", value)
    if max_length is not None and len(value) > max_length:
        raise bad_request(
            f"Invalid '{prefix}{key}': string too long. Expected a string with maximum length "
            f"{max_length}, but got a string with length {len(value)} instead.",
            param=prefix + key,
            code="string_above_max_length",
        )
    return value


def optional_number(body: Body, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(key, "a decimal", value)
    if not low <= value <= high:
        raise bad_request(
            f"Invalid '{key}': expected a value between {low} and {high}, but got {value} instead.",
            param=key,
            code="invalid_value",
        )
    return float(value)


def optional_int(body: Body, key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(key, "an integer", value)
    if value < low:
        raise bad_request(
            f"Invalid '{key}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=key,
            code="integer_below_min_value",
        )
    if high is not None and value > high:
        raise bad_request(
            f"Invalid '{key}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=key,
            code="integer_above_max_value",
        )
    return value


def optional_bool(body: Body, key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid_type(key, "a boolean", value)
    return value


def optional_object(body: Body, key: str, prefix: str = "") -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(prefix + key, "an object", value)
    return value


def string_list(body: Body, key: str, *, max_items: int, prefix: str = "") -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_type(prefix + key, "an array", value)
    if len(value) > max_items:
        raise bad_request(
            f"Invalid '{prefix}{key}': array too long. Expected an array with maximum length "
            f"{max_items}, but got an array with length {len(value)} instead.",
            param=prefix + key,
            code="array_above_max_length",
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid_type(f"{prefix}{key}[{index}]", "a string", item)
    return list(value)


def metadata(body: Body, key: str = "metadata") -> dict[str, str] | None:
    """Up to 16 string pairs (keys <= 64 chars, values <= 512 chars); None when absent."""
    value = optional_object(body, key)
    if value is None:
        return None
    if len(value) > 16:
        raise bad_request(
            f"Invalid '{key}': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param=key,
            code="object_above_max_properties",
        )
    for name, item in value.items():
        if len(name) > 64:
            raise bad_request(
                f"Invalid '{key}': key '{name[:70]}' is longer than 64 characters.", param=key
            )
        if not isinstance(item, str):
            raise invalid_type(f"{key}.{name}", "a string", item)
        if len(item) > 512:
            raise bad_request(
                f"Invalid '{key}.{name}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(item)} instead.",
                param=f"{key}.{name}",
                code="string_above_max_length",
            )
    return dict(value)
