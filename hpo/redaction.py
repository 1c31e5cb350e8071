"""Passwords kept out of everything printed or logged: :func:`redact`, which every message, param, tag,
artifact and plan line passes through.

Three layers, since none is enough alone:

* the password of any ``scheme://user:password@host`` URL, whatever its characters: it runs to the last
  ``@`` before the host, as ``@`` and ``:`` in passwords are common and drivers disagree on where to split;
* secret parameters, by name, in a query string (``?password=``), a libpq key/value string
  (``host=h password=x``) or an ODBC string (``UID=u;PWD=x``): see ``_SECRET_NAME``;
* known secrets, for text that looks like no URL at all: a driver that splits the user info at the
  wrong ``@`` quotes the rest of the password as a host (libpq: ``could not translate host name
  "SECRET@host"``). Every URL the program is configured with is registered (:func:`register_secrets`),
  and whatever the first two layers would hide in it, URL-decoded too, and the pieces a wrong split at
  ``@`` or ``:`` leaves, is replaced wherever it appears. Such a secret hides the same word elsewhere
  too (a password that is also the database's name hides the name): the price of never printing it.

Stdlib only, so that the lowest layer of :mod:`hpo` stays cheap to import.
"""
from __future__ import annotations

import re
import threading
from urllib.parse import unquote, unquote_plus

_MASK = "***"
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.-]*://"
# The password of scheme://user:password@host, which may hold '@', ':', '/' or '?': it runs to the '@' after which
# the host runs to a '/', '?', '#', a quote, a space or the end without another '@'. (In "u:a@b/c@host" that makes
# the password "a" and the host "b": a password with both '@' and '/' needs its '/' written %2F.)
_CREDENTIALS = re.compile(rf"(?P<keep>{_SCHEME}[^:/@\s]*:)(?P<secret>\S*?)(?=@[^@/?#\s\"']*(?:[/?#\s\"']|$))")
# Parameters the drivers take as secrets, by the end of their name (any case):
# * password, passwd, pwd: libpq's password and sslpassword (the passphrase of the client key), psycopg's and
#   SQLAlchemy's password, the MySQL drivers' passwd, ODBC's PWD, and any *_password or *_pwd of other
#   dialects (Snowflake's private_key_file_pwd);
# * secret, token: libpq 18's oauth_client_secret, OAuth's client_secret and access_token, the tokens of an
#   MLflow server behind a proxy, AWS's X-Amz-Security-Token in presigned artifact URLs;
# * signature, sig: presigned artifact URLs (S3's X-Amz-Signature, GCS's X-Goog-Signature, Azure's SAS sig);
# * api_key, apikey.
# Not sslkey, sslcert or passfile: they name files, not secrets.
_SECRET_NAME = r"[\w.-]*(?:password|passwd|pwd|secret|token|signature)|sig|api[_-]?key"
# name=value after the start, a space or a separator of a query string (?, &) or connection string (;); the value
# runs to the next of these (or a quote), or is quoted in libpq's way ('a value').
_SECRET_PARAMETER = re.compile(
    rf"(?P<keep>(?:^|(?<=[\s?&;]))(?:{_SECRET_NAME})\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&;#\"']*)", re.IGNORECASE)
_LAYERS = (_CREDENTIALS, _SECRET_PARAMETER)
# Registered secrets and the pieces of them shorter than this are not replaced everywhere: they would hit
# ordinary words ("db", "pw"), and give little away.
_MIN_KNOWN = 4

_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***``: of URLs, of secret parameters, and every
    registered secret (see the module's documentation)."""
    for layer in _LAYERS:
        text = layer.sub(rf"\g<keep>{_MASK}", text)
    pattern = _known_pattern  # read once: another thread may register meanwhile
    return pattern.sub(_MASK, text) if pattern is not None else text


def register_secrets(*urls: str) -> None:
    """Replace the secrets of these configured URLs wherever :func:`redact` finds them from now on, in this process.

    Each secret counts as written, URL-decoded (``%40`` is ``@``; ``+`` a space in query strings), and as each
    piece between its ``@`` and ``:`` signs: a driver that splits the URL at the wrong one shows the rest.
    """
    global _known_pattern
    found = {match["secret"] for url in urls for layer in _LAYERS for match in layer.finditer(url)}
    forms = {form for secret in found for form in (secret, unquote(secret), unquote_plus(secret))}
    pieces = {piece for form in forms for piece in (form, *re.split("[@:]", form)) if len(piece) >= _MIN_KNOWN}
    with _lock:
        if pieces <= _known:
            return
        _known.update(pieces)
        # Longest first, so that a whole password is one *** rather than one per piece.
        _known_pattern = re.compile("|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True)))
