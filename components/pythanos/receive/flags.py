"""``pythanos receive`` flags (Thanos v0.42 ``cmd/thanos/receive.go`` names and defaults) -> :class:`ReceiveConfig`.

Every flag Thanos has is accepted, hidden ones included, so a Thanos command line runs unchanged;
the few whose feature we do not have (Cap'n Proto replication, OTLP) are refused with the reason
when set to anything but their default.
"""
from __future__ import annotations

import argparse

from .. import flags as f
from ..errors import UserError
from ..server.tlsflags import server_tls_from_flags
from ..tlsconfig import ClientTLS

__all__ = ["register", "config_from_args"]

ALGORITHMS = ("hashmod", "ketama")


def register(components) -> None:
    p = components.add_parser("receive", help="Accept Prometheus remote write API requests and write to local tsdb.")
    f.add_common(p)
    f.add_listeners(p)
    dur = f.duration
    size = lambda flag: f.flag_type(f.parse_bytes, flag)  # noqa: E731
    count = lambda flag: f.flag_type(f.non_negative_int, flag)  # noqa: E731
    hidden = argparse.SUPPRESS
    f.add_store_limits(p)
    p.add_argument("--remote-write.address", dest="remote_write_address", default="0.0.0.0:19291",
                   type=f.flag_type(f.parse_address, "--remote-write.address"),
                   help="Address to listen on for remote write requests.")
    for name, text in (("cert", "TLS Certificate for HTTP server, leave blank to disable TLS."),
                       ("key", "TLS Key for the HTTP server, leave blank to disable TLS."),
                       ("client-ca", "TLS CA to verify clients against. If no client CA is specified, there is no "
                                     "client verification on server side. (tls.NoClientCert)")):
        p.add_argument(f"--remote-write.server-tls-{name}", dest=f"rw_server_tls_{name.replace('-', '_')}",
                       default="", help=text)
    p.add_argument("--remote-write.server-tls-min-version", dest="rw_server_tls_min_version", default="1.3",
                   choices=["1.0", "1.1", "1.2", "1.3"], help="TLS version for the HTTP server, leave blank to "
                   "default to TLS 1.3, Allowed values: [\"1.0\", \"1.1\", \"1.2\", \"1.3\"]")
    p.add_argument("--remote-write.server-tls-ciphers", dest="rw_server_tls_ciphers", action="append", default=[],
                   help="TLS cipher suites for the HTTP server (repeatable). If not specified, the default Go "
                        "cipher suites are used. See https://pkg.go.dev/crypto/tls#pkg-constants for valid values.")
    p.add_argument("--remote-write.server-tls-curves", dest="rw_server_tls_curves", action="append", default=[],
                   help="TLS curves for the HTTP server (repeatable). If not specified, the default Go curves are "
                        "used. Valid values: CurveP256, CurveP384, CurveP521, X25519.")
    p.add_argument("--remote-write.client-tls-cert", dest="rw_client_tls_cert", default="",
                   help="TLS Certificates to use to identify this client to the server.")
    p.add_argument("--remote-write.client-tls-key", dest="rw_client_tls_key", default="",
                   help="TLS Key for the client's certificate.")
    p.add_argument("--remote-write.client-tls-secure", dest="rw_client_tls_secure",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="Use TLS when talking to the other receivers.")
    p.add_argument("--remote-write.client-tls-skip-verify", dest="rw_client_tls_skip_verify",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="Disable TLS certificate verification when talking to the other receivers i.e self signed, "
                        "signed by fake CA.")
    p.add_argument("--remote-write.client-tls-ca", dest="rw_client_tls_ca", default="",
                   help="TLS CA Certificates to use to verify servers.")
    p.add_argument("--remote-write.client-server-name", dest="rw_client_server_name", default="",
                   help="Server name to verify the hostname on the returned TLS certificates. See "
                        "https://tools.ietf.org/html/rfc4366#section-3.1")
    p.add_argument("--remote-write.client-tls-min-version", dest="rw_client_tls_min_version", default="1.3",
                   choices=["1.0", "1.1", "1.2", "1.3"], help="TLS version for the gRPC client, leave blank to "
                   "default to TLS 1.3, Allowed values: [\"1.0\", \"1.1\", \"1.2\", \"1.3\"]")
    p.add_argument("--tsdb.path", dest="tsdb_path", default="./data", help="Data directory of TSDB.")
    p.add_argument("--label", dest="labels", action="append", default=[], metavar='key="value"',
                   help="External labels to announce. This flag will be removed in the future when handling "
                        "multiple tsdb instances is added.")
    f.add_objstore(p, required=False)
    p.add_argument("--tsdb.retention", dest="retention", default=15 * 86400.0, type=dur("--tsdb.retention"),
                   help="How long to retain raw samples on local storage. 0d - disables the retention policy (i.e. "
                        "infinite retention).")
    p.add_argument("--receive.hashrings-file", dest="hashrings_file", metavar="<path>",
                   help="Path to file that contains the hashring configuration. A watcher is initialized to watch "
                        "changes and update the hashring dynamically.")
    p.add_argument("--receive.hashrings", dest="hashrings", metavar="<content>",
                   help="Alternative to 'receive.hashrings-file' flag (lower priority). Content of file that "
                        "contains the hashring configuration.")
    p.add_argument("--receive.hashrings-algorithm", dest="hashrings_algorithm", default="hashmod", choices=ALGORITHMS,
                   help="The algorithm used when distributing series in the hashrings. Must be one of hashmod, "
                        "ketama. Will be overwritten by the tenant-specific algorithm in the hashring config.")
    p.add_argument("--receive.hashrings-file-refresh-interval", dest="hashrings_refresh_interval", default=300.0,
                   type=dur("--receive.hashrings-file-refresh-interval"),
                   help="Refresh interval to re-read the hashring configuration file. (used as a fallback)")
    p.add_argument("--receive.local-endpoint", dest="local_endpoint", default="",
                   help="Endpoint of local receive node. Used to identify the local node in the hashring "
                        "configuration. If it's empty AND hashring configuration was provided, it means that "
                        "receive will run in RoutingOnly mode.")
    p.add_argument("--receive.tenant-header", dest="tenant_header", default="THANOS-TENANT",
                   help="HTTP header to determine tenant for write requests.")
    p.add_argument("--receive.artificial-max-delay", dest="artificial_max_delay", default=0.0,
                   type=dur("--receive.artificial-max-delay"), help=hidden)
    p.add_argument("--receive.tenant-certificate-field", dest="tenant_certificate_field", default="",
                   choices=["", "organization", "organizationalUnit", "commonName"],
                   help="Use TLS client's certificate field to determine tenant for write requests. Must be one "
                        "of organization, organizationalUnit or commonName. This setting will cause the "
                        "receive.tenant-header flag value to be ignored.")
    p.add_argument("--receive.default-tenant-id", dest="default_tenant", default="default-tenant",
                   help="Default tenant ID to use when none is provided via a header.")
    p.add_argument("--receive.split-tenant-label-name", dest="split_tenant_label", default="",
                   help="Label name through which the request will be split into multiple tenants. This takes "
                        "precedence over the HTTP header.")
    p.add_argument("--receive.tenant-label-name", dest="tenant_label", default="tenant_id",
                   help="Label name through which the tenant will be announced.")
    p.add_argument("--receive.replica-header", dest="replica_header", default="THANOS-REPLICA",
                   help="HTTP header specifying the replica number of a write request.")
    p.add_argument("--receive.forward.async-workers", dest="forward_workers", default=5,
                   type=count("--receive.forward.async-workers"),
                   help="Number of concurrent workers processing forwarding of remote-write requests.")
    p.add_argument("--receive.grpc-compression", dest="grpc_compression", default="snappy", choices=["snappy", "none"],
                   help="Compression algorithm to use for gRPC requests to other receivers. Must be one of: snappy, "
                        "none")
    p.add_argument("--receive.replication-factor", dest="replication_factor", default=1,
                   type=f.flag_type(f.positive_int, "--receive.replication-factor"),
                   help="How many times to replicate incoming write requests.")
    p.add_argument("--receive.replication-protocol", dest="replication_protocol", default="protobuf",
                   choices=["protobuf", "capnproto"],
                   help="The protocol to use for replicating remote-write requests. One of protobuf, capnproto "
                        "(pythanos: protobuf only).")
    p.add_argument("--receive.capnproto-address", dest="capnproto_address", default="0.0.0.0:19391",
                   help="Address for the Cap'n Proto server (unused: pythanos replicates over gRPC protobuf).")
    p.add_argument("--receive.grpc-service-config", dest="grpc_service_config", default="", metavar="<content>",
                   help="gRPC service configuration file or content in JSON format.")
    p.add_argument("--receive-forward-timeout", dest="forward_timeout", default=5.0,
                   type=dur("--receive-forward-timeout"), help=hidden)
    p.add_argument("--receive-forward-max-backoff", dest="forward_max_backoff", default=5.0,
                   type=dur("--receive-forward-max-backoff"), help=hidden)
    p.add_argument("--tsdb.min-block-duration", dest="min_block_duration", default=7200.0,
                   type=dur("--tsdb.min-block-duration"), help=hidden)
    p.add_argument("--tsdb.max-block-duration", dest="max_block_duration", default=7200.0,
                   type=dur("--tsdb.max-block-duration"), help=hidden)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--receive.relabel-config-file", dest="relabel_config_file", metavar="<file-path>",
                   help="Path to YAML file that contains relabeling configuration.")
    g.add_argument("--receive.relabel-config", dest="relabel_config", metavar="<content>",
                   help="Alternative to 'receive.relabel-config-file' flag (mutually exclusive). Content of YAML "
                        "file that contains relabeling configuration.")
    p.add_argument("--tsdb.too-far-in-future.time-window", dest="too_far_in_future", default=0.0,
                   type=dur("--tsdb.too-far-in-future.time-window"),
                   help="Configures the allowed time window for ingesting samples too far in the future. Disabled "
                        "(0s) by default.")
    p.add_argument("--tsdb.out-of-order.time-window", dest="ooo_window", default=0.0,
                   type=dur("--tsdb.out-of-order.time-window"),
                   help="[EXPERIMENTAL] Configures the allowed time window for ingestion of out-of-order samples. "
                        "Disabled (0s) by default.")
    p.add_argument("--tsdb.out-of-order.cap-max", dest="ooo_cap_max", default=0, type=int,
                   help="[EXPERIMENTAL] Configures the maximum capacity for out-of-order chunks (in samples). If set "
                        "to <=0, default value 32 is assumed.")
    p.add_argument("--tsdb.allow-overlapping-blocks", dest="allow_overlapping_blocks",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="Allow overlapping blocks, which in turn enables vertical compaction and vertical query "
                        "merge. Does not do anything, enabled all the time.")
    p.add_argument("--tsdb.max-retention-bytes", dest="max_retention_bytes", default=0,
                   type=size("--tsdb.max-retention-bytes"),
                   help="Maximum number of bytes that can be stored for blocks. A unit is required, supported "
                        "units: B, KB, MB, GB, TB, PB, EB. Ex: \"512MB\".")
    p.add_argument("--tsdb.wal-compression", dest="wal_compression", action=argparse.BooleanOptionalAction,
                   default=True, help="Compress the tsdb WAL.")
    p.add_argument("--tsdb.no-lockfile", dest="no_lockfile", action=argparse.BooleanOptionalAction, default=False,
                   help="Do not create lockfile in TSDB data directory. In any case, the lockfiles will be deleted "
                        "on next startup.")
    p.add_argument("--tsdb.head.expanded-postings-cache-size", dest="head_postings_cache", default=0,
                   type=count("--tsdb.head.expanded-postings-cache-size"),
                   help="[EXPERIMENTAL] If non-zero, enables expanded postings cache for the head block.")
    p.add_argument("--tsdb.block.expanded-postings-cache-size", dest="block_postings_cache", default=0,
                   type=count("--tsdb.block.expanded-postings-cache-size"),
                   help="[EXPERIMENTAL] If non-zero, enables expanded postings cache for compacted blocks.")
    p.add_argument("--tsdb.max-exemplars", dest="max_exemplars", default=0, type=int,
                   help="Enables support for ingesting exemplars and sets the maximum number of exemplars that will "
                        "be stored per tenant. 0 (or less) value of this flag disables exemplars storage.")
    p.add_argument("--tsdb.write-queue-size", dest="write_queue_size", default=0, type=int, help=hidden)
    p.add_argument("--tsdb.memory-snapshot-on-shutdown", dest="memory_snapshot", action=argparse.BooleanOptionalAction,
                   default=False, help=hidden)
    p.add_argument("--tsdb.enable-native-histograms", dest="native_histograms", action=argparse.BooleanOptionalAction,
                   default=True, help="(Deprecated) Enables the ingestion of native histograms. This flag is a "
                                      "no-op now. Native histogram ingestion is always enabled.")
    p.add_argument("--writer.intern", dest="writer_intern", action=argparse.BooleanOptionalAction, default=False,
                   help=hidden)
    p.add_argument("--hash-func", dest="hash_func", default="", choices=["", "SHA256"],
                   help="Specify which hash function to use when calculating the hashes of produced files.")
    p.add_argument("--shipper.allow-out-of-order-uploads", dest="allow_out_of_order_uploads",
                   action=argparse.BooleanOptionalAction, default=False, help=hidden)
    p.add_argument("--shipper.skip-corrupted-blocks", dest="skip_corrupted_blocks",
                   action=argparse.BooleanOptionalAction, default=False, help=hidden)
    p.add_argument("--shipper.upload-concurrency", dest="upload_concurrency", default=0, type=int,
                   help="Number of goroutines to use when uploading block files to object storage.")
    p.add_argument("--matcher-cache-size", dest="matcher_cache_size", default=0, type=int,
                   help="Max number of cached matchers items. Using 0 disables caching.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--request.logging-config-file", dest="request_logging_config_file", metavar="<file-path>",
                   help="Path to YAML file with request logging configuration.")
    g.add_argument("--request.logging-config", dest="request_logging_config", metavar="<content>",
                   help="Alternative to 'request.logging-config-file' flag (mutually exclusive).")
    g = p.add_mutually_exclusive_group()
    # hidden in Thanos; shown here (argparse cannot hide a member of a mutually exclusive group)
    g.add_argument("--receive.limits-config-file", dest="limits_config_file", metavar="<file-path>",
                   help="Path to YAML file that contains limit configuration (re-read when it changes).")
    g.add_argument("--receive.limits-config", dest="limits_config", metavar="<content>",
                   help="Alternative to 'receive.limits-config-file' flag (mutually exclusive). Content of YAML "
                        "file that contains limit configuration.")
    p.add_argument("--receive.limits-config-reload-timer", dest="limits_reload_timer", default=1.0,
                   type=dur("--receive.limits-config-reload-timer"), help=hidden)
    p.add_argument("--receive.otlp-enable-target-info", dest="otlp_target_info", action=argparse.BooleanOptionalAction,
                   default=True, help="Enables target information in OTLP metrics ingested by Receive.")
    p.add_argument("--receive.otlp-promote-resource-attributes", dest="otlp_attributes", action="append", default=[],
                   help="(Repeatable) Resource attributes to include in OTLP metrics ingested by Receive.")
    p.add_argument("--enable-feature", dest="features", action="append", default=[],
                   help="Comma separated experimental feature names to enable. The current list of features is "
                        "metric-names-filter.")
    p.add_argument("--receive.lazy-retrieval-max-buffered-responses", dest="lazy_max_buffered", default=20, type=int,
                   help="The lazy retrieval strategy can buffer up to this number of responses.")
    p.set_defaults(run=main)


def _refuse(args: argparse.Namespace) -> None:
    """Flags whose feature pythanos does not have: an error that says so, never silence."""
    if args.replication_protocol != "protobuf":
        raise UserError("--receive.replication-protocol=capnproto: not supported by pythanos; receivers replicate "
                        "over gRPC (protobuf), which real Thanos receivers also accept")
    if args.lazy_max_buffered <= 0:
        raise UserError("--receive.lazy-retrieval-max-buffered-responses must be > 0")


def config_from_args(args: argparse.Namespace):
    tls = f.grpc_tls_from_args(args)  # first: grpcio reads its TLS policy when it is loaded
    from .run import ReceiveConfig

    _refuse(args)
    labels = f.parse_label_flags(args.labels)
    if not args.tenant_label:
        raise UserError(f"--receive.tenant-label-name: unsupported format for tenant label name, got "
                        f"{args.tenant_label!r}")
    if not labels:
        raise UserError("--label: no external labels configured for receive, uniquely identifying external labels "
                        "must be configured (ideally with `receive_` prefix); see "
                        "https://thanos.io/tip/thanos/storage.md#external-labels for details.")
    hashrings_text = None
    hashrings_where = ""
    if args.hashrings_file:
        hashrings_where = f"--receive.hashrings-file={args.hashrings_file}"
        f.read_flag_file(args.hashrings_file, "--receive.hashrings-file")  # readable now, watched later
    elif args.hashrings:
        hashrings_text, hashrings_where = args.hashrings, "--receive.hashrings"
    limits_text = f.content_flag(args, "limits_config", "--receive.limits-config")
    relabel = _relabel_from_args(args)
    rw_server_tls = server_tls_from_flags(args.rw_server_tls_cert, args.rw_server_tls_key,
                                          args.rw_server_tls_client_ca, args.rw_server_tls_min_version,
                                          args.rw_server_tls_ciphers, args.rw_server_tls_curves)
    rw_client_tls = ClientTLS(enabled=args.rw_client_tls_secure, cert_file=args.rw_client_tls_cert,
                              key_file=args.rw_client_tls_key, ca_file=args.rw_client_tls_ca,
                              server_name=args.rw_client_server_name, skip_verify=args.rw_client_tls_skip_verify,
                              min_version=args.rw_client_tls_min_version, flag_prefix="--remote-write.client-tls-")
    rw_client_tls.validate()
    features = [x.strip() for v in args.features for x in v.split(",") if x.strip()]
    for feat in features:
        if feat != "metric-names-filter":
            raise UserError(f"--enable-feature={feat}: unknown feature (known: metric-names-filter)")
    return ReceiveConfig(
        grpc_tls=tls.server, grpc_max_connection_age=args.grpc_max_connection_age,
        http_address=args.http_address, http_grace_period=args.http_grace_period, http_config=args.http_config,
        grpc_address=args.grpc_address, grpc_grace_period=args.grpc_grace_period,
        remote_write_address=args.remote_write_address, tsdb_path=args.tsdb_path, labels=labels,
        bucket=f.bucket_from_args(args, optional=True), retention=args.retention,
        hashrings_file=args.hashrings_file or "", hashrings_text=hashrings_text, hashrings_where=hashrings_where,
        hashrings_algorithm=args.hashrings_algorithm, hashrings_refresh_interval=args.hashrings_refresh_interval,
        local_endpoint=args.local_endpoint, tenant_header=args.tenant_header, default_tenant=args.default_tenant,
        split_tenant_label=args.split_tenant_label, tenant_label=args.tenant_label,
        replica_header=args.replica_header, replication_factor=args.replication_factor,
        grpc_compression=args.grpc_compression, forward_timeout=args.forward_timeout,
        forward_max_backoff=args.forward_max_backoff,
        forward_workers=args.forward_workers, relabel=relabel,
        block_duration=args.min_block_duration, too_far_in_future=args.too_far_in_future,
        ooo_window=args.ooo_window, wal_compression=args.wal_compression, max_exemplars=args.max_exemplars,
        hash_func=args.hash_func, allow_out_of_order_uploads=args.allow_out_of_order_uploads,
        skip_corrupted_blocks=args.skip_corrupted_blocks, limits_text=limits_text,
        limits_where=("--receive.limits-config-file" if args.limits_config_file else "--receive.limits-config"),
        limits_file=args.limits_config_file or "", limits_reload_timer=args.limits_reload_timer,
        series_limit=args.series_limit, samples_limit=args.samples_limit, rw_server_tls=rw_server_tls,
        rw_client_tls=rw_client_tls, tenant_field=args.tenant_certificate_field)


def _relabel_from_args(args: argparse.Namespace) -> list:
    """``--receive.relabel-config[-file]``: every Prometheus relabel action, ``$(VAR)`` references
    substituted from the environment as Thanos does; errors name the flag (and file)."""
    from ..relabel import parse_relabel_config

    text = f.content_flag(args, "relabel_config", "--receive.relabel-config")
    where = (f"--receive.relabel-config-file={args.relabel_config_file}" if args.relabel_config_file
             else "--receive.relabel-config")
    return parse_relabel_config(f.expand_env(text or "", where), where)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before .run is imported: it loads grpc (see grpc_tls_from_args)
    from .run import run

    return run(config)
