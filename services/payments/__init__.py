"""Payments: requests, verified provider notifications, manual confirmation, scholarships."""
