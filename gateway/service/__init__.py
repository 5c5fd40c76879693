"""The service: the composition of every part (app) and its asyncio adapter
(server: the SIP core under asyncio), the routing adapter (router), the emergency
notifier and the routing data in PostgreSQL (sitestore).
"""
