"""Mutation fuzzer for the SIP parser (run with ``python -m tests.fuzz``)."""
