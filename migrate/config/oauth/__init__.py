"""OAuth2 built in: sign a user in once, or act for a whole domain as its admin.

* :mod:`.client` loads the OAuth2 client library (authlib, the optional
  ``mailmigrate[oauth]`` extra) and turns its failures into our errors;
* :mod:`.provider` says which authorization server, client and scopes an
  address or preset uses;
* :mod:`.flows` runs the sign-in: the device grant (RFC 8628) or the
  authorization code grant with PKCE and a loopback redirect (RFC 7636, 8252);
* :mod:`.store` keeps what a sign-in leaves: the refresh token in the system
  keyring (or a 0600 file when there is none), the rest in a small index;
* :mod:`.service` holds the admin grants: a Google service account with
  domain-wide delegation (JWT bearer, RFC 7523) and Microsoft 365 app-only
  access (client credentials);
* :mod:`.tokens` hands access tokens to :class:`~migrate.config.endpoints.PasswordSource`,
  cached per mailbox and refreshed before they expire, and decides when a
  command uses a stored sign-in by itself.

This is the one corner of ``config`` that talks to a server: an authorization
server, never a mail server. Nothing here imports authlib until a token is
really needed, so a password login pays nothing for it.
"""
