"""Facebook Messenger Platform webhooks (`object: page`).

Source: Meta developer docs, Messenger Platform "Webhook Events Reference":
`messages`, `message_echoes`, `messaging_postbacks`, `message_deliveries`,
`message_reads`. Signed with `X-Hub-Signature-256: sha256=<hex>` over the body with
the app secret. Subscription check: `GET ...?hub.mode=subscribe&hub.verify_token=T&
hub.challenge=C` answers C when T is the configured verify token.

Mapping, for each `entry[].messaging[]` (and `standby[]`, the handover protocol's
copy for secondary receivers):
- `message` from the person (PSID) to the page: a customer message, inbound.
- `message` with `is_echo` (sent by the page): outbound; a bot's when its `app_id`
  is one of the configured bot ids, else an agent's (Meta does not say which person).
- `postback` (the person tapped a button): a customer click, inbound.
- deliveries, reads, reactions: no touchpoint, ignored.
- customer_id `messenger:<PSID>` (page-scoped), or `messenger:user_ref:<ref>` for a
  sender Meta names only by `user_ref` (the checkbox and chat plugins); conversation_id
  `messenger:<page id>:<PSID>`; event_id `messenger:<mid>`; occurred_at the event's
  `timestamp`: milliseconds as Meta sends it, seconds when below 1e11, numbers or
  strings.

Meta sends a page's feed changes to the same callback (`entry[].changes[]`), so this
endpoint is also the page's social channel (channel `social`, attribute `network`
facebook), after Meta "Webhooks for Pages", fields `feed` and `mention`:
- `feed` `item: comment`, `verb: add`, from a person: an inbound customer `message`,
  customer_id `facebook:<from.id>`, conversation `facebook:<page>:<thread>:<from.id>`
  (the thread is the top-level comment: `parent_id` when it is not the post, else the
  comment itself), event_id `facebook:<comment_id>`, at `created_time`.
- the same from the page itself (`from.id` is the page): the page's reply, an outbound
  agent `message` (Meta does not say which person) in the conversation of the comment it
  answers (`parent_id`). The feed names no customer for a reply, so the collector
  remembers the authors of the comments it has mapped (the latest 100,000); a reply to a
  comment it has not seen carries no touchpoint and says so.
- `feed` posts (`item` status, post, photo, video, share; `verb: add`) by a person on the
  page: an inbound customer `message` (conversation `facebook:<page>:post:<post_id>`);
  the page's own posts, reactions, edits and removals carry no touchpoint.
- `mention` (`verb: add`): a public post or comment naming the page, an inbound customer
  `message`, customer `facebook:<sender_id>`, conversation
  `facebook:<page>:mention:<post_id>`, at `created_time` or the entry's `time`.

Meta signs the body only (no timestamp): a replayed delivery has the same mids and comment
ids, so it maps to the same event_ids and is deduplicated downstream.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from touchstream.producers.mapping import (
    Mapped,
    MappingContext,
    PayloadError,
    Threads,
    from_unix,
    obj,
    stable_id,
    text,
)
from touchstream.producers.signatures import verify_hub
from touchstream.producers.webhook import Provider, WebhookRequest

RECEIPTS = ("delivery", "read", "reaction", "optin", "referral", "account_linking")
POSTS = ("status", "post", "photo", "video", "share")
SOCIAL = {"network": "facebook"}


def person_of(party: dict[str, Any]) -> str:
    """A page-scoped id, or `user_ref:<ref>` for a person Meta identifies only by the
    `user_ref` of a plugin (the checkbox plugin, chat plugin guests): its postbacks and
    opt-ins carry `sender.user_ref` and no `id`."""
    found = text(party, "id", required=False)
    if found is not None:
        return found
    ref = text(party, "user_ref", required=False)
    if ref is None:
        raise ValueError("id or user_ref is required")
    return f"user_ref:{ref}"


#: Below this a Messenger timestamp is in seconds (some integrations and older payloads
#: send seconds or strings); Meta's own are milliseconds, about 1.7e12 in 2026.
_SECONDS_BELOW = 1e11


def event_time(value: object) -> datetime:
    """`timestamp` in milliseconds, as Meta sends it, or in seconds, as a number or a
    string: told apart by magnitude (a seconds value is below 1e11 until the year 5138)."""
    try:
        number = (
            float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else None
        )
    except ValueError:
        number = None
    unit = 1000 if number is not None and number >= _SECONDS_BELOW else 1
    return from_unix(value, unit=unit, what="timestamp")


def event_fields(page_id: str, event: dict[str, Any], context: MappingContext) -> dict[str, Any] | str:
    """The touchpoint's fields, or why the event carries none."""
    if not isinstance(event.get("message"), dict) and not isinstance(event.get("postback"), dict):
        receipt = next((name for name in RECEIPTS if name in event), "unknown")
        return f"{receipt} event carries no touchpoint"
    sender = person_of(obj(event, "sender"))
    recipient = person_of(obj(event, "recipient"))
    occurred_at = event_time(event.get("timestamp"))
    message = event.get("message")
    if isinstance(message, dict):
        echo = message.get("is_echo") is True
        person = recipient if echo else sender
        app_id = text(message, "app_id", required=False)
        actor = ("bot" if app_id in context.bot_ids else "agent") if echo else "customer"
        fields = {
            "event_id": stable_id("messenger", text(message, "mid") or ""),
            "kind": "message",
            "direction": "outbound" if echo else "inbound",
            "actor": actor,
        }
    else:
        postback = obj(event, "postback")
        person = sender
        mid = text(postback, "mid", required=False) or f"postback:{sender}:{event.get('timestamp')}"
        fields = {"event_id": stable_id("messenger", mid), "kind": "click", "direction": "inbound",
                  "actor": "customer"}  # fmt: skip
    return {
        **fields,
        "occurred_at": occurred_at,
        "customer_id": stable_id("messenger", person),
        "channel": "messaging",
        "conversation_id": stable_id("messenger", page_id, person),
        "attributes": {"platform": "messenger"},
    }


def change_fields(
    page_id: str, sent: object, change: dict[str, Any], threads: Threads
) -> dict[str, Any] | str:
    """A page feed change's touchpoint (SPEC §4 social channel), or why it carries none."""
    field_name, value = change.get("field"), obj(change, "value")
    verb, item = value.get("verb"), value.get("item")
    if verb != "add":
        return f"{field_name} {item or 'change'} {verb or 'without a verb'} carries no touchpoint"
    when = from_unix(value.get("created_time", sent), what="created_time")
    inbound = {"kind": "message", "direction": "inbound", "actor": "customer", "channel": "social",
               "occurred_at": when, "attributes": SOCIAL}  # fmt: skip
    if field_name == "mention":
        sender, post = text(value, "sender_id") or "", text(value, "post_id") or ""
        mentioned = text(value, "comment_id", required=False) or post
        return {**inbound, "event_id": stable_id("facebook", "mention", mentioned),
                "customer_id": stable_id("facebook", sender),
                "conversation_id": stable_id("facebook", page_id, "mention", post)}  # fmt: skip
    if field_name != "feed":
        return f"{field_name} changes carry no touchpoint"
    author = text(obj(value, "from"), "id") or ""
    post = text(value, "post_id") or ""
    if item in POSTS:
        if author == page_id:
            return "the page's own post carries no touchpoint"
        return {**inbound, "event_id": stable_id("facebook", post),
                "customer_id": stable_id("facebook", author),
                "conversation_id": stable_id("facebook", page_id, "post", post)}  # fmt: skip
    if item != "comment":
        return f"feed {item or 'item'} carries no touchpoint"
    comment = text(value, "comment_id") or ""
    parent = text(value, "parent_id", required=False)
    if author == page_id:
        answered = threads.find(parent) if parent else None
        if answered is None:
            return f"the page's reply to comment {parent}: its author is not among the comments seen here"
        customer, conversation = answered
        return {**inbound, "event_id": stable_id("facebook", comment), "customer_id": customer,
                "conversation_id": conversation, "direction": "outbound", "actor": "agent"}  # fmt: skip
    thread = parent if parent and parent != post else comment
    customer = stable_id("facebook", author)
    conversation = stable_id("facebook", page_id, thread, author)
    threads.remember(comment, customer, conversation)
    return {**inbound, "event_id": stable_id("facebook", comment), "customer_id": customer,
            "conversation_id": conversation}  # fmt: skip


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    payload = request.json()
    if not isinstance(payload, dict) or payload.get("object") != "page":
        raise PayloadError('not a Messenger webhook (object must be "page")')
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("entry must be an array")
    mapped = Mapped(context.received_at, max_skew=context.max_skew)
    threads = context.threads if context.threads is not None else Threads()
    index = 0
    for entry in entries:
        page_id = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        events: list[Any] = [None]  # an entry that is not an object is one bad item
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if isinstance(changes, list) and page_id:
            for change in changes:
                if isinstance(change, dict):
                    mapped.take(index, partial(change_fields, page_id, entry.get("time"), change, threads))
                else:
                    mapped.reject(index, "each change must be an object")
                index += 1
            if not entry.get("messaging") and not entry.get("standby"):
                continue
        if isinstance(entry, dict):
            lists = [entry.get(key) for key in ("messaging", "standby")]
            events = [
                event for found in lists if found for event in (found if isinstance(found, list) else [None])
            ]
        for event in events:
            if isinstance(event, dict) and page_id:
                mapped.take(index, partial(event_fields, page_id, event, context))
            else:
                mapped.reject(index, "each entry needs an id and messaging events that are objects")
            index += 1
    return mapped


PROVIDER = Provider(
    kind="chat",
    name="messenger",
    verify=verify_hub("x-hub-signature-256", "sha256"),
    map=map_request,
    source="developers.facebook.com/docs/messenger-platform/webhooks (messages, message_echoes)",
)
