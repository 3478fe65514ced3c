"""BidBridge: server/domain."""
