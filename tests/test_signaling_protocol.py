"""decode_message: bad input is a ProtocolError with a code, never another exception."""

from __future__ import annotations

import pytest

from signaling.protocol import ProtocolError, decode_message


def test_valid_message_decodes() -> None:
    assert decode_message('{"type": "ping"}', 1024) == {"type": "ping"}


@pytest.mark.parametrize(("text", "code"), [
    ("{", "bad_json"),
    ("[1]", "bad_message"),
    ('{"type": 1}', "bad_message"),
    ('{"type": "nope"}', "unknown_type"),
    ("[" * 100_000, "bad_json"),  # nesting deeper than the recursion limit
    # Found by fuzz/signaling.py: int() refuses more than 4300 digits with a ValueError
    # that is not a JSONDecodeError; it escaped and the server answered internal_error.
    # Valid JSON, a number too large: bad_message.
    ('{"type": "answer", "revision": ' + "1" * 5000 + "}", "bad_message"),
])
def test_bad_input_is_a_protocol_error(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message(text, 1024 * 1024)
    assert caught.value.code == code


def test_too_large() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message('{"type": "chat", "text": "' + "x" * 2000 + '"}', 1024)
    assert caught.value.code == "too_large"
