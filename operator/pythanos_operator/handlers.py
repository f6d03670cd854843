"""kopf handlers. The reconcile of ThanosCluster / PrometheusHA lands with the operator issue."""
