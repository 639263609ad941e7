"""Confirming the SNS subscription: a verified, stored SubscriptionConfirmation is
confirmed by a GET of its SubscribeURL (allow-listed SNS hosts only, 5 s timeout),
scheduled in the background so the gateway's answer is not delayed
(MSGSTATUS_SES_AUTO_CONFIRM=0 turns that off: confirm by hand with the URL then).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs, urlsplit

from processors.config import Settings
from processors.providers.base import (
    WebhookRequest,
)
from processors.providers.ses.certificates import sns_host
from processors.providers.ses.envelope import load_envelope, topic_arns

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 5.0


def subscribe_url(request: WebhookRequest) -> str | None:
    """The SubscribeURL of a SubscriptionConfirmation, only if it is an SNS confirm URL."""
    envelope = load_envelope(request.body)
    if envelope is None or envelope.get("Type") != "SubscriptionConfirmation":
        return None
    url = envelope.get("SubscribeURL")
    if sns_host(url) is None:
        return None
    query = parse_qs(urlsplit(url).query)
    if query.get("Action") != ["ConfirmSubscription"]:
        return None
    return url


def auto_confirm_url(request: WebhookRequest, settings: Settings) -> str | None:
    """Where the gateway should GET to confirm (call only after verify()), or None.

    None when MSGSTATUS_SES_AUTO_CONFIRM is 0/false/no/off, when the body is no
    SubscriptionConfirmation of an allow-listed topic, or its URL is not an SNS URL.
    """
    if not settings.provider_options.ses_auto_confirm:
        return None
    envelope = load_envelope(request.body)
    if envelope is None or envelope.get("TopicArn") not in topic_arns(settings):
        return None
    return subscribe_url(request)


async def confirm_subscription(url: str) -> bool:
    """GET the SubscribeURL (5 s timeout); logs the outcome, never raises."""
    import aiohttp

    host = sns_host(url)
    if host is None:
        log.warning("not confirming SNS subscription: URL is not an SNS URL")
        return False
    try:
        timeout = aiohttp.ClientTimeout(total=CONFIRM_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as answer,
        ):
            status = answer.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("SNS subscription confirmation via %s failed: %s", host, exc)
        return False
    if status == 200:
        log.warning("SNS subscription confirmed via %s", host)
        return True
    log.warning("SNS subscription confirmation via %s answered HTTP %s", host, status)
    return False


_BACKGROUND: set[asyncio.Task[bool]] = set()


def schedule_confirmation(request: WebhookRequest, settings: Settings) -> bool:
    """From the gateway, after a verified and stored request (its `after_stored` hook): a
    SubscriptionConfirmation is confirmed in the background, so the 200 is not delayed.
    MSGSTATUS_SES_AUTO_CONFIRM=0 turns it off."""
    url = auto_confirm_url(request, settings)
    if url is None:
        return False
    task = asyncio.get_running_loop().create_task(confirm_subscription(url))
    _BACKGROUND.add(task)  # keep a reference until done (the loop holds only weak ones)
    task.add_done_callback(_BACKGROUND.discard)
    return True
