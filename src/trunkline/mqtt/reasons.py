"""MQTT 5 reason codes, MQTT 3.1.1 CONNACK return codes, and the mapping between them.

MQTT 5 uses one-byte reason codes in CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP,
SUBACK, UNSUBACK, DISCONNECT and AUTH (MQTT 5.0 §2.4); values below 0x80 are
successes, 0x80 and above failures. MQTT 3.1.1 has only the CONNACK return codes
0-5 (§3.2.2.3) and the SUBACK failure 0x80; everything else it cannot say.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------- MQTT 5 reason codes
SUCCESS: Final = 0x00
NORMAL_DISCONNECTION: Final = 0x00
GRANTED_QOS_0: Final = 0x00
GRANTED_QOS_1: Final = 0x01
GRANTED_QOS_2: Final = 0x02
DISCONNECT_WITH_WILL_MESSAGE: Final = 0x04
NO_MATCHING_SUBSCRIBERS: Final = 0x10
NO_SUBSCRIPTION_EXISTED: Final = 0x11
CONTINUE_AUTHENTICATION: Final = 0x18
RE_AUTHENTICATE: Final = 0x19
UNSPECIFIED_ERROR: Final = 0x80
MALFORMED_PACKET: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
IMPLEMENTATION_SPECIFIC_ERROR: Final = 0x83
UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84
CLIENT_IDENTIFIER_NOT_VALID: Final = 0x85
BAD_USER_NAME_OR_PASSWORD: Final = 0x86
NOT_AUTHORIZED: Final = 0x87
SERVER_UNAVAILABLE: Final = 0x88
SERVER_BUSY: Final = 0x89
BANNED: Final = 0x8A
SERVER_SHUTTING_DOWN: Final = 0x8B
BAD_AUTHENTICATION_METHOD: Final = 0x8C
KEEP_ALIVE_TIMEOUT: Final = 0x8D
SESSION_TAKEN_OVER: Final = 0x8E
TOPIC_FILTER_INVALID: Final = 0x8F
TOPIC_NAME_INVALID: Final = 0x90
PACKET_IDENTIFIER_IN_USE: Final = 0x91
PACKET_IDENTIFIER_NOT_FOUND: Final = 0x92
RECEIVE_MAXIMUM_EXCEEDED: Final = 0x93
TOPIC_ALIAS_INVALID: Final = 0x94
PACKET_TOO_LARGE: Final = 0x95
MESSAGE_RATE_TOO_HIGH: Final = 0x96
QUOTA_EXCEEDED: Final = 0x97
ADMINISTRATIVE_ACTION: Final = 0x98
PAYLOAD_FORMAT_INVALID: Final = 0x99
RETAIN_NOT_SUPPORTED: Final = 0x9A
QOS_NOT_SUPPORTED: Final = 0x9B
USE_ANOTHER_SERVER: Final = 0x9C
SERVER_MOVED: Final = 0x9D
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Final = 0x9E
CONNECTION_RATE_EXCEEDED: Final = 0x9F
MAXIMUM_CONNECT_TIME: Final = 0xA0
SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Final = 0xA1
WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Final = 0xA2

#: readable names (for logs and metrics labels); 0x00-0x02 are named after their most common use
NAMES: Final[dict[int, str]] = {
    0x00: "success",
    0x01: "granted_qos_1",
    0x02: "granted_qos_2",
    0x04: "disconnect_with_will_message",
    0x10: "no_matching_subscribers",
    0x11: "no_subscription_existed",
    0x18: "continue_authentication",
    0x19: "re_authenticate",
    0x80: "unspecified_error",
    0x81: "malformed_packet",
    0x82: "protocol_error",
    0x83: "implementation_specific_error",
    0x84: "unsupported_protocol_version",
    0x85: "client_identifier_not_valid",
    0x86: "bad_user_name_or_password",
    0x87: "not_authorized",
    0x88: "server_unavailable",
    0x89: "server_busy",
    0x8A: "banned",
    0x8B: "server_shutting_down",
    0x8C: "bad_authentication_method",
    0x8D: "keep_alive_timeout",
    0x8E: "session_taken_over",
    0x8F: "topic_filter_invalid",
    0x90: "topic_name_invalid",
    0x91: "packet_identifier_in_use",
    0x92: "packet_identifier_not_found",
    0x93: "receive_maximum_exceeded",
    0x94: "topic_alias_invalid",
    0x95: "packet_too_large",
    0x96: "message_rate_too_high",
    0x97: "quota_exceeded",
    0x98: "administrative_action",
    0x99: "payload_format_invalid",
    0x9A: "retain_not_supported",
    0x9B: "qos_not_supported",
    0x9C: "use_another_server",
    0x9D: "server_moved",
    0x9E: "shared_subscriptions_not_supported",
    0x9F: "connection_rate_exceeded",
    0xA0: "maximum_connect_time",
    0xA1: "subscription_identifiers_not_supported",
    0xA2: "wildcard_subscriptions_not_supported",
}

# ---------------------------------------------------------------- which code in which packet (MQTT 5.0 §2.4)
CONNACK_CODES: Final = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C}
    | {0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
PUBACK_CODES: Final = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})  # also PUBREC
PUBREL_CODES: Final = frozenset({0x00, 0x92})  # also PUBCOMP
SUBACK_CODES: Final = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
UNSUBACK_CODES: Final = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
DISCONNECT_CODES: Final = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96}
    | {0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)
AUTH_CODES: Final = frozenset({0x00, 0x18, 0x19})

# ---------------------------------------------------------------- MQTT 3.1.1 (§3.2.2.3, §3.9.3)
V311_ACCEPTED: Final = 0
V311_UNACCEPTABLE_PROTOCOL_VERSION: Final = 1
V311_IDENTIFIER_REJECTED: Final = 2
V311_SERVER_UNAVAILABLE: Final = 3
V311_BAD_USER_NAME_OR_PASSWORD: Final = 4
V311_NOT_AUTHORIZED: Final = 5
V311_CONNACK_CODES: Final = frozenset(range(6))
V311_SUBACK_FAILURE: Final = 0x80

#: MQTT 5 CONNACK codes that have a 3.1.1 return code of the same meaning
V5_TO_V311_CONNACK: Final[dict[int, int]] = {
    SUCCESS: V311_ACCEPTED,
    UNSUPPORTED_PROTOCOL_VERSION: V311_UNACCEPTABLE_PROTOCOL_VERSION,
    CLIENT_IDENTIFIER_NOT_VALID: V311_IDENTIFIER_REJECTED,
    SERVER_UNAVAILABLE: V311_SERVER_UNAVAILABLE,
    BAD_USER_NAME_OR_PASSWORD: V311_BAD_USER_NAME_OR_PASSWORD,
    NOT_AUTHORIZED: V311_NOT_AUTHORIZED,
}
#: the nearest 3.1.1 return code for the other MQTT 5 CONNACK codes (as EMQX does)
_V311_CONNACK_NEAREST: Final[dict[int, int]] = {
    BANNED: V311_NOT_AUTHORIZED,
    BAD_AUTHENTICATION_METHOD: V311_NOT_AUTHORIZED,
}


def connack_v311(code: int) -> int:
    """The 3.1.1 CONNACK return code for an MQTT 5 CONNACK reason code.

    Codes with a same-meaning 3.1.1 code map to it (:data:`V5_TO_V311_CONNACK`),
    banned and bad authentication method to "not authorized", every other failure
    to "server unavailable".
    """
    if code in V5_TO_V311_CONNACK:
        return V5_TO_V311_CONNACK[code]
    return _V311_CONNACK_NEAREST.get(code, V311_SERVER_UNAVAILABLE)


def suback_v311(code: int) -> int:
    """The 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure."""
    return code if code <= GRANTED_QOS_2 else V311_SUBACK_FAILURE
