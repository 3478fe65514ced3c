"""BidBridge: server/audit."""
