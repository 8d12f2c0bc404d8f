"""Media worker: rooms, RTP-level forwarding (SFU), mixing, recording, media statistics.

Knows nothing of bookings, users or HTTP. Vocabulary (after mediasoup/Galène):
*producer* is a track a participant sends up to the server, *consumer* is one producer
forwarded down to one subscriber, *room* holds participants on this worker.
"""
