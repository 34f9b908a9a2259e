"""MQTT connection set-up shared by every MQTT user of metasync (ingest, rebirth requests,
watchdog events, the edge simulator): TLS 1.3 minimum, credentials, capped reconnect backoff."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from django.conf import settings

from metasync.env import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: bool = True
    ca_file: str | None = None
    keepalive: int = 30
    reconnect_max: int = 30

    def __repr__(self) -> str:  # never show the password, even in a debug log
        return f"MqttConfig(host={self.host!r}, port={self.port}, client_id={self.client_id!r}, tls={self.tls})"


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS 1.3 minimum, server certificate verified against ``ca_file``, host name checked."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def make_client(config: MqttConfig) -> mqtt.Client:
    """A paho 2 client: MQTT 3.1.1, clean session, TLS 1.3, credentials, capped reconnect backoff."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                         clean_session=True, protocol=mqtt.MQTTv311)
    if config.tls:
        client.tls_set_context(tls_context(config.ca_file))
    else:
        log.warning("MQTT TLS is disabled (MQTT_TLS=false): local development only")
    if config.username:
        client.username_pw_set(config.username, config.password)
    client.reconnect_delay_set(min_delay=1, max_delay=config.reconnect_max)
    client.enable_logger(logging.getLogger("paho"))
    return client


def config_from_settings(client_id: str | None = None) -> MqttConfig:
    """The broker settings every MQTT user of metasync shares (ingest, rebirth, watchdogs, simulator)."""
    if not settings.MQTT_HOST:
        raise ConfigError("MQTT_HOST", "is required to talk to the MQTT broker")
    if settings.MQTT_TLS and not settings.MQTT_CA_FILE:
        log.info("MQTT_CA_FILE not set: the system trust store verifies the broker")
    return MqttConfig(
        host=settings.MQTT_HOST, port=settings.MQTT_PORT, client_id=client_id or settings.MQTT_CLIENT_ID,
        username=settings.MQTT_USERNAME, password=settings.MQTT_PASSWORD, tls=settings.MQTT_TLS,
        ca_file=settings.MQTT_CA_FILE, keepalive=settings.MQTT_KEEPALIVE,
        reconnect_max=settings.MQTT_RECONNECT_MAX_SECONDS,
    )


def publish_once(config: MqttConfig, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                 timeout: float = 10.0) -> None:
    """Publish one message on a short-lived connection and return once the broker has it (PUBACK for
    QoS 1): waits for the CONNACK first, so nothing is sent into a refused or half-open connection.
    Raises ``ConnectionError``/``TimeoutError`` with the reason otherwise."""
    deadline = time.monotonic() + timeout
    client = make_client(config)
    client.connect_timeout = min(timeout, 5.0)
    answered = threading.Event()
    refused: list[str] = []

    def on_connect(c, userdata, flags, reason, properties) -> None:  # type: ignore[no-untyped-def]
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(config.host, config.port, keepalive=config.keepalive)
        client.loop_start()
        if not answered.wait(max(0.0, deadline - time.monotonic())) or refused:
            raise ConnectionError(f"MQTT connection refused: {refused[0]}" if refused else "no CONNACK in time")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        if not info.is_published():
            raise TimeoutError(f"{topic}: not acknowledged within {timeout:.0f} s")
    finally:
        try:
            # Network thread first: paho 2.2 logs a spurious ERROR ("Client is not connected") when
            # its thread is still looping as disconnect() closes the socket.
            client.loop_stop()
            client.disconnect()
        except Exception:  # noqa: BLE001 - closing a failed connection must not hide why it failed
            log.debug("closing a short-lived MQTT client failed", exc_info=True)
