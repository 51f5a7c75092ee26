"""The one name for "a decoded JSON value" (the content type is
:data:`crivline.httpserver.APPLICATION_JSON`)."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any  # what orjson.loads returns: dict, list, str, int, float, bool, None
