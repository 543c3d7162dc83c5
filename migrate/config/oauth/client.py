"""The OAuth2 client library, loaded on first use, and its failures as our errors.

authlib over requests rather than hand-written HTTP: it implements every grant
we use (refresh, device code, authorization code with PKCE, RFC 7523 JWT
assertions, client credentials), client authentication and the error responses
of RFC 6749 section 5.2, and it follows the RFCs closely. Its requests
integration, not the httpx one: authlib marks plain httpx as deprecated. It is
an optional extra (``mailmigrate[oauth]``) because a password login needs none
of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from migrate.errors import AuthError, ConnectError, MailmigrateError, UsageError

EXTRA_HINT = "pip install 'mailmigrate[oauth]'"
#: Seconds for one request to an authorization server.
TIMEOUT = 30.0
#: What the server said when it refused: (RFC 6749 error code, description) -> our error.
Refusal = Callable[[str, str], MailmigrateError]


def requests_client() -> Any:
    """authlib's requests integration, or a one-line error naming the extra."""
    try:
        from authlib.integrations import requests_client
    except ImportError:
        raise UsageError(f"OAuth2 sign-in needs the optional extra: {EXTRA_HINT}") from None
    return requests_client


def tls_verify(cafile: str | None) -> str | bool:
    """What to trust for the authorization server: ``--cafile``, else the standard
    ``SSL_CERT_FILE`` (which requests itself does not read), else requests' default
    (``REQUESTS_CA_BUNDLE`` or certifi's bundle)."""
    return cafile or os.environ.get("SSL_CERT_FILE") or True


def oauth2_session(client_id: str, client_secret: str | None = None, *,
                   cafile: str | None = None, **kwargs: Any) -> Any:
    """An authlib ``OAuth2Session``: a public client sends only its id (PKCE or the
    device grant protect it); one with a secret sends it in the body, as both Google
    and Microsoft document."""
    method = "client_secret_post" if client_secret else "none"
    return requests_client().OAuth2Session(
        client_id, client_secret, token_endpoint_auth_method=method, default_timeout=TIMEOUT,
        verify=tls_verify(cafile), **kwargs)


def assertion_session(token_url: str, *, issuer: str, subject: str, scopes: tuple[str, ...],
                      key: str, key_id: str | None, cafile: str | None) -> Any:
    """An authlib ``AssertionSession`` for the JWT bearer grant (RFC 7523) as Google's
    service accounts use it: the scopes travel in the assertion's ``scope`` claim,
    ``sub`` is the mailbox the service acts for."""
    rc = requests_client()
    from joserfc.jwk import RSAKey  # authlib's JOSE library; a typed key, not a PEM string

    try:
        signing_key = RSAKey.import_key(key)
    except ValueError:
        raise UsageError(f"the private key of {issuer} is not an RSA key in PEM; download a new "
                         "JSON key for the service account") from None
    header = {"alg": "RS256", "typ": "JWT", **({"kid": key_id} if key_id else {})}
    return rc.AssertionSession(
        token_url, issuer=issuer, subject=subject, audience=token_url,
        claims={"scope": " ".join(scopes)}, key=signing_key, header=header,
        default_timeout=TIMEOUT, verify=tls_verify(cafile))


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


@contextlib.contextmanager
def token_request(url: str, refused: Refusal) -> Iterator[None]:
    """Around one request to ``url``: the server's refusal becomes ``refused(code,
    description)``; a network, TLS or HTTP failure a ConnectError (exit 4, retried by
    the transfer's retry wrapper like a dropped IMAP connection)."""
    import requests

    # The base of both error types: the sessions' OAuthError and the assertion
    # client's OAuth2Error; each carries the RFC 6749 error code and description.
    from authlib.common.errors import AuthlibBaseError

    host = host_of(url)
    try:
        yield
    except AuthlibBaseError as exc:
        raise refused(str(exc.error), short(exc.description)) from None
    except requests.exceptions.JSONDecodeError:
        raise ConnectError(f"the authorization server {host} answered with something that is not "
                           "JSON; check the preset's URLs") from None
    except requests.exceptions.SSLError:
        raise ConnectError(f"TLS certificate of the authorization server {host} is not trusted; "
                           "give --cafile (or set SSL_CERT_FILE) for a private CA") from None
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ConnectError(f"the authorization server {host} answered HTTP {status}; "
                           "try again later, or check the preset's token_url") from None
    except requests.exceptions.RequestException as exc:
        raise ConnectError(f"cannot reach the authorization server {host} ({type(exc).__name__}); "
                           "check the network and the preset's URLs") from None
    except ValueError:  # authlib: a body that is not a JSON object
        raise ConnectError(f"the authorization server {host} answered with something that is not "
                           "OAuth2 JSON; check the preset's URLs") from None


def short(text: object, limit: int = 160) -> str:
    """A server's error description, on one line and bounded (it is shown to the user)."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[:limit] + "…"


def refused_plainly(what: str) -> Refusal:
    """A Refusal for requests with no sign-in to redo (the device authorization request)."""

    def make(code: str, description: str) -> MailmigrateError:
        detail = f"{code}: {description}" if description else code
        return AuthError(f"the authorization server refused {what} ({detail})")

    return make


def access_token_of(token: dict[str, Any], host: str) -> tuple[str, float | None]:
    """(access token, lifetime in seconds or None) from a token response."""
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise ConnectError(f"the authorization server {host} sent a token response without an "
                           "access_token")
    expires = token.get("expires_in")
    return access, float(expires) if isinstance(expires, int | float) else None
