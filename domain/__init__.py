"""The chat domain: events, the Todo agent, model providers, runs and persistence.

Nothing in this package knows about HTTP or WebSockets.
"""
