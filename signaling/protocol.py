"""The participant protocol, version 1: JSON text messages over one WebSocket.

Documented in docs/protocol.md; this module turns raw text into checked messages and
names every error with a stable code.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
MAX_SDP_BYTES = 256 * 1024  # an offer/answer with 60 legs stays far below this
MAX_NAME_CHARS = 80

MAX_CHAT_CHARS = 2000
MAX_PARTICIPANT_ID_CHARS = 40
RESUME_SECRET_CHARS = 43  # secrets.token_urlsafe(32)

CLIENT_MESSAGE_TYPES = frozenset({
    "join", "resume", "restart_ice", "answer", "leave", "ping",
    "set_muted", "screen", "chat", "tiles",  # any participant, about themselves / the room
    "mute", "request_unmute", "remove", "lock", "set_mode", "record",  # hosts only
})
MODES = ("forwarded", "mixed")


class ProtocolError(Exception):
    """A message that cannot be honoured; the connection stays open."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details  # more fields of the error message (e.g. retry_after)

    def as_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message, **self.details}


def decode_message(text: str, max_bytes: int) -> dict[str, Any]:
    """Parse one client message; raise :class:`ProtocolError` naming what is wrong."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError("too_large", f"message of {size} bytes exceeds the limit of {max_bytes}")
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None
    except ValueError:  # valid JSON, but an integer of more digits than Python converts
        raise ProtocolError("bad_message", "a number in the message is too large") from None
    if not is_text(message):
        # "\ud800" is valid JSON, but a lone surrogate is no character: it cannot be
        # stored (call records), logged or sent on as UTF-8. Refused before anything.
        raise ProtocolError("bad_message",
                            "the message contains a lone surrogate (\\ud800-\\udfff): not text")
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", "a message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "a message needs a string field 'type'")
    if kind not in CLIENT_MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
    return message


def is_text(value: Any) -> bool:
    """Whether every string in a decoded message (keys too) is valid Unicode text.

    Walked with a stack of its own, not by recursion: json.loads takes nesting close to
    the interpreter's recursion limit, and a walk that recursed (two frames a level) ran
    past it on a message of a few hundred brackets, an exception no caller expected.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


MAX_INT = 2**53  # what a JavaScript client can send and read back exactly


def require_str(message: dict[str, Any], field: str, max_chars: int, required: bool = True) -> str | None:
    value = message.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError("bad_message", f"'{message['type']}' needs a string field '{field}'")
    if len(value) > max_chars:
        raise ProtocolError("too_large", f"field '{field}' is longer than {max_chars} characters")
    return value


def require_sdp(message: dict[str, Any]) -> str:
    sdp = require_str(message, "sdp", MAX_SDP_BYTES)
    assert sdp is not None
    if not sdp.startswith("v=0"):
        raise ProtocolError("bad_sdp", "the SDP must start with 'v=0'")
    return sdp


def optional_int(message: dict[str, Any], field: str) -> int | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("bad_message", f"field '{field}' must be an integer")
    if not -MAX_INT <= value <= MAX_INT:
        raise ProtocolError("bad_message", f"field '{field}' is out of range")
    return value


def require_bool(message: dict[str, Any], field: str) -> bool:
    value = message.get(field)
    if not isinstance(value, bool):
        raise ProtocolError("bad_message", f"'{message['type']}' needs a boolean field '{field}'")
    return value


MAX_VIDEO_CODECS = 8
MAX_CODEC_NAME_CHARS = 32


def optional_str_list(message: dict[str, Any], field: str) -> list[str] | None:
    """An optional list of short strings (``join``'s ``video_codecs``): names the server
    does not know are the server's to ignore, but not a list of anything else."""
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad_message", f"field '{field}' must be a list of strings")
    if len(value) > MAX_VIDEO_CODECS or any(len(v) > MAX_CODEC_NAME_CHARS for v in value):
        raise ProtocolError("too_large", f"field '{field}' is longer than {MAX_VIDEO_CODECS} "
                                         f"names of {MAX_CODEC_NAME_CHARS} characters")
    return value


MAX_TILES = 64  # more than any layout has receive slots
MAX_MID_CHARS = 16
MAX_TILE_PIXELS = 8192


def require_tiles(message: dict[str, Any]) -> dict[str, float]:
    """``tiles``' map of receive slot mid -> tile height in device pixels (0: hidden)."""
    value = message.get("tiles")
    if not isinstance(value, dict):
        raise ProtocolError("bad_message", "'tiles' needs an object 'tiles' of mid -> height")
    if len(value) > MAX_TILES:
        raise ProtocolError("too_large", f"'tiles' names more than {MAX_TILES} slots")
    tiles = {}
    for mid, height in value.items():
        if (len(mid) > MAX_MID_CHARS or isinstance(height, bool)
                or not isinstance(height, int | float) or not 0 <= height <= MAX_TILE_PIXELS):
            raise ProtocolError("bad_message", f"a tile height is a number of pixels from 0 to "
                                               f"{MAX_TILE_PIXELS}, by a mid of up to {MAX_MID_CHARS} "
                                               "characters")
        tiles[mid] = float(height)
    return tiles
