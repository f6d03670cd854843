"""Process settings shared by the long-running components."""
from __future__ import annotations

import gc

__all__ = ["tune_gc"]

# Young-generation threshold. Python's default (700 allocations) runs a collection every few
# thousand label tuples; one big query makes hundreds of them, and each full collection walks the
# whole heap. Answers hold no reference cycles worth collecting that often.
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Move what start-up allocated (modules, protobuf descriptors, numpy) out of the collector's
    view and make collections rarer. Measured on the querier answering a 10k-series ``x[1h]``
    (2.4M points): about 300 fewer collections per query, 0.35-0.45 s -> 0.25-0.32 s."""
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)
