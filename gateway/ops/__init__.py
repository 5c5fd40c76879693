"""Operations: Prometheus metrics, the HTTP status and health endpoints, logging,
and which build of the SIP core runs (native).
"""
