"""GPU telemetry: the exporter that reads GPUs, and the operator's sources that read exporters.

Both halves share the metric table of :mod:`.metrics`, so writer and reader cannot drift.

* Exporter side (``meltguard exporter``, :mod:`.cli`): :mod:`.devices` (what one GPU read
  gives), backends :mod:`.nvml` and :mod:`.simulated` (fire drills), :mod:`.sampler` (the
  background reader), :mod:`.attribution` and :mod:`.podresources` (which pod holds which
  GPU), :mod:`.exposition` and :mod:`.exporter` (the HTTP app).
* Operator side: :mod:`.sources` (the ``TelemetrySource`` interface, the exporter and dcgm
  scrape source, ``create_source``) and :mod:`.prometheus`, built on :mod:`.scrape` (a
  bounded keep-alive HTTP client), :mod:`.textformat` (strict line parser) and
  :mod:`.interpret` (series -> checked ``GpuSample`` values, fast re-reads of known pages).
"""
