"""What the central operator can see and do in live rooms (used by admin_web).

The operator acts through signaling, not on the media directly, so that the affected
participant is told exactly as when a host acts from the call page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mcu.room import MediaWorker


def recording_path(recordings_dir: Path, room: str) -> Path:
    """Where a recording of ``room`` starting now is written (one folder per room)."""
    return recordings_dir / room / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.webm"


class LiveRooms:
    def __init__(self, worker: MediaWorker, channels: dict[str, Any], recordings_dir: Path) -> None:
        self.worker = worker
        self.channels = channels  # room name -> RoomChannel (signaling.server)
        self.recordings_dir = recordings_dir

    def rooms(self) -> list[dict[str, Any]]:
        """Every live room with its participants and each one's connection quality."""
        now = time.time()
        result = []
        for room in sorted(self.worker.rooms.values(), key=lambda r: r.created_at):
            participants = []
            for participant in room.participants.values():
                quality = participant.quality()
                participants.append({**participant.describe(), **quality,
                                     "connected_s": round(now - participant.joined_at)})
            result.append({"name": room.name, "selftest": room.echo, "locked": room.locked,
                           "recording": room.recording, "since": room.created_at,
                           "participants": participants})
        return result

    def load(self) -> dict[str, Any]:
        counters = self.worker.counters.as_dict()
        return {"rooms": len(self.worker.rooms), "participants": self.worker.participant_count,
                **counters}

    def _connection(self, room: str, participant: str) -> Any:
        channel = self.channels.get(room)
        connection = channel.connections.get(participant) if channel is not None else None
        if connection is None:
            raise LookupError(f"no participant {participant} in room {room}")
        return connection

    async def mute(self, room: str, participant: str, by: str) -> None:
        connection = self._connection(room, participant)
        connection.channel.room.set_muted(connection.participant, "microphone", True)
        await connection.send({"type": "muted", "by": by})

    async def remove(self, room: str, participant: str, by: str) -> None:
        await self._connection(room, participant).end("removed", f"removed by {by}")

    async def lock(self, room: str, locked: bool) -> None:
        channel = self.channels.get(room)
        if channel is None:
            raise LookupError(f"no live room {room}")
        channel.room.locked = locked
        await channel.broadcast_participants()

    def open(self, room: str) -> None:
        """Have the room ready before anyone joins (a booking's start is near)."""
        live = self.worker.rooms.get(room)
        if live is None or not live.echo:
            self.worker.room(room)

    async def close(self, room: str, reason: str) -> None:
        """End the room: everyone in it is told why and disconnected; a recording finishes."""
        channel = self.channels.get(room)
        if channel is not None:
            for connection in list(channel.connections.values()):
                await connection.end("closed", reason)
        live = self.worker.rooms.get(room)
        if live is not None and not live.echo:
            for participant in list(live.participants.values()):
                await live.leave(participant)
            live.close()

    def record(self, room: str, active: bool) -> None:
        live = self.worker.rooms.get(room)
        if live is None or live.echo:
            raise LookupError(f"no live room {room}")
        if active and not live.recording:
            live.start_recording(recording_path(self.recordings_dir, room))
        elif not active:
            live.stop_recording()

    def recordings(self) -> list[dict[str, Any]]:
        if not self.recordings_dir.is_dir():
            return []
        return [{"room": path.parent.name, "file": path.name, "bytes": path.stat().st_size,
                 "started": path.stem, "path": str(path)}
                for path in sorted(self.recordings_dir.glob("*/*.webm"), reverse=True)]
