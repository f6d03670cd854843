"""``tools bucket rewrite``: a new block without some series or samples, or with relabelled series
(Thanos ``tools bucket rewrite`` and ``pkg/compactv2``).

Deletion requests (``--rewrite.to-delete-config``, YAML list of ``{matchers: '<selector>',
intervals: [{mint, maxt}], request_id}``): a series every matcher of a request matches (a matcher
on an absent label never matches) loses the samples in the request's intervals (inclusive), or
the whole series when the request has no intervals. Relabel configs
(``--rewrite.to-relabel-config``) rewrite label sets; a dropped series is deleted, series that
end up with the same labels are merged. Every change goes to a change log (``Deleted {..} [..]``,
``Relabelled {..} {..}``), written to ``<tmp.dir>/<new ULID>/change.log`` and, on a dry run (the
default), to stderr. Untouched chunks are copied byte for byte; touched ones are re-encoded.

The new block keeps time range, level and external labels; ``compaction.sources`` becomes the new
ULID, the old sources and the requests go to ``thanos.rewrites``, ``thanos.source`` is
``bucket.rewrite``. With ``--delete-blocks`` the original is marked for deletion.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = ["DeletionRequest", "RewriteConfig", "parse_deletions", "rewrite"]


@dataclass
class DeletionRequest:
    matchers: list          # tsdb.labels.Matcher
    intervals: list         # [(mint, maxt)] inclusive; empty: the whole series
    request_id: str = ""
    text: str = ""          # the selector as given, for the meta's record

    def to_obj(self) -> dict:
        d: dict = {"matchers": self.text}
        if self.intervals:
            d["intervals"] = [{"mint": a, "maxt": b} for a, b in self.intervals]
        if self.request_id:
            d["request_id"] = self.request_id
        return d


@dataclass
class RewriteConfig:
    ids: list
    tmp_dir: str
    deletions: list = field(default_factory=list)
    relabel: list = field(default_factory=list)
    relabel_text: str = ""
    dry_run: bool = True
    delete_blocks: bool = False
    prom_blocks: bool = False
    change_log: bool = True


def _selector(text: str, where: str) -> list:
    from ..promql import parse
    from ..tsdb.labels import Matcher

    import promql_parser as pp

    try:
        node = parse(text)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{where}: {e}") from None
    if not isinstance(node, pp.VectorSelector):
        raise UserError(f"{where}: {text!r} is not a series selector")
    ops = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
    out = [Matcher("=", "__name__", node.name)] if node.name else []
    out += [Matcher(ops[str(m.op)], m.name, m.value) for m in node.matchers.matchers]
    return out


def parse_deletions(text: str, where: str) -> list[DeletionRequest]:
    """``--rewrite.to-delete-config``: errors name the flag and the entry."""
    import yaml

    try:
        doc = yaml.safe_load(text) or []
    except yaml.YAMLError as e:
        raise UserError(f"{where}: invalid YAML: {e}") from None
    if not isinstance(doc, list):
        raise UserError(f"{where}: want a list of deletion requests, got {type(doc).__name__}")
    out = []
    for i, d in enumerate(doc):
        at = f"{where}: entry {i}"
        if not isinstance(d, dict) or not isinstance(d.get("matchers"), str):
            raise UserError(f"{at}: want a mapping with a 'matchers' selector string")
        unknown = set(d) - {"matchers", "intervals", "request_id"}
        if unknown:
            raise UserError(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
        ivs = []
        for j, iv in enumerate(d.get("intervals") or []):
            try:
                a, b = int(iv["mint"]), int(iv["maxt"])
            except (TypeError, KeyError, ValueError):
                raise UserError(f"{at}: interval {j}: want {{mint: <ms>, maxt: <ms>}}") from None
            if a > b:
                raise UserError(f"{at}: interval {j}: mint {a} is after maxt {b}")
            ivs.append((a, b))
        out.append(DeletionRequest(_selector(d["matchers"], at), ivs, str(d.get("request_id") or ""), d["matchers"]))
    return out


def _lstr(lbls) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in lbls) + "}"


def _ivstr(ivs) -> str:
    return "[" + " ".join(f"{{{a} {b}}}" for a, b in ivs) + "]"


def _matches(req: DeletionRequest, lbls: dict) -> bool:
    for m in req.matchers:
        v = lbls.get(m.name, "")
        if v == "" or not m.matches(v):
            return False
    return True


def _delete_samples(chunks, ivs, where):
    """Chunks minus samples in ``ivs``; ``(new chunks, deleted intervals actually hit)``."""
    from ..tsdb.compact import _decode, _encode

    hit = []
    for a, b in ivs:
        for c in chunks:
            if c[0] <= b and a <= c[1]:
                hit.append((max(a, c[0]), min(b, c[1])))
    if not hit:
        return chunks, []
    parts = _decode(chunks, where)
    t = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    keep = np.ones(len(t), bool)
    for a, b in ivs:
        keep &= ~((t >= a) & (t <= b))
    return _encode(t[keep], v[keep]), hit


def rewrite(bucket, cfg: RewriteConfig, err: TextIO = sys.stderr) -> int:
    from ..block import ops
    from ..relabel import process
    from ..tsdb import ulid as _ulid
    from ..tsdb.block import BlockReader
    from ..tsdb.compact import merge_series_chunks
    from ..tsdb.meta import write_meta
    from ..tsdb.streamwriter import StreamBlockWriter

    if not cfg.deletions and not cfg.relabel:
        raise UserError("rewrite configuration should be provided (--rewrite.to-delete-config or "
                        "--rewrite.to-relabel-config)")
    shutil.rmtree(cfg.tmp_dir, ignore_errors=True)
    os.makedirs(cfg.tmp_dir, exist_ok=True)
    for bid in cfg.ids:
        src = os.path.join(cfg.tmp_dir, bid)
        log.info("downloading block", extra={"source": bid})
        ops.download(bucket, bid, src)
        new_id = _ulid.new()
        out_dir = os.path.join(cfg.tmp_dir, new_id)
        os.makedirs(out_dir, exist_ok=True)
        changes = open(os.path.join(out_dir, "change.log"), "w") if cfg.change_log else None

        def note(line: str) -> None:
            if changes is not None:
                changes.write(line + "\n")
            if cfg.dry_run:
                err.write(line + "\n")

        log.info("starting rewrite for block", extra={"source": bid, "new": new_id})
        with BlockReader.open_dir(src) as r:
            meta = r.meta
            out: dict[tuple, list] = {}
            order: list[tuple] = []
            for lbls, _iv, chunks in r.series_chunks():
                d = dict(lbls)
                ivs: list = []
                whole = False
                for req in cfg.deletions:
                    if _matches(req, d):
                        if not req.intervals:
                            whole = True
                            break
                        ivs += req.intervals
                if whole:
                    note(f"Deleted {_lstr(lbls)} {_ivstr([(chunks[0][0], chunks[-1][1])] if chunks else [])}")
                    continue
                if ivs:
                    chunks, hit = _delete_samples(chunks, sorted(ivs), bid)
                    if hit:
                        note(f"Deleted {_lstr(lbls)} {_ivstr(hit)}")
                    if not chunks:
                        continue
                new = lbls
                if cfg.relabel:
                    res = process(lbls, cfg.relabel)
                    if res is None:
                        note(f"Deleted {_lstr(lbls)} {_ivstr([(chunks[0][0], chunks[-1][1])])}")
                        continue
                    new = tuple(sorted(res.items()))
                    if new != lbls:
                        note(f"Relabelled {_lstr(lbls)} {_lstr(new)}")
                if new not in out:
                    out[new] = []
                    order.append(new)
                out[new].append(chunks)
            if cfg.dry_run:
                if changes is not None:
                    changes.close()
                log.info("dry run finished. Changes should be printed to stderr", extra={"block": bid})
                continue
            symbols = {s for lbls in order for kv in lbls for s in kv}
            thanos = meta.thanos
            if thanos is not None:
                import copy

                thanos = copy.deepcopy(thanos)
                thanos.rewrites = list(thanos.rewrites or []) + [{
                    "sources": list(meta.compaction.sources),
                    **({"deletions_applied": [q.to_obj() for q in cfg.deletions]} if cfg.deletions else {}),
                    **({"relabels_applied": _relabel_obj(cfg.relabel_text)} if cfg.relabel else {}),
                }]
                thanos.source = "bucket.rewrite"
                thanos.upload_time = None
            comp = meta.compaction
            comp.sources = [new_id]
            w = StreamBlockWriter(cfg.tmp_dir, symbols, min_time=meta.min_time, max_time=meta.max_time,
                                  thanos=thanos, compaction=comp, block_ulid=new_id, prometheus_stats=True)
            # the change log sits in the block's directory while it is built
            with w:
                for lbls in sorted(order):
                    lists = out[lbls]
                    w.add_series(lbls, merge_series_chunks(lists, "chain", bid) if len(lists) > 1 else lists[0])
                if changes is not None:
                    changes.close()
                    shutil.move(os.path.join(out_dir, "change.log"), os.path.join(w.tmp, "change.log"))
                shutil.rmtree(out_dir, ignore_errors=True)
                new_meta = w.write()
            if new_meta is None:
                log.warning("every series of the block was deleted; nothing to upload", extra={"source": bid})
                continue
            write_meta(w.final, new_meta)
        log.info("uploading new block", extra={"source": bid, "new": new_id})
        ops.upload(bucket, w.final) if not cfg.prom_blocks else _upload_prom(bucket, w.final)
        log.info("uploaded", extra={"source": bid, "new": new_id})
        if cfg.delete_blocks:
            ops.mark_for_deletion(bucket, bid, "block rewritten")
    log.info("rewrite done", extra={"IDs": ",".join(cfg.ids)})
    return 0


def _relabel_obj(text: str) -> list:
    import yaml

    doc = yaml.safe_load(text) or []
    return doc if isinstance(doc, list) else [doc]


def _upload_prom(bucket, block_dir: str) -> None:
    from ..tsdb.upload import upload_block

    upload_block(bucket, block_dir, allow_empty_labels=True)

