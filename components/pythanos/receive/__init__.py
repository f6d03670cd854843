"""``pythanos receive``: remote write into per-tenant TSDBs across a hashring of receivers.

:mod:`.hashring` decides which receivers own a series (Thanos' hashmod and ketama); the gRPC
write API between receivers is :mod:`pythanos.storeapi.writeapi`.
"""
