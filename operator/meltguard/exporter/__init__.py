"""The node-side GPU exporter, ``meltguard exporter`` (:mod:`.cli`).

:mod:`.devices` (what one GPU read gives), backends :mod:`.nvml` and :mod:`.simulated` (fire
drills), :mod:`.sampler` (the background reader), :mod:`.attribution` and
:mod:`.podresources` (which pod holds which GPU), :mod:`.exposition` (the Prometheus
families) and :mod:`.app` (the HTTP app). It shares only :mod:`meltguard.wire` and
:mod:`meltguard.api.vocabulary` with the operator, whose ingest reads what it serves.
"""
