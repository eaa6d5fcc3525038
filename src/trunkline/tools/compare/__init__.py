"""Short polling, long polling, SSE and WebSocket, measured with the same workload on one server.

N real clients per mode subscribe to a channel; R publications per second go through
the server API for S seconds; the clients time each one against the publisher's
timestamp and count every request and byte on their sockets; the server's CPU comes
from /proc. ``trunkline compare`` (``main.run``) drives it; see docs/http-vs-websocket.md.
"""
