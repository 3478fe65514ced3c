"""The server's own work: what it does after a commit or on a timer (record, decryption, presence)."""
