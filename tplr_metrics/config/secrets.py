"""Secrets: cleaned where they enter, hidden wherever text leaves, and never made into tags.

* A token or password is stripped of surrounding whitespace wherever it comes from (an argument,
  an environment variable, a file read with its trailing newline): a newline in it made the
  HTTP library refuse the header and print the whole value in its error.
* ``redact`` hides every spelling a secret takes in a message: as it is, as ``repr``/JSON escape
  it, and inside an HTTP Basic header (base64 of ``user:password``), which a 401 body may echo.
  A secret shorter than 8 characters is redacted only where it stands as a word of its own
  (between characters that are not letters or digits): replacing every ``a`` of a message
  would hide the message instead. A 401 body echoing a 7-character password is still hidden.
* ``looks_secret`` names the configuration attributes that never become ``config_*`` tags or a
  run's stored config (``wandb_api_key``, ``influxdb_token``, ``hf_password``, ...).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable

MIN_SECRET_LENGTH = 8

_SECRET_WORDS = (
    "token",
    "password",
    "passwd",
    "secret",
    "apikey",
    "api_key",
    "credential",
    "private",
    "privkey",
    "mnemonic",
    "seed_phrase",
    "seedphrase",
)
_SECRET_PARTS = frozenset({"key", "auth", "pwd", "pass", "passphrase", "authorization", "cookie"})
_PARTS = re.compile(r"[^a-z0-9]+")


def clean_secret(value: str | None) -> str | None:
    """A token or password without surrounding whitespace; None when nothing is left."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def secret_forms(*secrets: str | None, username: str | None = None) -> list[str]:
    """Every spelling of the secrets a message may carry, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for form in (secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], secret.strip()):
            forms.add(form)
        basic = f"{username or ''}:{secret}".encode()
        forms.add(base64.b64encode(basic).decode())
        forms.add(base64.b64encode(secret.encode()).decode())
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (in the forms ``secret_forms`` gives, or as passed) hidden; a
    short one only as a word of its own."""
    for secret in secrets:
        if not secret:
            continue
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
        elif secret in text:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def looks_secret(name: str) -> bool:
    """Whether a configuration attribute's name says it holds a secret."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return True
    camel = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    return any(part in _SECRET_PARTS for part in _PARTS.split(camel))
