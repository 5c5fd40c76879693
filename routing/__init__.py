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
- :func:`routing.emergency.recognise_emergency` ``(dialled, config.emergency)``.
- :func:`routing.psap.lookup_psap` ``(address, directory.psap) -> PsapRoute``.
- :func:`routing.policy.decide` ``(ctx, directory, config) -> RoutingDecision``
  (classification + :func:`routing.policy.route_call`), and
  :func:`routing.policy.route_emergency`.
- :func:`routing.pidf.build_pidf`, :func:`routing.pidf.build_multipart`,
  :func:`routing.pidf.geolocation_headers`: the location object for emergency INVITEs.
"""
