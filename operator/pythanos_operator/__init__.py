"""pythanos-operator: reconciles ThanosCluster and PrometheusHA custom resources (kopf)."""
