#!/usr/bin/env python3
"""Simulated Templar evaluators logging through MetricsLogger to the configured destination.

The same engine as `tplr-metrics simulate`; the destination comes from INFLUXDB_* as for any
logger. Example: python telemetry/simulator/evaluator.py --count 2 --peers 32 --windows 50
"""

from __future__ import annotations

import sys

from tplr_metrics.simulation import script_main

if __name__ == "__main__":
    sys.exit(script_main("evaluator"))
