"""The one-machine launcher: starts the four services and the gateway as separate processes and keeps them up."""
