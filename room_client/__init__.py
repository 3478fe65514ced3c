"""BidBridge remote agents: a bidder's office agent and an evaluation room's agent."""
