"""The error a logger raises when it is built with arguments or files it cannot use."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """The logger's arguments or environment do not describe a usable destination."""
