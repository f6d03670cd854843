#!/usr/bin/env python3
"""`make quickstart SCENARIO=receive`: seed 002's receive topology on this machine, no Docker.

Seed 002 ("Setup Thanos on Docker") ships node metrics by remote write into Thanos Receive beside its
sidecars. Here, with `pythanos` in place of `thanos`:

* two real Prometheus servers (Debian's), ``cluster=eu1`` on :9090 and ``cluster=us1`` on :9091, each
  scraping itself and remote-writing (remote write 1.0) to one of the two receivers;
* two of our receivers in one hashring with ``--receive.replication-factor=2`` (every series on both;
  either may go down), external labels ``receive_replica="0"`` / ``"1"``, remote write on
  :19291/:19292, gRPC :10907/:10917, shipping 2h blocks to a FILESYSTEM bucket (``bucket/``);
* our querier on :10904 (the seed's query port) over both receivers with ``--query.replica-label
  receive_replica``, so the two copies of each series show as one.

It prints the addresses, then, once the first remote writes are in, ``up`` with and without
de-duplication and what each receiver holds; then waits for Ctrl-C (or SIGTERM) and stops everything
it started, by process id. ``QUICKSTART_ONESHOT=1`` stops after printing; ``QUICKSTART_DIR`` puts
configs, data, the bucket and logs elsewhere than ``.quickstart-receive/``. Ports that are taken are
replaced by free ones (the printed addresses are the real ones).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quickstart as qs  # noqa: E402  (the course scenario's helpers: ports, processes, queries)

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("QUICKSTART_DIR") or REPO / ".quickstart-receive")
qs.WORK = WORK  # the helpers write their logs there
BUCKET = WORK / "bucket"


def prom_config(cluster: str, self_port: int, receive_url: str) -> str:
    return f"""global:
  scrape_interval: 5s
  external_labels:
    cluster: {cluster}

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{self_port}']

remote_write:
  - url: {receive_url}
    queue_config:
      batch_send_deadline: 1s
"""


def main() -> int:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    pythanos = qs.BIN / "pythanos"
    WORK.mkdir(exist_ok=True)
    BUCKET.mkdir(exist_ok=True)
    taken: set[int] = set()
    prom_ports = [qs.free_port(p, taken) for p in (9090, 9091)]
    rw_ports = [qs.free_port(p, taken) for p in (19291, 19292)]
    grpc_ports = [qs.free_port(p, taken) for p in (10907, 10917)]
    http_ports = [qs.free_port(p, taken) for p in (10909, 10919)]
    q_http, q_grpc = qs.free_port(10904, taken), qs.free_port(10901, taken)
    grpc_addrs = [f"127.0.0.1:{g}" for g in grpc_ports]
    hashrings = WORK / "hashrings.json"
    hashrings.write_text(json.dumps([{"hashring": "default", "endpoints": grpc_addrs}], indent=2) + "\n")
    objstore = WORK / "bucket_storage.yaml"
    objstore.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {BUCKET}\n")

    procs = qs.Procs()
    try:
        for i in range(2):
            procs.start(f"receive{i}", [
                pythanos, "receive", f'--label=receive_replica="{i}"', f"--tsdb.path={WORK / f'receive{i}_data'}",
                f"--objstore.config-file={objstore}", f"--remote-write.address=127.0.0.1:{rw_ports[i]}",
                f"--grpc-address={grpc_addrs[i]}", f"--http-address=127.0.0.1:{http_ports[i]}",
                f"--receive.hashrings-file={hashrings}", f"--receive.local-endpoint={grpc_addrs[i]}",
                "--receive.replication-factor=2"])
        for i in range(2):
            qs.wait_for(f"receiver {i}", lambda i=i: qs.get(f"http://127.0.0.1:{http_ports[i]}/-/ready")[0] == 200,
                        procs)
        for i, cluster in enumerate(("eu1", "us1")):
            name = f"prometheus_{cluster}"
            cfg = WORK / f"{name}.yml"
            cfg.write_text(prom_config(cluster, prom_ports[i], f"http://127.0.0.1:{rw_ports[i]}/api/v1/receive"))
            data = WORK / f"{name}_data"
            data.mkdir(exist_ok=True)
            procs.start(name, [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                               f"--web.listen-address=127.0.0.1:{prom_ports[i]}"])
        procs.start("querier", [pythanos, "query", f"--http-address=127.0.0.1:{q_http}",
                                f"--grpc-address=127.0.0.1:{q_grpc}", "--query.replica-label", "receive_replica",
                                *[a for g in grpc_addrs for a in ("--endpoint", g)]])
        ui = f"http://127.0.0.1:{q_http}"
        qs.wait_for("the querier", lambda: qs.get(ui + "/-/ready")[0] == 200, procs)
        for i, cluster in enumerate(("eu1", "us1")):
            qs.say(f"Prometheus {cluster}: http://127.0.0.1:{prom_ports[i]}  remote-writes to receiver {i}")
        for i in range(2):
            qs.say(f"receiver {i}: remote write http://127.0.0.1:{rw_ports[i]}/api/v1/receive  gRPC {grpc_addrs[i]}  "
                   f"HTTP http://127.0.0.1:{http_ports[i]}")
        qs.say(f"hashring: {hashrings} (replication factor 2)  bucket: {BUCKET}")
        qs.say(f"querier UI: {ui}/graph   stores: {ui}/stores")
        qs.say("waiting for the first remote writes (5 s scrape interval) ...")

        seen: dict[str, list] = {}

        def both_clusters() -> bool:
            """Both answers from one look, so what is printed is what was waited for."""
            for dedup, want in (("false", 4), ("true", 2)):
                doc = qs.query(ui, "up", dedup=dedup)
                if doc.get("status") != "success" or len(doc["data"]["result"]) != want:
                    return False
                seen[dedup] = doc["data"]["result"]
            return True
        qs.wait_for("both clusters' samples on both receivers", both_clusters, procs, timeout=120)
        for dedup in ("true", "false"):
            res = seen[dedup]
            shown = ", ".join(sorted("{" + ",".join(f'{k}="{v}"' for k, v in sorted(r["metric"].items())) + "}"
                                     for r in res))
            qs.say(f"  dedup={dedup}: up has {len(res)} series: {shown}")
        for i in range(2):
            n = qs.metric(f"http://127.0.0.1:{http_ports[i]}", "prometheus_tsdb_head_series")
            qs.say(f"  receiver {i} holds {int(n or 0)} series (each receiver has every series: replication 2)")
        qs.say("  blocks are cut every 2h of data and shipped to the bucket; ls the bucket then")
        qs.say(f"  try: {ui}/graph?g0.expr=up&g0.tab=1 and toggle 'deduplication'")
        qs.say("Ctrl-C stops everything.")
        while os.environ.get("QUICKSTART_ONESHOT") != "1":
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except qs.Stopping:
        pass
    finally:
        procs.stop()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
