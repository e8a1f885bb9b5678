"""The router service: instances (control plane), users and sessions, the agent call and the reply."""
