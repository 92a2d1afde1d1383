"""config_manager: local disk + desired.json -> models.config -> ReloadConfig -> verify AVAILABLE -> GC.

The only writer of models.config and the only caller of tfserving's ModelService on a node.

Which module owns which step of a pass (``reconciler.Reconciler.step``):

- ``localdisk``: read desired.json, scan the volume (a read error fails the pass), manifests, failed.json;
- ``live``: GetModelStatus / GetModelMetadata / HandleReloadConfigRequest with deadlines; signatures;
- ``loads``: what tfserving has listed over time: fresh vs stale failures, restarts, server quiet time;
- ``verdicts``: versions that did not load: failed, capacity (``capacity``), killed the server;
- ``planner``: the next entry per model (pure); ``configfile``: lint, known-good file, hand edits;
- ``gc``: what may be deleted, and deleting it; ``snapshot`` + ``status``: what ``/v1/status`` shows.
"""

SERVICE_NAME = "config_manager"
