#!/usr/bin/env python3
"""Signs webhook requests the way each provider does, with the provider's own SDK.

Part of hookstream's provider conformance suite: run it with the Python of the venv that
./setup builds. It prints ONE JSON object on stdout:

    {"headers": {"Name": "value", ...}, "body": "<exact body to send>"}

plus "content_type" when the body is not JSON, and "url" when the request must go to a URL
other than the one given (twilio-json) or the URL is part of what was signed (twilio-form).
Send `body` as its UTF-8 bytes, unchanged. Before printing, the signature is checked with the
SDK's own verify function where the SDK has one; a failed check exits with status 2. Checks
that would reject an old (or future) --timestamp are narrowed to the signature or skipped,
and say so on stderr.

Usage: sign.py PROVIDER [--secret S] [--body BODY | --body-file F] [--timestamp UNIX_SECONDS]
                        [--url URL] [--id MSG_ID] [--username U] [--password P]
                        [--private-key-pem PEM | --private-key-file F]

Providers: stripe, slack, twilio-form, twilio-json, standardwebhooks, svix (clerk, resend),
paddle, sendgrid-keygen, sendgrid, sendgrid-known-answer, intercom, typeform, postmark.
"""

import argparse
import base64
import contextlib
import hashlib
import hmac
import importlib.metadata
import json
import os
import secrets as secrets_mod
import sys
import time
import urllib.parse
from datetime import datetime, timezone

PROVIDERS = (
    "stripe",
    "slack",
    "twilio-form",
    "twilio-json",
    "standardwebhooks",
    "svix",
    "paddle",
    "sendgrid-keygen",
    "sendgrid",
    "sendgrid-known-answer",
    "intercom",
    "typeform",
    "postmark",
)

# Secrets used when --secret is not given (test values, never real credentials).
DEFAULT_SECRETS = {
    "stripe": "whsec_hookstream_conformance_test_secret",
    "slack": "8f742231b10e8888abcd99yyyzzz85a5",
    "twilio-form": "12345678901234567890123456789012",
    "twilio-json": "12345678901234567890123456789012",
    "standardwebhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "svix": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "paddle": "pdl_ntfset_01hookstreamconformance_testsecret",
    "intercom": "hookstream-intercom-client-secret",
    "typeform": "hookstream-typeform-secret",
}

DEFAULT_URL = "http://127.0.0.1:8080/v1/ingest/default/twilio"

# SendGrid's own known-answer vector, from the sendgrid package's test suite
# (test/unit/test_eventwebhook.py, shipped in the sendgrid wheel): a real verification key,
# timestamp, payload (note the trailing CRLF) and signature.
SENDGRID_KAT_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw"
    "+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SENDGRID_KAT_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
)
SENDGRID_KAT_TIMESTAMP = "1600112502"
SENDGRID_KAT_EVENTS = [
    {
        "email": "hello@world.com",
        "event": "dropped",
        "reason": "Bounced Address",
        "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
        "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
        "timestamp": 1600112492,
    }
]


class CheckFailed(Exception):
    """The SDK's own verify function rejected what was just signed."""


def note(provider, message):
    print(f"sign.py {provider}: {message}", file=sys.stderr)


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def is_fresh(ts, window):
    return abs(time.time() - ts) <= window


def utc(ts):
    return datetime.fromtimestamp(ts, tz=timezone.utc)


# Default bodies: shaped like each provider's real payloads, with the id and timestamp given.


def default_body(provider, msg_id, ts):
    if provider == "stripe":
        return compact(
            {
                "id": "evt_" + msg_id.removeprefix("msg_"),
                "object": "event",
                "api_version": "2024-06-20",
                "created": ts,
                "type": "payment_intent.succeeded",
                "livemode": False,
                "data": {"object": {"id": "pi_3Hookstream", "object": "payment_intent", "amount": 2000}},
            }
        )
    if provider == "slack":
        return compact(
            {
                "token": "XXYYZZ",
                "team_id": "T0001",
                "api_app_id": "A0001",
                "type": "event_callback",
                "event_id": "Ev" + msg_id.removeprefix("msg_"),
                "event_time": ts,
                "event": {"type": "app_mention", "user": "U0001", "text": "hello", "ts": f"{ts}.000100"},
            }
        )
    if provider == "twilio-form":
        return urllib.parse.urlencode(
            [
                ("AccountSid", "AC00000000000000000000000000000000"),
                ("CallSid", "CA" + hashlib.sha256(msg_id.encode()).hexdigest()[:32]),
                ("CallStatus", "ringing"),
                ("From", "+15005550006"),
                ("To", "+15005550001"),
            ]
        )
    if provider == "twilio-json":
        return compact(
            {
                "AccountSid": "AC00000000000000000000000000000000",
                "MessageSid": "SM" + hashlib.sha256(msg_id.encode()).hexdigest()[:32],
                "MessageStatus": "delivered",
            }
        )
    if provider in ("standardwebhooks", "svix"):
        return compact({"type": "user.created", "timestamp": utc(ts).isoformat(), "data": {"id": msg_id}})
    if provider == "paddle":
        return compact(
            {
                "event_id": "evt_" + msg_id.removeprefix("msg_"),
                "event_type": "transaction.completed",
                "occurred_at": utc(ts).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "notification_id": "ntf_" + msg_id.removeprefix("msg_"),
                "data": {"id": "txn_01hookstream", "status": "completed"},
            }
        )
    if provider == "sendgrid":
        events = [
            {
                "email": "example@test.com",
                "event": "delivered",
                "sg_event_id": msg_id,
                "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
                "timestamp": ts,
            }
        ]
        # SendGrid ends its Event Webhook bodies with CRLF.
        return compact(events) + "\r\n"
    if provider == "intercom":
        return compact(
            {
                "type": "notification_event",
                "app_id": "hookstream",
                "id": "notif_" + msg_id.removeprefix("msg_"),
                "topic": "conversation.user.created",
                "created_at": ts,
                "data": {"item": {"type": "conversation", "id": "1"}},
            }
        )
    if provider == "typeform":
        return compact(
            {
                "event_id": msg_id,
                "event_type": "form_response",
                "form_response": {"form_id": "lT4Z3j", "submitted_at": utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")},
            }
        )
    if provider == "postmark":
        return compact(
            {
                "RecordType": "Delivery",
                "MessageID": msg_id,
                "Recipient": "john@example.com",
                "DeliveredAt": utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return "{}"


# Providers. Each returns the output object (headers, body, extras).


def sign_stripe(a):
    import stripe

    header = stripe.WebhookSignature.generate_signature_header(a.body, a.secret, timestamp=a.timestamp)
    fresh = is_fresh(a.timestamp, stripe.Webhook.DEFAULT_TOLERANCE)
    # tolerance=None makes the SDK check the signature but not the age.
    tolerance = stripe.Webhook.DEFAULT_TOLERANCE if fresh else None
    try:
        try:
            is_event = isinstance(json.loads(a.body), dict)
        except ValueError:
            is_event = False
        if is_event:
            stripe.Webhook.construct_event(a.body, header, a.secret, tolerance=tolerance)
            how = "stripe.Webhook.construct_event"
        else:
            stripe.WebhookSignature.verify_header(a.body, header, a.secret, tolerance)
            how = "stripe.WebhookSignature.verify_header (body is not a JSON object)"
    except stripe.SignatureVerificationError as e:
        raise CheckFailed(str(e)) from e
    a.checked = how + ("" if fresh else ", signature only: the timestamp is outside the 300 s tolerance")
    return {"headers": {"Stripe-Signature": header}, "body": a.body}


def sign_slack(a):
    from slack_sdk.signature import Clock, SignatureVerifier

    ts = str(a.timestamp)
    signature = SignatureVerifier(a.secret).generate_signature(timestamp=ts, body=a.body)
    fresh = is_fresh(a.timestamp, 300)
    clock = Clock()
    if not fresh:
        # The verifier takes its clock as a parameter: pinned to the timestamp, it checks the
        # signature of an old request.
        class Pinned(Clock):
            def now(self):
                return float(a.timestamp)

        clock = Pinned()
    if not SignatureVerifier(a.secret, clock=clock).is_valid(body=a.body, timestamp=ts, signature=signature):
        raise CheckFailed("SignatureVerifier.is_valid returned False")
    a.checked = "slack_sdk SignatureVerifier.is_valid" + (
        "" if fresh else " with its clock pinned to the timestamp (outside the 300 s window)"
    )
    return {"headers": {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}, "body": a.body}


class _FormParams(dict):
    """Form parameters with repeated names, in the QueryDict shape RequestValidator reads."""

    def getlist(self, name):
        return self[name]


def sign_twilio_form(a):
    from twilio.request_validator import RequestValidator

    params = _FormParams(urllib.parse.parse_qs(a.body, keep_blank_values=True))
    validator = RequestValidator(a.secret)
    signature = validator.compute_signature(a.url, params)
    if not validator.validate(a.url, params, signature):
        raise CheckFailed("RequestValidator.validate returned False")
    a.checked = "twilio RequestValidator.validate"
    return {
        "headers": {"X-Twilio-Signature": signature, "I-Twilio-Idempotency-Token": a.id},
        "body": a.body,
        "content_type": "application/x-www-form-urlencoded",
        "url": a.url,
    }


def sign_twilio_json(a):
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(a.secret)
    sep = "&" if urllib.parse.urlsplit(a.url).query else ("" if a.url.endswith("?") else "?")
    url = f"{a.url}{sep}bodySHA256={validator.compute_hash(a.body)}"
    signature = validator.compute_signature(url, {})
    if not validator.validate(url, a.body, signature):
        raise CheckFailed("RequestValidator.validate returned False")
    a.checked = "twilio RequestValidator.validate (with bodySHA256)"
    return {
        "headers": {"X-Twilio-Signature": signature, "I-Twilio-Idempotency-Token": a.id},
        "body": a.body,
        "url": url,
    }


def _sign_standard(a, webhook_cls, error_cls, prefix, sdk):
    wh = webhook_cls(a.secret)
    signature = wh.sign(a.id, utc(a.timestamp), a.body)
    headers = {f"{prefix}-id": a.id, f"{prefix}-timestamp": str(a.timestamp), f"{prefix}-signature": signature}
    if is_fresh(a.timestamp, 300):
        try:
            if sdk == "svix":
                wh.verify(a.body, headers)
            else:
                wh.verify(a.body, headers, json_parse=False)
        except error_cls as e:
            raise CheckFailed(str(e)) from e
        a.checked = f"{sdk} Webhook.verify"
    else:
        a.checked = f"skipped: {sdk} Webhook.verify rejects timestamps outside 5 minutes"
    return {"headers": headers, "body": a.body}


def sign_standardwebhooks(a):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    return _sign_standard(a, Webhook, WebhookVerificationError, "webhook", "standardwebhooks")


def sign_svix(a):
    from svix.webhooks import Webhook, WebhookVerificationError

    return _sign_standard(a, Webhook, WebhookVerificationError, "svix", "svix")


def sign_paddle(a):
    from paddle_billing.Notifications import PaddleSignature, Secret, Verifier

    digest = PaddleSignature.calculate_hmac(a.secret, f"{a.timestamp}:{a.body}".encode("utf-8")).hexdigest()
    header = f"ts={a.timestamp};h1={digest}"

    class Request:
        def __init__(self, body, headers):
            self.body = body
            self.headers = headers

    verifier = Verifier()
    fresh = is_fresh(a.timestamp, verifier.maximum_variance)
    os.environ.pop("TEST_MODE", None)  # it would override verify_time_drift
    request = Request(a.body.encode("utf-8"), {"Paddle-Signature": header})
    if not verifier.verify(request, Secret(a.secret), verify_time_drift=fresh):
        raise CheckFailed("paddle_billing Verifier.verify returned False")
    a.checked = "paddle_billing.Notifications.Verifier.verify" + (
        "" if fresh else " without its time-drift check (the timestamp is older than 5 s)"
    )
    return {"headers": {"Paddle-Signature": header}, "body": a.body}


def _public_key_b64(public_key):
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def sign_sendgrid_keygen(a):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    a.checked = None
    return {"private_key_pem": pem, "public_key": _public_key_b64(key.public_key())}


def sign_sendgrid(a):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from sendgrid.helpers.eventwebhook import EventWebhook
    from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

    pem = a.private_key_pem
    if a.private_key_file:
        try:
            with open(a.private_key_file, encoding="ascii") as f:
                pem = f.read()
        except OSError as e:
            raise SystemExit(f"sign.py sendgrid: cannot read --private-key-file: {e}") from e
    if pem:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise SystemExit("sign.py sendgrid: the private key must be an ECDSA P-256 key")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        note("sendgrid", "no --private-key-pem/--private-key-file: signed with a new key (see public_key)")
    ts = str(a.timestamp)
    signature = base64.b64encode(key.sign((ts + a.body).encode("utf-8"), ec.ECDSA(hashes.SHA256()))).decode("ascii")
    public_key = _public_key_b64(key.public_key())
    ew = EventWebhook()
    if not ew.verify_signature(a.body, signature, ts, ew.convert_public_key_to_ecdsa(public_key)):
        raise CheckFailed("EventWebhook.verify_signature returned False")
    a.checked = "sendgrid EventWebhook.verify_signature"
    return {
        "headers": {EventWebhookHeader.SIGNATURE: signature, EventWebhookHeader.TIMESTAMP: ts},
        "body": a.body,
        "public_key": public_key,
    }


def sign_sendgrid_known_answer(a):
    from sendgrid.helpers.eventwebhook import EventWebhook
    from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

    body = json.dumps(SENDGRID_KAT_EVENTS, sort_keys=True, separators=(",", ":")) + "\r\n"
    ew = EventWebhook()
    key = ew.convert_public_key_to_ecdsa(SENDGRID_KAT_PUBLIC_KEY)
    if not ew.verify_signature(body, SENDGRID_KAT_SIGNATURE, SENDGRID_KAT_TIMESTAMP, key):
        raise CheckFailed("EventWebhook.verify_signature rejected SendGrid's own test vector")
    checked = "sendgrid EventWebhook.verify_signature on the SDK's test vector"
    # When the installed wheel ships its test file, confirm the vector is the same one.
    try:
        files = importlib.metadata.files("sendgrid") or []
        test_file = next((f for f in files if str(f).endswith("test/unit/test_eventwebhook.py")), None)
        if test_file is not None:
            text = test_file.read_text()
            for value in (SENDGRID_KAT_PUBLIC_KEY, SENDGRID_KAT_SIGNATURE, SENDGRID_KAT_TIMESTAMP):
                if value not in text:
                    raise CheckFailed(f"{test_file} does not contain {value[:24]}...")
            checked += f", same as {test_file}"
    except importlib.metadata.PackageNotFoundError:
        pass
    a.checked = checked
    return {
        "public_key": SENDGRID_KAT_PUBLIC_KEY,
        "headers": {EventWebhookHeader.SIGNATURE: SENDGRID_KAT_SIGNATURE, EventWebhookHeader.TIMESTAMP: SENDGRID_KAT_TIMESTAMP},
        "body": body,
    }


def sign_intercom(a):
    digest = hmac.new(a.secret.encode("utf-8"), a.body.encode("utf-8"), hashlib.sha1).hexdigest()
    a.checked = "none: Intercom ships no signing SDK (documented scheme: sha1= hex HMAC-SHA1 of the body)"
    return {"headers": {"X-Hub-Signature": f"sha1={digest}"}, "body": a.body}


def sign_typeform(a):
    digest = hmac.new(a.secret.encode("utf-8"), a.body.encode("utf-8"), hashlib.sha256).digest()
    a.checked = "none: Typeform ships no signing SDK (documented scheme: sha256= base64 HMAC-SHA256 of the body)"
    return {"headers": {"Typeform-Signature": "sha256=" + base64.b64encode(digest).decode("ascii")}, "body": a.body}


def sign_postmark(a):
    token = base64.b64encode(f"{a.username}:{a.password}".encode("utf-8")).decode("ascii")
    a.checked = "none: Postmark does not sign; Basic auth credentials in the webhook URL"
    return {"headers": {"Authorization": f"Basic {token}"}, "body": a.body}


SIGNERS = {
    "stripe": sign_stripe,
    "slack": sign_slack,
    "twilio-form": sign_twilio_form,
    "twilio-json": sign_twilio_json,
    "standardwebhooks": sign_standardwebhooks,
    "svix": sign_svix,
    "paddle": sign_paddle,
    "sendgrid-keygen": sign_sendgrid_keygen,
    "sendgrid": sign_sendgrid,
    "sendgrid-known-answer": sign_sendgrid_known_answer,
    "intercom": sign_intercom,
    "typeform": sign_typeform,
    "postmark": sign_postmark,
}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="sign.py",
        description="Sign a webhook request with the provider's own SDK; prints one JSON object.",
    )
    p.add_argument("provider", choices=PROVIDERS)
    p.add_argument("--secret", help="signing secret (default: a fixed test secret per provider)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="exact request body (default: a sample payload of the provider)")
    body.add_argument("--body-file", help="read the exact request body from this UTF-8 file")
    p.add_argument("--timestamp", type=int, help="unix seconds (default: now)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"URL the request is sent to (twilio; default {DEFAULT_URL})")
    p.add_argument("--id", help="message/delivery id (default: random msg_...)")
    p.add_argument("--username", default="postmark", help="postmark Basic auth user (default postmark)")
    p.add_argument("--password", default="hookstream-test", help="postmark Basic auth password")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--private-key-pem", help="sendgrid: PEM of the ECDSA P-256 private key")
    key.add_argument("--private-key-file", help="sendgrid: file holding that PEM")
    a = p.parse_args(argv)
    if a.timestamp is None:
        a.timestamp = int(time.time())
    if a.id is None:
        a.id = "msg_" + secrets_mod.token_hex(12)
    if a.secret is None:
        a.secret = DEFAULT_SECRETS.get(a.provider, "")
    if a.body_file is not None:
        try:
            with open(a.body_file, encoding="utf-8", newline="") as f:
                a.body = f.read()
        except (OSError, UnicodeDecodeError) as e:
            p.error(f"cannot read --body-file: {e}")
    if a.body is None:
        a.body = default_body(a.provider, a.id, a.timestamp)
    a.checked = None
    return a


def main(argv):
    a = parse_args(argv)
    try:
        # SDK code must not write to stdout: the one JSON object is all it carries.
        with contextlib.redirect_stdout(sys.stderr):
            out = SIGNERS[a.provider](a)
    except CheckFailed as e:
        note(a.provider, f"self-check FAILED: {e}")
        return 2
    if a.checked:
        note(a.provider, f"self-check passed: {a.checked}" if not a.checked.startswith(("skipped", "none")) else f"self-check {a.checked}")
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
