"""Every webhook provider the collector serves, by route (`<kind>/<provider>`)."""

from __future__ import annotations

from touchstream.producers import helpdesk, surveys, zendesk
from touchstream.producers.chat import generic as chat_generic
from touchstream.producers.chat import intercom, messenger
from touchstream.producers.email import mailgun, sendgrid
from touchstream.producers.webhook import Provider

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
