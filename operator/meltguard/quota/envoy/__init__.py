"""Envoy's rate limit API (``envoy.service.ratelimit.v3``), generated from minimal .proto files.

Regenerate the ``*_pb2*.py`` files after editing a ``.proto`` (run from ``operator/``)::

    python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \\
        meltguard/quota/envoy/ratelimit.proto meltguard/quota/envoy/rls.proto
"""
