"""The Litestar application: settings, auth, the app factory, the CLI."""
