"""The generated dashboards type-checked against Grafana's published types (``@grafana/schema``).

``typescript_source`` writes one TypeScript module: every dashboard assigned to the schema's
``Dashboard`` and each of its panels to its own panel type (``Panel<Options, FieldConfig>`` of
the panel plugin's published config: timeseries, stat, table, trend; ``RowPanel`` for rows), as
fresh object literals, so tsc reports unknown keys as well as wrong types. ``tsc_errors`` runs
the compiler (``--strict --noEmit``) in ``schema_check/`` and returns its error lines.

Two readings are needed to check JSON against TypeScript: a string enum (``ThresholdsMode``,
``GraphDrawStyle`` ...) is read as the union of its values, the strings a saved dashboard holds
(``Plain<T>``); and ``@grafana/schema`` does not type a panel's ``options`` by its plugin nor
publish the InfluxDB query, so ``TypedPanel`` puts the plugin's ``Options`` on ``options`` and
``InfluxQuery`` lists the fields of Grafana's InfluxDB query model (its data source's
``types.ts``) that a target or an annotation may carry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "schema_check"
#: Panel type -> (import alias, module under @grafana/schema's raw/composable).
PANEL_TYPES = {
    "timeseries": ("TimeSeries", "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen"),
    "stat": ("Stat", "stat/panelcfg/x/StatPanelCfg_types.gen"),
    "table": ("Table", "table/panelcfg/x/TablePanelCfg_types.gen"),
    "trend": ("Trend", "trend/panelcfg/x/TrendPanelCfg_types.gen"),
}

PRELUDE = """\
import type { DataQuery, Dashboard, Panel, RowPanel } from "@grafana/schema";
{imports}

/** A string enum read as its values, as JSON holds them; everything else as it is. */
type Plain<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends (infer U)[]
      ? Plain<U>[]
      : T extends object
        ? { [K in keyof T]: Plain<T[K]> }
        : T;

/** The fields of Grafana's InfluxDB query (public/app/plugins/datasource/influxdb/types.ts). */
interface InfluxQuery extends DataQuery {
  query?: string;
  rawQuery?: boolean;
  alias?: string;
  resultFormat?: "time_series" | "table" | "logs";
  fromAnnotations?: boolean;
  textColumn?: string;
  tagsColumn?: string;
  titleColumn?: string;
  timeEndColumn?: string;
}

type TypedPanel<O, F> = Omit<Plain<Panel<O, F>>, "options" | "targets"> & {
  options?: Plain<O>;
  targets?: InfluxQuery[];
};
type Annotation = Omit<Plain<NonNullable<NonNullable<Dashboard["annotations"]>["list"]>[number]>, "target"> & {
  target?: InfluxQuery;
};
type TypedDashboard = Omit<Plain<Dashboard>, "panels" | "annotations"> & {
  panels?: unknown[];
  annotations?: { list?: Annotation[] };
};
"""


def _ident(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def typescript_source(dashboards: dict[str, dict[str, Any]]) -> str:
    """One module checking ``name -> dashboard JSON``; an unknown panel type is a type error."""
    imports = "\n".join(
        f'import type * as {alias} from "@grafana/schema/dist/esm/raw/composable/{module}";'
        for alias, module in PANEL_TYPES.values()
    )
    out = [PRELUDE.replace("{imports}", imports)]
    for name, data in dashboards.items():
        base = _ident(name)
        panel_names = []
        for i, panel in enumerate(data.get("panels", [])):
            kind = panel.get("type")
            var = f"{base}_panel_{i}"
            if kind == "row":
                annotation = "Plain<RowPanel>"
            elif kind in PANEL_TYPES:
                alias = PANEL_TYPES[kind][0]
                custom = "Record<string, unknown>" if kind == "stat" else f"{alias}.FieldConfig"  # stat has none
                annotation = f"TypedPanel<{alias}.Options, {custom}>"
            else:
                annotation = "never"  # a panel type this check does not know: fail loudly
            out.append(f"// {name}: {panel.get('title', '')!r}")
            out.append(f"export const {var}: {annotation} = {json.dumps(panel, indent=2)};\n")
            panel_names.append(var)
        rest = {k: v for k, v in data.items() if k != "panels"}
        body = json.dumps(rest, indent=2)
        out.append(f"export const {base}: TypedDashboard = {{\n  panels: [{', '.join(panel_names)}],\n{body[2:]};\n")
    return "\n".join(out)


def tsc() -> Path | None:
    """The compiler installed by ``npm ci`` in schema_check/, or None."""
    path = HERE / "node_modules" / ".bin" / "tsc"
    schema = HERE / "node_modules" / "@grafana" / "schema" / "package.json"
    if shutil.which("node") is None or not path.exists() or not schema.exists():
        return None
    return path


def tsc_errors(source: str, workdir: Path) -> list[str]:
    """tsc's ``error TS...`` lines for the module (written under ``workdir``)."""
    compiler = tsc()
    if compiler is None:
        raise FileNotFoundError("node, or schema_check/node_modules (npm ci) is missing")
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / "node_modules"
    if not link.exists():
        os.symlink(HERE / "node_modules", link)
    (workdir / "check.ts").write_text(source, encoding="utf-8")
    options = ["--strict", "--noEmit", "--target", "es2020", "--moduleResolution", "node", "--skipLibCheck"]
    done = subprocess.run(
        [str(compiler), *options, "--pretty", "false", str(workdir / "check.ts")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
    )
    errors = [line for line in done.stdout.splitlines() if ": error TS" in line]
    if done.returncode != 0 and not errors:
        raise RuntimeError(f"tsc failed without type errors: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return errors


def installed_schema_version() -> str:
    data = json.loads((HERE / "node_modules" / "@grafana" / "schema" / "package.json").read_text(encoding="utf-8"))
    return str(data["version"])
