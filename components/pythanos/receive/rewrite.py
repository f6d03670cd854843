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
flags is set. Each distinct label set of a request is processed once (a request repeats few), and
nothing here looks at samples. Series the decoder refused (duplicate or empty label names, bad
UTF-8) are left as they are, to be refused by the writer as without these flags.
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
_CANONICAL_FLAGS = np.uint8(~(rw.FLAG_UNSORTED | rw.FLAG_EMPTY_VALUE) & 0xFF)


class SplitTenantError(ValueError):
    """A split-tenant label names a tenant that is not valid (HTTP 400, gRPC InvalidArgument)."""


def rewrite(decoded: rw.DecodedWrite, tenant: str, *, relabel: Sequence[RelabelConfig] = (),
            split_label: str = "") -> tuple[rw.DecodedWrite, list[tuple[str, np.ndarray]]]:
    """The request with its series relabelled and split: a copy of ``decoded`` whose label columns
    (blobs, routing hashes, status) are rewritten, and the positions to write per tenant (series
    dropped by relabelling are in none). Unchanged when there is nothing to do."""
    n = decoded.n_series
    if not relabel and not split_label:
        return decoded, [(tenant, np.arange(n, dtype=np.int64))]
    blobs, off = decoded.blobs, decoded.blob_offsets.tolist()
    status = decoded.status.tolist()
    out_blobs = bytearray()
    out_off = np.zeros(n + 1, np.int64)
    hashes = decoded.hashes.copy()
    new_status = decoded.status.copy()
    counts = decoded.label_counts.copy()
    changed = np.zeros(n, bool)
    by_tenant: dict[str, list[int]] = {}
    # per distinct label blob: (new blob or None when dropped, tenant, hash, status, label count)
    seen: dict[bytes, Optional[tuple[bytes, str, int, int, int]]] = {}
    split = split_label.encode("utf-8", "surrogateescape") if split_label else b""
    for i in range(n):
        blob = blobs[off[i]:off[i + 1]]
        if status[i] not in _REWRITABLE:
            out_blobs += blob
            out_off[i + 1] = len(out_blobs)
            by_tenant.setdefault(tenant, []).append(i)
            continue
        if blob in seen:
            r = seen[blob]
        else:
            r = seen[blob] = _one(blob, tenant, relabel, split_label, split)
        if r is None:  # dropped by relabelling: in no group, an empty label set in the columns
            out_blobs += b"\x00"
            out_off[i + 1] = len(out_blobs)
            continue
        new_blob, t, h, st, nl = r
        out_blobs += new_blob
        out_off[i + 1] = len(out_blobs)
        if new_blob is not blob:
            changed[i] = True
            hashes[i], new_status[i], counts[i] = h, st, nl
        by_tenant.setdefault(t, []).append(i)
    flags = decoded.flags.copy()
    flags[changed] &= _CANONICAL_FLAGS  # the new blobs are canonical: forwarded and hashed as they are
    out = dataclasses.replace(decoded, blobs=bytes(out_blobs), blob_offsets=out_off, hashes=hashes,
                              status=new_status, flags=flags, label_counts=counts,
                              labels_rewritten=decoded.labels_rewritten or bool(changed.any()))
    return out, [(t, np.asarray(ids, np.int64)) for t, ids in by_tenant.items()]


def _one(blob: bytes, tenant: str, relabel: Sequence[RelabelConfig], split_label: str,
         split: bytes) -> Optional[tuple[bytes, str, int, int, int]]:
    """One distinct label set: (blob, tenant, routing hash, status, label count); the blob is the
    same object when nothing changed (then hash, status and count are not used)."""
    if not relabel and split not in blob:  # cheap pre-check: the split label cannot be there
        return blob, tenant, 0, 0, 0
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
            return blob, tenant, 0, 0, 0
    new_blob = rw.encode_blob(pairs)
    if not pairs:
        st = rw.STATUS_EMPTY_LABEL_NAME  # Thanos' writer: ErrEmptyLabels
    elif any(k == "__name__" for k, _ in pairs):
        st = rw.STATUS_OK
    else:
        st = rw.STATUS_NO_METRIC_NAME
    return new_blob, t, series_hash(t, pairs), st, len(pairs)



async def forward_split(forwarder, tenant: str, decoded: rw.DecodedWrite, replica: int, *,
                        relabel: Sequence[RelabelConfig] = (), split_label: str = ""):
    """Relabel and split ``decoded`` (see :func:`rewrite`), then route each tenant's series with
    ``forwarder`` (a :class:`pythanos.receive.forward.Forwarder`), concurrently; one answer for
    the request: the worst status (503, 500, 400, 409, then 200) with the failed writes' texts."""
    from .forward import ForwardResult, error_set_text

    if not relabel and not split_label:
        return await forwarder.forward(tenant, decoded, replica)
    new, groups = rewrite(decoded, tenant, relabel=relabel, split_label=split_label)
    groups = [(t, pos) for t, pos in groups if len(pos)]
    if not groups:  # everything dropped by relabelling: Thanos answers 200
        return ForwardResult(200)
    if len(groups) == 1:
        t, pos = groups[0]
        return await forwarder.forward(t, new, replica, series=None if len(pos) == new.n_series else pos)
    parts = await asyncio.gather(*(forwarder.forward(t, new, replica, series=pos) for t, pos in groups))
    out = ForwardResult(200)
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
