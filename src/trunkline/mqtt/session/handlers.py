"""The MQTT packets a client sends, one handler each: CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import TYPE_CHECKING

from ... import errors as E
from ...auth import ConnectionClaims
from ...config import NamespaceOptions
from ...events import PublishEvent, SubscribeEvent
from ...hub import permissions
from ...records import ClientInfo
from .. import reasons as R
from ..filters import InvalidTopic, is_wildcard, parse_shared, validate_topic
from ..packets import (
    MQTT_5,
    MQTT_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Properties,
    PubAck,
    Publish,
    PubRec,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from ..shape import MqttShape, Tracker, encode_meta, meta_of
from ..topics import FilterScope, Unmappable
from . import persist, shared
from .subs import FilterMatcher, MqttSubscription, channel_allowed

if TYPE_CHECKING:
    from .core import MqttSession

log = logging.getLogger("trunkline.mqtt")
MAX_GRANTED_QOS = 2
#: the MQTT 5 authentication method: the connection token (JWT) in Authentication Data, also for
#: re-authentication (AUTH 0x19) with a fresh token
AUTH_METHOD = "jwt"


class Refused(Exception):
    """A CONNECT is refused with this (MQTT 5) reason code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ---------------------------------------------------------------------------------------- CONNECT


async def _credentials(s: MqttSession, p: Connect) -> ConnectionClaims | None:
    """Claims of the JWT in the password (or the ``jwt`` method's data); None for an anonymous connection."""
    node = s.node
    mqtt = node.settings.mqtt
    method = p.properties.authentication_method if p.protocol_level == MQTT_5 else None
    if method is not None:
        if method != AUTH_METHOD:
            raise Refused(R.BAD_AUTHENTICATION_METHOD, f"authentication method {AUTH_METHOD!r} only")
        s.auth_method = method
        if p.properties.authentication_data:
            p = dataclasses.replace(p, password=p.properties.authentication_data)
    if not p.password:
        if p.username and not mqtt.allow_anonymous:
            raise Refused(R.BAD_USER_NAME_OR_PASSWORD, "a token is expected in the password")
        if not mqtt.allow_anonymous:
            raise Refused(R.NOT_AUTHORIZED, "anonymous connections are not allowed (mqtt.allow_anonymous)")
        return None
    try:
        token = p.password.decode("ascii")
    except UnicodeDecodeError:
        raise Refused(R.BAD_USER_NAME_OR_PASSWORD, "the password is not a token") from None
    try:
        claims = await node.verifier.verify_connection(token, node.clock.time())
    except E.Disconnect as exc:
        raise Refused(R.BAD_USER_NAME_OR_PASSWORD, exc.reason) from None
    if claims.expire_at is not None and claims.expire_at <= node.clock.time():
        raise Refused(R.BAD_USER_NAME_OR_PASSWORD, "token expired")
    if p.username and p.username != claims.user:
        raise Refused(R.BAD_USER_NAME_OR_PASSWORD, "the token's sub is not the user name")
    if claims.user == "" and node.settings.client.disallow_anonymous_connection_tokens:
        raise Refused(R.NOT_AUTHORIZED, "anonymous tokens are not allowed")
    return claims


async def handle_connect(s: MqttSession, p: Connect) -> None:
    s.version = p.protocol_level
    node = s.node
    mqtt = node.settings.mqtt
    try:
        if not node.accepting:
            raise Refused(R.SERVER_UNAVAILABLE, "server is shutting down")
        client_id = p.client_id
        assigned = False
        if not client_id:
            if p.protocol_level == MQTT_311 and not p.clean_start:
                raise Refused(R.CLIENT_IDENTIFIER_NOT_VALID, "an empty client id needs clean session")
            client_id = "auto-" + secrets.token_hex(8)
            assigned = True
        claims = await _credentials(s, p)
        user = claims.user if claims is not None else ""
        other = node.hub.connection(client_id)
        existing = s.state.sessions.get(client_id)
        if other is not None and other is not existing:
            raise Refused(R.CLIENT_IDENTIFIER_NOT_VALID, "client id in use by another connection")
        if existing is not None and existing.user != user:
            raise Refused(R.CLIENT_IDENTIFIER_NOT_VALID, "client id in use by another user")
        saved = s.state.stored.get(client_id)
        if saved is not None and saved.user != user:
            raise Refused(R.CLIENT_IDENTIFIER_NOT_VALID, "client id has a session of another user")
        limit = node.settings.client.connection_limit
        if limit and node.hub.num_clients >= limit and existing is None:
            raise Refused(R.SERVER_BUSY, "connection limit reached")
        ulimit = node.settings.client.user_connection_limit
        if ulimit and user and len(node.hub.user_connections(user)) >= ulimit and existing is None:
            raise Refused(R.QUOTA_EXCEEDED, "too many connections for this user")
        if p.will is not None:
            try:
                validate_topic(p.will.topic)
                s.state.mapping.to_channel(p.will.topic)
            except (InvalidTopic, Unmappable) as exc:
                raise Refused(R.TOPIC_NAME_INVALID, f"will topic: {exc}") from None
    except Refused as refused:
        log.info("refused MQTT CONNECT from %s: %s", s.remote, refused.reason)
        props = Properties(reason_string=refused.reason[:100]) if p.protocol_level == MQTT_5 else Properties()
        s.send(ConnAck(False, refused.code, props))
        await s.end(send_will=False, code=refused.code)
        return
    if existing is not None:  # session takeover (MQTT-3.1.4-2)
        await existing.close_with(R.SESSION_TAKEN_OVER, "session taken over", send_will=True)
    delayed = s.state.delayed_wills.pop(client_id, None)
    if delayed is not None:  # the client is back before its will delay ran out: no will
        delayed.cancel()
    stored = persist.take(s.state, client_id)  # after a takeover, the old connection's state is here
    if p.clean_start:
        stored = None
    s.session_expiry = persist.session_expiry(s, p.clean_start, p.properties.session_expiry_interval)
    if stored is not None:
        s.tracker = stored.tracker
    elif s.session_expiry > 0:
        s.tracker = Tracker()
    s.mqtt_client_id = client_id
    s.client_id = client_id
    s.user = user
    s.conn_info = claims.info if claims is not None else None
    s.expire_at = claims.expire_at if claims is not None else None
    s.will = p.will
    props = p.properties
    if props.receive_maximum:
        s.send_window = min(s.send_window, props.receive_maximum)
    if props.maximum_packet_size:
        s.max_outgoing_packet = props.maximum_packet_size
    keepalive = p.keepalive
    server_keepalive: int | None = None
    max_keepalive = int(mqtt.max_keepalive)
    if p.protocol_level == MQTT_5 and (keepalive == 0 or keepalive > max_keepalive):
        keepalive = server_keepalive = max_keepalive
    s.keepalive = keepalive
    s.connected = True
    s.state.sessions[client_id] = s
    node.hub.add_connection(client_id, user, s)
    if p.protocol_level == MQTT_5:
        expiry = props.session_expiry_interval
        ack_props = Properties(
            assigned_client_identifier=client_id if assigned else None,
            server_keep_alive=server_keepalive,
            receive_maximum=mqtt.receive_maximum,
            maximum_packet_size=mqtt.max_packet_size,
            maximum_qos=None,
            retain_available=mqtt.retained.enabled and s.state.retained is not False,
            topic_alias_maximum=16,
            wildcard_subscription_available=True,
            subscription_identifier_available=True,
            shared_subscription_available=True,
            session_expiry_interval=int(s.session_expiry) if expiry and s.session_expiry != expiry else None,
            authentication_method=s.auth_method,
        )
        s.send(ConnAck(stored is not None, R.SUCCESS, ack_props))
    else:
        s.send(ConnAck(stored is not None, R.SUCCESS))
    s.start_keepalive()
    s.schedule_expiry()
    if stored is not None:
        await resume(s, stored)
    if node.hooks.connect is not None:
        await node.hooks.connect(s.view)


# ---------------------------------------------------------------------------------------- PUBLISH


def _publish_code(s: MqttSession, channel: str, opts: NamespaceOptions) -> int:
    subscribed = channel in s.channels
    if not permissions.can_publish(opts, s.user, subscribed, s.node.settings.client.insecure):
        return R.NOT_AUTHORIZED
    return R.SUCCESS


async def publish_message(  # noqa: PLR0917
    s: MqttSession, topic: str, payload: bytes, qos: int, retain: bool, props: Properties
) -> int:
    """Publish into the topic's channel through the node; the reason code of the outcome."""
    node = s.node
    try:
        channel = s.state.mapping.to_channel(topic)
    except (InvalidTopic, Unmappable) as exc:
        log.info("client=%s published to an unmappable topic: %s", s.client_id, exc)
        return R.TOPIC_NAME_INVALID
    opts = node.namespace_options(channel)
    if opts is None:
        return R.TOPIC_NAME_INVALID
    data = payload
    if node.hooks.publish is not None:
        try:
            reply = await node.hooks.publish(PublishEvent(s.view, channel, payload))
        except E.ClientError:
            return R.NOT_AUTHORIZED
        if reply is not None and reply.data is not None:
            data = reply.data
    else:
        code = _publish_code(s, channel, opts)
        if code:
            return code
    if not data:
        if retain:
            await _store_retained(s, topic, b"", qos, props)
            return R.SUCCESS
        return R.PAYLOAD_FORMAT_INVALID if s.version == MQTT_5 else R.SUCCESS
    meta = encode_meta(meta_of(qos, retain, props))
    try:
        await node.publish_to(channel, opts, data, info=s.client_info(), meta=meta)
    except Exception as exc:
        log.warning("MQTT publish of client=%s failed: %s", s.client_id, exc)
        return R.UNSPECIFIED_ERROR
    if retain and not await _store_retained(s, topic, data, qos, props) and s.version == MQTT_5:
        return R.QUOTA_EXCEEDED  # delivered, but not retained
    return R.SUCCESS


async def _store_retained(s: MqttSession, topic: str, payload: bytes, qos: int, props: Properties) -> bool:
    from .retained import store

    return await store(s, topic, payload, qos, props)


async def handle_publish(s: MqttSession, p: Publish) -> None:
    topic = p.topic
    alias = p.properties.topic_alias
    if alias is not None:
        if not 1 <= alias <= 16:
            await s.close_with(R.TOPIC_ALIAS_INVALID, "topic alias out of range")
            return
        if topic:
            s.topic_aliases[alias] = topic
        else:
            known = s.topic_aliases.get(alias)
            if known is None:
                await s.close_with(R.PROTOCOL_ERROR, "unknown topic alias")
                return
            topic = known
    elif not topic:
        await s.close_with(R.PROTOCOL_ERROR, "empty topic without alias")
        return
    if p.qos == 2:
        assert p.packet_id is not None
        if p.packet_id in s.awaiting_rel:
            s.send(PubRec(p.packet_id))  # a resend: published already
            return
        if len(s.awaiting_rel) >= s.node.settings.mqtt.receive_maximum:
            await s.close_with(R.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")
            return
    code = await publish_message(s, topic, p.payload, p.qos, p.retain, p.properties)
    if code and p.qos == 0:
        log.debug("dropped a QoS 0 publish of client=%s: 0x%02X", s.client_id, code)
    if p.qos == 1:
        assert p.packet_id is not None
        s.send(PubAck(p.packet_id, code if s.version == MQTT_5 else 0))
    elif p.qos == 2:
        assert p.packet_id is not None
        if code < 0x80:
            s.awaiting_rel.add(p.packet_id)
        s.send(PubRec(p.packet_id, code if s.version == MQTT_5 else 0))


# ---------------------------------------------------------------------------------------- SUBSCRIBE


async def handle_subscribe(s: MqttSession, p: Subscribe) -> None:
    if any(o.no_local and o.filter.startswith("$share/") for o in p.subscriptions):
        await s.close_with(R.PROTOCOL_ERROR, "no local on a shared subscription")
        return
    sub_id = p.properties.subscription_identifiers[0] if p.properties.subscription_identifiers else None
    codes: list[int] = []
    added: list[tuple[MqttSubscription, bool, int]] = []
    for option in p.subscriptions:
        code, sub, new = await _subscribe_one(s, option.filter, option, sub_id)
        codes.append(code)
        if sub is not None:
            added.append((sub, new, option.retain_handling))
    s.send(SubAck(p.packet_id, tuple(codes)))
    from .retained import deliver_retained

    for sub, new, handling in added:
        if sub.group is None and (handling == 0 or (handling == 1 and new)):
            await deliver_retained(s, sub)
        if s.tracker is not None and sub.start is not None and sub.channel is not None:
            s.tracker.note(sub.channel, *sub.start)  # a new subscription starts here, whatever came before
        await _go_live(s, sub)


async def _go_live(s: MqttSession, sub: MqttSubscription) -> None:
    """The second step of an exact filter's join: buffered publications, then live; presence."""
    finish, sub.finish = sub.finish, None
    if finish is None:
        return
    try:
        finish()
    except E.Disconnect:
        await release(s, sub)
        return
    sub.live = True
    await _announce(s, sub)


async def resume(s: MqttSession, stored: persist.StoredSession) -> None:
    """Bring a saved session back: resend, resubscribe, replay what was missed, then live."""
    persist.restore_delivery(s, stored)
    # not resubscribed yet: kept if the connection ends (a takeover) before they are
    s.resuming = {saved.option.filter: saved for saved in stored.subscriptions}
    wildcards: list[persist.Saved] = []
    for saved in stored.subscriptions:
        if s.closed:
            return
        if is_wildcard(saved.option.filter):
            wildcards.append(saved)
            continue
        code, sub, _ = await _subscribe_one(s, saved.option.filter, saved.option, saved.sub_id)
        s.resuming.pop(saved.option.filter, None)
        if sub is None:
            log.info("client=%s lost its subscription %r on resume: 0x%02X", s.client_id, saved.option.filter, code)
            continue
        if sub.start is not None and sub.channel is not None:
            await persist.replay(s, sub, sub.channel, sub.start)
        await _go_live(s, sub)
    tracker = s.tracker
    for saved in wildcards:
        if s.closed:
            return
        held = persist.held_channels(s, saved.option.filter, set(s.channels)) if saved.option.qos and tracker else []
        for channel in held:
            assert tracker is not None
            tracker.held.setdefault(channel, {})
        code, sub, _ = await _subscribe_one(s, saved.option.filter, saved.option, saved.sub_id)
        s.resuming.pop(saved.option.filter, None)
        if sub is None:
            log.info("client=%s lost its subscription %r on resume: 0x%02X", s.client_id, saved.option.filter, code)
            for channel in held:
                assert tracker is not None
                tracker.held.pop(channel, None)
            continue
        for channel in held:
            await persist.replay(s, sub, channel, None)


async def rejoin(s: MqttSession, channel: str) -> None:
    """A positioned channel of a persistent session missed publications on this node: join it again."""
    node = s.node
    sub = s.channels.get(channel)
    for _ in range(3):
        if sub is None or s.closed or s.channels.get(channel) is not sub:
            return
        node.hub.remove(channel, s)
        try:
            result, finish = await node.join(s, channel, positioned=True, shape=sub.shape, push=s.push_for(sub.shape))
        except E.ClientError as exc:
            log.warning("client=%s cannot rejoin %s: %s", s.client_id, channel, exc)
            break
        await persist.replay(s, sub, channel, (result.offset, result.epoch))
        try:
            finish()
        except E.Disconnect:
            continue
        return
    if sub is not None and s.channels.get(channel) is sub:
        log.warning("client=%s could not catch up on %s; the subscription ends", s.client_id, channel)
        await release(s, sub)


async def _subscribe_one(
    s: MqttSession, topic_filter: str, option: Subscription, sub_id: int | None
) -> tuple[int, MqttSubscription | None, bool]:
    node = s.node
    failure = R.UNSPECIFIED_ERROR if s.version == MQTT_5 else 0x80
    try:
        share = parse_shared(topic_filter)
        inner = share.topic_filter if share is not None else topic_filter
        scope = s.state.mapping.filter_scope(inner)
    except (InvalidTopic, Unmappable) as exc:
        log.info("client=%s subscribed to an unmappable filter: %s", s.client_id, exc)
        return (R.TOPIC_FILTER_INVALID if s.version == MQTT_5 else 0x80), None, False
    limit = node.settings.mqtt.max_subscriptions
    existing = s.subscriptions.get(topic_filter)
    if limit and existing is None and len(s.subscriptions) >= limit:
        return (R.QUOTA_EXCEEDED if s.version == MQTT_5 else 0x80), None, False
    qos = min(option.qos, MAX_GRANTED_QOS)
    shape = MqttShape(
        s.state.topics,
        s.version,
        qos,
        retain_as_published=option.retain_as_published,
        subscription_id=sub_id,
        no_local=s.client_id if option.no_local else None,
        tracker=s.tracker if qos and share is None else None,
    )
    if existing is not None:
        await release(s, existing)
    sub = MqttSubscription(topic_filter, qos, shape, option=option, sub_id=sub_id)
    push = s.push_for(shape)
    try:
        if share is not None:
            if not _filter_open(s, inner, scope):
                return (R.NOT_AUTHORIZED if s.version == MQTT_5 else 0x80), None, False
            s.subscriptions[topic_filter] = sub
            sub.group = await shared.join(s, share.group, inner, scope.channel_prefix, shape)
            sub.live = True
        elif scope.channel is not None and not is_wildcard(topic_filter):
            channel = scope.channel
            opts = node.namespace_options(channel)
            if opts is None:
                return (R.TOPIC_FILTER_INVALID if s.version == MQTT_5 else 0x80), None, False
            if node.hooks.subscribe is not None and not node.rules.is_private(channel):
                try:
                    await node.hooks.subscribe(SubscribeEvent(s.view, channel, None))
                except E.ClientError:
                    return (R.NOT_AUTHORIZED if s.version == MQTT_5 else 0x80), None, False
            elif not channel_allowed(node, channel, opts, s.user):
                return (R.NOT_AUTHORIZED if s.version == MQTT_5 else 0x80), None, False
            sub.channel = channel
            sub.presence = opts.presence
            sub.join_leave = opts.join_leave
            s.subscriptions[topic_filter] = sub
            s.channels[channel] = sub
            positioned = shape.tracker is not None and opts.history_enabled
            result, finish = await node.join(s, channel, shape=shape, push=push, positioned=positioned)
            sub.finish = finish
            if positioned:
                sub.start = (result.offset, result.epoch)
        else:
            reachable = scope.reachable(ns.name for ns in node.settings.channel.namespaces)
            if not any(_namespace_open(s, ns) for ns in reachable):
                return (R.NOT_AUTHORIZED if s.version == MQTT_5 else 0x80), None, False
            matcher = FilterMatcher(topic_filter, s.user, s.state.topics, s.state.access)
            sub.prefix = scope.channel_prefix
            sub.matcher = matcher
            s.subscriptions[topic_filter] = sub
            await node.watch(s, scope.channel_prefix, matcher, shape, push)
            sub.live = True
    except E.ClientError as exc:
        log.warning("MQTT subscribe of client=%s failed: %s", s.client_id, exc)
        s.subscriptions.pop(topic_filter, None)
        if sub.channel is not None:
            s.channels.pop(sub.channel, None)
        return failure, None, False
    return qos, sub, existing is None


def _filter_open(s: MqttSession, topic_filter: str, scope: FilterScope) -> bool:
    """Whether ``s`` may subscribe to the filter of a shared subscription (the same rules as unshared)."""
    node = s.node
    if scope.channel is not None and not is_wildcard(topic_filter):
        opts = node.namespace_options(scope.channel)
        return opts is not None and channel_allowed(node, scope.channel, opts, s.user)
    reachable = scope.reachable(ns.name for ns in node.settings.channel.namespaces)
    return any(_namespace_open(s, ns) for ns in reachable)


def _namespace_open(s: MqttSession, namespace: str) -> bool:
    opts = s.node.settings.namespace(namespace)
    if opts is None:
        return False
    insecure = s.node.settings.client.insecure
    return permissions.can_subscribe(opts, s.user, insecure) or opts.allow_user_limited_channels


async def _announce(s: MqttSession, sub: MqttSubscription) -> None:
    node = s.node
    channel = sub.channel
    if channel is None or s.channels.get(channel) is not sub:
        return
    info = node.client_info(s.user, s.client_id, s.conn_info, None)
    try:
        if sub.presence:
            await node.presence_manager.add_presence(channel, s.client_id, s.user, info, node.presence_ttl)
            if s.channels.get(channel) is not sub:
                await node.presence_manager.remove_presence(channel, s.client_id)
                return
        if sub.join_leave:
            await node.broker.publish_join(channel, info)
        if node.map_presence.targets(channel):  # the namespace's map presence prefixes (hub/map_presence)
            await node.map_presence.join(channel, ClientInfo(s.user, s.client_id, s.conn_info, None), info)
            if s.channels.get(channel) is not sub:
                await node.map_presence.leave(channel, s.client_id, s.user)
    except Exception as exc:
        log.warning("cannot add presence of MQTT client=%s: %s", s.client_id, exc)


async def release(s: MqttSession, sub: MqttSubscription) -> None:
    """Drop one subscription: hub or pattern index, presence, leave."""
    node = s.node
    if s.subscriptions.get(sub.filter) is sub:
        del s.subscriptions[sub.filter]
    if sub.group is not None:
        group, sub.group = sub.group, None
        await shared.leave(s, group)
        return
    if sub.matcher is not None:
        node.unwatch(s, sub.prefix, sub.matcher)
        return
    channel = sub.channel
    if channel is None:
        return
    if s.channels.get(channel) is sub:
        del s.channels[channel]
    if node.hub.remove(channel, s):
        node.detach_channel(channel)
    if not sub.live:
        return
    sub.live = False
    info = node.client_info(s.user, s.client_id, s.conn_info, None)
    try:
        if sub.presence:
            await node.presence_manager.remove_presence(channel, s.client_id)
        if sub.join_leave:
            await node.broker.publish_leave(channel, info)
        await node.map_presence.leave(channel, s.client_id, s.user)
    except Exception as exc:
        log.warning("cannot remove presence of MQTT client=%s: %s", s.client_id, exc)


async def handle_unsubscribe(s: MqttSession, p: Unsubscribe) -> None:
    codes: list[int] = []
    for topic_filter in p.filters:
        sub = s.subscriptions.get(topic_filter)
        if sub is None:
            codes.append(R.NO_SUBSCRIPTION_EXISTED)
            continue
        await release(s, sub)
        persist.forget(s, topic_filter)
        codes.append(R.SUCCESS)
    s.send(UnsubAck(p.packet_id, tuple(codes) if s.version == MQTT_5 else ()))


# ---------------------------------------------------------------------------------------- DISCONNECT and will


async def handle_disconnect(s: MqttSession, p: Disconnect) -> None:
    interval = p.properties.session_expiry_interval
    if s.version == MQTT_5 and interval is not None:
        if interval and s.session_expiry == 0:
            await s.close_with(R.PROTOCOL_ERROR, "session expiry set on DISCONNECT after 0 on CONNECT")
            return
        s.session_expiry = persist.session_expiry(s, False, interval)
    with_will = s.version == MQTT_5 and p.reason_code == R.DISCONNECT_WITH_WILL_MESSAGE
    await s.end(send_will=with_will, code=p.reason_code)


def schedule_will(s: MqttSession, will: Will) -> None:
    """Publish the will now, or after its MQTT 5 will delay unless the client id reconnects first."""
    # MQTT 5: the will waits for its delay or for the end of the session, whichever comes first
    delay = min(will.properties.will_delay_interval or 0, s.session_expiry)
    node = s.node
    client_id = s.mqtt_client_id

    async def publish() -> None:
        s.state.delayed_wills.pop(client_id, None)
        code = await publish_message(s, will.topic, will.payload, will.qos, will.retain, will.properties)
        if code:
            log.info("the will of client=%s was not published: 0x%02X", client_id, code)

    if delay <= 0:
        node.spawn(publish())
        return
    handle = node.clock.call_later(delay, lambda: node.spawn(publish()))
    old = s.state.delayed_wills.pop(client_id, None)
    if old is not None:
        old.cancel()
    s.state.delayed_wills[client_id] = handle


# ---------------------------------------------------------------------------------------- AUTH


async def handle_auth(s: MqttSession, p: Auth) -> None:
    """MQTT 5 re-authentication: AUTH 0x19 with a fresh token (method ``jwt``) moves the expiry on."""
    node = s.node
    if s.version != MQTT_5 or s.auth_method is None:
        await s.close_with(R.PROTOCOL_ERROR, "AUTH without an authentication method on CONNECT")
        return
    if p.reason_code != R.RE_AUTHENTICATE or p.properties.authentication_method != s.auth_method:
        await s.close_with(R.PROTOCOL_ERROR, "AUTH must re-authenticate with the CONNECT's method")
        return
    data = p.properties.authentication_data or b""
    try:
        claims = await node.verifier.verify_connection(data.decode("ascii"), node.clock.time())
    except (E.Disconnect, UnicodeDecodeError) as exc:
        reason = exc.reason if isinstance(exc, E.Disconnect) else "the authentication data is not a token"
        log.info("re-authentication of client=%s failed: %s", s.client_id, reason)
        await s.close_with(R.NOT_AUTHORIZED, reason)
        return
    if claims.user != s.user:
        await s.close_with(R.NOT_AUTHORIZED, "the new token is for another user")
        return
    if claims.expire_at is not None and claims.expire_at <= node.clock.time():
        await s.close_with(R.NOT_AUTHORIZED, "token expired")
        return
    s.expire_at = claims.expire_at
    s.schedule_expiry()
    s.send(Auth(R.SUCCESS, Properties(authentication_method=s.auth_method)))
