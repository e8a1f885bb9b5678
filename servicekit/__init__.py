"""What every Omni process needs: settings, database, telemetry, gRPC bootstrap, errors and peer clients."""
