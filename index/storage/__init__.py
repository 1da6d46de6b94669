"""Durable files: the one way the engine writes anything it must find again after a crash."""
