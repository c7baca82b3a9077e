"""The Kubernetes side: kopf handlers and the reads and writes around ``decide()``."""
