"""config_manager: local disk + desired.json -> models.config -> ReloadConfig -> verify AVAILABLE -> GC.

The only writer of models.config and the only caller of tfserving's ModelService on a node.
"""

SERVICE_NAME = "config_manager"
