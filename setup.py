"""The one thing pyproject.toml cannot say: the optional C loops of the hot path, the batch
line encoder's (``_line_fill``) and log()'s compact record (``_compact_record``).

``optional=True``: where no C compiler is found the install goes on without them, and
``encoding/line_batches.py`` and ``encoding/points.py`` use their pure-Python versions (the same
results, slower). Not built for a free-threaded Python: they read the caller's dicts relying on
the GIL to keep other threads out while they do.
"""

import sysconfig

from setuptools import Extension, setup

gil = not sysconfig.get_config_var("Py_GIL_DISABLED")
setup(
    ext_modules=[
        Extension("tplr_metrics.encoding._line_fill", ["tplr_metrics/encoding/_line_fill.c"], optional=True),
        Extension("tplr_metrics.encoding._compact_record", ["tplr_metrics/encoding/_compact_record.c"], optional=True),
    ]
    if gil
    else []
)
