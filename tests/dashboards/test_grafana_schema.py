"""Every committed dashboard against ``@grafana/schema`` of the Grafana in docker-compose.yml, with tsc.

Needs node and ``npm ci`` in tests/dashboards/schema_check/ (.ci/run does both); skips otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .grafana_types import HERE, installed_schema_version, tsc, tsc_errors, typescript_source

REPO = Path(__file__).resolve().parents[2]

needs_tsc = pytest.mark.skipif(
    tsc() is None, reason="node or the npm packages are missing: cd tests/dashboards/schema_check && npm ci"
)


def _grafana_version() -> str:
    compose = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    found = re.search(r"image:\s*grafana/grafana:(\d+\.\d+\.\d+)", compose)
    assert found, "docker-compose.yml names no grafana/grafana:X.Y.Z image"
    return found.group(1)


def test_the_pinned_schema_is_the_composes_grafana() -> None:
    package = json.loads((HERE / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((HERE / "package-lock.json").read_text(encoding="utf-8"))
    version = _grafana_version()
    assert package["devDependencies"]["@grafana/schema"] == version
    assert lock["packages"]["node_modules/@grafana/schema"]["version"] == version


def _committed() -> dict[str, dict[str, object]]:
    files = sorted((REPO / "dashboards").glob("*/*.json"))
    assert len(files) == 10
    return {f"{p.parent.name}_{p.stem}": json.loads(p.read_text(encoding="utf-8")) for p in files}


@needs_tsc
def test_every_dashboard_has_no_schema_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert installed_schema_version() == _grafana_version(), "run npm ci in tests/dashboards/schema_check"
    dashboards = _committed()
    errors = tsc_errors(typescript_source(dashboards), tmp_path)
    panels = sum(len(d.get("panels", [])) for d in dashboards.values())  # type: ignore[arg-type]
    with capsys.disabled():
        print(
            f"\n  @grafana/schema {installed_schema_version()}: {len(dashboards)} dashboards, {panels} panels, "
            f"{len(errors)} type errors"
        )
    assert not errors, "\n".join(errors[:40])


@needs_tsc
def test_the_check_can_fail(tmp_path: Path) -> None:
    """A legacy key, a null, a wrong enum value and an unknown panel type are each an error."""
    dashboards = _committed()
    name, data = next(iter(dashboards.items()))
    broken = json.loads(json.dumps(data))
    broken["rows"] = []  # pre-5.0 key
    panels = broken["panels"]
    timeseries = next(p for p in panels if p["type"] == "timeseries")
    next(p for p in panels if p["type"] in ("table", "stat"))["span"] = 6  # legacy panel key
    timeseries["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "dots"  # no such GraphDrawStyle
    other = next(p for p in panels if p["type"] == "timeseries" and p is not timeseries)
    other["options"]["legend"]["showLegend"] = None  # a null where the schema wants a boolean
    panels.append({"type": "graph", "title": "old graph"})  # the removed Angular graph panel
    errors = tsc_errors(typescript_source({name: broken}), tmp_path)
    text = "\n".join(errors)
    assert len(errors) >= 5, text
    assert '"rows"' in text and '"span"' in text and '"dots"' in text and "'null'" in text and "'never'" in text
