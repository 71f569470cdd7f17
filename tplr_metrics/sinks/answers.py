"""What an InfluxDB-family server's refusal says, point by point.

A 400/422 answer to a batch may mean "I stored all but these": the sink must count as written
only what the answer proves stored. Each server family words it differently:

* InfluxDB 1.x (and 2.x's storage engine): ``partial write: <reasons> dropped=N``. Parse errors
  come as ``unable to parse '<line>': <why>``, one per bad line, and are *not* in ``dropped``;
  field type conflicts and retention refusals are counted in ``dropped`` and named only by
  their kind (``field type conflict: input field "f" on measurement "m" is type …``, which
  does not say which points: a field's type is per shard) or not at all (``points beyond
  retention policy``). A long message may be cut off (no ``dropped=``).
* InfluxDB 2.x's parser and InfluxDB Cloud / 3.x Dedicated: ``errors encountered on line(s):``
  then ``line 6: <why>`` (2.x, ``;``-separated) or ``error parsing line 2 (1-based): <why>``
  (newline-separated), 1-based line numbers, at most 100 of them.
* InfluxDB 3 Core/Enterprise: JSON ``{"error": "partial write of line protocol occurred",
  "data": [{"original_line": …, "line_number": …, "error_message": …}]}`` (or one such object).

``read_refusal`` returns which lines of the batch were refused, with the server's reason for
each, and whether that list is known to be complete. When it is not (a cut message, refusals
counted but not named), the sink finds the rest itself (see ``influxdb.py``); it never guesses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_DROPPED = re.compile(r"dropped=(\d+)\s*$")
_UNABLE = "unable to parse '"
_UNABLE_TO_PARSE = re.compile(r"unable to parse '(.*?)'(?:: ([^\n]*?))?(?= dropped=\d+\s*$|\n|$)")
# A listing item starts the message or follows ':', ';' or a newline: "line 2:" inside a quoted
# line's text (a string value) is not one.
_NUMBERED = re.compile(r"(?:(?<=[:;\n])|^)\s*(?:error parsing )?line (\d+)(?: \(1-based\))?: ?")
_TYPE_CONFLICT = re.compile(
    r'input field \\?"(?P<field>.+?)\\?" on measurement \\?"(?P<measurement>.+?)\\?" is type (?P<type>\w+)'
)
LISTED_AT_MOST = 100  # InfluxDB 2.x/Cloud name at most this many bad lines in one answer


@dataclass
class Refusal:
    """What the answer says about a batch: the refused lines it names, and whether that is all."""

    partial: bool  # the server says it stored the other points
    named: dict[int, str] = field(default_factory=dict)  # 0-based line -> the server's reason
    complete: bool = True  # False: more were refused than it named (or it could not be read)
    message: str = ""  # the whole message, for reasons of points it did not name


def server_message(body: Any) -> str:
    """The human part of an answer: its ``message``/``error`` field, or the text."""
    data = _json(body)
    if isinstance(data, dict):
        for key in ("message", "error"):
            if data.get(key):
                return str(data[key])[:2000]
    return _text(body).strip()[:2000]


def read_refusal(body: Any, lines: Sequence[str]) -> Refusal:
    """Which of ``lines`` (the batch as sent) a 4xx answer refused."""
    data = _json(body)
    message = server_message(body)
    text = message if not isinstance(data, dict) else str(data.get("message") or data.get("error") or "")
    entries = data.get("data") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        entries = [entries]
    partial = "partial write" in text.lower() or bool(entries)
    refusal = Refusal(partial=partial, message=message)
    if isinstance(entries, list) and entries:
        for entry in entries:
            if not isinstance(entry, dict):
                refusal.complete = False
                continue
            index = _line_index(entry.get("line_number"), entry.get("original_line"), lines)
            if index is None:
                refusal.complete = False
            else:
                refusal.named[index] = str(entry.get("error_message") or message)[:500]
        refusal.complete = refusal.complete and len(entries) < LISTED_AT_MOST
        return refusal
    if "errors encountered on line(s)" in text or _NUMBERED.search(text):
        found = list(_NUMBERED.finditer(text))
        for k, match in enumerate(found):
            end = found[k + 1].start() if k + 1 < len(found) else len(text)
            reason = text[match.end() : end].strip().rstrip(";").strip()
            index = _line_index(match.group(1), None, lines)
            if index is None:
                refusal.complete = False
            else:
                refusal.named[index] = reason[:500] or message
        refusal.complete = refusal.complete and bool(found) and len(found) < LISTED_AT_MOST
        if not partial and found:
            refusal.partial = True  # 2.x and Cloud store the lines they do not name
        return refusal
    if not partial:
        return refusal  # the whole body was refused: the caller splits it
    dropped_match = _DROPPED.search(text)
    if dropped_match is None:
        refusal.complete = False  # cut off: there may be more than it names
    dropped = int(dropped_match.group(1)) if dropped_match else 0
    # A quoted line is the line as sent (its leading whitespace may be gone); 1.x does not escape
    # a quote inside it, so a line holding "'" is looked for in the text instead.
    by_text: dict[str, list[int]] = {}
    for index, line in enumerate(lines):
        by_text.setdefault(line.lstrip(" \t"), []).append(index)
    occurrences = text.count(_UNABLE)
    for match in _UNABLE_TO_PARSE.finditer(text):
        free = [i for i in by_text.get(match.group(1).lstrip(" \t"), []) if i not in refusal.named]
        if free:
            refusal.named[free[0]] = f"unable to parse: {match.group(2) or ''}".strip()[:500]
    if len(refusal.named) < occurrences:
        for index, line in enumerate(lines):
            awkward = "'" in line or "\n" in line  # what the quick reading above may miss
            if index not in refusal.named and awkward and _UNABLE + line.lstrip(" \t") + "'" in text:
                refusal.named[index] = text[:500]
    if len(refusal.named) != occurrences:
        refusal.complete = False
    if dropped:
        # A type conflict or a retention refusal names no line. (Guessing the points of a conflict
        # by measurement, field and type is wrong: 1.x keeps a field's type per shard, and points of
        # another week with the same field and type were stored.) The sink finds them.
        if dropped + len(refusal.named) >= len(lines):  # every point was refused
            for index in range(len(lines)):
                refusal.named.setdefault(index, text[:500])
        else:
            refusal.complete = False
    return refusal


def _line_index(number: Any, original: Any, lines: Sequence[str]) -> int | None:
    try:
        index = int(number) - 1
    except (TypeError, ValueError):
        index = -1
    if 0 <= index < len(lines) and (not isinstance(original, str) or _same_line(lines[index], original)):
        return index
    if isinstance(original, str):
        return _quoted_line(original, lines, {})
    return None


def _same_line(sent: str, quoted: str) -> bool:
    """The server may quote a line with its leading whitespace gone."""
    return sent == quoted or sent.lstrip(" \t") == quoted.lstrip(" \t")


def _quoted_line(quoted: str, lines: Sequence[str], taken: dict[int, str]) -> int | None:
    """The first line not taken yet that the server quoted."""
    for index, line in enumerate(lines):
        if index not in taken and _same_line(line, quoted):
            return index
    return None


def int_field(message: str) -> tuple[str, str] | None:
    """(measurement, field) when a type conflict says the server holds the field as integer."""
    match = _TYPE_CONFLICT.search(message)
    if match and "already exists as type integer" in message:
        return match["measurement"], match["field"]
    return None


def float_field(message: str) -> tuple[str, str] | None:
    """(measurement, field) when a type conflict says the server holds the field as float."""
    match = _TYPE_CONFLICT.search(message)
    if match and "already exists as type float" in message:
        return match["measurement"], match["field"]
    return None


def cause_of(message: str) -> str:
    """A short stable key for stats() from the server's reason."""
    lowered = message.lower()
    if "field type conflict" in lowered or "schema" in lowered and "conflict" in lowered:
        return "field_type_conflict"
    if "unable to parse" in lowered or "cannot parse" in lowered or "parsing line" in lowered or "invalid" in lowered:
        return "bad_line"
    if "retention" in lowered:
        return "outside_retention"
    if "max-values-per-tag" in lowered or "max-series-per-database" in lowered:
        return "series_limit"
    return "bad_request"


def _text(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return "" if body is None else str(body)


def _json(body: Any) -> Any:
    text = _text(body).strip()
    if not text.startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
