"""Garbage-collector settings for a long-running proxy: fewer and cheaper collections.

CPython's cyclic collector runs every 700 net allocations and, every so often, walks every
object in the process: the imported modules, the config, the app. For a proxy that
allocates a few hundred objects per request that means a collection every few requests
and, now and then, a pause of milliseconds in the middle of one. ``settle_heap`` freezes
what exists once the service is built (``gc.freeze``: later collections skip it) and lets
more young objects pile up between collections. Reference counting still frees almost
everything at once; only cycles wait for a collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Collect, then freeze what is alive now; collect young objects less often from here on.

    Safe to call again (after a reload): what was frozen before is unfrozen and collected
    first, so the replaced app's cycles are freed.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), older, oldest)
