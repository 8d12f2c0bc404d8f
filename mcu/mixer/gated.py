"""What the compositor's decoders share, whatever the codec: a decoder that waits for a
key frame and survives garbage (mcu/mixer/vp8.py, mcu/mixer/h264.py)."""

from __future__ import annotations

import av


class KeyframeGatedDecoder:
    """`decode` returns a frame or None; `needs_keyframe` tells the caller to ask the
    sender for one (PLI), after a start, a selection or an undecodable frame.

    Subclasses name FFmpeg's decoder (:attr:`codec_name`) and how a whole frame is
    known to be a key frame (:meth:`is_keyframe`).
    """

    codec_name = ""

    def __init__(self) -> None:
        self._codec = self._open()
        self.needs_keyframe = True
        self.errors = 0

    @staticmethod
    def is_keyframe(data: bytes) -> bool:
        raise NotImplementedError

    def _open(self) -> av.VideoCodecContext:
        codec = av.CodecContext.create(self.codec_name, "r")
        codec.thread_count = 1  # one worker process per core
        return codec

    def decode(self, data: bytes) -> av.VideoFrame | None:
        keyframe = self.is_keyframe(data)
        if self.needs_keyframe and not keyframe:
            return None
        try:
            frames = self._codec.decode(av.Packet(data))
        except (av.FFmpegError, ValueError):
            self.errors += 1
            self.needs_keyframe = True
            self._codec = self._open()
            return None
        if keyframe:
            self.needs_keyframe = False
        return frames[-1] if frames else None
