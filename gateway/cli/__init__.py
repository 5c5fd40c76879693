"""The ``voipgw`` command: one CLI for every job (run, check-config, db, sites,
cdr, status ...).
"""
