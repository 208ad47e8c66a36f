"""When a failed webhook delivery is tried again, and how many tries the queue allows.

The deliverer hides a failed message for :func:`retry_delay_s` (SQS visibility,
at most 12 h, SQS's limit); the queue moves it to its DLQ after
:func:`max_receives` receives. Both come from this one schedule, so the CDK
queue, the local queue and the deliverer cannot disagree: the last try happens
at least :data:`MIN_RETRY_SPAN_S` after the first, covering a receiver that is
down for a day.
"""

from __future__ import annotations

FIRST_RETRY_S = 5
RETRY_FACTOR = 4
MAX_RETRY_DELAY_S = 12 * 3600
"""SQS's largest visibility timeout."""
MIN_RETRY_SPAN_S = 24 * 3600


def retry_delay_s(receive_count: int) -> int:
    """Seconds to wait after the ``receive_count``-th try (1-based) failed: 5 s, 20 s, 80 s, ... capped at 12 h."""
    exponent = max(0, receive_count - 1)
    if exponent > 16:  # already far past the cap; avoids huge powers
        return MAX_RETRY_DELAY_S
    return min(MAX_RETRY_DELAY_S, FIRST_RETRY_S * RETRY_FACTOR**exponent)


def retry_span_s(receives: int) -> int:
    """Seconds between the first and the last of ``receives`` tries."""
    return sum(retry_delay_s(n) for n in range(1, receives))


def max_receives() -> int:
    """The queue's maxReceiveCount: the fewest tries whose span reaches :data:`MIN_RETRY_SPAN_S`."""
    receives = 1
    while retry_span_s(receives) < MIN_RETRY_SPAN_S:
        receives += 1
    return receives
