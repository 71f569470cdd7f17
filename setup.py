"""The one thing pyproject.toml cannot say: the optional C loops of the batch line encoder.

``optional=True``: where no C compiler is found the install goes on without them, and
``tplr_metrics/encoding/line_batches.py`` uses its pure-Python loops (the same lines, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tplr_metrics.encoding._line_fill",
            ["tplr_metrics/encoding/_line_fill.c"],
            optional=True,
        )
    ]
)
