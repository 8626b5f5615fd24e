"""G.711 tables against the C reference (`audioop`, shipped with Python up to 3.12), and the
two-bytes-at-once block decoder against the tables."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from recorder.core.media.codecs import (
    ALAW_TABLE,
    ULAW_TABLE,
    decode_alaw,
    decode_g711_block,
    decode_ulaw,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

EVERY_CODE = bytes(range(256))


def test_tables_equal_the_reference_for_every_code() -> None:
    assert decode_ulaw(EVERY_CODE).tolist() == list(
        np.frombuffer(audioop.ulaw2lin(EVERY_CODE, 2), "<i2")
    )
    assert decode_alaw(EVERY_CODE).tolist() == list(
        np.frombuffer(audioop.alaw2lin(EVERY_CODE, 2), "<i2")
    )


@pytest.mark.parametrize("width", [160, 80, 240, 33])
@pytest.mark.parametrize("mix", ["ulaw", "alaw", "mixed"])
def test_block_decoder_equals_the_tables(width: int, mix: str) -> None:
    rng = np.random.default_rng(width)
    payloads = rng.integers(0, 256, (64, width), dtype=np.uint8)
    tables = {"ulaw": np.zeros(64), "alaw": np.ones(64), "mixed": np.arange(64) % 2}[mix]
    tables = tables.astype(np.int64)
    want = np.where(tables[:, None] == 0, ULAW_TABLE[payloads], ALAW_TABLE[payloads])
    np.testing.assert_array_equal(decode_g711_block(payloads, tables), want)
