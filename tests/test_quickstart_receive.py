"""``make quickstart SCENARIO=receive`` runs seed 002's receive topology: two Prometheus servers
remote-writing into two of our receivers (replication 2), our querier over both de-duplicating the
copies; checked on the running processes, then every process it started is stopped."""
from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

from test_quickstart import Quickstart

REPO = Path(__file__).resolve().parent.parent


def _get(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_quickstart_receive_scenario(tmp_path, prometheus_bin, pythanos_bin):
    qs = Quickstart(tmp_path, REPO / "scripts" / "quickstart_receive.py")
    try:
        out = qs.wait_ready(300)
        assert "dedup=true: up has 2 series" in out and "dedup=false: up has 4 series" in out, out
        held = [int(n) for n in re.findall(r"receiver \d holds (\d+) series", out)]
        assert len(held) == 2 and held[0] == held[1] > 0, out  # replication 2: each holds every series
        ui = re.search(r"querier UI: (http://\S+)/graph", out).group(1)
        # on the running topology: both clusters through the querier, each from both receivers
        stores = _get(ui + "/api/v1/stores")["data"]
        assert sorted(s["labelSets"][0]["receive_replica"] for g in stores.values() for s in g) == ["0", "1"]
        res = _get(ui + "/api/v1/query?" + urllib.parse.urlencode({"query": "count by (cluster) (up)"}))
        assert sorted(r["metric"]["cluster"] for r in res["data"]["result"]) == ["eu1", "us1"]
        assert json.loads((tmp_path / "hashrings.json").read_text())[0]["endpoints"]
    finally:
        out = qs.stop()
    assert out.count("quickstart: stopped ") == 5, out
