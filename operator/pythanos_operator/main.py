"""Entry point of the ``pythanos-operator`` console script: runs kopf with our handlers."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pythanos-operator",
                                description="Reconciles ThanosCluster and PrometheusHA custom resources.")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="Namespace to watch (repeatable); all namespaces when absent.")
    p.add_argument("--standalone", action="store_true", help="Run without peering (one operator replica).")
    args = p.parse_args(argv)

    import kopf

    from . import handlers  # noqa: F401  (registers the handlers with kopf)

    kopf.run(standalone=args.standalone, namespaces=args.namespace or None, clusterwide=not args.namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
