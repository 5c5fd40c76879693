"""The pure routing layer: who calls from where, and where the call goes.

No asyncio, sockets, clocks or databases here: frozen dataclasses in, one out.

Entry points (see each module):

- :class:`routing.config.RoutingConfig` ``.from_table(table)``: the ``[routing]`` settings.
- :func:`routing.sites_file.parse_sites` / :func:`routing.sites_export.dump_sites`:
  the sites file (TOML or CSV) to and from :class:`routing.sites_file.SitesData`;
  ``SitesData.directory(device_patterns)`` builds the indexed
  :class:`routing.directory.Directory`.
- :func:`routing.classify.classify_call` ``(ctx, directory) -> Classification``:
  OFFICE or NOMADIC.
- :class:`routing.emergency.DialPlan` ``.match(dialled)``: the one recogniser of
  emergency and test dial strings (over :func:`routing.emergency.recognise_emergency`).
- :func:`routing.psap.lookup_psap` ``(address, directory.psap) -> PsapRoute``.
- :func:`routing.policy.decide` ``(ctx, directory, config, trusted_peers=, load=)
  -> RoutingDecision``: THE entry point of routing, what production calls for every
  call: inbound, emergency test answer, classification + policy
  (:func:`routing.policy.route_call`), shedding. The decision carries the call's
  :class:`routing.decision.CallFacts` to the CDR (``cdr.call_record.record_of``).
- :func:`routing.pidf.build_pidf`, :func:`routing.pidf.build_multipart`,
  :func:`routing.pidf.geolocation_headers`: the location object for emergency INVITEs.
"""
