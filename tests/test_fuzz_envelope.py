"""Property-based fuzzing of the envelope parser: any input ends in a typed error or the truth.

Random bytes and mutations of a valid sealed bid (flipped bits, cuts, insertions, overwritten
length octets) must never raise anything but a ``BidBridgeError``; when opening does succeed,
the result must be exactly the original content.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import der
from crypto.envelope import decrypt_stream, inspect_stream, unwrap_content_key
from crypto.errors import BidBridgeError
from crypto.keys import SoftwareKey
from crypto.signed_data import read_signed_data
from tests.support.pki import CODE_A, Pki, make_package, seal_as

FUZZ = settings(
    max_examples=int(os.environ.get("BIDBRIDGE_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def sealed(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    tmp = tmp_path_factory.mktemp("fuzz")
    pkg = make_package(tmp / "pkg", CODE_A, documents={"a.pdf": b"fuzz me " * 64})
    seal_as(pki.bidder_rsa, pkg, tmp / "bid.p7m")
    data = (tmp / "bid.p7m").read_bytes()
    return data, _open(data, pki)


def _open(data: bytes, pki: Pki) -> bytes:
    key = pki.bidder_rsa.encryption
    assert key.key is not None
    f = io.BytesIO(data)
    info = inspect_stream(f)
    cek = unwrap_content_key(info, SoftwareKey(key.key), key.certificate)
    out = bytearray()
    reader = der.Reader(der.ChunkStream(decrypt_stream(f, info, cek)))
    read_signed_data(reader, out.extend)
    reader.at_eof()
    return bytes(out)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(BidBridgeError):
        inspect_stream(io.BytesIO(data))


@FUZZ
@given(st.data())
def test_mutated_envelopes_raise_only_typed_errors_or_open_unchanged(
    pki: Pki, sealed: tuple[bytes, bytes], data: st.DataObject
) -> None:
    original, content = sealed
    buf = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite-header"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "cut":
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, min(600, len(buf) - 1)))
        buf[i] = data.draw(st.sampled_from([0x00, 0x80, 0x84, 0x88, 0xFF, 0x30, 0xA0]))
    try:
        result = _open(bytes(buf), pki)
    except BidBridgeError:
        return
    assert result == content


def test_fuzz_corpus_file_round_trip(sealed: tuple[bytes, bytes], pki: Pki, tmp_path: Path) -> None:
    """The fixture itself opens, so the properties above test a real envelope."""
    assert _open(sealed[0], pki) == sealed[1]
