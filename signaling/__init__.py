"""The participant protocol over WebSocket, join tokens, and the participant pages.

Talks to mcu/ through its control API only: never touches RTP or SQL directly.
"""
