"""Entry point of the ``pythanos-operator`` console script: runs kopf with our handlers."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pythanos-operator",
                                description="Reconciles ThanosCluster and PrometheusHA custom resources.")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="Namespace to watch (repeatable); all namespaces when absent.")
    p.add_argument("--standalone", action="store_true",
                   help="Run without peering (one operator replica only).")
    p.add_argument("--peering", default="pythanos-operator",
                   help="kopf peering object (ClusterKopfPeering when cluster-wide, else KopfPeering per namespace):"
                        " of several operator replicas only the one with the highest priority works.")
    p.add_argument("--priority", type=int, default=None,
                   help="Peering priority; a random one when absent, so replicas never tie.")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                   help="kopf liveness endpoint (also used as readiness).")
    p.add_argument("--metrics-address", default="0.0.0.0:8081", help="Address of /metrics ('' disables).")
    p.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level={"warn": "WARNING"}.get(args.log_level, args.log_level.upper()),
                        format="level=%(levelname)s ts=%(asctime)s caller=%(name)s msg=%(message)r")

    import kopf

    from . import handlers   # registers the handlers with kopf
    from . import metrics

    if args.metrics_address:
        host, _, port = args.metrics_address.rpartition(":")
        metrics.serve(int(port), host or "0.0.0.0")
    from .kube import Kube

    priority = args.priority if args.priority is not None else random.randint(1, 1_000_000)
    memo = kopf.Memo(peering=None if args.standalone else args.peering, namespaces=list(args.namespace))
    memo.kube = Kube.from_environment()
    memo.prometheus_rules_watched = handlers.watch_prometheus_rules(
        memo.kube, list(args.namespace), os.environ.get("PYTHANOS_OPERATOR_SCANNING", "0") == "1",
        logging.getLogger("pythanos_operator.handlers"))
    kopf.run(
        memo=memo,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=priority,
        namespaces=args.namespace or (),
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
