"""BidBridge remote agents: a bidder's office agent and an evaluation room's agent.

``room_client.agent`` gathers the opening hall's agent: the REST client (``HallClient``,
``room_client.client``), the live hall follower over socket.io (``HallFollower``,
``room_client.follower``) and the keys they sign with (``Credentials``, ``room_client.credentials``).
``room_client.bidder_cli``: ``bidbridge bidder|host|supervisor ...`` (commands in
``room_client.bidder_commands``, terminal text in ``room_client.hall_text``, options shared with
``bidbridge room`` in ``room_client.cli_common``).
This package never imports ``server`` (DESIGN.md section 2).
"""
