"""The fake API under load (for ``scripts/fake_anthropic.py``): latency drawn from a heavy-tailed
distribution, and the account's rate limits as the real API applies them.

Latency: fixed, or log-normal with median L and a 99th percentile ``p99`` times L (``4``: a few
answers in a hundred take four times the median), drawn per request from the seed (the same
request, the same draw, whatever order requests arrive in).

Rate limits: token buckets for requests, input tokens (uncached input and cache writes; cache
reads do not count) and output tokens a minute, each refilled continuously and holding at most a
minute's quota of the real API (so a client that waited can spend a minute's quota at once, and
then only as fast as it refills: about a sixtieth of it a real second).
A request is admitted only when every bucket holds its cost: one request, its input tokens, and
``max_tokens`` output tokens (the output is reserved at admission and the unused part given back
when the answer ends, as the real API estimates output from ``max_tokens``). Otherwise it gets
429 ``rate_limit_error`` with ``retry-after`` (seconds until the buckets hold its cost). Every
answer, 429s included, carries ``anthropic-ratelimit-{requests,input-tokens,output-tokens,
tokens}-{limit,remaining,reset}`` (reset in RFC 3339).

Acceleration: the requests admitted in a window (one minute of the real API) may not exceed
``ramp_floor`` of the window's quota or ``ramp_factor`` times the previous window's count,
whichever is larger; past that, 429 with ``error.details.error_code`` ``ramp_limit_exceeded``
and ``retry-after`` until the window ends. A client that ramps up is never refused; one that
jumps from idle to its full quota at once is.

Time scale ``S``: the fake's seconds stand for ``S`` seconds of the real API (``S`` = 60 when
L = 0.5 s stands for 30 s), so every per-minute limit is multiplied by ``S`` and every window
divided by it; headers report the scaled limits (what a client sees a minute of fake time hold).
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: z of the 99th percentile of a normal distribution.
Z99 = 2.3263478740408408


@dataclass(frozen=True)
class Latency:
    """``median`` seconds; ``p99`` the 99th percentile as a multiple of it (1: fixed)."""

    median: float
    p99: float = 1.0
    seed: int = 0

    @property
    def sigma(self) -> float:
        return math.log(self.p99) / Z99 if self.p99 > 1 else 0.0

    def draw(self, key: str) -> float:
        if self.median <= 0 or self.sigma == 0:
            return self.median
        return random.Random(f"{self.seed}|latency|{key}").lognormvariate(math.log(self.median), self.sigma)

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)

    def describe(self) -> dict[str, Any]:
        kind = "lognormal" if self.sigma else "fixed"
        return {"kind": kind, "median_s": self.median, "p99_over_median": self.p99, "mean_s": round(self.mean, 4)}


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Bucket:
    """A token bucket: ``rate`` a second, holding at most ``capacity``; ``level`` may go below
    zero only when a cost larger than the capacity is admitted into a full bucket."""

    name: str
    per_minute: float  # the limit as headers report it
    rate: float
    capacity: float
    level: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def holds(self, cost: float) -> bool:
        return self.level >= cost or (self.level >= self.capacity and cost > self.capacity)

    def wait_for(self, cost: float) -> float:
        """Seconds until the bucket holds ``cost``."""
        need = min(cost, self.capacity) - self.level
        return max(0.0, need / self.rate) if self.rate > 0 else math.inf

    def reset_in(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate) if self.rate > 0 else 0.0


class RateLimits:
    """The buckets and the acceleration limit of one account; thread-safe."""

    def __init__(
        self,
        rpm: float,
        itpm: float,
        otpm: float,
        time_scale: float = 1.0,
        ramp_floor: float | None = 0.5,
        ramp_factor: float = 2.0,
    ) -> None:
        s = time_scale
        self.time_scale = s
        self._lock = threading.Lock()
        now = time.monotonic()
        self.buckets = {
            name: Bucket(name, limit * s, limit * s / 60, limit, limit, now)
            for name, limit in (("requests", rpm), ("input-tokens", itpm), ("output-tokens", otpm))
        }
        self.window = 60.0 / s
        self.ramp_floor = ramp_floor
        self.ramp_factor = ramp_factor
        self._window_start = now
        self._window_count = 0
        self._previous_count = 0

    def describe(self) -> dict[str, Any]:
        return {
            "requests_per_minute": self.buckets["requests"].per_minute,
            "input_tokens_per_minute": self.buckets["input-tokens"].per_minute,
            "output_tokens_per_minute": self.buckets["output-tokens"].per_minute,
            "time_scale": self.time_scale,
            "bucket": "a real minute's quota",
            "ramp_floor": self.ramp_floor,
            "ramp_factor": self.ramp_factor,
        }

    def _roll(self, now: float) -> None:
        while now - self._window_start >= self.window:
            self._previous_count = self._window_count if now - self._window_start < 2 * self.window else 0
            self._window_count = 0
            self._window_start += self.window
            if now - self._window_start >= self.window:  # idle for more than a window: start afresh
                self._previous_count = 0
                self._window_start = now

    def admit(self, input_tokens: float, max_tokens: float) -> tuple[str | None, float]:
        """(None, 0) when admitted (the costs taken); else (the limit that refused it, seconds to
        wait): ``"requests"``, ``"input-tokens"``, ``"output-tokens"`` or ``"ramp"``."""
        costs = {"requests": 1.0, "input-tokens": float(input_tokens), "output-tokens": float(max_tokens)}
        now = time.monotonic()
        with self._lock:
            for bucket in self.buckets.values():
                bucket.refill(now)
            self._roll(now)
            if self.ramp_floor is not None:
                quota = self.buckets["requests"].per_minute * self.window / 60
                allowed = max(self.ramp_floor * quota, self.ramp_factor * self._previous_count)
                if self._window_count + 1 > allowed:
                    return "ramp", max(0.01, self._window_start + self.window - now)
            for name, cost in costs.items():
                bucket = self.buckets[name]
                if not bucket.holds(cost):
                    return name, max(0.01, bucket.wait_for(cost))
            for name, cost in costs.items():
                self.buckets[name].level -= cost
            self._window_count += 1
            return None, 0.0

    def settle(self, reserved_output: float, output: float) -> None:
        """An answer ended: the reserved output tokens it did not use go back."""
        with self._lock:
            bucket = self.buckets["output-tokens"]
            bucket.refill(time.monotonic())
            bucket.level = min(bucket.capacity, bucket.level + max(0.0, reserved_output - output))

    def headers(self) -> dict[str, str]:
        now, wall = time.monotonic(), time.time()
        out: dict[str, str] = {}
        with self._lock:
            shares = {}
            for name, bucket in self.buckets.items():
                bucket.refill(now)
                remaining = max(0, int(bucket.level))
                if name != "requests":
                    remaining = remaining // 1000 * 1000  # tokens: rounded to the thousand, as the API does
                out[f"anthropic-ratelimit-{name}-limit"] = str(int(bucket.per_minute))
                out[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
                out[f"anthropic-ratelimit-{name}-reset"] = rfc3339(wall + bucket.reset_in())
                shares[name] = bucket.level / bucket.capacity if bucket.capacity else 1.0
            tight = min(("input-tokens", "output-tokens"), key=lambda n: shares[n])
            for part in ("limit", "remaining", "reset"):
                out[f"anthropic-ratelimit-tokens-{part}"] = out[f"anthropic-ratelimit-{tight}-{part}"]
        return out


#: Rate limits of the Sonnet pool per tier: requests, input tokens, output tokens a minute.
TIERS = {
    "start": (1_000, 2_000_000, 400_000),
    "build": (5_000, 5_000_000, 1_000_000),
    "scale": (10_000, 10_000_000, 2_000_000),
}
