"""Regressions found by the hostile-input stress suite (tests/stress/test_fuzz.py)."""

from __future__ import annotations

import pytest

import trioqio
from trioqio import AddressError


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("tcp:localhost:" + "9" * 5000, "port"),
        ("localhost:" + "1" * 4301, "port"),
        ("fd:" + "7" * 10000, "fd"),
        ("vsock:" + "3" * 4400 + ":1", "vsock cid"),
        ("vsock:3:" + "0" * 4400, "vsock port"),
    ],
)
def test_huge_numbers_are_address_errors(text: str, part: str) -> None:
    # int() of more than 4300 digits raised a bare ValueError naming no part.
    with pytest.raises(AddressError, match=f"^{part} .* digits\\) out of range"):
        trioqio.parse_address(text)


def test_zero_padded_port_still_parses() -> None:
    assert trioqio.parse_address("tcp:localhost:" + "0" * 20 + "80").port == 80  # type: ignore[union-attr]
