"""Every webhook provider the collector serves, by route (`<kind>/<provider>`)."""

from __future__ import annotations

from producers import helpdesk, surveys, zendesk
from producers.chat import generic as chat_generic
from producers.chat import intercom, messenger
from producers.email import mailgun, sendgrid
from producers.webhook import Provider

PROVIDERS: dict[str, Provider] = {
    provider.route: provider
    for provider in (
        chat_generic.PROVIDER,
        intercom.PROVIDER,
        messenger.PROVIDER,
        mailgun.PROVIDER,
        sendgrid.PROVIDER,
        surveys.PROVIDER,
        helpdesk.PROVIDER,
        zendesk.PROVIDER,
    )
}
