"""The ruler (thanos rule): rule evaluation, alerting, its API."""
