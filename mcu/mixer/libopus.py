"""libopus called directly (ctypes), for the mixer's per-tick decodes and encodes.

Why not PyAV (FFmpeg) as elsewhere: for one 20 ms mono frame the codec itself is
20-60 µs, and FFmpeg's wrapping around it (an AVPacket, its multistream decoder, a
frame from a buffer pool, PyAV objects for each, to_ndarray; on encode an AVFrame, the
encoder's frame queue, packet objects) is another 10-20 µs a call on a warm cache and
much more on the cold one that a server running a 50 Hz tick between thousands of
packets has. Here a decode is one C call into a buffer that is reused, an encode one C
call from one.

The library is the one PyAV ships in its wheel (the same libopus that the rest of the
service already runs), else the system's. Where neither is found, `available()` is
False and `mcu.mixer.opus` keeps to PyAV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import weakref

import numpy as np

# From opus_defines.h (a stable ABI since libopus 1.0).
OPUS_OK = 0
OPUS_APPLICATION_VOIP = 2048
OPUS_SET_BITRATE_REQUEST = 4002
OPUS_SET_COMPLEXITY_REQUEST = 4010
OPUS_RESET_STATE = 4028

MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz, the longest packet Opus allows
MAX_PACKET_BYTES = 1500  # more than a 20 ms mono packet at any bitrate the mixer asks for


def _candidates() -> list[str]:
    paths: list[str] = []
    try:
        import av  # only to find the copy its wheel ships

        package = os.path.dirname(os.path.abspath(av.__file__))
        # manylinux wheels put their libraries beside the package (av.libs), macOS ones
        # inside it (.dylibs).
        for folder in (package + ".libs", os.path.join(package, ".dylibs")):
            paths += sorted(glob.glob(os.path.join(folder, "libopus*")))
    except ImportError:
        pass
    system = ctypes.util.find_library("opus")
    if system:
        paths.append(system)
    return paths


def _load() -> ctypes.CDLL | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.opus_decoder_create.restype = ctypes.c_void_p
            lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            lib.opus_decoder_destroy.restype = None
            lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_decode.restype = ctypes.c_int
            lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                        ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int,
                                                ctypes.POINTER(ctypes.c_int)]
            lib.opus_encoder_destroy.restype = None
            lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_encode.restype = ctypes.c_int32
            lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.c_void_p, ctypes.c_int32]
            # The ctl calls are variadic: each call passes its own ctypes arguments (the
            # state as c_void_p, not a bare int that ctypes would pass as a C int).
            lib.opus_encoder_ctl.restype = ctypes.c_int
            lib.opus_decoder_ctl.restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        return lib
    return None


_lib = _load()


def available() -> bool:
    return _lib is not None


class Decoder:
    """One mono (or stereo downmixed) stream at `sample_rate`; `decode` returns int16 PCM
    (a new array the caller may keep), or None for bytes libopus refuses."""

    def __init__(self, sample_rate: int = 48000) -> None:
        if _lib is None:
            raise RuntimeError("libopus is not available")
        error = ctypes.c_int()
        state = _lib.opus_decoder_create(sample_rate, 1, ctypes.byref(error))
        if not state or error.value != OPUS_OK:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        self._state = state
        self._finalizer = weakref.finalize(self, _lib.opus_decoder_destroy, state)
        self._pcm = (ctypes.c_int16 * MAX_FRAME_SAMPLES)()
        self._view = np.frombuffer(self._pcm, dtype=np.int16)

    def decode(self, payload: bytes) -> np.ndarray | None:
        assert _lib is not None
        # A TOC-only packet (a zero-length frame) is decoded by libopus as a lost frame:
        # its packet loss concealment, as callers of mcu.mixer.opus.plc_packet expect.
        samples = _lib.opus_decode(self._state, payload, len(payload), self._pcm, MAX_FRAME_SAMPLES, 0)
        if samples <= 0:
            return None
        return self._view[:samples].copy()

    def reset(self) -> None:
        """Forget the stream (after garbage), as a new decoder would."""
        assert _lib is not None
        _lib.opus_decoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(OPUS_RESET_STATE))


class Encoder:
    """Mono 48 kHz, VoIP tuning; `encode` takes one frame of int16 PCM."""

    def __init__(self, bitrate: int, complexity: int, sample_rate: int = 48000) -> None:
        if _lib is None:
            raise RuntimeError("libopus is not available")
        error = ctypes.c_int()
        state = _lib.opus_encoder_create(sample_rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(error))
        if not state or error.value != OPUS_OK:
            raise RuntimeError(f"opus_encoder_create failed ({error.value})")
        self._state = state
        self._finalizer = weakref.finalize(self, _lib.opus_encoder_destroy, state)
        settings = ((OPUS_SET_BITRATE_REQUEST, bitrate), (OPUS_SET_COMPLEXITY_REQUEST, complexity))
        for request, value in settings:
            result = _lib.opus_encoder_ctl(ctypes.c_void_p(state), ctypes.c_int(request), ctypes.c_int(value))
            if result != OPUS_OK:
                raise ValueError(f"opus_encoder_ctl({request}, {value}) refused")
        self._pcm = (ctypes.c_int16 * MAX_FRAME_SAMPLES)()
        self._view = np.frombuffer(self._pcm, dtype=np.int16)
        self._packet = ctypes.create_string_buffer(MAX_PACKET_BYTES)

    def encode(self, pcm: np.ndarray) -> bytes:
        assert _lib is not None
        samples = len(pcm)
        # Copied into our own buffer: whatever the caller's array (a view, another
        # dtype), libopus reads contiguous int16.
        self._view[:samples] = pcm
        size = _lib.opus_encode(self._state, self._pcm, samples, self._packet, MAX_PACKET_BYTES)
        if size < 0:
            raise ValueError(f"opus_encode failed ({size})")
        return ctypes.string_at(self._packet, size)
