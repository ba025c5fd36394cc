"""The fake API under load: a heavy-tailed latency, the account's rate limits as token buckets
with the ``anthropic-ratelimit-*`` headers on every answer and 429 + ``retry-after`` past them,
the output tokens reserved from ``max_tokens``, the acceleration limit, and time scaling. The
buckets are checked directly and through HTTP with the real SDK."""

from __future__ import annotations

import statistics
from pathlib import Path

import anthropic
import pytest

from scripts.fake_limits import Latency, RateLimits

KEY = "test-key"


def test_latency_is_log_normal_with_the_asked_median_and_tail() -> None:
    model = Latency(0.5, p99=4.0, seed=3)
    draws = sorted(model.draw(f"S0001L01|0|{i}") for i in range(4000))
    assert statistics.median(draws) == pytest.approx(0.5, rel=0.06)
    assert draws[int(0.99 * len(draws))] == pytest.approx(2.0, rel=0.15)
    assert model.draw("x") == model.draw("x") and model.mean == pytest.approx(0.5 * 1.195, rel=0.01)
    assert Latency(0.3).draw("x") == 0.3  # p99 1: every answer takes the latency


def test_buckets_admit_refuse_and_refill() -> None:
    limits = RateLimits(rpm=60, itpm=6000, otpm=1200, time_scale=60, ramp_floor=None)
    # Time scale 60: 60 requests a minute become 60 a second, 60 (a real minute's) at most at once.
    admitted = sum(1 for _ in range(80) if limits.admit(10, 10)[0] is None)
    assert admitted == 60
    refused, wait = limits.admit(10, 10)
    assert refused == "requests" and 0 < wait <= 1 / 60 + 1e-6
    headers = limits.headers()
    assert headers["anthropic-ratelimit-requests-limit"] == "3600"  # a minute of fake time
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "0"  # 1,200 - 600 used: rounded down


def test_output_tokens_are_reserved_from_max_tokens_and_given_back() -> None:
    limits = RateLimits(rpm=10_000, itpm=10**9, otpm=1000, time_scale=1, ramp_floor=None)  # 1,000 at most
    assert limits.admit(10, 600)[0] is None
    assert limits.admit(10, 600) == ("output-tokens", pytest.approx((600 - 400) / (1000 / 60), rel=0.05))
    limits.settle(reserved_output=600, output=100)  # the answer used 100: 500 come back
    assert limits.admit(10, 600)[0] is None


def test_a_jump_in_traffic_meets_the_acceleration_limit() -> None:
    limits = RateLimits(rpm=600, itpm=10**9, otpm=10**9, time_scale=60, ramp_floor=0.5, ramp_factor=2)
    results = [limits.admit(1, 1)[0] for _ in range(400)]  # 600 a second allowed, 300 from idle
    assert results.count(None) == 300 and results[300] == "ramp"


@pytest.fixture
def client(fake_api, demo_course: Path):
    made: list[anthropic.Anthropic] = []

    def start(*args: str, retries: int = 0) -> tuple[anthropic.Anthropic, object]:
        server = fake_api(demo_course, *args)
        sdk = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=retries, timeout=10.0)
        made.append(sdk)
        return sdk, server

    yield start
    for sdk in made:
        sdk.close()


def ask(max_tokens: int = 1500) -> dict:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "LEGO_ID: S0005L02\nWrite phrases."}],
    }


def test_every_answer_carries_the_rate_limit_headers_and_429_says_when(client) -> None:
    # 20 requests a minute at time scale 3: 60 a minute of fake time (one a second), 20 at once.
    sdk, server = client("--tier", "start", "--rpm", "20", "--time-scale", "3", "--ramp-floor", "-1")
    raw = sdk.messages.with_raw_response.create(**ask())
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "60"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "19"
    for part in ("limit", "remaining", "reset"):
        for name in ("requests", "input-tokens", "output-tokens", "tokens"):
            assert raw.headers[f"anthropic-ratelimit-{name}-{part}"]
    with pytest.raises(anthropic.RateLimitError) as caught:
        for _ in range(40):
            sdk.messages.create(**ask())
    response = caught.value.response
    assert response.headers["retry-after"] and int(response.headers["retry-after-ms"]) > 0
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert server.requests()[-1]["limited"] == "requests"
    # The SDK honours retry-after-ms: a client that retries gets through.
    patient = sdk.with_options(max_retries=3)
    assert patient.messages.create(**ask()).content


def test_acceleration_limit_answers_ramp_limit_exceeded(client) -> None:
    sdk, server = client("--tier", "scale", "--rpm", "100", "--ramp-floor", "0.2", "--ramp-factor", "2")
    with pytest.raises(anthropic.RateLimitError) as caught:
        for _ in range(40):  # 100 a minute, 20 in the first minute from idle
            sdk.messages.create(**ask(200))
    assert caught.value.body["error"]["details"]["error_code"] == "ramp_limit_exceeded"
    assert float(caught.value.response.headers["retry-after"]) >= 1
    assert [r.get("limited") for r in server.requests()].count("ramp") == 1


def test_latency_is_drawn_per_request_and_logged(client) -> None:
    sdk, server = client("--latency", "0.05", "--latency-p99", "4", "--seed", "2")
    for lego in ("S0005L02", "S0006L02", "S0007L02"):
        body = ask()
        body["messages"][0]["content"] = f"LEGO_ID: {lego}\nWrite."
        sdk.messages.create(**body)
    latencies = [r["latency"] for r in server.requests()]
    assert len(set(latencies)) == 3 and all(0.005 < v < 0.5 for v in latencies)
