"""BidBridge remote agents: a bidder's office agent and an evaluation room's agent.

``room_client.agent``: the opening hall's REST client (``HallClient``), the live hall follower
over socket.io (``HallFollower``) and the keys they sign with (``Credentials``).
``room_client.bidder_cli``: ``bidbridge bidder|host|supervisor ...``.
This package never imports ``server`` (DESIGN.md section 2).
"""
