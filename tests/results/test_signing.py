"""The webhook signature: what the docs tell receivers to check is what the sender sends."""

from __future__ import annotations

import hashlib
import hmac

from aybiza.results.signing import sign, signature_header, verify

BODY = b'{"event":"call.ended","call_id":"CA1"}'


def test_the_header_is_an_hmac_sha256_over_timestamp_dot_body() -> None:
    header = signature_header("key", BODY, now=1_700_000_000)
    expected = hmac.new(b"key", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert sign("key", 1_700_000_000, BODY) == expected


def test_verify_accepts_the_signed_body_and_refuses_any_change() -> None:
    header = signature_header("key", BODY, now=1_700_000_000)
    assert verify("key", header, BODY, now=1_700_000_010)
    assert not verify("key", header, BODY.replace(b"CA1", b"CA2"), now=1_700_000_010)
    assert not verify("other", header, BODY, now=1_700_000_010)
    forged = header.replace("t=1700000000", "t=1700000005")  # a fresh timestamp on an old MAC
    assert not verify("key", forged, BODY, now=1_700_000_010)


def test_verify_refuses_an_old_replay_and_garbage() -> None:
    header = signature_header("key", BODY, now=1_700_000_000)
    assert not verify("key", header, BODY, now=1_700_000_000 + 301)
    assert verify("key", header, BODY, now=1_700_000_000 + 301, tolerance_s=600)
    assert not verify("key", "", BODY)
    assert not verify("key", "t=abc,v1=00", BODY)
    assert not verify("key", "v1=" + sign("key", 0, BODY), BODY)
