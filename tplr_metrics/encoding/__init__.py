"""How a log() call becomes a point: value rules, points, line protocol."""
