"""Worker processes: several full gateways on one machine sharing its public SIP port
(deploy/OPERATIONS.md "Worker processes")."""
