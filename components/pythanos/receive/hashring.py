"""The receiver's hashring: which receivers own a series, the same answer as Thanos v0.42 gives.

A router and the ingestors of a hashring must agree on every series' owners, also when the ring
mixes our receivers and real Thanos ones, so everything that decides routing follows Thanos
(``pkg/receive/hashring.go``, ``config.go``, ``pkg/store/labelpb/label.go``):

* **Series hash**: xxhash64 (seed 0) of ``tenant 0xff (name 0xff value 0xff)*``, the labels in
  the order the request carries them (:func:`series_hash`). The remote-write decoder computes
  it in C; :func:`series_hash` is the reference for tests and slow paths.
* **hashmod**: endpoints sorted by address; replica ``n`` of a series with hash ``h`` lives on
  ``endpoints[(h + n) mod len]`` (uint64 arithmetic).
* **ketama**: every endpoint (in the file's order) owns 1000 ring sections keyed by
  xxhash64(``"<address>:<i>"``), i = 1..1000; a series belongs to the first section whose key is
  >= its hash (wrapping to the first). Each section's replicas are precomputed walking the ring
  forward: endpoints already chosen are skipped, and with availability zones an endpoint is
  skipped while its zone already holds more replicas than the least occupied zone.
* **tenants**: the first hashring (file order) whose tenants match; a hashring without tenants
  matches every tenant. Matching is exact, or Go's ``filepath.Match`` with ``"glob"``.

Routing is vectorised: :meth:`Hashring.route` takes a uint64 array of series hashes and gives,
for each series and replica, the index of its endpoint (numpy ``searchsorted`` over the ketama
ring), so a request is never routed one series at a time in Python.

Where Thanos hangs or fails late, we fail early with the place named: a ketama ring whose zones
cannot hold the replication factor (Thanos loops for ever), a bad glob pattern (Thanos errors on
each request), shuffle sharding (not implemented here: refused rather than routed differently).
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import xxhash
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

__all__ = [
    "HASHMOD", "KETAMA", "ALGORITHMS", "SECTIONS_PER_NODE", "DEFAULT_CAPNPROTO_PORT",
    "HashringConfigError", "InsufficientNodesError", "NoMatchingHashringError",
    "Endpoint", "HashringConfig", "parse_hashrings", "load_hashrings_file", "config_hash_metric_value",
    "series_hash", "series_hashes", "glob_match",
    "Hashring", "HashmodHashring", "KetamaHashring", "SingleNodeHashring", "MultiHashring",
    "new_hashring", "new_multi_hashring", "split_by_endpoint", "HashringFileWatcher",
    "ROUTER_ONLY", "INGESTOR_ONLY", "ROUTER_INGESTOR", "BadReplicaError", "ReplicaPlan", "write_quorum",
    "plan_replicas", "receiver_mode", "external_labels_of",
]

HASHMOD = "hashmod"
KETAMA = "ketama"
ALGORITHMS = (HASHMOD, KETAMA)
SECTIONS_PER_NODE = 1000
DEFAULT_CAPNPROTO_PORT = "19391"
TENANT_MATCHER_EXACT = "exact"
TENANT_MATCHER_GLOB = "glob"
SEP = b"\xff"
_U64 = np.uint64


class HashringConfigError(ValueError):
    """A hashring configuration Thanos (or we) cannot build a hashring from; names the place."""


class InsufficientNodesError(Exception):
    """A replica was asked for that the hashring has no endpoint for (Thanos' text)."""

    def __init__(self, have: int, want: int) -> None:
        self.have, self.want = have, want
        super().__init__(f"insufficient nodes; have {have}, want {want}")


class NoMatchingHashringError(LookupError):
    """No hashring takes the tenant (Thanos' text)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__("no matching hashring to handle tenant")


# --- configuration --------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Endpoint:
    """One receiver: its gRPC ``address`` (what routers dial and ``--receive.local-endpoint``
    names), its availability zone, and its Cap'n Proto address (host:19391 when not given)."""

    address: str
    capnproto_address: str = ""
    az: str = ""

    def has_address(self, addr: str) -> bool:
        return addr == self.address or addr == self.capnproto_address


@dataclass(frozen=True)
class HashringConfig:
    """One entry of the hashrings file. ``algorithm`` is "" when the entry leaves it to
    ``--receive.hashrings-algorithm``; ``tenants`` empty means the entry takes every tenant."""

    hashring: str = ""
    tenants: tuple[str, ...] = ()
    tenant_matcher_type: str = ""
    endpoints: tuple[Endpoint, ...] = ()
    algorithm: str = ""
    external_labels: tuple[tuple[str, str], ...] = ()
    shard_size: int = 0
    index: int = 0
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def where(self) -> str:
        return f"hashring {self.index}" + (f" ({self.hashring!r})" if self.hashring else "")


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number",
               type(None): "null"}


def _jtype(v: Any) -> str:
    return "object" if isinstance(v, _Obj) else _JSON_TYPES.get(type(v), type(v).__name__)


def _is_array(v: Any) -> bool:
    return isinstance(v, list) and not isinstance(v, _Obj)


def _fields(pairs: list[tuple[str, Any]], known: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """A JSON object's members as Go's encoding/json assigns them: a key matches a field by name
    exactly or case-insensitively, a later key overrides an earlier one, unknown keys are ignored
    (returned, to warn about)."""
    by_fold = {k.lower(): k for k in known}
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in pairs:
        name = key if key in known else by_fold.get(key.lower())
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    return out, unknown


class _Obj(list):
    """A JSON object kept as its member list (order and duplicates preserved, as Go reads them)."""


def _string(v: Any, where: str) -> str:
    if v is None:  # Go: null leaves a string unchanged
        return ""
    if not isinstance(v, str):
        raise HashringConfigError(f"{where}: expected a string, got {_jtype(v)}")
    return v


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not _is_array(v):
        raise HashringConfigError(f"{where}: expected an array of strings, got {_jtype(v)}")
    return tuple(_string(x, f"{where}[{i}]") for i, x in enumerate(v))


def _endpoint(v: Any, where: str) -> Endpoint:
    if isinstance(v, str) or v is None:
        address, capnp, az = v or "", "", ""
    elif isinstance(v, _Obj):
        f, _ = _fields(v, ("address", "capnproto_address", "az"))
        address = _string(f.get("address"), f"{where}.address")
        capnp = _string(f.get("capnproto_address"), f"{where}.capnproto_address")
        az = _string(f.get("az"), f"{where}.az")
    else:
        raise HashringConfigError(f"{where}: expected a string or an object {{address, az, capnproto_address}}, "
                                  f"got {_jtype(v)}")
    if not address:
        raise HashringConfigError(f"{where}: endpoint address must be set")
    if not capnp:
        capnp = address.split(":", 1)[0] + ":" + DEFAULT_CAPNPROTO_PORT
    return Endpoint(address=address, capnproto_address=capnp, az=az)


_HASHRING_FIELDS = ("hashring", "tenants", "tenant_matcher_type", "endpoints", "algorithm", "external_labels",
                    "shuffle_sharding_config")


def _hashring(v: Any, index: int) -> HashringConfig:
    where = f"hashring {index}"
    if v is None:  # Go: a null element is a zero HashringConfig (no tenants, no endpoints)
        return HashringConfig(index=index)
    if not isinstance(v, _Obj):
        raise HashringConfigError(f"{where}: expected an object, got {_jtype(v)}")
    f, unknown = _fields(v, _HASHRING_FIELDS)
    name = _string(f.get("hashring"), f"{where}: hashring")
    if name:
        where = f"{where} ({name!r})"
    warnings = [f"{where}: unknown field {k!r} ignored" for k in unknown]
    tenants = _strings(f.get("tenants"), f"{where}: tenants")
    matcher = _string(f.get("tenant_matcher_type"), f"{where}: tenant_matcher_type")
    if matcher not in ("", TENANT_MATCHER_EXACT, TENANT_MATCHER_GLOB):
        warnings.append(f"{where}: tenant_matcher_type {matcher!r} is neither {TENANT_MATCHER_EXACT!r} nor "
                        f"{TENANT_MATCHER_GLOB!r}: no tenant matches this hashring (as in Thanos)")
    if matcher == TENANT_MATCHER_GLOB:
        for i, t in enumerate(tenants):
            try:
                _glob_regex(t)
            except ValueError as e:
                raise HashringConfigError(f"{where}: tenants[{i}]: bad glob pattern {t!r}: {e}") from None
    eps = f.get("endpoints")
    if eps is not None and not _is_array(eps):
        raise HashringConfigError(f"{where}: endpoints: expected an array, got {_jtype(eps)}")
    endpoints = tuple(_endpoint(e, f"{where}: endpoints[{i}]") for i, e in enumerate(eps or ()))
    algorithm = _string(f.get("algorithm"), f"{where}: algorithm")
    if algorithm not in ("",) + ALGORITHMS:
        warnings.append(f"{where}: algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}: "
                        f"falling back to {HASHMOD} (as Thanos)")
    ext = f.get("external_labels")
    if ext is None:
        external: tuple[tuple[str, str], ...] = ()
    elif isinstance(ext, _Obj):
        m: dict[str, str] = {}
        for k, val in ext:
            m[k] = _string(val, f"{where}: external_labels.{k}")
        external = tuple(sorted(m.items()))
    else:
        raise HashringConfigError(f"{where}: external_labels: expected an object of strings, got {_jtype(ext)}")
    shard_size = 0
    ss = f.get("shuffle_sharding_config")
    if ss is not None:
        if not isinstance(ss, _Obj):
            raise HashringConfigError(f"{where}: shuffle_sharding_config: expected an object, got {_jtype(ss)}")
        sf, _ = _fields(ss, ("shard_size", "cache_size", "zone_awareness_disabled", "overrides"))
        size = sf.get("shard_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise HashringConfigError(f"{where}: shuffle_sharding_config.shard_size: expected an integer, "
                                      f"got {_jtype(size)}")
        shard_size = size or 0
    for w in warnings:
        log.warning(w)
    return HashringConfig(hashring=name, tenants=tenants, tenant_matcher_type=matcher, endpoints=endpoints,
                          algorithm=algorithm, external_labels=external, shard_size=shard_size, index=index,
                          warnings=tuple(warnings))


def parse_hashrings(content: Union[str, bytes], source: str = "") -> list[HashringConfig]:
    """The hashrings JSON (``--receive.hashrings`` or the file's content) as Thanos reads it: an
    array of hashring objects. An empty array is returned as is (Thanos' file watcher refuses it,
    see :func:`load_hashrings_file`); ``null`` gives ``[]`` too."""
    prefix = f"{source}: " if source else ""
    try:
        doc = json.loads(content, object_pairs_hook=_Obj)
    except (ValueError, UnicodeDecodeError) as e:
        raise HashringConfigError(f"{prefix}failed to parse configuration file: {e}: "
                                  f"configuration file is not parsable") from None
    if doc is None:
        return []
    if not _is_array(doc):
        raise HashringConfigError(f"{prefix}failed to parse configuration file: expected an array of hashrings, "
                                  f"got {_jtype(doc)}: configuration file is not parsable")
    try:
        return [_hashring(h, i) for i, h in enumerate(doc)]
    except HashringConfigError as e:
        raise HashringConfigError(f"{prefix}{e}") from None


def config_hash_metric_value(content: bytes) -> float:
    """``thanos_receive_config_hash``: the first 48 bits of the content's SHA-256, little endian."""
    return float(int.from_bytes(hashlib.sha256(content).digest()[:6], "little"))


def load_hashrings_file(path: Union[str, os.PathLike]) -> tuple[list[HashringConfig], bytes]:
    """Read and parse a hashrings file (its configs and raw content); an empty array is an error
    there, as in Thanos."""
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise HashringConfigError(f"failed to read configuration file: {e}") from None
    configs = parse_hashrings(content, source=str(path))
    if not configs:
        raise HashringConfigError(f"failed to load configuration file, path: {path}: configuration file is empty")
    return configs, content


# --- tenant globs (Go's path/filepath.Match) -------------------------------------------------

_GLOB_CACHE: dict[str, re.Pattern] = {}


def _glob_regex(pattern: str) -> re.Pattern:
    """Go's filepath.Match pattern as a regex (full match): ``*`` any run without ``/``, ``?`` one
    character but ``/``, ``[...]``/``[^...]`` classes with ranges, ``\\`` escapes. A malformed
    pattern raises ValueError("syntax error in pattern"), Go's ErrBadPattern text."""
    rx = _GLOB_CACHE.get(pattern)
    if rx is not None:
        return rx
    bad = ValueError("syntax error in pattern")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise bad
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            if negated:
                i += 1
            ranges: list[str] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break

                def esc(j: int) -> tuple[str, int]:
                    if j >= n or pattern[j] in "-]":
                        raise bad
                    if pattern[j] == "\\":
                        j += 1
                        if j >= n:
                            raise bad
                    if j + 1 >= n:  # Go: a class must be followed by more pattern (its "]")
                        raise bad
                    return pattern[j], j + 1

                lo, i = esc(i)
                hi = lo
                if pattern[i] == "-":
                    hi, i = esc(i + 1)
                ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            out.append(("[^" if negated else "[") + "".join(ranges) + "]")
        else:
            out.append(re.escape(c))
            i += 1
    rx = re.compile("".join(out), re.DOTALL)
    if len(_GLOB_CACHE) < 4096:
        _GLOB_CACHE[pattern] = rx
    return rx


def glob_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)`` (ValueError for a bad pattern)."""
    return _glob_regex(pattern).fullmatch(name) is not None


# --- series hash --------------------------------------------------------------------------------

def _b(s: Union[str, bytes]) -> bytes:
    return s if isinstance(s, bytes) else s.encode()


def series_hash(tenant: Union[str, bytes], labels: Iterable[tuple[Union[str, bytes], Union[str, bytes]]]) -> int:
    """Thanos' ``labelpb.HashWithPrefix(tenant, labels)``: xxhash64, seed 0, over the tenant,
    0xff, then each label's name, 0xff, value, 0xff, in the given order."""
    h = xxhash.xxh64()
    h.update(_b(tenant) + SEP)
    for name, value in labels:
        h.update(_b(name) + SEP + _b(value) + SEP)
    return h.intdigest()


def series_hashes(tenant: Union[str, bytes],
                  label_sets: Iterable[Iterable[tuple[Union[str, bytes], Union[str, bytes]]]]) -> np.ndarray:
    """:func:`series_hash` of many series, as a uint64 array (a reference for tests and tools;
    the write path gets these hashes from the remote-write decoder)."""
    return np.fromiter((series_hash(tenant, ls) for ls in label_sets), dtype=_U64)


# --- rings --------------------------------------------------------------------------------------

def _replica_list(replicas: Union[int, Sequence[int]]) -> list[int]:
    return list(range(replicas)) if isinstance(replicas, (int, np.integer)) else [int(r) for r in replicas]


class Hashring:
    """One hashring. ``endpoints`` is the list the indices of :meth:`route` refer to."""

    endpoints: tuple[Endpoint, ...] = ()
    algorithm: str = ""

    def route(self, hashes: np.ndarray, replicas: Union[int, Sequence[int]] = 1) -> np.ndarray:
        """For series hashes (uint64, shape (n,)) and replica numbers (0-based; an int r means
        0..r-1), the endpoint index of each (series, replica): int64, shape (n, len(replicas))."""
        raise NotImplementedError

    def get_n(self, h: int, n: int = 0) -> Endpoint:
        """The endpoint of replica ``n`` of the series with hash ``h`` (Thanos' GetN)."""
        return self.endpoints[int(self.route(np.array([h], dtype=_U64), [n])[0, 0])]

    def _check(self, reps: list[int]) -> None:
        have = len(self.endpoints)
        for n in reps:
            if n < 0 or n >= have:
                raise InsufficientNodesError(have, n + 1)


class SingleNodeHashring(Hashring):
    """What a receiver without hashring configuration routes to: itself."""

    algorithm = "single"

    def __init__(self, address: str) -> None:
        self.endpoints = (Endpoint(address=address, capnproto_address=address),)

    def route(self, hashes: np.ndarray, replicas: Union[int, Sequence[int]] = 1) -> np.ndarray:
        reps = _replica_list(replicas)
        self._check(reps)
        return np.zeros((len(hashes), len(reps)), dtype=np.int64)


class HashmodHashring(Hashring):
    """Thanos' ``simpleHashring``: endpoints sorted by address, replica n at (h + n) mod len."""

    algorithm = HASHMOD

    def __init__(self, endpoints: Sequence[Endpoint], where: str = "hashring") -> None:
        if any(e.az for e in endpoints):
            raise HashringConfigError(f"{where}: Hashmod algorithm does not support AZ aware hashring configuration. "
                                      "Either use Ketama or remove AZ configuration.")
        self.endpoints = tuple(sorted(endpoints, key=lambda e: e.address))

    def route(self, hashes: np.ndarray, replicas: Union[int, Sequence[int]] = 1) -> np.ndarray:
        reps = _replica_list(replicas)
        self._check(reps)
        h = np.asarray(hashes, dtype=_U64)
        m = _U64(len(self.endpoints))
        out = np.empty((len(h), len(reps)), dtype=np.int64)
        with np.errstate(over="ignore"):
            for j, n in enumerate(reps):
                out[:, j] = (h + _U64(n)) % m  # uint64 wrap-around, as Go's
        return out


class KetamaHashring(Hashring):
    """Thanos' ``ketamaHashring``: 1000 sections per endpoint on a ring of xxhash64 keys, each
    section's ``replication_factor`` owners precomputed (distinct endpoints, zones balanced)."""

    algorithm = KETAMA

    def __init__(self, endpoints: Sequence[Endpoint], replication_factor: int,
                 sections_per_node: int = SECTIONS_PER_NODE, where: str = "hashring") -> None:
        if len(endpoints) < replication_factor:
            raise HashringConfigError(f"{where}: ketama: amount of endpoints needs to be larger than "
                                      "replication factor")
        self.endpoints = tuple(endpoints)
        self.replication_factor = replication_factor
        keys = np.fromiter((xxhash.xxh64_intdigest(f"{e.address}:{i}".encode())
                            for e in endpoints for i in range(1, sections_per_node + 1)),
                           dtype=_U64, count=len(endpoints) * sections_per_node)
        owner = np.repeat(np.arange(len(endpoints), dtype=np.int64), sections_per_node)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.owner = owner[order]
        self.replicas = self._section_replicas(where)
        self._build_index()

    def _section_replicas(self, where: str) -> np.ndarray:
        """Owners of each section: the section's endpoint first, then walking the ring forward,
        skipping endpoints already chosen and, when the ring has more than one zone, endpoints
        whose zone already holds more of this section's replicas than the least occupied zone."""
        rf = self.replication_factor
        size = len(self.owner)
        out = np.empty((size, rf), dtype=np.int64)
        if rf == 0 or size == 0:
            return out
        owner = self.owner.tolist()
        zones = sorted({e.az for e in self.endpoints})
        if len(zones) <= 1:
            # Only distinctness matters: for each section, the next rf distinct owners.
            for i in range(size):
                chosen: list[int] = []
                j = i
                while len(chosen) < rf:
                    e = owner[j]
                    if e not in chosen:
                        chosen.append(e)
                    j = j + 1 if j + 1 < size else 0
                out[i] = chosen
            return out
        zone_of = [zones.index(e.az) for e in self.endpoints]
        for i in range(size):
            chosen = []
            spread = [0] * len(zones)
            j, idle = i, 0
            while len(chosen) < rf:
                e = owner[j]
                j = j + 1 if j + 1 < size else 0
                z = zone_of[e]
                if e in chosen or (spread[z] > 0 and spread[z] > min(spread)):
                    idle += 1
                    if idle > size:  # a whole turn without progress: Thanos would loop for ever
                        raise HashringConfigError(
                            f"{where}: ketama: cannot place {rf} replicas with zones balanced over the zones "
                            f"{', '.join(repr(z) for z in zones)} (endpoints per zone: "
                            f"{', '.join(str(zone_of.count(k)) for k in range(len(zones)))})")
                    continue
                idle = 0
                chosen.append(e)
                spread[z] += 1
            out[i] = chosen
        return out

    def _build_index(self) -> None:
        """A table over the top bits of the key space: ``start[b]`` is the first section whose key
        is >= b << shift. Keys are uniform, so a bucket holds a handful at most, and a lookup is
        a few vector passes instead of numpy's binary search per element (about 5x faster)."""
        n = len(self.keys)
        bits = min(20, max(8, int(n).bit_length() + 2))
        self._shift = _U64(64 - bits)
        bounds = np.arange(1 << bits, dtype=_U64) << self._shift
        start = np.empty((1 << bits) + 1, dtype=np.int64)
        start[:-1] = np.searchsorted(self.keys, bounds, side="left")
        start[-1] = n
        self._start = start
        self._max_per_bucket = int(np.diff(start).max()) if n else 0

    def section_of(self, hashes: np.ndarray) -> np.ndarray:
        """The ring section each hash falls in: the first key >= hash, wrapping to 0."""
        h = np.asarray(hashes, dtype=_U64)
        b = (h >> self._shift).astype(np.int64)
        pos = self._start[b]
        end = self._start[b + 1]
        last = len(self.keys) - 1
        # pos += the number of keys of the hash's bucket that are below the hash
        base = pos.copy()
        for k in range(self._max_per_bucket):
            idx = base + k
            pos += (idx < end) & (self.keys[np.minimum(idx, last)] < h)
        pos[pos == len(self.keys)] = 0
        return pos

    def route(self, hashes: np.ndarray, replicas: Union[int, Sequence[int]] = 1) -> np.ndarray:
        reps = _replica_list(replicas)
        self._check(reps)
        for n in reps:
            if n >= self.replication_factor:
                raise InsufficientNodesError(self.replication_factor, n + 1)
        rows = np.take(self.replicas, self.section_of(hashes), axis=0)
        return rows if reps == list(range(self.replication_factor)) else rows[:, reps]


def new_hashring(config: HashringConfig, algorithm: str, replication_factor: int) -> Hashring:
    """The ring of one hashring entry; its own ``algorithm`` overrides the flag's. An unknown
    algorithm falls back to hashmod, as in Thanos (it was warned about at parse time)."""
    active = config.algorithm or algorithm
    where = config.where
    if config.shard_size > 0:
        if active != KETAMA:
            raise HashringConfigError(f"{where}: hashmod algorithm does not support shuffle sharding. Either use "
                                      "Ketama or remove shuffle sharding configuration")
        if config.shard_size > len(config.endpoints):
            raise HashringConfigError(f"{where}: shard size {config.shard_size} is larger than number of nodes in "
                                      f"hashring {config.hashring} ({len(config.endpoints)})")
        raise HashringConfigError(f"{where}: shuffle_sharding_config: shuffle sharding is not supported by pythanos "
                                  "(it would route differently from Thanos); remove shard_size")
    if active == KETAMA:
        return KetamaHashring(config.endpoints, replication_factor, where=where)
    return HashmodHashring(config.endpoints, where=where)


class MultiHashring:
    """All hashrings of a file: a tenant goes to the first whose tenants match (file order), a
    hashring without tenants taking every tenant. Tenants' rings are cached."""

    def __init__(self, configs: Sequence[HashringConfig], rings: Sequence[Hashring]) -> None:
        self.configs = tuple(configs)
        self.rings = tuple(rings)
        self._cache: dict[str, int] = {}
        self._exact: list[Optional[frozenset]] = []
        self._globs: list[tuple[re.Pattern, ...]] = []
        for c in self.configs:
            if not c.tenants:
                self._exact.append(None)
                self._globs.append(())
            elif c.tenant_matcher_type in ("", TENANT_MATCHER_EXACT):
                self._exact.append(frozenset(c.tenants))
                self._globs.append(())
            elif c.tenant_matcher_type == TENANT_MATCHER_GLOB:
                self._exact.append(frozenset())
                self._globs.append(tuple(_glob_regex(t) for t in c.tenants))
            else:  # unknown matcher type: Thanos matches no tenant with it
                self._exact.append(frozenset())
                self._globs.append(())
        self.nodes = tuple(sorted((e for r in self.rings for e in r.endpoints), key=lambda e: e.address))

    def index_for(self, tenant: str) -> int:
        """The index of the hashring that takes ``tenant`` (NoMatchingHashringError if none)."""
        i = self._cache.get(tenant)
        if i is not None:
            return i
        for i, (exact, globs) in enumerate(zip(self._exact, self._globs)):
            if exact is None or tenant in exact or any(g.fullmatch(tenant) for g in globs):
                if len(self._cache) < 65536:
                    self._cache[tenant] = i
                return i
        raise NoMatchingHashringError(tenant)

    def ring_for(self, tenant: str) -> Hashring:
        return self.rings[self.index_for(tenant)]

    def config_for(self, tenant: str) -> HashringConfig:
        return self.configs[self.index_for(tenant)]

    def route(self, tenant: str, hashes: np.ndarray,
              replicas: Union[int, Sequence[int]] = 1) -> tuple[Hashring, np.ndarray]:
        """The tenant's ring and :meth:`Hashring.route` of the hashes on it."""
        ring = self.ring_for(tenant)
        return ring, ring.route(hashes, replicas)

    def get_n(self, tenant: str, h: int, n: int = 0) -> Endpoint:
        return self.ring_for(tenant).get_n(h, n)


def new_multi_hashring(configs: Sequence[HashringConfig], algorithm: str = HASHMOD,
                       replication_factor: int = 1) -> MultiHashring:
    """Thanos' NewMultiHashring: one ring per entry, ``algorithm`` (the flag) unless the entry
    names its own."""
    if algorithm not in ALGORITHMS:
        raise HashringConfigError(f"--receive.hashrings-algorithm must be one of {', '.join(ALGORITHMS)}, "
                                  f"got {algorithm!r}")
    if replication_factor < 1:
        raise HashringConfigError(f"replication factor must be at least 1, got {replication_factor}")
    return MultiHashring(configs, [new_hashring(c, algorithm, replication_factor) for c in configs])


def split_by_endpoint(indices: np.ndarray,
                      replicas: Union[int, Sequence[int]]) -> list[tuple[int, int, np.ndarray]]:
    """Group a :meth:`Hashring.route` result into Thanos' forward requests: one
    ``(endpoint index, replica number, series positions)`` per endpoint and replica, positions
    ascending (the request's order), groups by endpoint then replica."""
    reps = _replica_list(replicas)
    n, r = indices.shape
    if n == 0:
        return []
    r = min(r, len(reps))
    ne = int(indices[:, :r].max()) + 1
    groups = ne * r
    # One stable sort over (endpoint, replica) keys laid out replica column after column: a group's
    # series come out ascending. Small keys sort by radix (uint8/uint16).
    key = (indices[:, :r] * r + np.arange(r, dtype=np.int64)).T.ravel()
    kt = np.uint8 if groups <= 256 else np.uint16 if groups <= 65536 else np.int64
    order = np.argsort(key.astype(kt), kind="stable")
    ids = order % n
    out: list[tuple[int, int, np.ndarray]] = []
    start = 0
    for g, c in enumerate(np.bincount(key, minlength=groups).tolist()):
        if c:
            out.append((g // r, reps[g % r], ids[start:start + c]))
            start += c
    out.sort(key=lambda t: (t[0], t[1]))
    return out


# --- replication ------------------------------------------------------------------------------

ROUTER_ONLY = "RouterOnly"
INGESTOR_ONLY = "IngestorOnly"
ROUTER_INGESTOR = "RouterIngestor"


def receiver_mode(hashring_configured: bool, local_endpoint: str) -> str:
    """Thanos' receiver modes: a hashring without ``--receive.local-endpoint`` only routes, no
    hashring only ingests, both do both."""
    if hashring_configured:
        return ROUTER_INGESTOR if local_endpoint else ROUTER_ONLY
    return INGESTOR_ONLY


class BadReplicaError(ValueError):
    """A request's replica number above the replication factor (HTTP 400, gRPC InvalidArgument)."""

    def __init__(self, replica: int, replication_factor: int) -> None:
        self.replica, self.replication_factor = replica, replication_factor
        super().__init__("request replica exceeds receiver replication factor")


def write_quorum(replication_factor: int) -> int:
    """Replicas that must succeed before a write is acknowledged: RF/2 + 1, except 1 for RF 2
    (Thanos since v0.38)."""
    return 1 if replication_factor == 2 else replication_factor // 2 + 1


@dataclass(frozen=True)
class ReplicaPlan:
    """What to do with one incoming request: the 0-based replica numbers to place its series at
    (each forwarded with wire replica n + 1), whether it was already replicated by a router
    (then it is placed at that one replica, never fanned out again) and the quorum."""

    replicas: tuple[int, ...]
    replicated: bool
    quorum: int


def plan_replicas(wire_replica: int, replication_factor: int, mode: str = ROUTER_INGESTOR) -> ReplicaPlan:
    """Thanos' handleRequest: ``wire_replica`` is the gRPC ``WriteRequest.replica`` or the HTTP
    ``--receive.replica-header`` (``THANOS-REPLICA``) value, 1-based, 0 = not replicated. Router-only
    and ingestor-only receivers ignore it (acyclic topologies); above the replication factor it
    is refused."""
    if mode in (ROUTER_ONLY, INGESTOR_ONLY):
        wire_replica = 0
    if wire_replica < 0 or wire_replica > replication_factor:
        raise BadReplicaError(wire_replica, replication_factor)
    if wire_replica:
        return ReplicaPlan((wire_replica - 1,), True, 1)
    return ReplicaPlan(tuple(range(replication_factor)), False, write_quorum(replication_factor))


# --- file watcher -----------------------------------------------------------------------------

OnChange = Callable[[list[HashringConfig]], Union[None, Awaitable[None]]]


class HashringFileWatcher:
    """Follows a hashrings file: a cheap ``stat`` every ``poll_interval`` (file identity, size,
    mtime), a full re-read every ``refresh_interval`` (Thanos'
    ``--receive.hashrings-file-refresh-interval``, its fallback when fsnotify misses a change);
    calls ``on_change(configs)`` when the content changed and parses. A bad file is logged and
    counted, the last good configuration stays. Thanos' metric names."""

    def __init__(self, path: Union[str, os.PathLike], on_change: OnChange, *,
                 refresh_interval: float = 300.0, poll_interval: float = 1.0,
                 registry: Optional[CollectorRegistry] = None,
                 validate: Optional[Callable[[list[HashringConfig]], Any]] = None) -> None:
        self.path = os.fspath(path)
        self.on_change = on_change
        self.refresh_interval = refresh_interval
        self.poll_interval = poll_interval
        self.validate = validate
        self.last_hash: Optional[bytes] = None
        self.last_error: Optional[BaseException] = None
        self.configs: Optional[list[HashringConfig]] = None
        self._stat: Optional[tuple] = None
        self._wake = asyncio.Event()
        reg = registry
        self.m_hash = Gauge("thanos_receive_config_hash", "Hash of the currently loaded hashring configuration file.",
                            registry=reg)
        self.m_success = Gauge("thanos_receive_config_last_reload_successful",
                               "Whether the last hashring configuration file reload attempt was successful.",
                               registry=reg)
        self.m_success_ts = Gauge("thanos_receive_config_last_reload_success_timestamp_seconds",
                                  "Timestamp of the last successful hashring configuration file reload.", registry=reg)
        self.m_changes = Counter("thanos_receive_hashrings_file_changes_total",
                                 "The number of times the hashrings configuration file has changed.", registry=reg)
        self.m_errors = Counter("thanos_receive_hashrings_file_errors_total",
                                "The number of errors watching the hashrings configuration file.", registry=reg)
        self.m_refreshes = Counter("thanos_receive_hashrings_file_refreshes_total",
                                   "The number of refreshes of the hashrings configuration file.", registry=reg)
        self.m_nodes = Gauge("thanos_receive_hashring_nodes", "The number of nodes per hashring.", ["name"],
                             registry=reg)
        self.m_tenants = Gauge("thanos_receive_hashring_tenants", "The number of tenants per hashring.", ["name"],
                               registry=reg)

    def _stat_key(self) -> Optional[tuple]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    async def refresh(self) -> bool:
        """Re-read the file now; True when a new configuration was handed to ``on_change``."""
        self.m_refreshes.inc()
        self._stat = self._stat_key()
        try:
            configs, content = load_hashrings_file(self.path)
            if self.validate is not None:
                self.validate(configs)
        except Exception as e:  # a bad file must not stop the watcher: keep the last good config
            self.m_errors.inc()
            self.m_success.set(0)
            self.last_error = e
            log.error("failed to load configuration file", extra={"err": str(e), "path": self.path})
            return False
        self.last_error = None
        # Thanos leaves the gauge at 1 after a failed reload; ours says whether the last read was good.
        self.m_success.set(1)
        digest = hashlib.sha256(content).digest()
        if digest == self.last_hash:
            return False
        self.m_changes.inc()
        self.last_hash = digest
        self.configs = configs
        self.m_hash.set(config_hash_metric_value(content))
        self.m_success_ts.set(time.time())
        for c in configs:
            self.m_nodes.labels(c.hashring).set(len(c.endpoints))
            self.m_tenants.labels(c.hashring).set(len(c.tenants))
        result = self.on_change(configs)
        if inspect.isawaitable(result):
            await result
        return True

    def poke(self) -> None:
        """Check the file at once (as a file-system event would)."""
        self._wake.set()

    async def run(self) -> None:
        """Load now, then follow the file until cancelled."""
        await self.refresh()
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self.refresh_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass
            poked = self._wake.is_set()
            self._wake.clear()
            if poked or loop.time() >= next_refresh or self._stat_key() != self._stat:
                await self.refresh()
                next_refresh = loop.time() + self.refresh_interval


def external_labels_of(configs: Sequence[HashringConfig], tenant: str) -> Mapping[str, str]:
    """The ``external_labels`` of the hashring that takes ``tenant`` ({} when none does)."""
    m = MultiHashring(configs, [SingleNodeHashring("") for _ in configs])
    try:
        return dict(m.config_for(tenant).external_labels)
    except NoMatchingHashringError:
        return {}
