"""Plain JSON data for the replicated types: canonical text, and the checks that turn malformed
input into a ValueError naming the field, since replicated state arrives from other processes.
"""

from __future__ import annotations

import json
from typing import Any, Iterable


def canonical_json(value: Any) -> str:
    """Sorted keys and no spaces: equal JSON data gives equal text, whatever order it was built in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def as_plain(value: Any, what: str) -> tuple[Any, str]:
    """``value`` as JSON gives it back (tuples become lists, numeric object keys strings), with
    its canonical text: what is stored is exactly what every replica will read from the wire."""
    try:
        text = canonical_json(value)
    except (TypeError, ValueError) as exc:
        kinds = "null, booleans, finite numbers, strings, arrays, objects"
        raise ValueError(f"{what} must be JSON data ({kinds}): {exc}") from exc
    return json.loads(text), text


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), "an object" if isinstance(value, dict) else type(value).__name__)


def node_id(value: Any, where: str) -> str:
    if type(value) is not str or not value:
        raise ValueError(f"{where} must be a non-empty string (a node id), not {json_type(value)}")
    return value


def natural(value: Any, where: str, minimum: int = 0) -> int:
    """An integer of at least ``minimum``; booleans are refused (JSON tells them apart)."""
    if type(value) is not int or value < minimum:
        shown = value if type(value) is int else json_type(value)
        raise ValueError(f"{where} must be an integer >= {minimum}, not {shown}")
    return value


def json_object(data: Any, where: str) -> dict[str, Any]:
    if type(data) is not dict:
        raise ValueError(f"{where} must be a JSON object, not {json_type(data)}")
    return data


def json_array(data: Any, where: str) -> list[Any]:
    if type(data) is not list:
        raise ValueError(f"{where} must be a JSON array, not {json_type(data)}")
    return data


def exact_fields(data: dict[str, Any], where: str, names: Iterable[str]) -> None:
    """Exactly the fields ``names``: a missing field or one these types do not know means the
    data was not written by them, and guessing could lose updates."""
    expected = set(names)
    missing, unexpected = sorted(expected - data.keys()), sorted(data.keys() - expected)
    if missing:
        raise ValueError(f"{where}: missing field '{missing[0]}'")
    if unexpected:
        raise ValueError(f"{where}: unexpected field '{unexpected[0]}'")


def fresh(value: Any, text: str) -> Any:
    """A copy of stored JSON data for the caller (scalars need none): changing what a value
    handed out must not change the value itself."""
    return json.loads(text) if isinstance(value, (list, dict)) else value
