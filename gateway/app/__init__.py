"""The gateway application: settings, the app factory, routes, schemas and proto mappers."""
