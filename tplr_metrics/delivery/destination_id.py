"""Which destination a lane (and its spool) belongs to, described without secrets.

A spool directory is named by the fingerprint of its destination, so points left by a dead
process are only ever adopted by a lane that writes to the same place: the same server URL and
database/bucket/org, the same store file, the same log directory. A token or password is never
part of the description (nor of the name).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def describe_destination(sink: object) -> dict[str, Any]:
    """``sink.destination()`` when the sink has one, else its class and name."""
    describe = getattr(sink, "destination", None)
    if callable(describe):
        try:
            found = describe()
        except Exception:
            found = None
        if isinstance(found, dict) and found:
            return {
                str(k): v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in found.items()
            }
    kind = type(sink)
    return {"kind": f"{kind.__module__}.{kind.__qualname__}", "name": str(getattr(sink, "name", ""))}


def fingerprint(description: dict[str, Any]) -> str:
    """A short stable name for a destination: 16 hex digits of the SHA-256 of its description."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe_text(description: dict[str, Any]) -> str:
    """One line for messages: ``influxdb-v1 http://127.0.0.1:8086 database=team_a``."""
    kind = description.get("kind", "?")
    rest = " ".join(f"{k}={v}" for k, v in sorted(description.items()) if k != "kind" and v not in (None, ""))
    return f"{kind} {rest}".strip()
