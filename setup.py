"""The one thing pyproject.toml cannot say: the optional C loops of the hot path, the batch
line encoder's (``_line_fill``), log()'s compact record (``_compact_record``), the encoder
thread's step from the queue to a batch (``_queue_take``) and the local store's rows
(``_store_rows``).

``optional=True``: where no C compiler is found the install goes on without them, and
``encoding/line_batches.py``, ``encoding/points.py``, ``delivery/queue_take.py`` and
``store/database.py`` use their pure-Python versions (the same results, slower). Not built
for a free-threaded Python: they read the caller's dicts and the queue relying on the GIL to keep
other threads out meanwhile.
"""

import sysconfig

from setuptools import Extension, setup

gil = not sysconfig.get_config_var("Py_GIL_DISABLED")
setup(
    ext_modules=[
        Extension("tplr_metrics.encoding._line_fill", ["tplr_metrics/encoding/_line_fill.c"], optional=True),
        Extension("tplr_metrics.encoding._compact_record", ["tplr_metrics/encoding/_compact_record.c"], optional=True),
        Extension("tplr_metrics.delivery._queue_take", ["tplr_metrics/delivery/_queue_take.c"], optional=True),
        Extension("tplr_metrics.store._store_rows", ["tplr_metrics/store/_store_rows.c"], optional=True),
    ]
    if gil
    else []
)
