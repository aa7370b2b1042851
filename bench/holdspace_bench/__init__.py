"""Holdspace benchmark: the enrollment pipeline against this machine's own limits."""
