"""Out-of-dialog MESSAGE requests the gateway originates (RFC 3428): the security
desk's notice of an emergency call (issue 14 item 6).

The adapter asks with :meth:`OutOfDialogMessages.send_message`, which builds the
request (gateway.sip.builders.build_message), starts a non-INVITE client transaction
and returns its key at once: nothing waits for the answer. The final response, or
the transaction's timeout or transport failure, comes back later as one
:class:`gateway.b2bua.events.MessageDone` carrying that key (RFC 3261 17.1.3 matches
the response to the transaction by branch and method). Provisional responses are
ignored (RFC 3428 section 7: a 1xx to MESSAGE only stops retransmissions).
"""

from __future__ import annotations

from mypy_extensions import trait

from gateway.b2bua.events import MessageDone
from gateway.b2bua.host import B2buaHost
from gateway.sip.builders import build_message
from gateway.sip.events import Endpoint, TransactionKey, TransactionTimedOut, TransportFailed
from gateway.sip.message import Response


@trait
class OutOfDialogMessages(B2buaHost):
    """Mixed into :class:`gateway.b2bua.core.B2bua`."""

    def send_message(
        self,
        request_uri: str,
        destination: Endpoint,
        body: bytes,
        now: float,
        *,
        content_type: str = "text/plain;charset=UTF-8",
    ) -> TransactionKey:
        """Sends a MESSAGE outside any dialog; its outcome arrives as
        :class:`MessageDone`.

        Args:
            request_uri: the recipient (a ``sip:``/``sips:`` URI).
            destination: the next hop it resolved to (RFC 3263).
            body: the content.
            now: current time in seconds.
            content_type: the body's media type (RFC 3428 section 5).

        Returns:
            The client transaction's key, which the :class:`MessageDone` carries.
        """
        local = self.layer._local_for(destination)
        from_value = f"<sip:{self.contact_user}@{local.host_port}>;tag={self.new_token()}"
        request = build_message(
            request_uri,
            from_value=from_value,
            call_id=self.new_token() + "@voipgw",
            body=body,
            content_type=content_type,
        )
        key = self.layer.send_request(request, destination, now)
        self._messages.add(key)
        return key

    def _message_response(self, key: TransactionKey, response: Response) -> None:
        """Reports the final response of a MESSAGE of ours (others are not ours)."""
        if response.status >= 200 and key in self._messages:
            self._messages.discard(key)
            self._events.append(
                MessageDone(transaction=key, status=response.status, reason=response.reason)
            )

    def _message_failed(self, event: TransactionTimedOut | TransportFailed) -> None:
        """Reports a MESSAGE of ours that got no final response (others are not ours)."""
        key = event.transaction
        if key in self._messages:
            self._messages.discard(key)
            reason = "timeout" if isinstance(event, TransactionTimedOut) else "transport error"
            self._events.append(MessageDone(transaction=key, status=None, reason=reason))
