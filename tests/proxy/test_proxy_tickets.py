"""Stream tickets: signed, bound to key and environment, windowed expiry, rotation."""

from __future__ import annotations

import uuid

from proxy.tickets import Ticket, TicketSigner

ENV = str(uuid.uuid4())
KEY = "ab" * 32


def signer(secret: bytes = b"s3cret", window: int = 900) -> TicketSigner:
    s = TicketSigner(window)
    s.use_secret(secret)
    return s


def test_a_ticket_round_trips_and_is_deterministic_within_a_window() -> None:
    s = signer()
    ticket = s.issue(ENV, KEY, 42, now=1_000_000.0)
    assert ticket is not None
    assert s.issue(ENV, KEY, 42, now=1_000_500.0) == ticket  # same window: same bytes
    assert s.verify(ticket, now=1_000_000.0) == Ticket(ENV, KEY, 42, 1_001_700)  # (1111 + 2) * 900
    assert len(ticket) < 120
    assert KEY not in ticket


def test_expiry_is_between_one_and_two_windows() -> None:
    s = signer(window=100)
    ticket = s.issue(ENV, KEY, 1, now=1050.0)
    assert ticket is not None
    assert s.verify(ticket, now=1199.9) is not None
    assert s.verify(ticket, now=1200.0) is None  # end of the next window


def test_tampering_and_other_secrets_are_refused() -> None:
    s = signer()
    ticket = s.issue(ENV, KEY, 1, now=1000.0)
    assert ticket is not None
    payload, mac = ticket.split(".")
    assert s.verify(payload + "." + mac[::-1], now=1000.0) is None
    assert s.verify(payload[:-2] + "AA." + mac, now=1000.0) is None
    assert signer(b"other").verify(ticket, now=1000.0) is None
    assert s.verify("not-a-ticket", now=1000.0) is None
    assert s.verify("a.b.c", now=1000.0) is None
    assert TicketSigner().verify(ticket, now=1000.0) is None  # no secret yet
    assert TicketSigner().issue(ENV, KEY, 1, now=1000.0) is None


def test_rotation_keeps_accepting_the_previous_secret() -> None:
    s = signer(b"one")
    old = s.issue(ENV, KEY, 1, now=1000.0)
    assert old is not None
    s.use_secret(b"two")
    new = s.issue(ENV, KEY, 1, now=1000.0)
    assert new is not None
    assert new != old
    assert s.verify(old, now=1000.0) is not None
    assert s.verify(new, now=1000.0) is not None
    s.use_secret(b"three")
    assert s.verify(old, now=1000.0) is None  # only the last two are kept


def test_non_uuid_environments_get_no_ticket() -> None:
    assert signer().issue("not-a-uuid", KEY, 1, now=1.0) is None
    assert signer().issue(ENV, "zz", 1, now=1.0) is None
