"""Helpers shared by the tests and the stress scripts: server processes, clients, frames, handlers."""
