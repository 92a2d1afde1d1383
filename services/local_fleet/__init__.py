"""The local fleet: fake GCS, several simulated nodes (local_serving + puller + config_manager) and master.

Development and end-to-end tests only; production runs the Swarm stack (swarm-deploy.yml).
"""
