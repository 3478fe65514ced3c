"""BidBridge: server/media."""
