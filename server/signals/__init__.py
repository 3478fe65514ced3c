"""Bid-rigging warning signals (围标串标预警): the facts the server gathers and the documents' metadata."""
