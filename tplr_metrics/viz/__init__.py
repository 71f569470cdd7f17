"""Runs read back and drawn: run readers, smoothing, plots."""
