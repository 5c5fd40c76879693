"""``voipgw demo``: the gateway on the demo config with its peers in the same process.

A first call needs something behind the gateway: the PBX at ``[upstream] uri`` and
the emergency centres of the sites file. This package stands them in, small enough
to read in one sitting:

* :mod:`gateway.demo.agent`: the SIP half of an answering peer, sans-IO, on the
  project's own transaction layer and dialog (180, 200 with SDP, BYE either way).
* :mod:`gateway.demo.report`: what a peer prints for each call, one line (the
  emergency centre shows callback identity, Resource-Priority, Geolocation and the
  PIDF-LO location it received).
* :mod:`gateway.demo.peer`: the thin asyncio adapter (one UDP socket per peer) and
  the audio the peers play (a G.711 tone through the gateway's RTP player).
* :mod:`gateway.demo.cli`: the subcommand: seeds the demo users' passwords, starts
  the peers, prints what to try, then runs the gateway as ``voipgw run`` does.

The peers are demo and test peers, not a PBX or a PSAP: one codec family (G.711),
UDP only, no authentication, no re-negotiation beyond repeating their answer.
"""
