#!/usr/bin/env python3
"""Connectivity smoke check: write one point with the configured INFLUXDB_* settings, read it back.

Prints the round-trip latency and the server's version and exits 0, or prints one diagnosis
(name resolution, connection refused, TLS, credentials, not found, timeout) and exits non-zero.
The same as `tplr-metrics check`.
"""

from __future__ import annotations

import sys

from tplr_metrics.cli import main

if __name__ == "__main__":
    sys.exit(main(["check", *sys.argv[1:]]))
