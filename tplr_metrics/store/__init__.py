"""The embedded local store: one SQLite file of runs and their points."""
