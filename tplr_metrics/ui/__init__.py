"""The live web UI behind ``tplr-metrics ui`` (extra ``ui``): nothing is imported here, so the
package imports without starlette; ``commands/ui.py`` imports ``app`` when it starts."""
