"""The closed mesh: its credential, the public RPC table, mTLS, keepalive, the launcher's token."""
