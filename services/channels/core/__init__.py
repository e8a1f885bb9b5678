"""The channels logic: outbox, Evolution client, reconciliation. No gRPC here."""
