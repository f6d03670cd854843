"""pytest wiring for the real-peer harness in ``peers.py``."""
from __future__ import annotations

import pytest

from peers import IN_CI, REGISTRY
from peers import (  # noqa: F401  (fixtures are used by name)
    alertmanager_bin,
    alertmanager_factory,
    downsampled_bucket,
    attach_logs,
    memcached_server,
    prometheus3_bin,
    prometheus_bin,
    prometheus_factory,
    promtool3_bin,
    promtool_bin,
    pythanos_bin,
    pythanos_factory,
    redis_server,
    runtest_setup_hook,
    s3_bucket,
    s3_server,
    thanos_bin,
    thanos_query_factory,
)
from browser import chromium, chromium_bin  # noqa: F401  (headless Chromium for the web UI tests)
from kube import (  # noqa: F401  (fixtures are used by name; the real kube-apiserver harness)
    etcd_bin,
    helm_bin,
    kube_apiserver,
    kube_apiserver_bin,
    kube_client,
    kube_controller_manager,
    kube_controller_manager_bin,
    kubeconfig,
    kubectl,
    kubectl_bin,
    namespace,
    pythanos_crds,
)


def pytest_runtest_setup(item):
    runtest_setup_hook(item)


def pytest_sessionfinish(session, exitstatus):
    """Nothing the tests started outlives them: what is still running is stopped and named."""
    left = REGISTRY.stop_leftovers()
    if left:
        names: dict[str, int] = {}
        for p in left:
            names[p.name] = names.get(p.name, 0) + 1
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"stopped {len(left)} processes the tests left running: " + ", ".join(
            f"{n} x{c}" for n, c in sorted(names.items()))
        if tr is not None:
            tr.write_line(msg)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    _no_skips_under_ci(item, report)
    attach_logs(item, report)


def _no_skips_under_ci(item, report) -> None:
    """Under CI (``peers.IN_CI``, the suite's one reading of ``CI``) a skipped test is a failed
    one: a skip there would pass a run that tested nothing. The end-to-end tests' own gate
    (``make e2e`` only) is the one exception."""
    if not IN_CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    if "/e2e/" in f"/{item.nodeid}":
        return
    why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, which counts as a failure: {why}"
