"""The mixing unit (MCU half of the SFU/MCU): mixed audio, video composite, recording.

Works on plain data (RTP payloads with sequence number, timestamp and audio level in;
encoded packets out), so it is tested without WebRTC. See docs/mixer.md.
"""

from .audio import AudioMixer, MixTick
from .composite import Compositor
from .jitter import JitterBuffer, OpusPlayout
from .recorder import Recorder
from .selection import TalkerSelector
from .vp8 import EncodedFrame, SelectiveDecoder, Vp8Decoder, Vp8Encoder
from .vp8rtp import Vp8Depacketizer, Vp8Frame, packetize

__all__ = [
    "AudioMixer",
    "Compositor",
    "EncodedFrame",
    "JitterBuffer",
    "MixTick",
    "OpusPlayout",
    "Recorder",
    "SelectiveDecoder",
    "TalkerSelector",
    "Vp8Decoder",
    "Vp8Depacketizer",
    "Vp8Encoder",
    "Vp8Frame",
    "packetize",
]
