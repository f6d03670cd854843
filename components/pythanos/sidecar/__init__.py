"""``pythanos sidecar``: the Prometheus-facing parts (promclient, shipper, reloader); gRPC wiring comes later."""
