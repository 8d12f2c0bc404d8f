"""The audio mixer on real Opus tones: who hears whom, and what bad sources do."""

from __future__ import annotations

import numpy as np
import pytest

from mcu.mixer.audio import AudioMixer
from mcu.mixer.jitter import JitterBuffer
from tests.mixer.mixer_media import band_energy, decode_opus, level_of, opus_packets, tone

FREQS = {"a": 440.0, "b": 1000.0, "c": 1700.0}
SECONDS = 2.0
TICKS = int(SECONDS * 50)


@pytest.fixture(scope="module")
def tones() -> dict[str, list[bytes]]:
    return {s: opus_packets(tone(f, SECONDS)) for s, f in FREQS.items()}


LEVEL = level_of(tone(440, 0.1))  # the level a browser would put in the header
SILENT = opus_packets(np.zeros(TICKS * 960, dtype=np.int16))


def session(
    mixer: AudioMixer,
    sends: dict[str, list[bytes | None]],
    listeners: list[str],
    levels: dict[str, int | None] | None = None,
) -> dict[str, np.ndarray]:
    """Push one packet per source per tick (None: nothing sent), tick, decode what
    each listener would receive."""
    received: dict[str, list[bytes]] = {listener: [] for listener in listeners}
    ticks = max(len(v) for v in sends.values())
    for i in range(ticks):
        for source, packets in sends.items():
            payload = packets[i] if i < len(packets) else None
            if payload is not None:
                level = LEVEL if levels is None else levels.get(source, LEVEL)
                mixer.push(source, 7000 + i, 3000 + i * 960, payload, level, i * 0.02)
        out = mixer.tick()
        for listener in listeners:
            packet = out.packet_for(listener)
            assert packet, "every listener gets a packet every tick"
            received[listener].append(packet)
    return {k: decode_opus(v) for k, v in received.items()}


def test_listeners_hear_all_talkers_and_talkers_do_not_hear_themselves(tones) -> None:
    mixer = AudioMixer()
    for source in FREQS:
        mixer.add_source(source)
        mixer.add_listener(source, source)
    mixer.add_listener("room-unit")
    heard = session(mixer, dict(tones), ["a", "b", "c", "room-unit"])

    tail = {k: v[-48000:] for k, v in heard.items()}  # the last second
    for source, freq in FREQS.items():
        assert band_energy(tail["room-unit"], freq) > 0.2
        assert band_energy(tail[source], freq) < 0.01, f"{source} hears itself"
        for other, other_freq in FREQS.items():
            if other != source:
                assert band_energy(tail[source], other_freq) > 0.2


@pytest.mark.parametrize("talkers", [1, 2, 3])
def test_the_mix_as_pcm_for_other_codecs_leaves_each_talker_out_of_its_own(tones, talkers: int) -> None:
    """What a room unit on G.722/G.711 is encoded from: the shared mix, and for a talker
    asked for, the mix without its voice (silence when it talks alone)."""
    mixer = AudioMixer()
    sources = list(FREQS)[:talkers]
    for source in sources:
        mixer.add_source(source)
        mixer.add_listener(f"unit-{source}", source)
    mixer.add_listener("quiet-unit")
    own_pcm: dict[str, list[np.ndarray]] = {f"unit-{s}": [] for s in sources}
    shared: list[np.ndarray] = []
    for i in range(TICKS):
        for source in sources:
            mixer.push(source, 7000 + i, 3000 + i * 960, tones[source][i], LEVEL, i * 0.02)
        # Not the first talker (its mix is Opus only), unless it talks alone.
        asked = {"quiet-unit", *(f"unit-{s}" for s in (sources if talkers == 1 else sources[1:]))}
        out = mixer.tick(pcm=True, pcm_for=asked)
        assert out.pcm is not None and out.pcm.dtype == np.int16 and out.pcm.shape == (960,)
        assert "quiet-unit" not in out.own_pcm  # it hears the shared mix
        shared.append(out.pcm)
        if talkers == 1:  # alone: it hears nothing
            assert not out.own_pcm.get("unit-a", np.zeros(1)).any()
            continue
        assert f"unit-{sources[0]}" not in out.own_pcm  # not asked for
        for listener, pcm in out.own_pcm.items():
            own_pcm[listener].append(pcm)
    tail = np.concatenate(shared)[-48000:]
    for source in sources:  # (a lone talker's own PCM is checked above)
        assert band_energy(tail, FREQS[source]) > 0.2 / talkers
    for source in sources[1:]:
        heard = np.concatenate(own_pcm[f"unit-{source}"])[-48000:]
        assert band_energy(heard, FREQS[source]) < 0.01, f"{source} hears itself"
        for other in sources:
            if other != source:
                assert band_energy(heard, FREQS[other]) > 0.2
    assert mixer.tick().pcm is None  # not asked for, not kept


def test_a_non_talking_listener_shares_the_one_mix(tones) -> None:
    mixer = AudioMixer()
    for source in FREQS:
        mixer.add_source(source)
    for n in range(5):
        mixer.add_listener(f"l{n}")
    mixer.add_listener("a-person", "a")
    for i in range(10):
        for source in FREQS:
            mixer.push(source, i, i * 960, tones[source][i], LEVEL, i * 0.02)
        out = mixer.tick()
    assert set(out.own) == {"a-person"}
    assert all(out.is_shared(f"l{n}") for n in range(5))
    assert len({out.packet_for(f"l{n}") for n in range(5)}) == 1
    # One shared encode plus one mix-minus per talking listener, per tick.
    assert mixer.stats.encodes <= 2 * mixer.stats.ticks


def test_two_talkers_and_silent_sources_silent_ones_are_not_decoded(tones) -> None:
    mixer = AudioMixer()
    sends: dict[str, list[bytes | None]] = {"a": tones["a"], "b": tones["b"]}
    levels: dict[str, int | None] = {"a": LEVEL, "b": LEVEL}
    for n in range(10):
        sends[f"quiet{n}"] = SILENT
        levels[f"quiet{n}"] = 127
    for source in sends:
        mixer.add_source(source)
    mixer.add_listener("unit")
    heard = session(mixer, sends, ["unit"], levels)["unit"][-48000:]
    assert band_energy(heard, FREQS["a"]) > 0.3
    assert band_energy(heard, FREQS["b"]) > 0.3
    # Only the two talkers (and never the ten silent sources) cost a decode.
    assert mixer.stats.decodes <= 2 * mixer.stats.ticks


def test_sources_without_level_headers_are_measured_by_decoding(tones) -> None:
    mixer = AudioMixer()
    mixer.add_source("a")
    mixer.add_source("mute")
    mixer.add_listener("unit")
    heard = session(mixer, {"a": tones["a"], "mute": SILENT}, ["unit"], {"a": None, "mute": None})
    assert band_energy(heard["unit"][-48000:], FREQS["a"]) > 0.5
    assert mixer.selector.selected == ["a"]


def test_a_source_that_stops_sending_leaves_silence_not_a_stall(tones) -> None:
    mixer = AudioMixer()
    for source in FREQS:
        mixer.add_source(source)
    mixer.add_listener("unit")
    sends: dict[str, list[bytes | None]] = dict(tones)
    sends["a"] = tones["a"][:30]  # a's network dies after 0.6 s
    heard = session(mixer, sends, ["unit"])["unit"]
    tail = heard[-48000:]
    assert band_energy(tail, FREQS["a"]) < 0.01
    assert band_energy(tail, FREQS["b"]) > 0.3
    assert band_energy(tail, FREQS["c"]) > 0.3
    assert len(heard) == TICKS * 960  # one 20 ms packet every tick, no gap, no burst


def test_a_source_sending_garbage_never_breaks_the_mix(tones) -> None:
    rng = np.random.default_rng(7)
    garbage: list[bytes | None] = [rng.bytes(int(rng.integers(0, 200))) for _ in range(TICKS)]
    mixer = AudioMixer()
    for source in ("g", "b", "c"):
        mixer.add_source(source)
        mixer.add_listener(source, source)
    mixer.add_listener("unit")
    sends = {"g": garbage, "b": tones["b"], "c": tones["c"]}
    heard = session(mixer, sends, ["unit", "b", "g"])
    tail = heard["unit"][-48000:]
    assert band_energy(tail, FREQS["b"]) > 0.1
    assert band_energy(tail, FREQS["c"]) > 0.1
    assert band_energy(heard["g"][-48000:], FREQS["b"]) > 0.1


def test_sources_and_listeners_come_and_go_between_ticks(tones) -> None:
    mixer = AudioMixer()
    mixer.add_source("a")
    mixer.add_listener("a", "a")
    for i in range(40):
        if i == 10:
            mixer.add_source("b")
            mixer.add_listener("b", "b")
        if i == 25:
            mixer.remove_source("a")
            mixer.remove_listener("a")
        for source in mixer.sources:
            mixer.push(source, i, i * 960, tones[source][i], LEVEL, i * 0.02)
        out = mixer.tick()
        assert out.shared
    assert mixer.sources == ["b"] and mixer.listeners == ["b"]
    assert out.talkers == ("b",)


def test_a_voice_alone_in_a_mix_is_passed_on_as_it_came(tones) -> None:
    # One talker: everybody else hears its own packets, it hears silence: no encode.
    mixer = AudioMixer()
    for source in ("a", "b", "quiet"):
        mixer.add_source(source)
        mixer.add_listener(source, source)
    mixer.add_listener("unit")
    passed = 0
    for i in range(TICKS):
        mixer.push("a", 100 + i, i * 960, tones["a"][i], LEVEL, i * 0.02)
        mixer.push("quiet", 500 + i, i * 960, SILENT[i], 127, i * 0.02)
        out = mixer.tick()
        if i > 10:  # past the jitter buffer's start and the fade-in
            passed += out.shared in tones["a"]
            assert out.packet_for("unit") == out.packet_for("b") == out.shared
            assert out.packet_for("a") != out.shared  # not itself
    assert passed >= TICKS - 20
    assert mixer.stats.encodes <= 15  # the first ticks only (fade-in)

    # Two talkers: the shared mix is encoded, and each hears the other's own packets.
    mixer = AudioMixer()
    for source in ("a", "b"):
        mixer.add_source(source)
        mixer.add_listener(source, source)
    mixer.add_listener("unit")
    heard: dict[str, list[bytes]] = {"a": [], "b": [], "unit": []}
    for i in range(TICKS):
        for source in ("a", "b"):
            mixer.push(source, 100 + i, i * 960, tones[source][i], LEVEL, i * 0.02)
        out = mixer.tick()
        for listener in heard:
            heard[listener].append(out.packet_for(listener))
    assert mixer.stats.encodes <= TICKS + 30  # about one a tick, not three
    assert sum(p in tones["b"] for p in heard["a"]) >= TICKS - 20
    pcm = {k: decode_opus(v)[-48000:] for k, v in heard.items()}
    assert band_energy(pcm["a"], FREQS["b"]) > 0.3 and band_energy(pcm["a"], FREQS["a"]) < 0.01
    assert band_energy(pcm["unit"], FREQS["a"]) > 0.2 and band_energy(pcm["unit"], FREQS["b"]) > 0.2


def test_a_room_where_nobody_talks_sends_every_tick_and_decodes_nothing() -> None:
    mixer = AudioMixer(keep_pcm=True)
    for n in range(20):
        mixer.add_source(f"s{n}")
        mixer.add_listener(f"s{n}", f"s{n}")
    mixer.add_listener("unit")
    received: list[bytes] = []
    for i in range(TICKS):
        for n in range(20):
            mixer.push(f"s{n}", 300 + i, i * 960, SILENT[i], 127, i * 0.02)
        out = mixer.tick()
        assert out.talkers == () and out.own == {}
        assert out.pcm is not None and not out.pcm.any()
        packets = {out.packet_for(listener) for listener in mixer.listeners}
        assert packets == {out.shared} and out.shared  # one packet, for everybody, each tick
        received.append(out.shared)
    assert mixer.stats.decodes == 0
    # Silence is encoded until the encoder's packet for it settles, then sent again.
    assert mixer.stats.encodes <= 10
    assert len(set(received[10:])) == 1
    assert float(np.max(np.abs(decode_opus(received)))) < 1.0  # digital silence, at most dither


def test_silence_between_talk_spurts_is_not_encoded_and_talk_after_it_is_heard(tones) -> None:
    mixer = AudioMixer()
    for source in ("a", "b", "quiet"):
        mixer.add_source(source)
        mixer.add_listener(source, source)
    mixer.add_listener("unit")
    heard: dict[str, list[bytes]] = {"a": [], "unit": []}
    encodes: list[int] = []
    decodes: list[int] = []
    for i in range(3 * TICKS):
        spurt = i < TICKS or i >= 2 * TICKS  # a and b talk, pause for 2 s, talk again
        for source in ("a", "b"):
            if spurt:
                mixer.push(source, 100 + i, i * 960, tones[source][i % TICKS], LEVEL, i * 0.02)
            else:
                mixer.push(source, 100 + i, i * 960, SILENT[i % TICKS], 127, i * 0.02)
        mixer.push("quiet", 900 + i, i * 960, SILENT[i % TICKS], 127, i * 0.02)
        before = mixer.stats.encodes, mixer.stats.decodes
        out = mixer.tick()
        encodes.append(mixer.stats.encodes - before[0])
        decodes.append(mixer.stats.decodes - before[1])
        for listener in heard:
            heard[listener].append(out.packet_for(listener))
    # The pause: after the talkers' hold (and one faded frame each) nothing is decoded;
    # once the encoder's packet for silence has settled, nothing is encoded.
    assert sum(decodes[TICKS + 50:2 * TICKS]) == 0
    assert sum(encodes[TICKS + 50:2 * TICKS]) == 0
    assert sum(encodes[2 * TICKS + 20:]) >= TICKS - 40  # two voices again: the shared mix
    pcm = {k: decode_opus(v) for k, v in heard.items()}
    pause = slice((TICKS + 50) * 960, 2 * TICKS * 960)
    assert int(np.max(np.abs(pcm["unit"][pause]))) < 50  # silence, not a stuck voice
    second = slice(-48000, None)
    assert band_energy(pcm["unit"][second], FREQS["a"]) > 0.2
    assert band_energy(pcm["unit"][second], FREQS["b"]) > 0.2
    assert band_energy(pcm["a"][second], FREQS["b"]) > 0.3
    assert band_energy(pcm["a"][second], FREQS["a"]) < 0.01  # never itself


def test_a_listener_added_again_with_another_source_loses_that_one_from_its_mix(tones) -> None:
    mixer = AudioMixer()
    for source in ("a", "b", "c"):
        mixer.add_source(source)
    mixer.add_listener("unit", "a")
    mixer.add_listener("unit", "b")  # renegotiated: its own voice is b now
    heard = session(mixer, dict(tones), ["unit"])["unit"][-48000:]
    assert band_energy(heard, FREQS["a"]) > 0.2 and band_energy(heard, FREQS["c"]) > 0.2
    assert band_energy(heard, FREQS["b"]) < 0.01
    mixer.remove_listener("unit")
    assert mixer.listeners == [] and not mixer.tick().own


def test_a_source_that_sends_nothing_is_not_stepped_and_is_heard_when_it_sends_again(tones) -> None:
    class CountingBuffer(JitterBuffer):
        pops = 0

        def pop(self):  # type: ignore[no-untyped-def]
            CountingBuffer.pops += 1
            return super().pop()

    mixer = AudioMixer()
    mixer.add_source("a", CountingBuffer())
    mixer.add_listener("unit")
    received: list[bytes] = []
    pops_in_gap = 0
    for i in range(3 * TICKS):
        if not TICKS <= i < 2 * TICKS:  # talks, sends nothing for 2 s (DTX, a mute), talks
            mixer.push("a", 10 + i, i * 960, tones["a"][i % TICKS], LEVEL, i * 0.02)
        before = CountingBuffer.pops
        received.append(mixer.tick().shared)
        if TICKS + 40 <= i < 2 * TICKS:
            pops_in_gap += CountingBuffer.pops - before
    assert pops_in_gap == 0  # idle: not even stepped
    heard = decode_opus(received)
    assert band_energy(heard[-48000:], FREQS["a"]) > 0.5
    assert float(np.max(np.abs(heard[(TICKS + 40) * 960:2 * TICKS * 960]))) < 50
