"""Compliance suites too long for ``make test``, collected only with PYTHANOS_ALERT_COMPLIANCE=1
(``make compliance``). Not collected otherwise, so a CI run never sees them as skips."""
from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # the suite's helpers (peers, ports, test_receive) live one level up
    sys.path.insert(0, str(TESTS))

collect_ignore_glob = [] if os.environ.get("PYTHANOS_ALERT_COMPLIANCE") == "1" else ["test_*.py"]
