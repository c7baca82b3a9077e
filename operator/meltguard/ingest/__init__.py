"""The operator's telemetry ingest: GPU samples of a policy's pods, from wherever they live.

:mod:`.source` is the interface the operator codes against (``TelemetrySource`` and the
reading it returns) and :mod:`.factory` builds the one a policy asks for: :mod:`.scrape`
(meltguard's exporter or dcgm-exporter, scraped through the keep-alive
:mod:`.http_client`) or :mod:`.prometheus` (a Prometheus server's query API). Pages are
read by :mod:`.reader` (fast re-reads of known pages), whose results must equal those of
:mod:`.reference_reader` (every line through the strict parser of :mod:`.textformat`), into
the tables of :mod:`.table`, laid out by :mod:`.schema` and turned into the core's samples
by :mod:`.samples`. :mod:`.metrics` counts failed endpoints and dropped samples.
"""
