"""The notifications service: every message a person should get, discreet, on time, once."""
