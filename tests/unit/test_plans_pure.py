"""The pure parts of plans and billing: Stripe's signature check held to Stripe's own
verifier, the event reader, the plan a subscription gives, the reset time, the settings."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from control.stripe import (
    TOLERANCE_SECONDS,
    WebhookRefused,
    is_newer,
    parse_event,
    parse_subscription,
    sign,
    verify,
)
from crivline.errors import ConfigError
from crivline.plans import FREE_TIER, effective_tier, seconds_to_reset
from crivline.settings import Settings

SECRET = "whsec_test_secret"
BODY = b'{"id": "evt_1", "object": "event"}'


def _ours(header: str | None, payload: bytes, secret: str, now: float) -> bool:
    try:
        verify(header, payload, secret, now)
    except WebhookRefused:
        return False
    return True


def _stripes(header: str, payload: bytes, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode(), header, secret, tolerance=TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError:
        return False
    return True


def test_a_header_stripe_makes_is_accepted() -> None:
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET)
    assert _ours(header, BODY, SECRET, time.time())


@pytest.mark.parametrize(
    ("why", "header", "payload", "secret", "age"),
    [
        ("tampered body", None, BODY + b" ", SECRET, 0),
        ("wrong secret", None, BODY, "whsec_other", 0),
        ("stale timestamp", None, BODY, SECRET, TOLERANCE_SECONDS + 5),
        ("no header", "", BODY, SECRET, 0),
        ("no v1", "t={t}", BODY, SECRET, 0),
        ("no t", "v1={sig}", BODY, SECRET, 0),
        ("only v0", "t={t},v0={sig}", BODY, SECRET, 0),
        ("garbage", "nonsense", BODY, SECRET, 0),
    ],
)
def test_what_stripe_refuses_we_refuse(
    why: str, header: str | None, payload: bytes, secret: str, age: int
) -> None:
    t = int(time.time()) - age
    sig = sign(SECRET, t, BODY)
    sent = f"t={t},v1={sig}" if header is None else header.format(t=t, sig=sig)
    assert not _ours(sent, payload, secret, time.time()), why
    if sent:
        assert not _stripes(sent, payload, secret), why


def test_any_matching_v1_is_accepted_so_secrets_can_roll() -> None:
    t = int(time.time())
    old, new = sign("whsec_old", t, BODY), sign("whsec_new", t, BODY)
    header = f"t={t},v1={old},v1={new},v0=deadbeef"
    for secret in ("whsec_old", "whsec_new"):
        assert _ours(header, BODY, secret, time.time())
        assert _stripes(header, BODY, secret)
    assert not _ours(header, BODY, "whsec_third", time.time())


_SIGNATURE_PARTS = st.lists(st.sampled_from(["good", "bad", "v0", "other"]), min_size=0, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    parts=_SIGNATURE_PARTS,
    age=st.integers(min_value=-1000, max_value=2 * TOLERANCE_SECONDS),
    body=st.binary(max_size=64).map(lambda b: b.hex().encode()),
    tamper=st.booleans(),
    secret=st.sampled_from([SECRET, "whsec_other"]),
)
def test_we_agree_with_stripes_verifier(
    parts: list[str], age: int, body: bytes, tamper: bool, secret: str
) -> None:
    now = time.time()
    t = int(now) - age
    items = [f"t={t}"]
    for part in parts:
        items.append(
            {
                "good": f"v1={sign(SECRET, t, body)}",
                "bad": f"v1={sign(SECRET, t + 1, body)}",
                "v0": f"v0={sign(SECRET, t, body)}",
                "other": "x=1",
            }[part]
        )
    header = ",".join(items)
    received = body + b"!" if tamper else body
    # Stripe's verifier reads the clock itself: stay clear of the tolerance's edge.
    if abs(age - TOLERANCE_SECONDS) > 2:
        assert _ours(header, received, secret, now) == _stripes(header, received, secret)


def _event(**overrides: object) -> bytes:
    event = {
        "id": "evt_1", "type": "customer.subscription.updated", "created": 1_700_000_000,
        "data": {"object": {
            "object": "subscription", "id": "sub_1", "customer": "cus_1", "status": "active",
            "cancel_at_period_end": False, "metadata": {"tenant": "acme"},
            "items": {"data": [{"price": {"id": "price_pro"},
                                "current_period_start": 1_700_000_000,
                                "current_period_end": 1_702_592_000}]},
        }},
    }  # fmt: skip
    event.update(overrides)
    return orjson.dumps(event)


def test_an_event_and_its_subscription_are_read() -> None:
    event = parse_event(_event())
    sub = parse_subscription(event.data)
    assert (event.id, event.type) == ("evt_1", "customer.subscription.updated")
    assert event.created == datetime.fromtimestamp(1_700_000_000, UTC)
    assert (sub.tenant_key, sub.price_id, sub.status) == ("acme", "price_pro", "active")
    assert sub.period_end == datetime.fromtimestamp(1_702_592_000, UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (_event(id=None), "no id"),
        (_event(created="yesterday"), "no created time"),
        (_event(data={}), "no data.object"),
        (_event(id="evt_\u0000"), "NUL"),
    ],
)
def test_a_body_that_is_not_an_event_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(WebhookRefused, match=message):
        parse_event(body)


def test_a_subscription_with_an_unknown_status_is_refused() -> None:
    data = orjson.loads(_event())["data"]["object"] | {"status": "sleeping"}
    with pytest.raises(WebhookRefused, match="status"):
        parse_subscription(data)


def test_newer_is_by_created_then_by_kind_within_one_second() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    updated = parse_event(_event(created=int(at.timestamp())))
    assert is_newer(updated, None, None)
    assert is_newer(updated, at - timedelta(seconds=1), "customer.subscription.deleted")
    assert not is_newer(updated, at + timedelta(seconds=1), "customer.subscription.created")
    assert is_newer(updated, at, "customer.subscription.created")
    assert not is_newer(updated, at, "customer.subscription.deleted")
    assert not is_newer(updated, at, "customer.subscription.updated")


def test_which_plan_a_subscription_gives() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    later, earlier = now + timedelta(days=3), now - timedelta(days=3)
    assert effective_tier(None, None, None, now) == FREE_TIER
    for status in ("active", "trialing", "past_due"):
        assert effective_tier("pro", status, earlier, now) == "pro"
    for status in ("canceled", "incomplete", "incomplete_expired", "paused"):
        assert effective_tier("pro", status, later, now) == FREE_TIER
    assert effective_tier("pro", "unpaid", later, now) == "pro"
    assert effective_tier("pro", "unpaid", earlier, now) == FREE_TIER


def test_retry_after_counts_whole_seconds_to_utc_midnight() -> None:
    assert seconds_to_reset(datetime(2026, 6, 1, 23, 59, 30, tzinfo=UTC)) == 30
    assert seconds_to_reset(datetime(2026, 6, 1, 23, 59, 59, 500000, tzinfo=UTC)) == 1
    assert seconds_to_reset(datetime(2026, 6, 1, 0, 0, tzinfo=UTC)) == 86400


def test_plan_settings_are_read_and_checked() -> None:
    settings_ = Settings.from_env(
        {"CRIVLINE_STRIPE_PRICES": "price_a=pro, price_b=enterprise", "CRIVLINE_QUOTAS": "off"}
    )
    assert settings_.stripe_prices.tier("price_a") == "pro"
    assert settings_.stripe_prices.tier("price_c") is None
    assert settings_.quotas is False
    assert Settings.from_env(settings_.environ()).stripe_prices == settings_.stripe_prices
    with pytest.raises(ConfigError, match="CRIVLINE_STRIPE_PRICES"):
        Settings.from_env({"CRIVLINE_STRIPE_PRICES": "price_a"})
    with pytest.raises(ConfigError, match="CRIVLINE_QUOTAS"):
        Settings.from_env({"CRIVLINE_QUOTAS": "maybe"})
