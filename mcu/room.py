"""Rooms on a media worker: who is in them, who speaks, what each one's slots show.

A control step per room (driven by the worker's tick), not the packet path, runs
speaker detection, points every subscriber's fixed receive slots at the loudest voices
and the last-N cameras (mcu/slots.py), and pauses the videos a subscriber's link cannot
carry (mcu/lastn.py); moderation and the mixing unit hang off the room too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mcu import codecs, simulcast
from mcu.forwarding import Consumer, Producer
from mcu.lastn import CONGESTION_HOLD_S, VideoLeg, choose_videos, groups_over_estimate
from mcu.mixing import RoomMixer
from mcu.participant import RTCP_INTERVAL_S, Participant
from mcu.slots import (
    Source,
    choose_voices,
    fill_slots,
    first_except,
    rank_videos,
    rank_voices,
    smooth_loudness,
)
from mcu.speaker import SpeakerDetector
from mcu.stats import WorkerCounters
from mcu.ticks import Ticker

if TYPE_CHECKING:
    from mcu.pipe import PipeTransport
    from mcu.unit import UnitParticipant

logger = logging.getLogger(__name__)

CONTROL_INTERVAL_S = 0.5
# One timer for the whole worker: each tick does the control step of the rooms and the
# RTCP of the participants whose slot it is, so every room still steps each 0.5 s and
# every participant reports each 1 s, in slices of a few hundred microseconds, with 10
# wake-ups a second however many rooms there are (each wake-up of the process costs
# about 0.1 ms of CPU on this VM, more than the work: docs/benchmarks.md).
TICK_S = 0.1
CONTROL_TICKS = round(CONTROL_INTERVAL_S / TICK_S)
RTCP_TICKS = round(RTCP_INTERVAL_S / TICK_S)

LIVE_S = 3.0  # a producer with a packet this recent is sending (a camera that is on)
# Simulcast: a layer nobody has taken for this long is paused at its publisher; a
# subscriber's layers step up (a probe) after this long without a change, longer after
# a probe that brought congestion.
LAYER_OFF_AFTER_S = 5.0
LAYER_PROBE_S = simulcast.PROBE_S
LAYER_PROBE_MAX_S = 16.0
LAYER_PROBE_WATCH_S = 4.0  # after a step up: the estimate or loss says at once if it was too much
LAYER_PROBE_LOSS = 0.05
LAYER_STEP_S = 1.0  # the least time between two steps of one subscriber
LAYER_DOWN_HOLD_S = 1.5  # what the videos carry above the estimate this long: a step down
LAYER_GONE_S = 2.0  # a layer asked for and not arriving this long was dropped by its sender
# A subscriber with transport-cc feedback: its link is tried with padding first, at this
# share above what the step needs (the estimate must hold the new layer with room to
# spare, or the step goes straight back down); a failed try costs a few padding packets,
# not a picture, so it is tried more often than a plain probe.
PROBE_HEADROOM = 0.8
LAYER_PADDING_PROBE_S = 3.0
LAYER_PADDING_PROBE_MAX_S = 8.0

_room_slots = itertools.count()


@dataclass
class MediaConfig:
    ice_servers: list[Any] = field(default_factory=list)  # RTCIceServer
    last_n: int = 9  # camera slots of a subscriber: most camera videos it receives
    audio_slots: int = 3  # voice slots of a subscriber: the loudest voices it hears
    probe_interval_s: float = 8.0  # quiet time before a paused video is tried again
    simulcast: bool = True  # ask publishers for camera layers (mcu/simulcast.py)
    # The largest composite a room unit gets (mcu/unit_sdp.py, the sip_composite_max setting).
    unit_composite_max: tuple[int, int] = (1280, 720)


@dataclass(eq=False)
class RemoteParticipant:
    """Someone in this room whose connection is on another media worker.

    Their producers are piped in (mcu/pipe.py) and forwarded here like a local
    participant's; there is no peer connection, and nothing of theirs is subscribed to.
    """

    id: str
    name: str
    role: str
    origin: tuple[str, int]  # the pipe address of their worker
    mode: str = "forwarded"
    producers: dict[str, Producer] = field(default_factory=dict)  # source -> producer
    # A piped layered camera: the layers this worker's slots use, as last reported to its
    # worker (mcu/pipe.py, report_layers), and when that changed. Read as a local
    # publisher's are (Room._step_layers: a layer asked for lately may be on its way).
    sent_layers: list[str] | None = None
    layers_told_at: float = 0.0


Publisher = Participant | RemoteParticipant


class Room:
    """Participants on this worker who see and hear each other.

    An ``echo`` room sends each participant its own media back: the self-test call.
    A control step, not the packet path, decides who speaks and what each subscriber's
    slots show (the loudest voices, last-N cameras, within its bandwidth estimate).
    """

    def __init__(self, worker: MediaWorker, name: str, echo: bool = False) -> None:
        self.worker = worker
        self.name = name
        self.echo = echo
        self.participants: dict[str, Participant] = {}
        # Piped in from other workers; subscribed to, never subscribing (see publishers()).
        self.remote_participants: dict[str, RemoteParticipant] = {}
        self.created_at = time.time()
        self.locked = False
        self.last_n = worker.config.last_n
        self.speakers = SpeakerDetector()
        self.mixer: RoomMixer | None = None  # only while someone listens mixed or it records
        # Signaling listens here: ("speaker" | "left" | "participants", details).
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        # Whether the room stays open when its last participant leaves: the worker keeps
        # it for room units still outside it (ringing, keying in a PIN), which go in later.
        self.keep_open: Callable[[], bool] | None = None
        self._tasks: set[asyncio.Future[None]] = set()  # renegotiations under way
        self._loudness: dict[str, float] = {}  # publisher id -> smoothed audio activity
        self.slot = next(_room_slots)  # which of the worker's ticks steps this room

    def publishers(self) -> list[Publisher]:
        """Everyone whose tracks this room forwards: its participants on this worker and
        those piped in from the others."""
        return [*self.participants.values(), *self.remote_participants.values()]

    def publisher(self, participant_id: str) -> Publisher | None:
        return self.participants.get(participant_id) or self.remote_participants.get(participant_id)

    def slot_layout(self, participant: Participant) -> dict[str, int]:
        """How many receive slots of each purpose the participant's mode needs."""
        if participant.mode == "mixed":
            return {"voice": 1, "camera": 1}  # the mix and the composite
        if self.echo:
            return {"voice": 1, "camera": 1, "screen": 1}  # one's own
        return {"voice": self.worker.config.audio_slots, "camera": self.last_n, "screen": 1}

    def assign_slots(self, subscribers: Iterable[Participant] | None = None) -> None:
        """Point the subscribers' slots (everyone's by default) at what they should get now.

        Sources come from :meth:`publishers` alone: whoever the room forwards, local or
        piped in from another worker. Rankings are made once; each subscriber then takes
        its first few, so a pass is linear in the room's size.
        """
        now = time.monotonic()
        producers: dict[str, Producer] = {}
        names: dict[str, str] = {}
        voices: list[Source] = []
        # A subscriber's video slots can show only videos of its own codec (no
        # transcoding): the videos are ranked per codec.
        cameras: dict[str | None, list[Source]] = defaultdict(list)
        screens: dict[str | None, list[Source]] = defaultdict(list)
        for publisher in self.publishers():
            names[publisher.id] = publisher.name
            for producer in publisher.producers.values():
                producers[producer.id] = producer
                live = now - producer.last_packet_at < LIVE_S
                if producer.kind == "audio":
                    voices.append(Source(producer.id, publisher.id, live,
                                         self._loudness.get(publisher.id, 0.0)))
                elif producer.source == "screen":
                    if producer.sharing:  # a screen slot shows a share only while it is on
                        screens[producer.codec].append(Source(producer.id, publisher.id, live))
                else:
                    cameras[producer.codec].append(Source(producer.id, publisher.id, live))
        ranked_voices = rank_voices(voices)
        loudness = {source.producer_id: source.loudness for source in voices}
        ranked_cameras = {codec: rank_videos(sources, self.speakers.recent)
                          for codec, sources in cameras.items()}
        ranked_screens = {codec: rank_videos(sources, self.speakers.recent)
                          for codec, sources in screens.items()}
        for subscriber in list(self.participants.values()) if subscribers is None else subscribers:
            if not subscriber.slots or subscriber.closed:
                continue
            current = {purpose: [c.producer.id if c.producer is not None else None for c in slots]
                       for purpose, slots in subscriber.slots.items()}
            own = {source: producer.id for source, producer in subscriber.producers.items()}
            if subscriber.mode == "mixed":
                mixer = self.ensure_mixer()
                # A room unit receives the composite at the size its SDP allows (mcu/unit.py).
                composite = mixer.composite_for(subscriber.video_codec,
                                                getattr(subscriber, "composite_size", None))
                # ... and the mix in its codec: G.722 or G.711 for some units.
                mix = mixer.audio_for(getattr(subscriber, "mix_codec", None))
                for output in (mix, composite):
                    producers[output.id] = output
                wanted = {"voice": [mix.id], "camera": [composite.id], "screen": []}
            elif self.echo:
                screen = subscriber.producers.get("screen")
                wanted = {"voice": [own["microphone"]], "camera": [own["camera"]],
                          "screen": [screen.id] if screen is not None and screen.sharing else []}
            else:
                codec = subscriber.video_codec
                wanted = {purpose: first_except(ranked.get(codec, []), len(current.get(purpose, ())),
                                                own.get(purpose))
                          for purpose, ranked in (("camera", ranked_cameras), ("screen", ranked_screens))}
            plan: dict[str, list[Producer | None]] = {}
            for purpose, shown in current.items():
                if purpose == "voice" and "voice" not in wanted:
                    chosen = choose_voices(shown, ranked_voices, loudness, own.get("microphone"))
                else:
                    chosen = fill_slots(shown, wanted.get(purpose, []))
                plan[purpose] = [producers.get(pid) if pid is not None else None for pid in chosen]
            subscriber.point_slots(plan, names)

    def join(self, name: str, role: str, mode: str = "forwarded",
             participant_id: str | None = None, video_codec: str = codecs.VP8,
             video_codecs: list[str] | None = None) -> Participant:
        """``video_codec``: the room's forwarding codec (the front's choice, the same on
        every worker of the room); ``video_codecs``: what the client can do."""
        participant = Participant(self, name, role, mode, participant_id,
                                  room_codec=video_codec, video_codecs=video_codecs)
        self.participants[participant.id] = participant
        self.worker.start_ticking()
        return participant

    def add_unit(self, unit: UnitParticipant) -> None:
        """A room unit whose SDP is settled (mcu/unit.py) takes its place in the room."""
        self.participants[unit.id] = cast(Participant, unit)
        self.worker.start_ticking()
        self.announce_join(cast(Participant, unit))

    def announce_join(self, participant: Participant) -> None:
        """After the participant's first offer: its producers exist now."""
        if self.mixer is not None:
            self._mix_source(participant)
        if participant.mode == "mixed":
            self.ensure_mixer().add_listener(participant.id)
        # The others' slots take the newcomer in where it ranks: no renegotiation.
        self.assign_slots()
        self._emit("participants", {})

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def leave(self, participant: Participant, reason: str = "left") -> None:
        if self.participants.pop(participant.id, None) is None:
            return
        if self.worker.pipe is not None:  # other workers stop getting these tracks
            self.worker.pipe.forget_producers(participant.producers.values())
        self.speakers.forget(participant.id)
        self._loudness.pop(participant.id, None)
        if self.mixer is not None:
            self.mixer.remove_source(participant.id)
            self.mixer.remove_listener(participant.id)
        # The others' slots that showed it go to whoever ranks next.
        self.assign_slots()
        # A self-test's call as the server saw it, for its verdict (signaling/server.py).
        measured = {"media": participant.media_counts()} if self.echo else {}
        await participant.close()  # its own slots let go of what they showed
        self._release_mixer()
        self._emit("left", {"participant": participant.id, "reason": reason, **measured})
        if self.participants or (self.keep_open is not None and self.keep_open()):
            self._emit("participants", {})
        else:
            self.close()

    def close(self) -> None:
        if self.mixer is not None:  # finishes a recording even when the room ends abruptly
            self.mixer.close()
            self.mixer = None
        if self.worker.pipe is not None:
            self.worker.pipe.forget_room(self)
        self.remote_participants.clear()
        if self.worker.rooms.get(self.name) is self:
            del self.worker.rooms[self.name]

    # Moderation ------------------------------------------------------------------------

    def set_muted(self, participant: Participant, source: str, muted: bool) -> None:
        """Stop (or resume) forwarding one of a participant's tracks, whatever it sends."""
        producer = participant.producers[source]
        if producer.muted != muted:
            producer.muted = muted
            self._emit("participants", {})

    def set_sharing(self, participant: Publisher, sharing: bool) -> None:
        """A screen share starts or stops: subscribers get or lose the screen leg."""
        producer = participant.producers["screen"]
        if producer.sharing == sharing:
            return
        producer.sharing = sharing
        if self.mixer is not None:  # the composite shows it too (room units, the recording)
            self.mixer.set_screen(participant.id, producer if sharing else None, participant.name)
        self.assign_slots()
        self._emit("participants", {})

    # Participants on other workers (piped in by mcu/pipe.py) ------------------------

    def add_remote_producer(self, remote: RemoteParticipant, producer: Producer) -> None:
        """Forward a producer piped in from ``remote``'s worker, as a local one would be."""
        known = self.remote_participants.setdefault(remote.id, remote)
        known.producers[producer.source] = producer  # slots showing one it replaces re-point
        if self.mixer is not None:  # mixed anew with the producer it has now
            self.mixer.remove_source(known.id)
            self._mix_source(known)
        self.assign_slots()
        self._emit("participants", {})

    def remove_remote_producer(self, remote_id: str, producer: Producer) -> None:
        """Stop forwarding one piped producer; the remote participant goes with its last."""
        remote = self.remote_participants.get(remote_id)
        if remote is None or remote.producers.get(producer.source) is not producer:
            return
        del remote.producers[producer.source]
        if not remote.producers:
            del self.remote_participants[remote_id]
            self.speakers.forget(remote_id)
            self._loudness.pop(remote_id, None)
        if self.mixer is not None:
            self.mixer.remove_source(remote_id)
            if remote.producers:
                self._mix_source(remote)
        # What the room does when someone leaves: the slots that showed it re-point.
        self.assign_slots()
        self._emit("participants", {})

    # Mixing and recording ------------------------------------------------------------

    def ensure_mixer(self) -> RoomMixer:
        if self.mixer is None:
            self.mixer = RoomMixer(self.name, self.worker.counters)
            self.mixer.on_recording_failed = self._recording_failed
            for participant in self.publishers():
                self._mix_source(participant)
                if participant.mode == "mixed":
                    self.mixer.add_listener(participant.id)
            self.mixer.start()
        return self.mixer

    def _mix_source(self, participant: Publisher) -> None:
        producers = participant.producers
        # A remote participant may have only some of its tracks piped in yet.
        if self.mixer is not None and "microphone" in producers and "camera" in producers:
            self.mixer.add_source(participant.id, participant.name,
                                  producers["microphone"], producers["camera"])
        screen = producers.get("screen")
        if self.mixer is not None and screen is not None and screen.sharing:
            self.mixer.set_screen(participant.id, screen, participant.name)

    def _release_mixer(self) -> None:
        if self.mixer is not None and not self.mixer.needed and not any(
                p.mode == "mixed" for p in self.participants.values()):
            self.mixer.close()
            self.mixer = None

    def set_mode(self, participant: Participant, mode: str) -> None:
        """Switch a participant between separate streams and one mixed picture and sound."""
        if participant.mode == mode:
            return
        participant.mode = mode
        # The composite is VP8: a participant switched to mixed receives VP8 where it can,
        # and the room's codec when forwarded again (with the new offer below).
        participant.set_video_codec(codecs.participant_codec(participant.room_codec,
                                                             participant.video_codecs, mode))
        if mode == "mixed":
            self.ensure_mixer().add_listener(participant.id)
        elif self.mixer is not None:
            self.mixer.remove_listener(participant.id)
        self.assign_slots([participant])  # lets go of the mix before the mixer may go
        self._release_mixer()
        # Its own change: forwarded needs more slots than mixed had, so a new offer.
        self._spawn(participant.renegotiate())
        self._emit("participants", {})

    def start_recording(self, path: Path) -> None:
        try:
            self.ensure_mixer().start_recording(path)
        except BaseException:
            self._release_mixer()  # made for the recording alone: no mixing for nobody
            raise
        self._emit("participants", {})

    def stop_recording(self) -> Path | None:
        path = self.mixer.stop_recording() if self.mixer is not None else None
        self._release_mixer()
        self._emit("participants", {})
        return path

    def _recording_failed(self, path: Path, error: OSError) -> None:
        """The recording stopped because its file could not be written: the hosts are
        told (the front sends them recording_failed), everyone sees it stopped."""
        self._release_mixer()
        self._emit("recording_failed", {"file": path.name, "reason": error.strerror or str(error)})
        self._emit("participants", {})

    @property
    def recording(self) -> bool:
        return self.mixer is not None and self.mixer.recorder is not None

    def describe_participants(self) -> list[dict[str, Any]]:
        return [{"id": p.id, "name": p.name, "role": p.role, "mode": p.mode,
                 "audio_muted": p.producers["microphone"].muted,
                 "video_muted": p.producers["camera"].muted,
                 "screen": "screen" in p.producers and p.producers["screen"].sharing,
                 "video_codec": p.publish_codec, "unit": p.unit}
                for p in self.participants.values() if p.producers]

    def _emit(self, event: str, details: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, details)
            except Exception:
                logger.exception("room %s: event listener failed", self.name)

    # Control loop -------------------------------------------------------------------

    def control_step(self, interval: float) -> None:
        activity = {}
        for participant in self.publishers():
            for producer in participant.producers.values():
                producer.measure_bitrate(interval)
            microphone = participant.producers.get("microphone")
            if microphone is not None:  # a remote participant may not have it piped in yet
                activity[participant.id] = microphone.take_activity()
        self._loudness = {pid: smooth_loudness(self._loudness.get(pid, 0.0), value)
                          for pid, value in activity.items()}
        if self.speakers.update(activity):
            if self.mixer is not None:
                self.mixer.set_speaker(self.speakers.active)
            self._emit("speaker", {"active": self.speakers.active,
                                   "speaking": sorted(self.speakers.speaking)})
        self.assign_slots()
        if not self.echo:
            self._choose_videos()
            self._request_layers()
        if self.mixer is not None:
            self._choose_tick_reads(self.mixer)

    def _choose_tick_reads(self, mixer: RoomMixer) -> None:
        """Which mixed participants' sockets the mixer reads on its audio tick
        (mcu/mixing.py "Reading on the tick"): those whose media reaches only the mixer,
        connected and sending. Checked every control step: someone forwarded one of
        them, or a pipe to another worker, takes its socket back to the event loop then."""
        for participant in self.participants.values():
            producers = participant.producers
            microphone = producers.get("microphone")
            tracks = [track for producer in producers.values()
                      for track in (producer.track, *(layer.track for layer in producer.layers))]
            only_mixed = (participant.mode == "mixed" and participant.id in mixer.sources
                          and microphone is not None and microphone.active
                          and not any(track.legs for track in tracks))
            mixer.read_on_tick(participant.id, participant.tick_readable_sockets() if only_mixed else [])

    def _choose_videos(self) -> None:
        now = time.monotonic()
        probe_after = self.worker.config.probe_interval_s
        for subscriber in self.participants.values():
            subscriber.file_estimate()  # the transport-cc estimate as of now
            # Which of the videos its slots show now its link can carry.
            consumers = [c for c in subscriber.consumers.values()
                         if c.kind == "video" and c.producer is not None]
            if not consumers:
                continue
            legs = [VideoLeg(c.producer.id, c.producer.owner_id, c.producer.source == "screen",
                             c.source.bitrate_bps if c.source is not None else 0.0,
                             not c.leg.paused, c.remb_group)
                    for c in consumers if c.producer is not None]
            may_probe = now - subscriber.last_video_change >= probe_after
            estimates = subscriber.remb_estimates
            over = groups_over_estimate(legs, estimates)
            since = subscriber.over_estimate_since
            for group in [g for g in since if g not in over]:
                del since[group]
            congested = {group: estimates[group] for group in over
                         if now - since.setdefault(group, now) >= CONGESTION_HOLD_S}
            # Layers step down before any video is paused: a group that could step down
            # is not congested for last-N this time round.
            stepped, can_step = self._step_layers(subscriber, consumers, congested, now)
            for group in can_step:
                congested.pop(group, None)
            for group in stepped:
                since.pop(group, None)  # its new load shows in the next measurements
            chosen = choose_videos(legs, self.speakers.recent, self.last_n, congested, may_probe)
            changed = False
            for consumer in consumers:
                paused = consumer.leg.paused
                if consumer.producer is None:
                    continue
                if paused and consumer.producer.id in chosen:
                    consumer.resume()
                    # A probe: what its group's estimate said before it was sent is stale;
                    # the next REMB, which counts it, decides whether it stays.
                    if consumer.remb_group is not None:
                        estimates.pop(consumer.remb_group, None)
                    changed = True
                elif not paused and consumer.producer.id not in chosen:
                    consumer.pause()
                    changed = True
            if changed:
                subscriber.last_video_change = now

    def _step_layers(self, subscriber: Participant, consumers: list[Consumer],
                     congested: dict[int, int], now: float) -> tuple[set[int], set[int]]:
        """Move the subscriber's simulcast videos a layer up or down (mcu/simulcast.py).

        Returns the groups that stepped down now, and the congested groups that have a
        video left to step down (last-N leaves those alone this time round).
        """
        # Videos that carry something: a camera that is off has nothing to step down.
        layered = [c for c in consumers if c.producer is not None and c.producer.layers
                   and not c.leg.paused and now - c.producer.last_packet_at < LIVE_S]
        can_step = {c.remb_group for c in layered if c.remb_group in congested
                    and (c.target_layer if c.target_layer is not None else c.layer) != 0}
        if not layered or now - subscriber.last_layer_change < LAYER_STEP_S:
            return set(), can_step
        rank = {pid: index for index, pid in enumerate(self.speakers.recent)}
        layered.sort(key=lambda c: (c.producer is not None and c.producer.source != "screen",
                                    rank.get(c.producer.owner_id if c.producer else "", len(rank))))
        videos = []
        for consumer in layered:
            assert consumer.producer is not None
            layers = consumer.producer.layers
            current = consumer.target_layer if consumer.target_layer is not None else consumer.layer
            publisher = self.publisher(consumer.producer.owner_id)
            asked = publisher.sent_layers if publisher is not None else None
            videos.append(simulcast.LayeredVideo(
                consumer.id, len(layers) - 1 if current is None else current,
                simulcast.layer_for_height(subscriber.tile_heights.get(consumer.id), len(layers)),
                [layer.bitrate_bps for layer in layers],
                # A layer we asked for that has not arrived for a while was dropped by
                # the publisher's own estimator: not to be had until it comes back.
                [now - layer.last_packet_at < LAYER_GONE_S or publisher is None
                 or (asked is not None and layer.rid not in asked)
                 or now - publisher.layers_told_at < LAYER_GONE_S  # it may be on its way
                 for layer in layers]))
        groups = {c.remb_group for c in layered if c.remb_group is not None}
        estimates = [subscriber.remb_estimates[g] for g in groups if g in subscriber.remb_estimates]
        estimate = min(estimates) if estimates else None
        # Layers step down sooner than last-N pauses: as soon as what the videos carry
        # has stayed above the estimate for a moment (a receive-side estimate sits a
        # little above what arrives while the link has room).
        carried = sum(c.source.bitrate_bps for c in layered if c.source is not None)
        if estimate is not None and carried > estimate:
            over_since = subscriber.layers_over_since = subscriber.layers_over_since or now
        else:
            over_since = subscriber.layers_over_since = None
        # Just after a step up (a probe), any sign that the link cannot take it turns it
        # back at once: less loss than waiting for the hold.
        probing = now - subscriber.last_layer_up < LAYER_PROBE_WATCH_S
        losing = any(c.fraction_lost > LAYER_PROBE_LOSS * 256 for c in layered)
        hold = 0.0 if probing else LAYER_DOWN_HOLD_S
        is_congested = any(c.remb_group in congested for c in layered) or (
            over_since is not None and now - over_since >= hold) or (probing and losing)
        probe_after = subscriber.layer_probe_s
        may_probe = now - max(subscriber.last_layer_change, subscriber.last_video_change) >= probe_after
        # With transport-cc feedback its link is tried with padding before any step up
        # (_probe_layers): an estimate that merely has room for the next layer's average
        # says nothing of the keyframe bursts of switching to it, and a step that does
        # not hold costs freezes. Without, the estimate or a timed step up (a probe).
        padded = bool(subscriber.transport_cc_id)
        changes = simulcast.step_layers(videos, estimate, is_congested, may_probe and not padded,
                                        up_by_estimate=not padded)
        if padded and not changes and not is_congested:
            changes = self._probe_layers(subscriber, videos, now)
        layer_now = {video.consumer_id: video.layer for video in videos}
        stepped_down: set[int] = set()
        for consumer in layered:
            if consumer.id not in changes:
                continue
            before = layer_now[consumer.id]
            logger.debug("participant %s: slot %s layer %d -> %d (estimate %s, carried %.0f)", subscriber.id,
                         consumer.id, before, changes[consumer.id], estimate, carried)
            consumer.set_layer(changes[consumer.id])
            if changes[consumer.id] < before:
                subscriber.layers_over_since = None  # the lower load shows in the next measurements
                if consumer.remb_group is not None:
                    stepped_down.add(consumer.remb_group)
                if now - subscriber.last_layer_up < LAYER_OFF_AFTER_S:  # the probe failed
                    subscriber.layer_probe_s = min(LAYER_PROBE_MAX_S, probe_after * 2)
                subscriber.probing = None  # what a probe out now measures is no longer asked
            else:
                subscriber.last_layer_up = now
                if consumer.remb_group is not None:  # its estimate is stale now (see lastn.py)
                    subscriber.remb_estimates.pop(consumer.remb_group, None)
            subscriber.last_layer_change = now
        if not changes and now - subscriber.last_layer_up > 4 * LAYER_OFF_AFTER_S:
            subscriber.layer_probe_s = LAYER_PROBE_S  # a step up that held: probe as usual
        return stepped_down, can_step

    def _probe_layers(self, subscriber: Participant, videos: list[simulcast.LayeredVideo],
                      now: float) -> dict[str, int]:
        """A subscriber's step up that a padding probe showed its link can take; starts
        the next probe when one is due (mcu/congestion.py, PaddingProbe)."""
        probe = subscriber.probe
        if subscriber.probing is not None and probe is not None:
            verdict = probe.verdict(now)
            if verdict is None:
                return {}
            consumer_id, layer = subscriber.probing
            subscriber.probing = None
            subscriber.last_probe_at = now
            logger.debug("participant %s: probe for %s layer %d %s at %.0f kbit/s of %.0f"
                         " (%d late, %d lost)", subscriber.id, consumer_id, layer, verdict,
                         probe.received_bps / 1000, probe.target_bps / 1000, probe.late, probe.lost)
            if verdict == "failed":
                subscriber.layer_probe_s = min(LAYER_PADDING_PROBE_MAX_S, 2 * subscriber.layer_probe_s)
                return {}
            subscriber.estimator.probed(probe.received_bps)
            subscriber.layer_probe_s = LAYER_PADDING_PROBE_S
            still = simulcast.next_step_up(videos)  # tiles and layers may have changed meanwhile
            return {consumer_id: layer} if still is not None and still[:2] == (consumer_id, layer) else {}
        since = max(subscriber.last_layer_change, subscriber.last_video_change, subscriber.last_probe_at)
        if now - since < min(subscriber.layer_probe_s, LAYER_PADDING_PROBE_MAX_S):
            return {}
        step = simulcast.next_step_up(videos)
        if step is None:
            return {}
        consumer_id, layer, extra = step
        received = subscriber.estimator.received_bps
        if subscriber.start_probe((received + extra) / PROBE_HEADROOM, received):
            subscriber.probing = (consumer_id, layer)
        subscriber.last_probe_at = now
        return {}

    def _request_layers(self) -> None:
        """Pause at each publisher the camera layers no slot has taken for a while (the
        lowest always stays on: it shows that the camera is on). A camera piped to other
        workers counts what their slots take too: each reports it up the pipe every
        control step (mcu/pipe.py), which marks those layers wanted on the origin."""
        now = time.monotonic()
        for publisher in self.participants.values():
            camera = publisher.producers.get("camera")
            if camera is None or not camera.layers:
                continue
            for index in self._layer_demand(camera):
                camera.layer_wanted_at[index] = now
            publisher.tell_layers([layer.rid or "" for index, layer in enumerate(camera.layers)
                                   if now - camera.layer_wanted_at[index] < LAYER_OFF_AFTER_S])
        pipe = self.worker.pipe
        for remote in self.remote_participants.values():
            camera = remote.producers.get("camera")
            if camera is None or not camera.layers:
                continue
            demand = self._layer_demand(camera)
            used = [layer.rid or "" for index, layer in enumerate(camera.layers) if index in demand]
            if used != remote.sent_layers:
                remote.sent_layers, remote.layers_told_at = used, now
            if pipe is not None:
                pipe.report_layers(self.name, camera.id, demand)

    @staticmethod
    def _layer_demand(camera: Producer) -> set[int]:
        """The layers of a layered camera this worker uses now: those its slots send and
        move to, the top one while the mixer reads it, and always the lowest."""
        top = len(camera.layers) - 1
        demand = {0}
        if camera.taps:
            demand.add(top)
        for consumer in camera.consumers:
            if not consumer.leg.paused:
                demand.add(top if consumer.layer is None else consumer.layer)
                if consumer.target_layer is not None:
                    demand.add(consumer.target_layer)
        return demand


class MediaWorker:
    """All rooms of this process; the control API signaling talks to."""

    def __init__(self, config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.rooms: dict[str, Room] = {}
        self.counters = WorkerCounters()
        # Carries tracks to and from the other workers of rooms that span several
        # (mcu/pipe.py); opened on first use by open_pipe().
        self.pipe: PipeTransport | None = None
        # max_catch_up=0: after a stall the next tick runs at once, missed ones are not
        # replayed. On the same clock as the mixers' audio ticks (mcu/ticks.py): a worker
        # with a mixed room wakes 50 times a second, not 60.
        self._ticker = Ticker(TICK_S, self._tick, max_catch_up=0, name="worker tick")
        self._ticks = 0

    async def open_pipe(self, host: str = "127.0.0.1", port: int = 0) -> PipeTransport:
        """This worker's pipe socket, opened on first call (later calls return it)."""
        if self.pipe is None:
            from mcu.pipe import PipeTransport  # pipe.py builds on this module

            return await PipeTransport.open(self, host, port)
        return self.pipe

    def start_ticking(self) -> None:
        """Run the rooms' control steps and the participants' RTCP (see TICK_S)."""
        self._ticker.start()

    def _tick(self, _index: int) -> None:
        if not self.rooms:
            self._ticker.stop()  # until a room opens again
            return
        self._ticks += 1
        tick = self._ticks
        for room in list(self.rooms.values()):
            if tick % CONTROL_TICKS == room.slot % CONTROL_TICKS:
                try:
                    room.control_step(CONTROL_INTERVAL_S)
                except Exception:
                    logger.exception("room %s: control step failed", room.name)
            for participant in list(room.participants.values()):
                try:  # each tick: a browser's estimator wants feedback this often
                    participant.send_transport_feedback()
                except Exception:
                    logger.exception("participant %s: transport feedback failed", participant.id)
                if tick % RTCP_TICKS == participant.slot % RTCP_TICKS:
                    try:
                        participant.send_rtcp()
                    except Exception:
                        logger.exception("participant %s: RTCP failed", participant.id)
        if self.pipe is not None and tick % RTCP_TICKS == 0:
            try:
                self.pipe.send_reports()
            except Exception:
                logger.exception("pipe: sender reports failed")

    def room(self, name: str, echo: bool = False) -> Room:
        """The room of that name, opened on first use."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(self, name, echo=echo)
        return room

    @property
    def participant_count(self) -> int:
        return sum(len(room.participants) for room in self.rooms.values())

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                await room.leave(participant)
            room.close()  # a room with only remote participants left has no one to leave
        if self.pipe is not None:
            self.pipe.close()
        self._ticker.stop()
