"""Thanos' objstore YAML (``thanos-io/objstore`` ``client/factory.go``), parsed strictly.

```yaml
type: S3            # case-insensitive; S3 and FILESYSTEM are supported
config: {...}       # the provider's keys; unknown keys are errors (yaml.UnmarshalStrict)
prefix: some/dir    # optional: every key is stored under prefix/
```

* Only the first YAML document is read.
* ``$(VAR)`` is replaced by the environment variable ``VAR`` before parsing, over the whole
  text (as Thanos' extkingpin ``WithEnvSubstitution``); an unset variable is an error naming it.
* String keys take any scalar as its text (``bucket: 123`` is the bucket ``"123"``) and ``null``
  or an empty value means "unset", as Go's yaml.v2 does; booleans and integers must be YAML
  booleans and integers; durations use Prometheus' syntax (``1m30s``, ``2m``, ``0``).
* Every error is a :class:`pythanos.errors.ConfigError` whose message starts with the flag or
  file (``source``) and names the key, e.g.
  ``--objstore.config-file=/x/bucket.yml: config.bucket: required``.
"""
from __future__ import annotations

import difflib
import os
import re
from typing import Any, Callable

import yaml

from ..errors import ConfigError
from .bucket import Bucket, PrefixedBucket, validate_key
from .filesystem import FilesystemBucket
from .metrics import instrument
from .s3 import HTTPConfig, S3Bucket, S3Config, SSEConfig, TLSConfig

SUPPORTED_TYPES = ("S3", "FILESYSTEM")
THANOS_TYPES = ("S3", "GCS", "AZURE", "SWIFT", "COS", "ALIYUNOSS", "BOS", "OCI", "OBS", "FILESYSTEM")

_ENV_RE = re.compile(r"\$\(([a-zA-Z_0-9]+)\)")
_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


class _Fail(Exception):
    def __init__(self, path: str, msg: str, node: yaml.Node | None = None):
        super().__init__(msg)
        self.path, self.msg, self.node = path, msg, node


# --- typed scalar decoders (Go yaml.v2 semantics) --------------------------------------------------

def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _str(node: yaml.Node, path: str) -> str:
    if _is_null(node):
        return ""
    if not isinstance(node, yaml.ScalarNode):
        raise _Fail(path, "want a string", node)
    return node.value


def _bool(node: yaml.Node, path: str) -> bool:
    if _is_null(node):
        return False
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return bool(_construct(node))
    raise _Fail(path, f"want true or false, got {_describe(node)}", node)


def _int(node: yaml.Node, path: str) -> int:
    if _is_null(node):
        return 0
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        return int(_construct(node))
    raise _Fail(path, f"want an integer, got {_describe(node)}", node)


def _duration(node: yaml.Node, path: str) -> float:
    """Prometheus model.Duration in seconds."""
    s = _str(node, path)
    if s == "":
        return 0.0
    m = _DURATION_RE.match(s)
    if s == "0":
        return 0.0
    if not m or not any(m.groups()):
        raise _Fail(path, f"not a valid duration string: {s!r} (want e.g. 1m30s, 2m, 500ms)", node)
    return float(sum(int(g) * u for g, u in zip(m.groups(), _DURATION_UNITS) if g))


def _str_map(node: yaml.Node, path: str) -> dict[str, str]:
    if _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise _Fail(path, f"want a mapping of strings, got {_describe(node)}", node)
    out: dict[str, str] = {}
    for k, v in node.value:
        key = _str(k, path)
        if key in out:
            raise _Fail(f"{path}.{key}", "key already set in map", k)
        out[key] = _str(v, f"{path}.{key}")
    return out


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a mapping" if isinstance(node, yaml.MappingNode) else "a sequence"


Schema = dict[str, Any]  # key -> decoder function, or a nested Schema


def _struct(node: yaml.Node, path: str, schema: Schema) -> dict[str, Any]:
    """Decode a mapping against ``schema``; unknown and duplicate keys are errors."""
    if _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise _Fail(path or "(top level)", f"want a mapping, got {_describe(node)}", node)
    out: dict[str, Any] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            raise _Fail(path or "(top level)", "mapping keys must be strings", knode)
        key = knode.value
        where = f"{path}.{key}" if path else key
        if key not in schema:
            hint = difflib.get_close_matches(key, list(schema), n=1)
            msg = f"unknown key {key!r}".replace("'", '"')
            msg += f' (did you mean "{hint[0]}"?)' if hint else f" (known keys: {', '.join(schema)})"
            raise _Fail(path or "(top level)", msg, knode)
        if key in out:
            raise _Fail(where, "key already set in map", knode)
        spec = schema[key]
        out[key] = _struct(vnode, where, spec) if isinstance(spec, dict) else spec(vnode, where)
    return out


_TLS: Schema = {"ca_file": _str, "cert_file": _str, "key_file": _str, "server_name": _str,
                "insecure_skip_verify": _bool}
_HTTP: Schema = {
    "idle_conn_timeout": _duration, "response_header_timeout": _duration, "insecure_skip_verify": _bool,
    "tls_handshake_timeout": _duration, "expect_continue_timeout": _duration, "max_idle_conns": _int,
    "max_idle_conns_per_host": _int, "max_conns_per_host": _int, "tls_config": _TLS,
    "disable_compression": _bool,
}
S3_SCHEMA: Schema = {
    "bucket": _str, "endpoint": _str, "region": _str, "disable_dualstack": _bool, "aws_sdk_auth": _bool,
    "access_key": _str, "insecure": _bool, "signature_version2": _bool, "secret_key": _str,
    "session_token": _str, "put_user_metadata": _str_map, "http_config": _HTTP, "trace": {"enable": _bool},
    "list_objects_version": _str, "bucket_lookup_type": _str, "send_content_md5": _bool,
    "disable_multipart": _bool, "part_size": _int,
    "sse_config": {"type": _str, "kms_key_id": _str, "kms_encryption_context": _str_map, "encryption_key": _str},
    "sts_endpoint": _str, "max_retries": _int,
}
FILESYSTEM_SCHEMA: Schema = {"directory": _str}


def _any(node: yaml.Node, path: str) -> yaml.Node:
    return node


TOP_SCHEMA: Schema = {"type": _str, "config": _any, "prefix": _str}


# --- building buckets -------------------------------------------------------------------------------

def _s3_config(d: dict[str, Any]) -> S3Config:
    cfg = S3Config()
    for k, v in d.items():
        if k == "http_config":
            tls = TLSConfig(**v.pop("tls_config", {}))
            hc = HTTPConfig(**v)
            hc.tls_config = tls
            cfg.http_config = hc
        elif k == "sse_config":
            cfg.sse_config = SSEConfig(**v)
        elif k == "trace":
            cfg.trace_enable = bool(v.get("enable", False))
        elif k == "part_size" and v == 0:
            continue  # 0 means "default", as in Thanos
        elif k == "bucket_lookup_type" and v == "":
            continue
        else:
            setattr(cfg, k, v)
    return cfg


def _build_s3(node: yaml.Node) -> Bucket:
    cfg = _s3_config(_struct(node, "config", S3_SCHEMA))
    errs = cfg.validate()
    if errs:
        key, msg = errs[0]
        raise _Fail(f"config.{key}", msg, node)
    try:
        return S3Bucket(cfg)
    except OSError as e:
        raise _Fail("config.sse_config.encryption_key", f"cannot read SSE-C key: {e}", node) from e
    except ValueError as e:
        raise _Fail("config", f"invalid S3 configuration: {e}", node) from e


def _build_filesystem(node: yaml.Node) -> Bucket:
    d = _struct(node, "config", FILESYSTEM_SCHEMA)
    if not d.get("directory"):
        raise _Fail("config.directory", "required", node)
    return FilesystemBucket(d["directory"])


_BUILDERS: dict[str, Callable[[yaml.Node], Bucket]] = {"S3": _build_s3, "FILESYSTEM": _build_filesystem}


def expand_env(text: str, source: str) -> str:
    """Thanos' ``$(VAR)`` substitution (extkingpin ``expandEnv``) over the whole text."""

    def sub(m: re.Match[str]) -> str:
        v = os.environ.get(m.group(1))
        if v is None:
            line = text.count("\n", 0, m.start()) + 1
            raise ConfigError(f'{source}: line {line}: found reference to unset environment variable '
                              f'"{m.group(1)}"')
        return v

    return _ENV_RE.sub(sub, text)


def _first_document(text: str, source: str) -> yaml.Node | None:
    try:
        for doc in yaml.compose_all(text, Loader=yaml.SafeLoader):
            return doc
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{source}: invalid YAML at {where}{problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    return None


def bucket_from_config(yaml_text: str, source: str, registry: Any = None) -> Bucket:
    """A bucket from Thanos' objstore YAML; ``source`` (flag or file) prefixes every error. With
    ``registry``, wrapped with Thanos' ``thanos_objstore_*`` metrics there (as Thanos' components)."""
    bucket = _bucket_from_config(yaml_text, source)
    return bucket if registry is None else instrument(bucket, registry)


def _bucket_from_config(yaml_text: str, source: str) -> Bucket:
    text = expand_env(yaml_text, source)
    root = _first_document(text, source)
    if root is None or _is_null(root):
        raise ConfigError(f"{source}: empty object storage configuration (want type, config and optional prefix)")
    try:
        top = _struct(root, "", TOP_SCHEMA)
        typ = top.get("type", "").strip()
        if not typ:
            raise _Fail("type", f"required (one of {', '.join(SUPPORTED_TYPES)})", root)
        upper = typ.upper()
        if upper not in _BUILDERS:
            tnode = next(v for k, v in root.value if k.value == "type")
            if upper in THANOS_TYPES:
                raise _Fail("type", f'bucket type "{upper}" is not supported by pythanos yet '
                                    f"(supported: {', '.join(SUPPORTED_TYPES)})", tnode)
            raise _Fail("type", f'unknown bucket type "{typ}"'
                                f" (Thanos knows {', '.join(THANOS_TYPES)}; "
                                f"pythanos supports {', '.join(SUPPORTED_TYPES)})", tnode)
        cnode = top.get("config")
        if cnode is None:
            cnode = yaml.ScalarNode("tag:yaml.org,2002:null", "", root.start_mark, root.end_mark)
        bucket = _BUILDERS[upper](cnode)
        prefix = top.get("prefix", "").strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except ValueError as e:
                pnode = next(v for k, v in root.value if k.value == "prefix")
                bucket.close()
                raise _Fail("prefix", str(e), pnode) from None
            bucket = PrefixedBucket(bucket, prefix)
        return bucket
    except _Fail as f:
        line = f" (line {f.node.start_mark.line + 1})" if f.node is not None and f.node.start_mark else ""
        raise ConfigError(f"{source}: {f.path}: {f.msg}{line}") from None


def bucket_from_flags(config_file: str | None, config_yaml: str | None, registry: Any = None) -> Bucket:
    """``--objstore.config-file`` / ``--objstore.config``: exactly one is required (``registry``: as
    :func:`bucket_from_config`)."""
    if (config_file is None) == (config_yaml is None):
        raise ConfigError("exactly one of --objstore.config-file or --objstore.config is required")
    if config_file is not None:
        source = f"--objstore.config-file={config_file}"
        try:
            with open(config_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{source}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: not UTF-8 text: {e}") from None
        return bucket_from_config(text, source, registry)
    return bucket_from_config(config_yaml or "", "--objstore.config", registry)
