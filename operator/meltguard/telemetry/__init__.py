"""GPU telemetry: the exporter that reads GPUs, and the operator's sources that read exporters.

Two halves share the metric table of :mod:`meltguard.telemetry.metrics`:

* the exporter side (``meltguard exporter``): :mod:`.devices` (what one GPU read gives),
  :mod:`.simulated` and :mod:`.nvml` (backends), :mod:`.sampler`, :mod:`.attribution` and
  :mod:`.podresources` (which pod holds which GPU), :mod:`.exposition` and :mod:`.exporter`
  (the HTTP app);
* the operator side: :mod:`.sources` (the ``TelemetrySource`` interface and its
  exporter / dcgm / prometheus implementations), built on :mod:`.textformat` (a fast
  Prometheus text parser), :mod:`.interpret` (series -> validated ``GpuSample``) and
  :mod:`.scrape` (a bounded, keep-alive HTTP scraper).
"""
