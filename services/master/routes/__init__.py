"""master's HTTP API: one router per resource, each at module level, thin over :class:`~services.master.fleet.Fleet`.

Auth comes from FastAPI dependencies (services/master/auth.py): reads need a ``read`` (or ``admin``)
token, mutations an ``admin`` token, registration the fleet token; ``/healthz`` and ``/metrics`` are open.
"""
