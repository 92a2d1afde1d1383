"""remote_model_puller: complete versions only, verified, durable and atomic, from GCS to the node."""
