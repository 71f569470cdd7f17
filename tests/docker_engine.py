"""Whether a Docker engine is reachable, for tests that need testcontainers (skipped otherwise)."""

from __future__ import annotations

import functools
import shutil


@functools.lru_cache(maxsize=1)
def docker_unavailable() -> str | None:
    """None when an engine answers; otherwise the reason, for pytest.skip."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed (pip install testcontainers)"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}: {str(exc)[:160]})"
    return None


def compose_unavailable() -> str | None:
    reason = docker_unavailable()
    if reason:
        return reason
    if shutil.which("docker") is None:
        return "the docker CLI (with the compose plugin) is not installed"
    return None
