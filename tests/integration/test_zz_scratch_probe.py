from .test_failures import *  # noqa
from .test_failures import test_an_unavailable_endpoint_keeps_the_old_token_backs_off_and_recovers as _t3
from .test_failures import test_a_rate_limited_refresh_waits_for_retry_after_even_when_the_token_expires_first as _t4

async def test_probe3(seeded, token_server, operator, logs):
    try:
        await _t3(seeded, token_server, operator, logs)
    finally:
        t0 = token_server.requests[0].at
        print([(round(r.at - t0, 2), r.status) for r in token_server.requests])
        print([ (e.get("type"), e.get("reason"), e.get("message")) for e in seeded.events()])

async def test_probe4(seeded, token_server, operator, logs):
    try:
        await _t4(seeded, token_server, operator, logs)
    finally:
        t0 = token_server.requests[0].at
        print([(round(r.at - t0, 2), r.status) for r in token_server.requests])
        print(seeded.events()[0])
