"""BidBridge schemas: pydantic models of every wire message and document."""
