"""Messages upstream ships no Python code for here: grpc.health.v1 and TF Serving's MonitoringConfig.

Built at run time in a private descriptor pool, so they never clash with other copies of the same
proto packages (grpcio-health-checking, the project's own TF Serving subset) in one process.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FDP = descriptor_pb2.FieldDescriptorProto


def _field(message: Any, name: str, number: int, kind: int, type_name: str = "") -> None:
    field = message.field.add(name=name, number=number, type=kind, label=_FDP.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name


def _build() -> tuple[Any, Any, Any, Any]:
    pool = descriptor_pool.DescriptorPool()

    health = descriptor_pb2.FileDescriptorProto(name="local_serving/health.proto", package="grpc.health.v1")
    request = health.message_type.add(name="HealthCheckRequest")
    _field(request, "service", 1, _FDP.TYPE_STRING)
    response = health.message_type.add(name="HealthCheckResponse")
    status_enum = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status_enum.value.add(name=name, number=number)
    _field(response, "status", 1, _FDP.TYPE_ENUM, ".grpc.health.v1.HealthCheckResponse.ServingStatus")
    pool.Add(health)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="local_serving/monitoring_config.proto", package="tensorflow.serving"
    )
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    _field(prometheus, "enable", 1, _FDP.TYPE_BOOL)
    _field(prometheus, "path", 2, _FDP.TYPE_STRING)
    config = monitoring.message_type.add(name="MonitoringConfig")
    _field(config, "prometheus_config", 1, _FDP.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)

    def get(full_name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))

    return (
        get("grpc.health.v1.HealthCheckRequest"),
        get("grpc.health.v1.HealthCheckResponse"),
        get("tensorflow.serving.MonitoringConfig"),
        get("tensorflow.serving.PrometheusConfig"),
    )


HealthCheckRequest, HealthCheckResponse, MonitoringConfig, PrometheusConfig = _build()
