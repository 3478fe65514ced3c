"""Shared test support: the test PKI, a real hall, server processes, evaluations and tools."""
