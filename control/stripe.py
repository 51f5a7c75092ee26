"""Stripe webhooks, the pure part: the ``Stripe-Signature`` check and the event's reading.

The signature is Stripe's scheme: the header is comma-separated ``key=value`` items
(no spaces), a ``t=`` (Unix seconds; the first one counts) and one or more ``v1=`` (hex
HMAC-SHA256 of ``"{t}.{raw body}"`` under the endpoint secret). Any matching ``v1`` is
accepted — while a secret is being rolled Stripe signs with both — and other schemes
(``v0``) are ignored. A timestamp older than the tolerance (300 s) is refused, so a
captured request cannot be replayed later; like Stripe's own libraries, a timestamp
ahead of the clock is not. ``t`` must be plain digits (stricter than Stripe's library,
which also takes ``+12`` or `` 12``; Stripe never sends those). Comparisons are in
constant time. The unit tests hold this to Stripe's own verifier.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

TOLERANCE_SECONDS = 300
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
# At the same `created` second, which event wins (Stripe's timestamps are whole seconds).
_SAME_SECOND_RANK = {name: rank for rank, name in enumerate(SUBSCRIPTION_EVENTS)}
STATUSES = frozenset(
    {"incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled",
     "unpaid", "paused"}
)  # fmt: skip


class WebhookRefused(Exception):
    """The request is not a genuine, readable Stripe event; the message says why."""


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """The hex ``v1`` signature of ``payload`` at ``timestamp``."""
    message = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(header: str | None, payload: bytes, secret: str, now: float) -> None:
    """Raise :class:`WebhookRefused` unless ``header`` signs ``payload`` under ``secret``."""
    if header is None or not header.strip():
        raise WebhookRefused("the Stripe-Signature header is missing")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.partition("=")
        if name in ("t", "v1") and not sep:
            raise WebhookRefused(f"the Stripe-Signature item {name!r} has no value")
        if name == "t" and timestamp is None:  # the first one counts, as in Stripe's code
            if not value.isascii() or not value.isdigit():
                raise WebhookRefused("the Stripe-Signature t= is not a Unix time in seconds")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None:
        raise WebhookRefused("the Stripe-Signature header has no t= timestamp")
    if not signatures:
        raise WebhookRefused("the Stripe-Signature header has no v1= signature")
    if timestamp < now - TOLERANCE_SECONDS:
        raise WebhookRefused(
            f"the Stripe-Signature timestamp is more than {TOLERANCE_SECONDS} s old"
        )
    expected = sign(secret, timestamp, payload).encode()
    matched = False
    for signature in signatures:  # all of them, so timing does not tell which one matched
        matched |= hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))
    if not matched:
        raise WebhookRefused("no v1 signature in Stripe-Signature matches this body")


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    created: datetime
    data: Mapping[str, Any]  # data.object


@dataclass(frozen=True, slots=True)
class Subscription:
    """What control keeps of a Stripe subscription object."""

    tenant_key: str | None  # metadata.tenant
    customer_id: str
    subscription_id: str
    price_id: str | None
    status: str
    period_start: datetime | None
    period_end: datetime | None
    cancel_at_period_end: bool


def parse_event(payload: bytes) -> Event:
    """The event's envelope; :class:`WebhookRefused` when the body is not one."""
    if b"\\u0000" in payload:  # no text column can hold a NUL: refuse it whole
        raise WebhookRefused("the body contains a NUL character")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise WebhookRefused("the body is not JSON") from None
    if not isinstance(body, dict):
        raise WebhookRefused("the body is not a JSON object")
    event_id, event_type, created = body.get("id"), body.get("type"), body.get("created")
    data = body.get("data")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 255:
        raise WebhookRefused("the event has no id")
    if not isinstance(event_type, str):
        raise WebhookRefused("the event has no type")
    if type(created) is not int or created < 0:
        raise WebhookRefused("the event has no created time")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise WebhookRefused("the event has no data.object")
    return Event(event_id, event_type, _time(created), data["object"])


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _optional_time(value: Any) -> datetime | None:
    return _time(value) if type(value) is int and value >= 0 else None


def parse_subscription(obj: Mapping[str, Any]) -> Subscription:
    """A ``subscription`` object; :class:`WebhookRefused` when it is not one.

    Newer Stripe API versions moved the current period onto the subscription items:
    both places are read, the subscription's own first.
    """
    if obj.get("object") != "subscription":
        raise WebhookRefused("the event's data.object is not a subscription")
    sub_id, customer, status = obj.get("id"), obj.get("customer"), obj.get("status")
    if isinstance(customer, dict):  # an expanded customer object
        customer = customer.get("id")
    if not isinstance(sub_id, str) or not isinstance(customer, str):
        raise WebhookRefused("the subscription has no id or customer")
    if status not in STATUSES:
        raise WebhookRefused(f"the subscription's status {status!r} is not one Stripe defines")
    items = obj.get("items")
    first: Mapping[str, Any] = {}
    data = items.get("data") if isinstance(items, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first = data[0]
    price = first.get("price")
    price_id = price.get("id") if isinstance(price, dict) else None
    metadata = obj.get("metadata")
    tenant = metadata.get("tenant") if isinstance(metadata, dict) else None
    return Subscription(
        tenant_key=tenant if isinstance(tenant, str) else None,
        customer_id=customer,
        subscription_id=sub_id,
        price_id=price_id if isinstance(price_id, str) else None,
        status=status,
        period_start=_optional_time(
            obj.get("current_period_start", first.get("current_period_start"))
        ),
        period_end=_optional_time(obj.get("current_period_end", first.get("current_period_end"))),
        cancel_at_period_end=obj.get("cancel_at_period_end") is True,
    )


def is_newer(event: Event, last_created: datetime | None, last_type: str | None) -> bool:
    """Whether ``event`` is newer than the last one applied (None: none was).

    Stripe's ``created`` has whole-second resolution: within one second, created <
    updated < deleted, so a deletion is never undone by an update of the same second.
    """
    if last_created is None:
        return True
    if event.created != last_created:
        return event.created > last_created
    return _SAME_SECOND_RANK.get(event.type, 0) > _SAME_SECOND_RANK.get(last_type or "", 0)
