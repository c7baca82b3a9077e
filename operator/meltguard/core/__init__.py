"""The pure decision core: no I/O, no clock, no Kubernetes, HTTP or NVML.

Everything here is a function of its arguments; time is passed in as ``now``
(seconds since the epoch, a float).
"""
