"""Signaling: one WebSocket text message through decode_message and the validators.

The server (signaling/server.py ``handle_text``) decodes every text frame with
:func:`decode_message` and each handler then checks its fields with the validators of
signaling/protocol.py (and a join its token with signaling/tokens.py). Bad input must
come back as :class:`ProtocolError` (or :class:`TokenError`, which ``on_join`` turns into
one), never as another exception: those become "internal_error".
"""

from __future__ import annotations

import contextlib

from signaling.protocol import (
    MAX_CHAT_CHARS,
    MAX_NAME_CHARS,
    ProtocolError,
    decode_message,
    optional_int,
    require_bool,
    require_sdp,
    require_str,
)
from signaling.tokens import TokenError, verify_token

MAX_MESSAGE_BYTES = 64 * 1024  # multipoint/settings.py: the default max_message_bytes
SECRET = "fuzz-secret-" + "x" * 32


def _validate(message: dict[str, object]) -> None:
    kind = message["type"]
    if kind == "join":
        with contextlib.suppress(TokenError):  # on_join turns it into a ProtocolError
            verify_token(SECRET, message.get("token"))
        require_str(message, "name", MAX_NAME_CHARS, required=False)
    elif kind == "answer":
        require_sdp(message)
        optional_int(message, "revision")
    elif kind == "set_muted":
        for field in ("audio", "video"):
            if field in message:
                require_bool(message, field)
    elif kind in ("screen", "record"):
        require_bool(message, "active")
    elif kind == "lock":
        require_bool(message, "locked")
    elif kind == "chat":
        require_str(message, "text", MAX_CHAT_CHARS)
    elif kind in ("mute", "request_unmute", "remove", "set_mode"):
        require_str(message, "participant", 40)


def one_input(data: bytes) -> None:
    # aiohttp hands the server text frames as str; a frame that is not UTF-8 never
    # reaches it (the socket is closed by aiohttp), so those bytes stop here.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        _validate(decode_message(text, MAX_MESSAGE_BYTES))
    except ProtocolError as exc:
        assert exc.code and exc.message, exc
