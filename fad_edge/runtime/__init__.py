"""Runners: the same speaker input -> listener motion contract behind every backend."""
