"""Composition root: CLI, settings and the app factory that wire the packages together."""
