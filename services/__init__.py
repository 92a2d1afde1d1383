"""modelfleet: the control plane of a Docker Swarm fleet of TensorFlow Serving containers."""

import sys

# httpx imports its own command-line interface (click, rich, pygments) whenever those happen to be
# installed, as they are here for fleetctl. The services never run httpx's CLI; skipping it keeps ~4 MB
# out of every sidecar (config_manager idles near its 80 MB budget). httpx falls back to a stub.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
