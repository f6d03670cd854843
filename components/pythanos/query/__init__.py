"""``pythanos query``: PromQL over any set of StoreAPI endpoints, with HA de-duplication.

:mod:`.discovery` and :mod:`.endpoints` keep the endpoint set, :mod:`.proxy` fans a selection
out, :mod:`.queryable` turns what comes back into samples for :mod:`pythanos.promql`,
:mod:`.api` is the HTTP API, :mod:`.store` the StoreAPI the querier itself serves, :mod:`.run`
the wiring.
"""
