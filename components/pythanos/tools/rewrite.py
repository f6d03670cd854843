"""``tools bucket rewrite``: a new block without some series or samples, or with relabelled series
(Thanos ``tools bucket rewrite`` and ``pkg/compactv2``).

What Thanos does, and so do we:

* Relabelling (``--rewrite.to-relabel-config``) runs first, over every series in label order: a
  series the rules drop (or leave without labels) is deleted (``Deleted {..} [{mint maxt}]``), a
  changed one logs ``Relabelled {old} {new}``. Series that end up with the same labels are merged
  (chained: samples in time order, one sample per timestamp). Every series that went through
  relabelling is re-encoded into chunks of 120 samples, touched or not.
* Deletion requests (``--rewrite.to-delete-config``, YAML list of ``{matchers: '<selector>',
  intervals: [{mint, maxt}], request_id}``) run on the (relabelled) series: a series that every
  matcher of a request matches (a matcher on an absent label never matches) loses the samples in
  the request's intervals (closed), or the whole series when the request has no intervals. A
  chunk inside one interval is dropped, a chunk an interval cuts is re-encoded, the others are
  copied byte for byte. The change log names the deleted ranges as the chunks saw them
  (``Deleted {..} [{a b} {c d}]``, Prometheus' ``tombstones.Intervals``, merged as it merges).
* The change log goes to ``<tmp.dir>/<new ULID>/change.log`` (``--rewrite.add-change-log``, on by
  default), beside the new block's files; it is not uploaded.
* The new block keeps the old meta but for: its ULID, ``compaction.sources`` = the new ULID,
  ``thanos.source`` = ``bucket.rewrite``, a ``thanos.rewrites`` entry (old sources, the requests
  and relabel rules as Thanos encodes them), stats (series, chunks, samples) of the new block.
  Without relabelling the index keeps every symbol of the old one, as Thanos'.
* ``--dry-run`` (default) writes nothing but the change log; ``--delete-blocks`` marks each
  rewritten block for deletion (details ``block rewritten``).

Where we differ on purpose:

* On a dry run the changes are also printed to stderr, as Thanos' own log line promises ("Changes
  should be printed to stderr"); Thanos only writes them to the change log file.
* A deletion request is checked: it needs a ``matchers`` selector, intervals need ``mint <=
  maxt``, unknown keys are refused, and ``{}`` (every series) is refused. Thanos ignores unknown
  keys and bad intervals, and a request without matchers deletes every series.
* A chunk whose samples all fall in deleted intervals (without one interval covering it) is
  dropped; Thanos stops the series there and silently loses its later chunks.
* When every series is deleted no empty block is uploaded (with ``--delete-blocks`` the old block
  is still marked); Thanos uploads an empty block.
* ``thanos.segment_files`` names the new block's segment files; Thanos keeps the old block's list.
"""
from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator, TextIO

import numpy as np

from ..errors import UserError

from .progress import Progress

log = logging.getLogger(__name__)

__all__ = ["DeletionRequest", "RewriteConfig", "parse_deletions", "relabel_obj", "rewrite", "labels_string",
           "add_interval"]

MIN_INT64, MAX_INT64 = -(1 << 63), (1 << 63) - 1
CHANGE_LOG = "change.log"
_MATCH_TYPES = {"=": 0, "!=": 1, "=~": 2, "!~": 3}  # Prometheus labels.MatchType
_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass
class DeletionRequest:
    matchers: list          # tsdb.labels.Matcher, in Prometheus' parser order
    intervals: list         # [(mint, maxt)] closed, as given; empty: the whole series
    request_id: str = ""

    def to_obj(self) -> dict:
        """Thanos' JSON of ``metadata.DeletionRequest`` (what ``thanos.rewrites`` records)."""
        d: dict = {"matchers": [{"Type": _MATCH_TYPES[m.type], "Name": m.name, "Value": m.value}
                                for m in self.matchers]}
        if self.intervals:
            d["intervals"] = [{"Mint": a, "Maxt": b} for a, b in self.intervals]
        if self.request_id:
            d["request_id"] = self.request_id
        return d


@dataclass
class RewriteConfig:
    ids: list
    tmp_dir: str
    deletions: list = field(default_factory=list)
    relabel: list = field(default_factory=list)
    dry_run: bool = True
    delete_blocks: bool = False
    prom_blocks: bool = False
    change_log: bool = True
    hash_func: str = ""


# ------------------------------------------------------------------------------------------ config

def _selector(text: str, at: str) -> list:
    """Prometheus' ``ParseMetricSelector`` as Thanos uses it: label matchers in order, the metric
    name last; a selector whose matchers all match the empty string is accepted (Thanos ignores
    that parse error), unless it has no matcher at all."""
    import promql_parser as pp

    from ..promql import parse
    from ..promql.parse_errors import matcher_value
    from ..tsdb.labels import Matcher

    probe = "__pythanos_probe__"
    try:
        node = parse(text)
        probed = False
    except Exception as e:  # noqa: BLE001
        if "at least one non-empty matcher" not in str(e):
            raise UserError(f"{at}: {e}") from None
        s = text.rstrip()
        if not s.endswith("}"):
            raise UserError(f"{at}: {e}") from None
        inner = s[:-1].rstrip()
        if inner.endswith("{"):
            raise UserError(f"{at}: selector {text!r} would match every series; name at least one label") from None
        sep = "" if inner.endswith(",") else ","
        try:
            node = parse(f'{inner}{sep}{probe}="x"}}')
        except Exception:  # noqa: BLE001
            raise UserError(f"{at}: {e}") from None
        probed = True
    if not isinstance(node, pp.VectorSelector):
        raise UserError(f"{at}: {text!r} is not a series selector (expected type *parser.VectorSelector)")
    ops = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
    try:
        out = [Matcher(ops[str(m.op)], m.name, matcher_value(m.value)) for m in node.matchers.matchers
               if not (probed and m.name == probe)]
        if node.name and not any(m.name == "__name__" for m in out):
            out.append(Matcher("=", "__name__", node.name))
    except ValueError as e:
        raise UserError(f"{at}: {e}") from None
    return out


def _yaml_error(e) -> str:
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or " ".join(str(e).split())
    return f"line {mark.line + 1} column {mark.column + 1}: {what}" if mark is not None else what


def _int(v, at: str, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{at}: {key} must be an integer (milliseconds since the epoch), got {v!r}")
    if not MIN_INT64 <= v <= MAX_INT64:
        raise UserError(f"{at}: {key} {v} is out of the int64 range")
    return v


def parse_deletions(text: str, where: str) -> list[DeletionRequest]:
    """``--rewrite.to-delete-config``: one error naming the flag, the entry and what is wrong."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: invalid YAML: {_yaml_error(e)}") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise UserError(f"{where}: want a YAML list of deletion requests "
                        f"(- matchers: '<selector>'), got a {type(doc).__name__}")
    out = []
    for i, d in enumerate(doc):
        at = f"{where}: entry {i}"
        if not isinstance(d, dict):
            raise UserError(f"{at}: want a mapping with 'matchers', 'intervals', 'request_id', "
                            f"got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in ("matchers", "intervals", "request_id"))
        if unknown:
            raise UserError(f"{at}: unknown key(s) {', '.join(unknown)} "
                            "(known: matchers, intervals, request_id)")
        if not isinstance(d.get("matchers"), str) or not d["matchers"].strip():
            raise UserError(f"{at}: 'matchers' must be a series selector string, e.g. "
                            "'{__name__=\"up\", job=\"a\"}'")
        matchers = _selector(d["matchers"], f"{at}: matchers")
        ivs = []
        raw = d.get("intervals")
        if raw is not None and not isinstance(raw, list):
            raise UserError(f"{at}: 'intervals' must be a list of {{mint: <ms>, maxt: <ms>}}")
        for j, iv in enumerate(raw or []):
            ia = f"{at}: interval {j}"
            if not isinstance(iv, dict) or set(iv) != {"mint", "maxt"}:
                raise UserError(f"{ia}: want {{mint: <ms>, maxt: <ms>}}, got {iv!r}")
            a, b = _int(iv["mint"], ia, "mint"), _int(iv["maxt"], ia, "maxt")
            if a > b:
                raise UserError(f"{ia}: mint {a} is after maxt {b}")
            ivs.append((a, b))
        rid = d.get("request_id")
        if rid is not None and not isinstance(rid, (str, int)):
            raise UserError(f"{at}: 'request_id' must be a string")
        out.append(DeletionRequest(matchers, ivs, "" if rid is None else str(rid)))
    return out


def relabel_obj(cfg) -> dict:
    """Prometheus' JSON of one ``relabel.Config`` (``thanos.rewrites[].relabels_applied``)."""
    d: dict = {}
    if cfg.source_labels:
        d["source_labels"] = list(cfg.source_labels)
    if cfg.separator:
        d["separator"] = cfg.separator
    d["regex"] = "(.*)" if cfg.regex is None else cfg.regex
    if cfg.modulus:
        d["modulus"] = int(cfg.modulus)
    if cfg.target_label:
        d["target_label"] = cfg.target_label
    if cfg.replacement:
        d["replacement"] = cfg.replacement
    if cfg.action:
        d["action"] = cfg.action
    return d


# ----------------------------------------------------------------------- Prometheus' text forms

def labels_string(lbls) -> str:
    """Prometheus' ``labels.Labels.String()``: ``{a="1", b="2"}``, values Go-quoted, names quoted
    unless legacy-valid."""
    from ..relabel import _go_quote

    return "{" + ", ".join(f"{n if _LEGACY_NAME.fullmatch(n) else _go_quote(n)}={_go_quote(v)}"
                           for n, v in lbls) + "}"


def _ivstr(ivs) -> str:
    return "[" + " ".join(f"{{{a} {b}}}" for a, b in ivs) + "]"


def add_interval(ivs: list, n: tuple) -> list:
    """Prometheus' ``tombstones.Intervals.Add``: insert ``n`` into sorted closed intervals, merging
    the ones it overlaps or touches (``b + 1 == c``)."""
    a, b = n
    if not ivs:
        return [n]
    mini = 0
    if a != MIN_INT64:
        mini = next((i for i, x in enumerate(ivs) if x[1] >= a - 1), len(ivs))
        if mini == len(ivs):
            return ivs + [n]
    maxi = len(ivs) - mini
    if b != MAX_INT64:
        maxi = next((i for i in range(len(ivs) - mini) if ivs[mini + i][0] > b + 1), len(ivs) - mini)
        if maxi == 0:
            return ivs[:mini] + [n] + ivs[mini:]
    lo = min(a, ivs[mini][0])
    hi = max(b, ivs[mini + maxi - 1][1])
    return ivs[:mini] + [(lo, hi)] + ivs[mini + maxi:]


# ------------------------------------------------------------------------------------- modifiers

def _xor_only(chunks, bid: str) -> None:
    from ..tsdb.compact import ENC_XOR

    for c in chunks:
        if int(c[2]) != ENC_XOR:
            raise UserError(f"block {bid}: chunk encoding {int(c[2])} cannot be rewritten (only raw float XOR "
                            "chunks; downsampled blocks are not supported, as in Thanos)")


def _relabelled(stream, rules, note, bid: str) -> tuple[list, set]:
    """Thanos' ``RelabelModifier``: every series relabelled (eagerly, in label order), merged by
    new labels, re-encoded into 120-sample chunks; returns the sorted series and their symbols."""
    from ..relabel import process
    from ..tsdb.compact import _decode, _encode, _merge_samples

    groups: dict[tuple, list] = {}
    for lbls, chunks in stream:
        lbls = tuple(lbls)
        res = process(lbls, rules)
        if not res:
            note(f"Deleted {labels_string(lbls)} "
                 f"{_ivstr([(min(c[0] for c in chunks), max(c[1] for c in chunks))] if chunks else [])}")
            continue
        new = tuple(res.items())
        _xor_only(chunks, bid)
        groups.setdefault(new, []).append(chunks)
        if new != lbls:
            note(f"Relabelled {labels_string(lbls)} {labels_string(new)}")
    symbols = {s for lbls in groups for kv in lbls for s in kv}
    out = []
    for new in sorted(groups):
        parts = [p for chunks in groups[new] if chunks for p in _decode(chunks, bid)]
        t, v = _merge_samples(parts, "chain") if parts else (np.zeros(0, np.int64), np.zeros(0))
        out.append((new, _encode(t, v)))
    return out, symbols


def _deleted(stream: Iterable, requests: list, note, bid: str) -> Iterator[tuple]:
    """Thanos' ``DeletionModifier`` over ``(labels, chunks)``."""
    from ..tsdb.compact import _decode

    for lbls, chunks in stream:
        d = dict(lbls)
        ivs: list = []
        whole = False
        for req in requests:
            if not all((v := d.get(m.name, "")) != "" and m.matches(v) for m in req.matchers):
                continue
            if req.intervals:
                for iv in req.intervals:
                    ivs = add_interval(ivs, iv)
                continue
            whole = True
            break
        if whole:
            note(f"Deleted {labels_string(lbls)} {_ivstr([(chunks[0][0], chunks[-1][1])] if chunks else [])}")
            continue
        if not ivs:
            yield lbls, chunks
            continue
        kept, gone = [], []
        for c in chunks:
            c0, c1 = int(c[0]), int(c[1])
            if any(a <= c0 and c1 <= b for a, b in ivs):
                gone = add_interval(gone, (c0, c1))
                continue
            over: list = []
            for a, b in ivs:
                if c0 <= b and a <= c1:
                    over = add_interval(over, (a, b))
            if not over:
                kept.append(c)
                continue
            for a, b in over:
                gone = add_interval(gone, (max(a, c0), min(b, c1)))
            _xor_only([c], bid)
            t, v = _decode([c], bid)[0]
            keep = np.ones(len(t), bool)
            for a, b in over:
                keep &= ~((t >= a) & (t <= b))
            if keep.any():
                kept.extend(_encode_one(t[keep], v[keep]))
        if gone:
            note(f"Deleted {labels_string(lbls)} {_ivstr(gone)}")
        if kept:
            yield lbls, kept


def _encode_one(t: np.ndarray, v: np.ndarray) -> list:
    """One XOR chunk of all the samples (a cut chunk stays one chunk, as Thanos re-encodes it)."""
    from ..tsdb.chunkenc import encode_xor_many
    from ..tsdb.compact import ENC_XOR

    buf, offs = encode_xor_many(t, np.ascontiguousarray(v), np.array([0, len(t)], dtype=np.int64))
    return [(int(t[0]), int(t[-1]), ENC_XOR, bytes(memoryview(buf)[int(offs[0]):int(offs[1])]))]


# -------------------------------------------------------------------------------------- rewrite

def rewrite(bucket, cfg: RewriteConfig, err: TextIO = sys.stderr) -> int:
    from ..block import ops
    from ..tsdb import ulid as _ulid
    from ..tsdb.block import BlockReader
    from ..tsdb.meta import ThanosMeta
    from ..tsdb.streamwriter import StreamBlockWriter

    if not cfg.deletions and not cfg.relabel:
        raise UserError("rewrite configuration should be provided (--rewrite.to-delete-config or "
                        "--rewrite.to-relabel-config)")
    shutil.rmtree(cfg.tmp_dir, ignore_errors=True)
    os.makedirs(cfg.tmp_dir, exist_ok=True)
    for bid in cfg.ids:
        src = os.path.join(cfg.tmp_dir, bid)
        log.info("downloading block", extra={"source": bid})
        try:
            ops.download(bucket, bid, src)
        except FileNotFoundError as e:
            raise UserError(f"--id={bid}: {e}") from None
        new_id = _ulid.new()
        out_dir = os.path.join(cfg.tmp_dir, new_id)
        os.makedirs(out_dir, exist_ok=True)
        changes = None
        if cfg.change_log:
            changes = open(os.path.join(out_dir, CHANGE_LOG), "w", encoding="utf-8")
            log.info("changelog will be available", extra={"file": os.path.join(out_dir, CHANGE_LOG)})

        def note(line: str, _changes=changes) -> None:
            if _changes is not None:
                _changes.write(line + "\n")
            if cfg.dry_run:
                err.write(line + "\n")

        prog = None
        try:
            with BlockReader.open_dir(src) as r:
                meta = r.meta
                prog = Progress(f"rewrite {bid}", meta.stats.num_series, unit="series").__enter__()
                if not cfg.dry_run and not cfg.prom_blocks and (meta.thanos is None or not meta.thanos.labels):
                    raise UserError(f"block {bid}: empty external labels are not allowed for Thanos block. "
                                    "(use --prom-blocks for blocks of a plain Prometheus)")
                log.info("starting rewrite for block", extra={"source": bid, "new": new_id})
                stream: Iterable = _counted(((lbls, chunks) for lbls, _iv, chunks in r.series_chunks() if chunks),
                                            prog)
                if cfg.relabel:
                    stream, symbols = _relabelled(stream, cfg.relabel, note, bid)
                else:
                    symbols = set(r.index.symbols())
                if cfg.deletions:
                    stream = _deleted(stream, cfg.deletions, note, bid)
                if cfg.dry_run:
                    for _ in stream:
                        pass
                    log.info("dry run finished. Changes should be printed to stderr", extra={"block": bid})
                    continue
                thanos = copy.deepcopy(meta.thanos) if meta.thanos is not None else ThanosMeta()
                thanos.rewrites = list(thanos.rewrites or []) + [{
                    **({"sources": list(meta.compaction.sources)} if meta.compaction.sources else {}),
                    **({"deletions_applied": [q.to_obj() for q in cfg.deletions]} if cfg.deletions else {}),
                    **({"relabels_applied": [relabel_obj(c) for c in cfg.relabel]} if cfg.relabel else {}),
                }]
                thanos.source = "bucket.rewrite"
                thanos.upload_time = None
                comp = copy.deepcopy(meta.compaction)
                comp.sources = [new_id]
                w = StreamBlockWriter(cfg.tmp_dir, symbols, min_time=meta.min_time, max_time=meta.max_time,
                                      thanos=thanos, compaction=comp, block_ulid=new_id, index_stats=False)
                # the writer builds <new>.tmp-for-creation and renames it to <new>/, where the
                # change log has been so far: the log waits beside it, then moves into the block
                parked = out_dir + "." + CHANGE_LOG
                with w:
                    for lbls, chunks in stream:
                        w.add_series(lbls, chunks)
                    if changes is not None:
                        changes.close()
                        os.replace(os.path.join(out_dir, CHANGE_LOG), parked)
                    shutil.rmtree(out_dir, ignore_errors=True)
                    new_meta = w.write()
                if changes is not None:
                    os.makedirs(out_dir, exist_ok=True)
                    os.replace(parked, os.path.join(out_dir, CHANGE_LOG))
        finally:
            if prog is not None:
                prog.__exit__(None, None, None)
            if changes is not None:
                changes.close()
        if new_meta is None:
            log.warning("every series of the block was deleted; no empty block is uploaded",
                        extra={"source": bid, "new": new_id})
        else:
            log.info("uploading new block", extra={"source": bid, "new": new_id})
            if cfg.prom_blocks:
                _upload_prom(bucket, w.final, cfg.hash_func)
            else:
                ops.upload(bucket, w.final, cfg.hash_func)
            log.info("uploaded", extra={"source": bid, "new": new_id})
        if cfg.delete_blocks:
            ops.mark_for_deletion(bucket, bid, "block rewritten")
    log.info("rewrite done", extra={"IDs": ",".join(cfg.ids)})
    return 0


def _counted(stream: Iterable, prog: Progress, every: int = 1000) -> Iterable:
    """``stream`` unchanged, advancing the terminal progress counter as series go by."""
    n = 0
    for item in stream:
        n += 1
        if n % every == 0:
            prog.update(n)
        yield item
    prog.update(n)


def _upload_prom(bucket, block_dir: str, hash_func: str = "") -> None:
    from ..tsdb.upload import upload_block

    upload_block(bucket, block_dir, allow_empty_labels=True, hash_func=hash_func)
