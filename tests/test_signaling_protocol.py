"""decode_message and the field checks: bad input is a ProtocolError with a code, never another
exception; over a real socket, the error is sent and the connection goes on."""

from __future__ import annotations

import json

import pytest

from multipoint.app import MEDIA
from signaling.protocol import (
    MAX_MID_CHARS,
    MAX_TILE_PIXELS,
    MAX_TILES,
    ProtocolError,
    decode_message,
    require_tiles,
)
from signaling.tokens import JoinGrant, issue_token
from tests.conftest import RunningServer
from tests.signal_client import SignalClient


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


@pytest.mark.parametrize("depth", [300, 450, 600, 900])
def test_deep_nesting_within_the_size_limit_decodes_or_is_bad_json(depth: int) -> None:
    # A few hundred brackets (under a kilobyte) are valid JSON that json.loads takes; the
    # check for lone surrogates walked them by recursion, two frames a level, and its
    # RecursionError escaped as internal_error with a traceback in the log.
    for value in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        text = '{"type": "ping", "x": ' + value + "}"
        try:
            assert decode_message(text, 64 * 1024)["type"] == "ping"
        except ProtocolError as exc:  # deeper than json.loads takes, where the stack is deep
            assert exc.code == "bad_json"
    # A lone surrogate at the bottom is still found.
    with pytest.raises(ProtocolError) as caught:
        decode_message('{"type": "ping", "x": ' + "[" * depth + '"\\ud800"' + "]" * depth + "}",
                       64 * 1024)
    assert caught.value.code in ("bad_message", "bad_json")


def test_too_large() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message('{"type": "chat", "text": "' + "x" * 2000 + '"}', 1024)
    assert caught.value.code == "too_large"


# tiles: the page's tile heights by receive slot, for simulcast ---------------------------


@pytest.mark.parametrize("tiles", [
    {"1": 0, "2": 135.5, "3": MAX_TILE_PIXELS},
    {},  # no tiles shown
    {"x" * MAX_MID_CHARS: 1},
    {str(n): 100 for n in range(MAX_TILES)},
])
def test_good_tiles_are_heights_as_floats(tiles: dict[str, float]) -> None:
    parsed = require_tiles({"type": "tiles", "tiles": tiles})
    assert parsed == tiles and all(type(height) is float for height in parsed.values())


BAD_TILES = [
    ([["1", 100]], "bad_message"),  # not an object
    ("1=100", "bad_message"),
    (None, "bad_message"),
    ({"1": -1}, "bad_message"),
    ({"1": MAX_TILE_PIXELS + 1}, "bad_message"),
    ({"1": 10**400}, "bad_message"),  # a huge integer (JSON has no limit)
    ({"1": True}, "bad_message"),  # a bool is an int to Python, not a height
    ({"1": "100"}, "bad_message"),
    ({"1": None}, "bad_message"),
    ({"x" * (MAX_MID_CHARS + 1): 100}, "bad_message"),
    ({str(n): 100 for n in range(MAX_TILES + 1)}, "too_large"),
]


@pytest.mark.parametrize(("tiles", "code"), BAD_TILES)
def test_bad_tiles_are_a_protocol_error(tiles: object, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        require_tiles({"type": "tiles", "tiles": tiles})
    assert caught.value.code == code and caught.value.message
    with pytest.raises(ProtocolError):  # the field missing altogether
        require_tiles({"type": "tiles"})


def test_not_a_number_is_no_height() -> None:
    # Python's json reads NaN and Infinity; neither is between 0 and the limit.
    for text in ('{"type": "tiles", "tiles": {"1": NaN}}', '{"type": "tiles", "tiles": {"1": Infinity}}'):
        try:
            message = decode_message(text, 1024)
        except ProtocolError:
            continue  # refused while decoding: as good
        with pytest.raises(ProtocolError):
            require_tiles(message)


async def test_tiles_over_the_socket_get_a_clear_error_and_the_connection_stays_usable(
        server: RunningServer) -> None:
    client = await SignalClient.connect(server.ws_url)
    try:
        # Not joined: nothing to apply the heights to.
        await client.send({"type": "tiles", "tiles": {"1": 100}})
        assert (await client.next("error"))["code"] == "not_joined"
        grant = JoinGrant(room="selftest-tiles", role="selftest")
        await client.send({"type": "join", "v": 1, "name": "tiles",
                           "token": issue_token(server.settings.signing_secret(), grant, 60)})
        joined = await client.next("joined")
        offer = await client.next("offer")
        mids = [line[len("a=mid:"):] for line in offer["sdp"].split("\r\n") if line.startswith("a=mid:")]
        for tiles, code in BAD_TILES:
            await client.send(json.dumps({"type": "tiles", "tiles": tiles}))
            reply = await client.next("error")
            assert reply["code"] == code and reply["message"], reply
        # A good one is taken (no error: the pong comes next) and reaches the media side.
        await client.send({"type": "tiles", "tiles": {mid: 120 for mid in mids}})
        await client.send({"type": "ping"})
        assert (await client.next())["type"] == "pong"
        participant = server.app[MEDIA].rooms["selftest-tiles"].participants[joined["participant"]]
        assert participant.tile_heights  # the receive slots among the mids got their heights
        assert set(participant.tile_heights.values()) == {120.0}
    finally:
        await client.close()


async def test_deeply_nested_fields_over_the_socket_get_their_error_not_internal_error(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    client = await SignalClient.connect(server.ws_url)
    deep = "[" * 600 + "]" * 600
    try:
        await client.send('{"type": "ping", "x": ' + deep + "}")
        assert (await client.next())["type"] == "pong"
        for kind, field, code in (("tiles", "tiles", "not_joined"), ("join", "token", "bad_token"),
                                  ("join", "v", "unsupported_version")):
            await client.send(f'{{"type": "{kind}", "{field}": {deep}}}')
            reply = await client.next("error")
            assert reply["code"] == code, reply
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        await client.close()
