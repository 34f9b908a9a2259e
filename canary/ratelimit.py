"""A global token bucket in Redis: every worker on every host asks it before each Canary call.

Celery's ``rate_limit`` is per worker; Canary is shared, so the budget
(``CANARY_RATE_LIMIT_RPS``) is enforced across all of them here. The bucket
*reserves*: each call takes a token even if the bucket is empty and is told how
long to wait for its slot, so waiters are paced one after another instead of
retrying in a herd, and the budget is not wasted. Time comes from Redis
(``TIME``), so clocks of different hosts do not matter.

In any 1-second window at most ``burst + rate`` calls are granted; with
``rate = 0.85 × limit`` and ``burst = 0.05 × limit`` that is 0.9 × limit, the
rest being headroom for jitter between the grant and the request reaching Canary
(measured under load: 5 % headroom was not always enough). A caller that would
leave more than 50 ms after its slot takes a new one (``canary.client``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

RATE_SHARE = 0.85
BURST_SHARE = 0.05

_RESERVE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + (now - ts) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, limit_rps: float, *, key: str = "metasync:canary:bucket",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = max(limit_rps * RATE_SHARE, 0.1)
        self.burst = max(limit_rps * BURST_SHARE, 1.0)
        self.key = key
        self.sleep = sleep
        self._script = client.register_script(_RESERVE)

    def reserve(self, pipe: redis.client.Pipeline) -> None:
        """Queue the reservation in ``pipe`` (one round trip with the caller's other commands);
        pass its answer to :meth:`wait`. A pipeline of redis-py checks ``SCRIPT EXISTS`` on
        every execute when given a script object, so the script is called by its digest; after
        a Redis restart the caller gets ``NoScriptError`` once and calls :meth:`load`."""
        pipe.evalsha(self._script.sha, 1, self.key, self.rate, self.burst)

    def load(self) -> None:
        self._script.registered_client.script_load(self._script.script)

    def wait(self, answer: bytes | str | float) -> float:
        """Sleep until the reserved slot comes; returns the seconds waited."""
        seconds = float(answer)
        if seconds > 0:
            self.sleep(seconds)
        return seconds
