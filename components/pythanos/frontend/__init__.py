"""The query frontend: ``pythanos query-frontend`` (see run.py)."""
