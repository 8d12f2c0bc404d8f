"""A room unit for tests: Debian's baresip, a SIP endpoint nobody here wrote.

Driven over its ctrl_tcp interface (netstring JSON commands and events), inside the
test's loopback-only namespace. It sends a sine tone (ausine) and its sndfile filter
writes what it decoded of what we sent it to a WAV file, so a test can check what the
unit heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import wave
from pathlib import Path
from typing import Any

import numpy as np

BARESIP = shutil.which("baresip")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_sip_port() -> int:
    """A port free for UDP and for TCP alike: baresip's sip_listen takes both, and a port
    chosen free for UDP alone was once a TCP connection's local port (a CI run's baresip
    did not start: "SIP Transport failed: Address already in use")."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


class Baresip:
    def __init__(self, workdir: Path, tone_hz: int = 440, audio_codecs: str = "opus/48000/2",
                 srtp: bool = False, auto_answer: bool = False, video: bool = False) -> None:
        self.workdir = workdir
        self.tone_hz = tone_hz
        self.ctrl_port = _free_port()
        self.sip_port = _free_sip_port()
        self.events: list[dict[str, Any]] = []
        self._responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listen: asyncio.Task[None] | None = None
        self.log = b""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "snd").mkdir(exist_ok=True)
        # ausine makes 48 kHz only: at a narrowband codec's rate the tone comes from a file.
        rate = int(audio_codecs.split("/")[1]) if "/" in audio_codecs else 48000
        source = f"ausine,{tone_hz}"
        if rate != 48000:
            rate = 16000 if audio_codecs.upper().startswith("G722") else rate
            tone = workdir / "tone.wav"
            with wave.open(str(tone), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(rate)
                seconds = np.arange(rate * 60) / rate
                wav.writeframes((8000 * np.sin(2 * np.pi * tone_hz * seconds)).astype(np.int16).tobytes())
            source = f"aufile,{tone}"
        (workdir / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "audio_player alsa,null", f"audio_source {source}", "audio_alert alsa,null",
            # Its sine and player at the codec's own rate (baresip 1.0 does not resample).
            *(["ausrc_srate 48000", "auplay_srate 48000"] if audio_codecs.startswith("opus") else []),
            "rtcp_mux no",
            "module_path /usr/lib/baresip/modules",
            *(f"module {m}.so" for m in ("g711", "g722", "gsm", "opus", "ausine", "aufile", "alsa",
                                                 "sndfile", "srtp")),
            # H.264 (baresip-ffmpeg's avcodec) from a test pattern; what it decodes is
            # counted by vidinfo... nothing to show it on, so no display module.
            *([f"module {m}.so" for m in ("avcodec", "fakevideo")]
              + ["video_source fakevideo,nil", "video_size 640x360", "video_fps 15",
                 "video_bitrate 500000", "avcodec_h264enc libx264", "avcodec_h264dec h264"]
              if video else []),
            "module_tmp account.so", "module_app menu.so", "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"snd_path {workdir / 'snd'}", "opus_bitrate 28000", ""]))
        account = f"<sip:unit@127.0.0.1:{self.sip_port}>;regint=0;audio_codecs={audio_codecs}"
        if video:
            account += ";video_codecs=H264"
        if srtp:
            account += ";mediaenc=srtp-mand"
        if auto_answer:  # as a room system set to answer calls by itself
            account += ";answermode=auto"
        (workdir / "accounts").write_text(account + "\n")

    async def start(self) -> None:
        assert BARESIP is not None
        self._proc = await asyncio.create_subprocess_exec(
            BARESIP, "-4", "-n", "127.0.0.1", "-f", str(self.workdir),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._drain = asyncio.ensure_future(self._keep_log())
        for _ in range(100):
            try:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("baresip did not start: " + self.log.decode(errors="replace")[-2000:])
        self._listen = asyncio.ensure_future(self._read())

    async def _keep_log(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while chunk := await self._proc.stdout.read(4096):
            self.log = (self.log + chunk)[-200000:]

    async def _read(self) -> None:
        assert self._reader is not None
        buffer = b""
        while chunk := await self._reader.read(4096):
            buffer += chunk
            while b":" in buffer:
                length, _, rest = buffer.partition(b":")
                size = int(length)
                if len(rest) < size + 1:
                    break
                message = json.loads(rest[:size])
                buffer = rest[size + 1:]
                if message.get("event"):
                    self.events.append(message)
                elif message.get("response"):
                    await self._responses.put(message)

    async def command(self, command: str, params: str = "") -> dict[str, Any]:
        assert self._writer is not None
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        return await asyncio.wait_for(self._responses.get(), 10)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def call(self, uri: str, timeout: float = 15) -> None:
        """Dial ``uri`` and wait until the call is up."""
        await self.dial(uri)
        for _ in range(int(timeout * 10)):
            if self.saw("CALL_ESTABLISHED") is not None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no call to {uri} came up: {self.log[-2000:]!r}")

    async def hang_up(self) -> None:
        await self.command("hangup")

    async def key_in(self, keys: str) -> None:
        """Press ``keys`` on its remote: RFC 4733 events in the call's audio."""
        await self.command("sndcode", keys)

    def decoded_fps(self) -> float:
        """Video frames a second it decodes now, from its status line (``efps=E/D``)."""
        found = re.findall(rb"efps=[0-9.]+/([0-9.]+)", self.log)
        return float(found[-1]) if found else 0.0

    def saw(self, event_type: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("type") == event_type), None)

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("quit")
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        for task in (self._listen, getattr(self, "_drain", None)):
            if task is not None:
                task.cancel()
        if self._writer is not None:
            self._writer.close()

    def heard(self) -> np.ndarray:
        """What the unit decoded of what it received (mono int16 at its player's rate)."""
        files = sorted((self.workdir / "snd").glob("*-dec.wav"))
        if not files:
            return np.zeros(0, dtype=np.int16)
        with wave.open(str(files[-1])) as wav:
            channels = wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
            self.heard_rate = wav.getframerate()
        return samples[::channels]


def tone_share(samples: np.ndarray, rate: int, frequency: float) -> float:
    """The share of the last two seconds' energy within 20 Hz of ``frequency``."""
    if len(samples) < rate // 2:
        return 0.0
    window = samples[-rate * 2:].astype(np.float64)
    power = np.abs(np.fft.rfft(window * np.hanning(len(window)))) ** 2
    bins = np.fft.rfftfreq(len(window), 1 / rate)
    return float(power[(bins > frequency - 20) & (bins < frequency + 20)].sum() / (power.sum() + 1e-9))
