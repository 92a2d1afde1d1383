"""master: node registry, debounced health polling, cluster view, desired state and audit, fleetctl."""
