"""BidBridge lead-site coordination server."""
