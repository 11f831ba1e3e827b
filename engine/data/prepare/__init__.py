"""``podium prepare``: real datasets at lab scale, for any family with a tokeniser.

Sources (``sources``), labels files (``labels``), worker processes (``pipeline``), progress
(``progress``), content-hash keyed shards (``shards``) and the report (``report``). The reader of
its output is ``podium.engine.data.prepared``.

Use::

    from podium.engine.data.prepare import prepare
    report = prepare("midi-folder", Path("adl"), Path("adl.prepared"), family.prepare(cfg),
                     family="cp", profile="emopia-cp")
    print(report.summary())
"""

from podium.engine.data.prepare.pipeline import PREPARED_FORMAT, default_workers, prepare
from podium.engine.data.prepare.report import Report

__all__ = ["PREPARED_FORMAT", "Report", "default_workers", "prepare"]
