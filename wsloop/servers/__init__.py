"""Entry points: the standalone server and one adapter per web framework."""
