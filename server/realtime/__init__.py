"""BidBridge: server/realtime."""
