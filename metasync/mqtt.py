"""MQTT connection set-up shared by every MQTT user of metasync (ingest, rebirth requests,
watchdog events, the edge simulator): TLS 1.3 minimum, credentials, capped reconnect backoff."""

from __future__ import annotations

import logging
import ssl
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
