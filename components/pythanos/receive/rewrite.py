"""Label rewriting on the receiver's opt-in paths: ``--receive.relabel-config`` and
``--receive.split-tenant-label-name`` (Thanos v0.42.4 ``pkg/receive/handler.go``: ``relabel`` and
``distributeTimeseriesToReplicas``).

Where Thanos applies them, and so do we:

* Relabelling runs on remote-write HTTP requests only (not on writes other receivers forward over
  gRPC), after the request limits and before routing, so a series is routed and stored under its
  relabelled labels. A dropped series is left out without an error; when every series is dropped
  the request answers 200. A series relabelled to an empty label set is *not* dropped: Thanos'
  writer refuses it as "label set contains a label with empty name or value", a conflict (409).
* Splitting runs on every routed write (HTTP and gRPC; not on an ingestor-only receiver's gRPC fast
  path): a series carrying the label is moved to the tenant the label names, without the label;
  one without it stays with the request's tenant. A tenant name that cannot be a directory fails
  the whole request with 400 "tenant name not valid: validation error".

Cost: this is the one place the write path works per series in Python, and only when one of the
flags is set. Each distinct label set is processed once, and its result kept for later requests
(a bounded cache: Prometheus sends the same series every scrape), so in the steady state a series
costs a dictionary look-up; nothing here looks at samples. Series the decoder refused (duplicate
or empty label names, bad UTF-8) are left as they are, to be refused by the writer as without
these flags.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Optional, Sequence

import numpy as np

from ..relabel import RelabelConfig, apply
from ..remote import write as rw
from .hashring import series_hash
from .tenants import check_tenant

__all__ = ["SplitTenantError", "SPLIT_INVALID", "rewrite", "forward_split"]

#: Thanos' text: ``errors.Wrap(errValidation, "tenant name not valid")``
SPLIT_INVALID = "tenant name not valid: validation error"
_REWRITABLE = (rw.STATUS_OK, rw.STATUS_NO_METRIC_NAME)
#: results kept across requests at most (about 300 bytes each)
CACHE_MAX = 200_000
_MISS = object()
_CANONICAL_FLAGS = np.uint8(~(rw.FLAG_UNSORTED | rw.FLAG_EMPTY_VALUE) & 0xFF)


class SplitTenantError(ValueError):
    """A split-tenant label names a tenant that is not valid (HTTP 400, gRPC InvalidArgument)."""


def rewrite(decoded: rw.DecodedWrite, tenant: str, *, relabel: Sequence[RelabelConfig] = (),
            split_label: str = "", cache: Optional[dict] = None) -> tuple[rw.DecodedWrite, list[tuple[str, np.ndarray]]]:
    """The request with its series relabelled and split: a copy of ``decoded`` whose label columns
    (blobs, routing hashes, status) are rewritten, and the positions to write per tenant (series
    dropped by relabelling are in none). Unchanged when there is nothing to do.

    ``cache``: results by (tenant, label set) kept across requests, for one ``relabel`` and
    ``split_label`` (a sender writes the same series again and again: then a series costs a dict
    look-up); emptied when it holds more than :data:`CACHE_MAX` entries."""
    n = decoded.n_series
    if not relabel and not split_label:
        return decoded, [(tenant, np.arange(n, dtype=np.int64))]
    blobs, off = decoded.blobs, decoded.blob_offsets.tolist()
    status = decoded.status.tolist()
    v2 = decoded.is_v2  # a 2.0 series needs __name__; a 1.0 or forwarded one does not (as Thanos)
    # per distinct (tenant, label blob): None when dropped, else (new blob or None when unchanged,
    # tenant, hash, status, label count)
    seen: dict = cache if cache is not None else {}
    if len(seen) > CACHE_MAX:
        seen.clear()
    split = split_label.encode("utf-8", "surrogateescape") if split_label else b""
    pieces: list[bytes] = []  # the new blobs
    owners: list[Optional[str]] = []  # the tenant of each series, None when dropped
    changed: list[int] = []
    new_cols: list[tuple[int, int, int]] = []  # (hash, status, label count) of the changed ones
    miss = _MISS
    for i in range(n):
        blob = blobs[off[i]:off[i + 1]]
        if status[i] not in _REWRITABLE:
            pieces.append(blob)
            owners.append(tenant)
            continue
        key = (tenant, blob, v2)
        r = seen.get(key, miss)
        if r is miss:
            r = seen[key] = _one(blob, tenant, relabel, split_label, split, v2)
        if r is None:  # dropped by relabelling: in no group, an empty label set in the columns
            pieces.append(b"\x00")
            owners.append(None)
            continue
        if r[0] is None:
            pieces.append(blob)
        else:
            pieces.append(r[0])
            changed.append(i)
            new_cols.append(r[2:])
        owners.append(r[1])
    out_off = np.zeros(n + 1, np.int64)
    np.cumsum(np.fromiter(map(len, pieces), np.int64, n), out=out_off[1:])
    hashes, new_status = decoded.hashes.copy(), decoded.status.copy()
    counts, flags = decoded.label_counts.copy(), decoded.flags.copy()
    if changed:
        idx = np.asarray(changed, np.int64)
        cols = np.asarray(new_cols, np.uint64)
        hashes[idx], new_status[idx], counts[idx] = cols[:, 0], cols[:, 1], cols[:, 2]
        flags[idx] &= _CANONICAL_FLAGS  # the new blobs are canonical: forwarded and hashed as they are
    out = dataclasses.replace(decoded, blobs=b"".join(pieces), blob_offsets=out_off, hashes=hashes,
                              status=new_status, flags=flags, label_counts=counts,
                              labels_rewritten=decoded.labels_rewritten or bool(changed))
    tenants = [t for t in dict.fromkeys(owners) if t is not None]
    if len(tenants) == 1 and None not in owners:
        return out, [(tenants[0], np.arange(n, dtype=np.int64))]
    who = np.array(owners, dtype=object)
    return out, [(t, np.flatnonzero(who == t)) for t in tenants]

def _one(blob: bytes, tenant: str, relabel: Sequence[RelabelConfig], split_label: str,
         split: bytes, require_name: bool) -> Optional[tuple[Optional[bytes], str, int, int, int]]:
    """One distinct label set: (new blob, tenant, routing hash, status, label count); the blob is
    None when nothing changed (then hash, status and count are not used)."""
    if not relabel and split not in blob:  # cheap pre-check: the split label cannot be there
        return None, tenant, 0, 0, 0
    pairs = rw.decode_blob(blob)
    if relabel:
        new = apply(pairs, relabel)
        if new is None:
            return None
        pairs = sorted(new.items())
    t = tenant
    if split_label:
        value = next((v for k, v in pairs if k == split_label), "")
        if value:
            if check_tenant(value) is not None:
                raise SplitTenantError(SPLIT_INVALID)
            t = value
            pairs = [(k, v) for k, v in pairs if k != split_label]
        elif not relabel:
            return None, tenant, 0, 0, 0
    new_blob = rw.encode_blob(pairs)
    if not pairs:
        st = rw.STATUS_EMPTY_LABEL_NAME  # Thanos' writer: ErrEmptyLabels
    elif not require_name or any(k == "__name__" for k, _ in pairs):
        st = rw.STATUS_OK
    else:
        st = rw.STATUS_NO_METRIC_NAME
    return new_blob, t, series_hash(t, pairs), st, len(pairs)



async def forward_split(forwarder, tenant: str, decoded: rw.DecodedWrite, replica: int, *,
                        relabel: Sequence[RelabelConfig] = (), split_label: str = "", cache: Optional[dict] = None):
    """Relabel and split ``decoded`` (see :func:`rewrite`), then route each tenant's series with
    ``forwarder`` (a :class:`pythanos.receive.forward.Forwarder`), concurrently; one answer for
    the request: the worst status (503, 500, 400, 409, then 200) with the failed writes' texts."""
    from .forward import ForwardResult, error_set_text

    if not relabel and not split_label:
        return await forwarder.forward(tenant, decoded, replica)
    new, groups = rewrite(decoded, tenant, relabel=relabel, split_label=split_label, cache=cache)
    groups = [(t, pos) for t, pos in groups if len(pos)]
    if not groups:  # everything dropped by relabelling: Thanos answers 200
        return ForwardResult(200, per_tenant={})
    if len(groups) == 1:
        t, pos = groups[0]
        one = await forwarder.forward(t, new, replica, series=None if len(pos) == new.n_series else pos)
        one.per_tenant = {t: (one.series, one.samples)}
        return one
    parts = await asyncio.gather(*(forwarder.forward(t, new, replica, series=pos) for t, pos in groups))
    out = ForwardResult(200, per_tenant={t: (p.series, p.samples) for (t, _), p in zip(groups, parts)})
    for p in parts:
        for k in ("series", "samples", "samples_written", "histograms_written", "exemplars_written", "conflicts",
                  "failed"):
            setattr(out, k, getattr(out, k) + getattr(p, k))
    bad = [p for p in parts if p.status != 200]
    if bad:
        out.status = min((p.status for p in bad), key=lambda s: _SEVERITY.index(s) if s in _SEVERITY else 1)
        out.message = error_set_text([r for p in bad for r in _reasons(p.message)])
    return out


_SEVERITY = (503, 500, 400, 409)
_COUNTED = re.compile(r"^\d+ errors: ")


def _reasons(message: str) -> list[str]:
    """The reasons of an error-set text (``"2 errors: a; b"`` -> a, b)."""
    if _COUNTED.match(message):
        return _COUNTED.sub("", message).split("; ")
    return [message]
