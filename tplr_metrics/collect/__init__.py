"""Measurements a logger takes by itself: host and GPU figures, its own health."""
