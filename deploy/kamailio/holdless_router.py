# holdless SIP front end: Kamailio KEMI routing script (module app_python3).
#
# For every new INVITE: ask holdless RoutingService.RouteCall over gRPC with a short
# deadline, then answer 302 Moved Temporarily with the decided target in Contact:
#   - holdless offers a callback  -> the callback IVR (`callback_offer_uri`), offer in
#                                    the X-Holdless-Offer header
#   - an agent was reserved       -> the agent (`agent_uri_template`), then the queue
#   - otherwise                   -> the queue's `contact_uri` from the routing plan
# If holdless is down, slow or answers an error, the call fails open to
# `fail_open_uri` and the `holdless_fail_open` counter goes up. See README.md.
#
# Runs inside every Kamailio worker process. gRPC is imported and the channel created
# lazily, in the worker, after Kamailio has forked (gRPC state must not cross a fork).

import configparser
import hashlib
import os
import re
import sys
import time
import urllib.parse

import KSR

CONFIG_ENV = "HOLDLESS_SIP_CONFIG"
DEFAULT_CONFIG = "/etc/kamailio/holdless/holdless-sip.ini"

# Every setting, with its default. Each can be overridden by the environment variable
# HOLDLESS_SIP_<NAME IN UPPER CASE>, e.g. HOLDLESS_SIP_HOLDLESS_ADDRESS=127.0.0.1:50051.
DEFAULTS = {
    # holdless gRPC address (host:port, plaintext; keep it on a trusted network).
    "holdless_address": "127.0.0.1:50051",
    # Deadline of one RouteCall, in milliseconds. Past it the call fails open.
    "deadline_ms": "200",
    # Where calls go when holdless cannot decide (down, slow, error, queue without URI).
    "fail_open_uri": "sip:general@queues.example.com",
    # Callback IVR / announcement; empty: no IVR, the call goes to the queue and the
    # offer is still signalled in X-Holdless-Offer.
    "callback_offer_uri": "sip:callback-offer@ivr.example.com",
    # SIP URI of a reserved agent; {agent} is the agent id. Empty: always the queue.
    "agent_uri_template": "",
    # Queue URI when the plan's queue has no contact_uri; {queue} is the queue id.
    # Empty: such calls fail open (and are counted).
    "queue_uri_template": "",
    # Header carrying a campaign tracking code.
    "campaign_header": "X-Campaign",
    # A user part of 8 to 15 digits without '+' (as many trunks send) is E.164.
    "bare_digits_are_e164": "yes",
    # "holdless": ask holdless; "static": never ask, send every call to fail_open_uri
    # (maintenance switch; also the baseline of the latency measurement).
    "mode": "holdless",
    # Directory holding the generated protobuf modules (holdless/v1/routing_pb2.py).
    "stubs_dir": "",
    # For load measurements only: each worker appends the time it spent deciding each
    # INVITE (microseconds, from the first header read to the reply) to
    # <latency_log>.<pid>. Empty: off.
    "latency_log": "",
}

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
BARE = re.compile(r"[1-9][0-9]{7,14}")
CALL_ID_OK = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
VISUAL_SEPARATORS = re.compile(r"[ .()-]")
MAX_LABEL = 64

OFFER_REASONS = {
    1: "long_wait",
    2: "queue_closed",
    3: "queue_full",
    4: "no_agents",
    5: "rule",
}


def load_config():
    path = os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    parser = configparser.ConfigParser()
    if os.path.exists(path):
        parser.read(path)
    section = parser["holdless"] if parser.has_section("holdless") else {}
    conf = {}
    for key, default in DEFAULTS.items():
        conf[key] = os.environ.get("HOLDLESS_SIP_" + key.upper(), section.get(key, default)).strip()
    if not conf["stubs_dir"]:
        conf["stubs_dir"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
    return path, conf


def uri_user(uri):
    """The user part of a sip:/sips:/tel: URI, unescaped; '' when there is none."""
    if not uri:
        return ""
    uri = uri.strip().strip("<>")
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        user = rest.split(";", 1)[0]
    elif scheme in ("sip", "sips"):
        if "@" not in rest:
            return ""
        user = rest.split("@", 1)[0].split(";", 1)[0]
    else:
        return ""
    return urllib.parse.unquote(user)


def to_e164(user, bare_digits):
    """E.164 form of a SIP user part, or '' when it is not a usable number."""
    u = VISUAL_SEPARATORS.sub("", user or "")
    if u.startswith("00"):
        u = "+" + u[2:]
    elif bare_digits and BARE.fullmatch(u):
        u = "+" + u
    return u if E164.fullmatch(u) else ""


def holdless_call_id(sip_call_id):
    """holdless call ids allow letters, digits and . _ : @ - up to 128 bytes; any other
    SIP Call-ID is mapped to 'sip-' + the first 32 hex digits of its SHA-256."""
    if CALL_ID_OK.fullmatch(sip_call_id):
        return sip_call_id
    return "sip-" + hashlib.sha256(sip_call_id.encode("utf-8", "replace")).hexdigest()[:32]


def label(value):
    """A header value usable as a holdless label (tracking code), else ''."""
    value = (value or "").strip()
    if not value or len(value.encode()) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return ""
    return value


def header_value(value):
    """Keeps a value safe to put in a SIP header line."""
    return re.sub(r"[\x00-\x1f\x7f]", "", str(value))


def uri_header_param(value):
    """Escapes a value for a URI header (RFC 3261 hvalue)."""
    return urllib.parse.quote(value, safe="[]/?:+$-_.!~*'()")


class HoldlessRouter:
    def __init__(self):
        self.config_path, self.conf = load_config()
        self.deadline = max(1, int(self.conf["deadline_ms"])) / 1000.0
        self.bare_digits = self.conf["bare_digits_are_e164"].lower() in ("yes", "true", "1", "on")
        self.static = self.conf["mode"].lower() == "static"
        self.pid = None
        self.route_call = None
        self.pb = None
        self.latency_file = None
        self.latency_pid = None

    # -- gRPC, per worker process -------------------------------------------------------

    def client(self):
        if self.pid != os.getpid():
            if self.conf["stubs_dir"] not in sys.path:
                sys.path.insert(0, self.conf["stubs_dir"])
            import grpc
            from holdless.v1 import routing_pb2

            channel = grpc.insecure_channel(
                self.conf["holdless_address"],
                options=[
                    # Reconnect quickly once holdless is back (the default backoff
                    # grows to 120 s, failing calls open long after a restart).
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    ("grpc.enable_retries", 0),
                    ("grpc.keepalive_time_ms", 30000),
                    ("grpc.keepalive_timeout_ms", 5000),
                ],
            )
            self.pb = routing_pb2
            self.route_call = channel.unary_unary(
                "/holdless.v1.RoutingService/RouteCall",
                request_serializer=routing_pb2.RouteCallRequest.SerializeToString,
                response_deserializer=routing_pb2.RouteCallResponse.FromString,
            )
            self.pid = os.getpid()
        return self.route_call

    # -- Kamailio entry points ---------------------------------------------------------

    def child_init(self, rank):
        # SIP workers (rank > 0) load gRPC now rather than on their first call; rank 0
        # and below are the main and helper processes (some before the fork).
        if rank > 0 and not self.static:
            try:
                self.client()
            except Exception as e:
                KSR.err("holdless: cannot load the gRPC client: %s\n" % header_value(e)[:300])
        return 0

    def ksr_request_route(self, msg):
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.sanity.sanity_check(17895, 7) < 0:
            # sanity has already replied (or the message is too broken to answer)
            return 1
        if KSR.is_ACK():
            # The ACK of our 302 is absorbed by its transaction; nothing else to do.
            KSR.tm.t_check_trans()
            return 1
        if KSR.is_CANCEL():
            # Every INVITE gets its final answer within the deadline: nothing to cancel.
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        if KSR.is_OPTIONS():
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        if KSR.siputils.has_totag() > 0:
            # No dialogs live here: a redirect server never stays in the call.
            KSR.sl.sl_send_reply(481, "Call/Transaction Does Not Exist")
            return 1
        if not KSR.is_INVITE():
            KSR.hdr.append_to_reply("Allow: INVITE, ACK, CANCEL, OPTIONS\r\n")
            KSR.sl.sl_send_reply(405, "Method Not Allowed")
            return 1
        # Create the transaction first: a retransmitted INVITE is absorbed (and gets the
        # 302 again) instead of being routed twice.
        if KSR.tm.t_newtran() < 0:
            KSR.sl.sl_reply_error()
            return 1
        try:
            self.redirect()
        except Exception as e:  # a bug here must not leave the caller without an answer
            KSR.err("holdless: adapter error: %s; failing open\n" % header_value(e)[:300])
            self.fail_open(holdless_call_id(KSR.pv.gete("$ci")), "adapter_error")
        return 1

    # -- the decision ------------------------------------------------------------------

    def redirect(self):
        t0 = time.monotonic()
        try:
            self.decide_and_reply()
        finally:
            if self.conf["latency_log"]:
                self.record_latency(time.monotonic() - t0)

    def record_latency(self, secs):
        if self.latency_pid != os.getpid():
            self.latency_file = open("%s.%d" % (self.conf["latency_log"], os.getpid()), "a", buffering=1)
            self.latency_pid = os.getpid()
        self.latency_file.write("%d\n" % (secs * 1e6))

    def decide_and_reply(self):
        sip_call_id = KSR.pv.gete("$ci")
        call_id = holdless_call_id(sip_call_id)
        caller = to_e164(uri_user(KSR.pv.gete("$ai")), self.bare_digits) or to_e164(
            KSR.pv.gete("$fU"), self.bare_digits
        )
        dialed = to_e164(KSR.pv.gete("$rU"), self.bare_digits)
        tracking = label(KSR.pv.gete("$hdr(" + self.conf["campaign_header"] + ")"))

        if self.static:
            return self.fail_open(call_id, "static")
        started = time.monotonic()
        try:
            route_call = self.client()
            req = self.pb.RouteCallRequest(
                call_id=call_id,
                caller_number=caller,
                dialed_number=dialed,
                tracking_code=tracking,
            )
            # wait_for_ready: while holdless is unreachable the call waits (at most the
            # deadline) for a connection instead of failing at once; this is also what
            # makes the channel reconnect within about a second after a restart.
            decision = route_call(req, timeout=self.deadline, wait_for_ready=True).decision
        except Exception as e:  # grpc.RpcError, import errors, anything: fail open
            reason, detail = "error", str(e)
            try:
                reason, detail = e.code().name.lower(), e.details()
            except Exception:
                pass
            KSR.warn(
                "holdless: RouteCall failed (%s after %.1f ms): %s; failing open\n"
                % (reason, (time.monotonic() - started) * 1000, header_value(detail)[:300])
            )
            return self.fail_open(call_id, reason)

        queue_uri = decision.queue_contact_uri or self.template("queue_uri_template", "{queue}", decision.queue_id)
        if not queue_uri:
            KSR.warn("holdless: queue %s has no contact_uri; failing open\n" % decision.queue_id)
            return self.fail_open(call_id, "no_contact_uri")

        common = [
            ("X-Holdless-Call-Id", call_id),
            ("X-Holdless-Decision", decision.decision_id),
            ("X-Holdless-Queue", decision.queue_id),
        ]
        if decision.offer_callback and self.conf["callback_offer_uri"]:
            offer = "queue=%s;reason=%s;decision=%s;call-id=%s" % (
                decision.queue_id,
                OFFER_REASONS.get(decision.offer_reason, "unspecified"),
                decision.decision_id,
                call_id,
            )
            if decision.HasField("estimated_wait"):
                offer += ";ewt=%d" % decision.estimated_wait.seconds
            # The offer also rides in the Contact as a URI header, so a UAC following
            # the redirect carries it to the IVR (RFC 3261 19.1.5).
            contact = "%s?X-Holdless-Offer=%s" % (self.conf["callback_offer_uri"], uri_header_param(offer))
            self.reply([contact], common + [("X-Holdless-Offer", offer)])
            KSR.statistics.update_stat("holdless_callback_offers", 1)
            return
        extra = []
        if decision.offer_callback:
            extra.append(("X-Holdless-Offer", "queue=%s;reason=%s" % (
                decision.queue_id, OFFER_REASONS.get(decision.offer_reason, "unspecified"))))
        agent_uri = ""
        if decision.reserved_agent_id:
            agent_uri = self.template("agent_uri_template", "{agent}", decision.reserved_agent_id)
            extra.append(("X-Holdless-Agent", decision.reserved_agent_id))
        # The reserved agent first (q=1.0); the queue if the agent does not answer (q=0.5).
        contacts = [agent_uri, queue_uri] if agent_uri else [queue_uri]
        self.reply(contacts, common + extra)
        KSR.statistics.update_stat("holdless_routed", 1)

    def template(self, key, placeholder, value):
        t = self.conf[key]
        if not t:
            return ""
        return t.replace(placeholder, urllib.parse.quote(value, safe="-_.!~*'()"))

    def fail_open(self, call_id, reason):
        KSR.statistics.update_stat("holdless_fail_open", 1)
        self.reply(
            [self.conf["fail_open_uri"]],
            [("X-Holdless-Call-Id", call_id), ("X-Holdless-Fail-Open", reason)],
        )

    def reply(self, contacts, headers):
        """Answers 302 with `contacts`, a list of URIs (first preferred). Kamailio's tm
        writes the Contact header from the destination set: the Request-URI for one
        target, branches with q-values for several."""
        if len(contacts) == 1:
            KSR.pv.sets("$ru", contacts[0])
        else:
            for k, uri in enumerate(contacts):
                KSR.corex.append_branch_uri_q(uri, "%.1f" % max(0.1, 1.0 - 0.5 * k))
        for name, value in headers:
            KSR.hdr.append_to_reply("%s: %s\r\n" % (name, header_value(value)))
        KSR.tm.t_reply(302, "Moved Temporarily")


def mod_init():
    router = HoldlessRouter()
    KSR.info(
        "holdless: router loaded (config %s, holdless %s, deadline %d ms, mode %s)\n"
        % (router.config_path, router.conf["holdless_address"], router.deadline * 1000, router.conf["mode"])
    )
    return router
