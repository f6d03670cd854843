"""pythanos: a Python re-implementation of Thanos, wire-compatible with Thanos and Prometheus."""

__version__ = "0.1.0"
