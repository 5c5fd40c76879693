"""Emergency routing end to end: SIPp and Python peers through the running app."""
