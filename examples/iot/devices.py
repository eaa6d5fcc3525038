"""Simulated devices for the IoT dashboard example: paho-mqtt clients, one process.

    .venv/bin/python examples/iot/devices.py --devices 3                  # MQTT over TCP on 1883
    .venv/bin/python examples/iot/devices.py --devices 2 --ws-port 8000   # every other one over WebSocket

Each device is a paho-mqtt 2.x client (MQTT 5; with ``--ws-port`` every other device connects
over WebSocket at ``/mqtt`` instead of TCP). It authenticates like any Trunkline client: a JWT
in the MQTT password, its ``sub`` equal to the MQTT user name, signed with the example's demo
key (``client.token.hmac_secret_key`` of ``--config``). Then it

* publishes ``{"online": true, ...}`` retained on ``devices/<name>/status``, with a retained
  last will ``{"online": false}`` on the same topic (published by the server if the device
  vanishes without saying goodbye);
* subscribes (QoS 1) to ``devices/<name>/commands`` and ``devices/fleet`` (the fleet channel's
  presence is how a Centrifugo dashboard sees which devices are online; a command there goes to
  every device);
* publishes a reading every ``interval`` seconds (QoS 0, JSON so that browsers can read it) on
  ``sensors/<name>/telemetry``: ``{"device", "t" (ms), "temperature", "humidity", "led", "interval"}``;
* obeys commands ``{"id": "...", "cmd": "toggle_led" | "led" | "set_interval", "value": ...}``
  and acknowledges each on ``devices/<name>/acks`` (QoS 1):
  ``{"id", "device", "cmd", "ok", "error"?, "state": {"led", "interval"}}``.

On SIGTERM or Ctrl-C every device publishes its offline status and disconnects.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Literal

import jwt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HERE = Path(__file__).resolve().parent
NAMES = ("greenhouse", "cellar", "attic", "garage", "kitchen", "porch", "barn", "shed", "loft", "pantry")
MODELS = ("TH-100", "TH-200", "ENV-3")
MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0


def device_token(device_id: str, name: str, model: str, secret: str) -> str:
    """The device's connection token: ``info`` says it is a device (the dashboard filters presence on it)."""
    now = int(time.time())
    claims = {"sub": device_id, "iat": now, "exp": now + 86400, "info": {"device": name, "model": model}}
    return jwt.encode(claims, secret, algorithm="HS256")


class Device:
    def __init__(self, name: str, index: int, a: argparse.Namespace, secret: str) -> None:
        self.name = name
        self.id = f"device-{name}"
        self.model = MODELS[index % len(MODELS)]
        self.led = False
        self.interval = max(MIN_INTERVAL, min(a.interval, MAX_INTERVAL))
        self.base = 18.0 + 3.0 * index
        self.phase = random.random() * math.tau
        self.next_at = time.monotonic()
        self.lock = threading.Lock()
        websocket = bool(a.ws_port) and index % 2 == 1
        self.transport: Literal["tcp", "websockets"] = "websockets" if websocket else "tcp"
        self.port = a.ws_port if websocket else a.mqtt_port
        self.host = a.host
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.id, protocol=mqtt.MQTTv5, transport=self.transport)
        if websocket:
            c.ws_set_options(path="/mqtt")
        c.username_pw_set(self.id, device_token(self.id, name, self.model, secret))
        c.will_set(self.topic("status"), json.dumps({"online": False, "device": name}), qos=1, retain=True)
        c.reconnect_delay_set(1, 10)
        c.on_connect = self.on_connect
        c.on_message = self.on_message
        self.client = c

    def topic(self, what: str) -> str:
        return f"devices/{self.name}/{what}"

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            print(f"{self.id}: connect refused: {reason}", flush=True)
            return
        status = {"online": True, "device": self.name, "model": self.model, "transport": self.transport}
        client.publish(self.topic("status"), json.dumps(status), qos=1, retain=True)
        client.subscribe([(self.topic("commands"), 1), ("devices/fleet", 1)])
        print(f"{self.id}: connected over {self.transport} to {self.host}:{self.port}", flush=True)

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        ack: dict[str, Any] = {"device": self.name, "ok": True}
        try:
            cmd = json.loads(msg.payload)
            if not isinstance(cmd, dict):
                raise ValueError("a command is a JSON object")
            ack["id"] = cmd.get("id")
            ack["cmd"] = cmd.get("cmd")
            self.obey(cmd)
        except (ValueError, TypeError) as exc:
            ack.update(ok=False, error=str(exc)[:200])
        with self.lock:
            ack["state"] = {"led": self.led, "interval": self.interval}
        print(f"{self.id}: {msg.topic} {msg.payload[:200]!r} -> ok={ack['ok']}", flush=True)
        client.publish(self.topic("acks"), json.dumps(ack), qos=1)

    def obey(self, cmd: dict[str, Any]) -> None:
        what, value = cmd.get("cmd"), cmd.get("value")
        with self.lock:
            if what == "toggle_led":
                self.led = not self.led
            elif what == "led":
                if not isinstance(value, bool):
                    raise ValueError("led needs value true or false")
                self.led = value
            elif what == "set_interval":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError("set_interval needs a number of seconds")
                if not MIN_INTERVAL <= value <= MAX_INTERVAL:
                    raise ValueError(f"interval must be {MIN_INTERVAL}-{MAX_INTERVAL} s")
                self.interval = float(value)
                self.next_at = time.monotonic()
            else:
                raise ValueError(f"unknown command {what!r} (toggle_led, led, set_interval)")

    def tick(self, now: float) -> float:
        """Publish a reading when one is due; return when the next one is."""
        with self.lock:
            if now < self.next_at:
                return self.next_at
            self.next_at = now + self.interval
            led, interval, next_at = self.led, self.interval, self.next_at
        if self.client.is_connected():
            t = time.time()
            reading = {
                "device": self.name,
                "t": int(t * 1000),
                "temperature": round(self.base + 2.0 * math.sin(t / 20 + self.phase) + random.uniform(-0.2, 0.2), 2),
                "humidity": round(50 + 10 * math.sin(t / 30 + self.phase) + random.uniform(-1, 1), 1),
                "led": led,
                "interval": interval,
            }
            self.client.publish(f"sensors/{self.name}/telemetry", json.dumps(reading), qos=0)
        return next_at

    def stop(self) -> None:
        if self.client.is_connected():
            info = self.client.publish(
                self.topic("status"), json.dumps({"online": False, "device": self.name}), qos=1, retain=True
            )
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=3, help=f"how many (1-{len(NAMES)})")
    p.add_argument("--config", default=str(HERE / "trunkline.toml"), help="where the demo signing key is")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883, help="MQTT over TCP")
    p.add_argument(
        "--ws-port", type=int, default=0, help="Trunkline's port: every other device uses MQTT over WebSocket"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    a = p.parse_args()
    secret = tomllib.loads(Path(a.config).read_text())["client"]["token"]["hmac_secret_key"]
    devices = [Device(name, i, a, secret) for i, name in enumerate(NAMES[: max(1, min(a.devices, len(NAMES)))])]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for d in devices:
        d.start()
    while not stop.is_set():
        now = time.monotonic()
        wake = min(d.tick(now) for d in devices)
        stop.wait(max(0.01, min(wake - time.monotonic(), 1.0)))
    for d in devices:
        d.stop()


if __name__ == "__main__":
    main()
