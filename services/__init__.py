"""modelfleet: the control plane of a Docker Swarm fleet of TensorFlow Serving containers."""
