"""The channels service: the outbox. Everything that goes out to a chat network passes through here."""
