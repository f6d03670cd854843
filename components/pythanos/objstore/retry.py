"""Retries with exponential backoff and full jitter for transient object storage errors.

Modelled on minio-go (which Thanos uses): ``max_attempts`` tries in total, a 200 ms unit doubling
per attempt, capped at 1 s, jittered. Only transient errors are retried (connection errors,
timeouts, HTTP 5xx, throttling); "not found", "access denied", bad requests and configuration
errors fail at once. Each retry is logged (logfmt through ``logging``).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10  # minio-go's MaxRetry default; Thanos' max_retries > 0 overrides it
    base_delay: float = 0.2
    max_delay: float = 1.0
    jitter: float = 0.5  # fraction of the delay that is randomised

    def delay(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        d = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return d * (1 - self.jitter * random.random())


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    op: str,
    bucket: str,
    key: str = "",
    endpoint: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` until it succeeds, fails permanently, or ``policy.max_attempts`` are used up.

    The last exception propagates, with the number of attempts in ``__notes__``.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if attempt >= policy.max_attempts or not is_transient(e):
                if attempt > 1:
                    try:
                        e.add_note(f"gave up after {attempt} attempts")
                    except AttributeError:  # minio's S3Error is a frozen dataclass
                        pass
                raise
            backoff = policy.delay(attempt)
            log.warning(
                "object storage operation failed, retrying",
                extra={"bucket": bucket, "endpoint": endpoint, "op": op, "key": key, "attempt": attempt,
                       "max_attempts": policy.max_attempts, "backoff": f"{backoff:.3f}s", "err": _short(e)},
            )
            sleep(backoff)


def _short(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) <= 300 else s[:297] + "..."
