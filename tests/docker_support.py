"""Skip tests that need a Docker engine (testcontainers) where none is reachable, saying so."""

from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=1)
def docker_unavailable_reason() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:
        return f"no Docker engine reachable for testcontainers ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def require_docker() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
