"""BidBridge: server/api."""
