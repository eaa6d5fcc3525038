"""MQTT 3.1.1 and 5 on Trunkline: sans-I/O cores (codec, topic mapping, filters) and the session."""
