"""BidBridge crypto: CA toolkit, trust store, CMS seal/open, PKCS#11 tokens, quorum backup keys."""
