"""BidBridge: server/store."""
