"""The sign-in grants and the token cache, against the real loopback authorization
server (tests/oauth_server.py): every state of the device grant (RFC 8628), the
authorization code grant with PKCE and its loopback redirect, refresh with
rotation, and the stored grant's files. The device grant's sleep and clock are
injected, so no test waits for an interval."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from cli_helpers import CliResult, cli_env, run_cli
from dovecot import free_ports, make_tls
from oauth_helpers import CLIENT_ID, browser, cli_login, write_presets
from oauth_server import AuthorizationServer
from test_jobs import job_env

from migrate.config.oauth.flows import SignIn, code_login, device_login
from migrate.config.oauth.provider import OAuthProvider
from migrate.config.oauth.store import (
    Grant,
    GrantSecret,
    find_grant,
    list_grants,
    read_private,
    read_secret,
    save_grant,
)
from migrate.config.oauth.tokens import GrantTokens
from migrate.config.profiles import validate
from migrate.errors import AuthError, UsageError

SCOPES = ("imap", "offline_access")


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MAILMIGRATE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MAILMIGRATE_OAUTH2_STORE", "file")
    return tmp_path / "config"


def provider(srv: AuthorizationServer, flow: str = "device") -> OAuthProvider:
    return OAuthProvider(id="testidp", name="Test IdP", token_url=srv.token_url,
                         authorization_url=f"{srv.base}/authorize", scopes=SCOPES,
                         mechanisms=("XOAUTH2",), flow=flow,
                         device_authorization_url=f"{srv.base}/device_authorization",
                         revocation_url=f"{srv.base}/revoke")


@pytest.fixture
def sign_in(authserver) -> SignIn:
    authserver.add_user("dev@idp.test")
    authserver.add_public_client("flows-app", SCOPES)
    return SignIn("dev@idp.test", provider(authserver), "flows-app", None, SCOPES)


class Scripted:
    """The device grant's sleep: records each wait and, at the n-th, does what the
    user (or the server) does meanwhile."""

    def __init__(self, actions: dict[int, object]) -> None:
        self.waits: list[float] = []
        self.actions = actions
        self.shown: list[str] = []

    def show(self, text: str) -> None:
        self.shown.append(text)

    @property
    def user_code(self) -> str:
        return self.shown[0].rsplit("code ", 1)[1]

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        action = self.actions.get(len(self.waits))
        if callable(action):
            action(self.user_code)


def test_device_grant_pending_then_slow_down_then_approved(authserver, sign_in):
    authserver.slow_down(1)
    script = Scripted({3: lambda code: authserver.approve(code, "dev@idp.test")})
    token = device_login(sign_in, script.show, sleep=script.sleep)
    assert token["access_token"] and token["refresh_token"]
    # poll 1: slow_down, so this and every later wait is 5 s longer (RFC 8628 3.5);
    # poll 2: authorization_pending; poll 3: approved.
    assert script.waits == [0.01, 5.01, 5.01]
    assert "enter the code" in script.shown[0] and "/device" in script.shown[0]


def test_device_grant_denied(authserver, sign_in):
    script = Scripted({2: authserver.deny})
    with pytest.raises(AuthError, match=r"was denied at Test IdP.*auth login dev@idp\.test"):
        device_login(sign_in, script.show, sleep=script.sleep)


def test_device_grant_expired_at_the_server(authserver, sign_in):
    script = Scripted({2: authserver.expire_device})
    with pytest.raises(AuthError, match=r"code for dev@idp\.test expired before it was approved"):
        device_login(sign_in, script.show, sleep=script.sleep)
    assert len(script.waits) == 2


def test_device_grant_gives_up_at_its_own_deadline(authserver, sign_in):
    """A server that never says expired_token: the client stops at expires_in."""
    now = [0.0]
    script = Scripted({})

    def sleep(seconds: float) -> None:
        script.sleep(seconds)
        now[0] += 301.0  # the server's codes live 600 s

    with pytest.raises(AuthError, match="expired before it was approved"):
        device_login(sign_in, script.show, sleep=sleep, clock=lambda: now[0])
    assert len(script.waits) == 2


def test_pkce_redirect_with_a_foreign_state_is_ignored(authserver, sign_in):
    """Only the redirect that carries our state back is taken; anything else that
    reaches the loopback listener gets a 404 and changes nothing."""
    foreign: list[int] = []

    def show(text: str) -> None:
        if text.startswith("http://"):
            def go() -> None:
                redirect_uri = text.split("redirect_uri=")[1].split("&")[0]
                listener = requests.utils.unquote(redirect_uri)
                foreign.append(requests.get(f"{listener}?code=stolen&state=other", timeout=10)
                               .status_code)
                browser("dev@idp.test")(text)
            threading.Thread(target=go, daemon=True).start()

    token = code_login(SignIn("dev@idp.test", provider(authserver, "code"), "flows-app", None,
                              SCOPES), show, open_browser=False, timeout=30)
    assert token["refresh_token"]
    assert foreign == [404]


def test_pkce_is_checked_by_the_server(authserver):
    """The code is worth nothing without the verifier behind its S256 challenge, so
    code_login passing means the verifier it sent matched the challenge."""
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    authserver.add_user("pkce@idp.test")
    authserver.add_public_client("pkce-app", SCOPES)
    redirect = "http://127.0.0.1:9/"

    def code() -> str:
        url = (f"{authserver.base}/authorize?response_type=code&client_id=pkce-app&state=s"
               f"&redirect_uri={redirect}&code_challenge_method=S256"
               f"&code_challenge={create_s256_code_challenge('v' * 50)}")
        consent = requests.post(url, data={"username": "pkce@idp.test", "decision": "allow"},
                                allow_redirects=False, timeout=10)
        return consent.headers["Location"].split("code=")[1].split("&")[0]

    def exchange(**verifier: str) -> dict[str, str]:
        return requests.post(authserver.token_url, data={
            "grant_type": "authorization_code", "client_id": "pkce-app", "code": code(),
            "redirect_uri": redirect, **verifier}, timeout=10).json()

    assert exchange(code_verifier="w" * 50)["error"] == "invalid_grant"
    assert exchange()["error"] == "invalid_request"
    assert "access_token" in exchange(code_verifier="v" * 50)


def test_missing_extra_is_one_line_naming_it(tmp_path):
    code = ("import sys; sys.modules['authlib'] = None; sys.argv = ['mailmigrate', 'auth', "
            "'login', 'x@outlook.com', '--client-id', 'x', '--no-browser']; "
            "from migrate.cli.main import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(MAILMIGRATE_CONFIG_DIR=str(tmp_path)), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("mailmigrate: error: OAuth2 sign-in needs the optional "
                                   "extra: pip install 'mailmigrate[oauth]'")


# -- refresh and the token cache -------------------------------------------------------
def stored(srv: AuthorizationServer, sign_in: SignIn, warn=lambda _: None) -> Grant:
    script = Scripted({1: lambda code: srv.approve(code, sign_in.address)})
    token = device_login(sign_in, script.show, sleep=script.sleep)
    grant = Grant(address=sign_in.address, provider="testidp", token_url=srv.token_url,
                  client_id=sign_in.client_id, scopes=list(SCOPES), store="keyring")
    return save_grant(grant, GrantSecret(token["refresh_token"]), warn)


def test_tokens_cached_then_refreshed_before_expiry_or_when_refused(config, sign_in):
    with AuthorizationServer(access_lifetime=600) as srv:
        srv.add_user(sign_in.address)
        srv.add_public_client(sign_in.client_id, SCOPES)
        grant = stored(srv, SignIn(sign_in.address, provider(srv), sign_in.client_id, None, SCOPES))
        now = [1000.0]
        tokens = GrantTokens(grant, clock=lambda: now[0])
        first, lifetime = tokens(False)
        assert lifetime == 600
        now[0] += 500  # 100 s left: still good
        assert tokens(False) == (first, 100)
        now[0] += 50  # 50 s left: inside the 60 s margin, so a new one before it is used
        second, _ = tokens(False)
        assert second != first
        third, _ = tokens(True)  # a server refused `second`: never hand it out again
        assert third != second
        assert tokens.refreshed == 3
        assert srv.token_requests[-3:] == ["refresh_token"] * 3
    assert find_grant(sign_in.address.upper()) == grant  # addresses are looked up case-blind


def test_rotated_refresh_token_is_kept(config, sign_in):
    with AuthorizationServer(rotate_refresh_tokens=True) as srv:
        srv.add_user(sign_in.address)
        srv.add_public_client(sign_in.client_id, SCOPES)
        sign_in = SignIn(sign_in.address, provider(srv), sign_in.client_id, None, SCOPES)
        grant = stored(srv, sign_in)
        old = read_secret(grant).refresh_token
        GrantTokens(grant)(False)
        new = read_secret(grant).refresh_token
        assert new != old
        assert srv.by_refresh[old].refresh_revoked  # the old one is dead at the server
        GrantTokens(grant)(False)  # so a second process needs the kept one, and has it


def test_grant_files_are_private_and_hold_no_secret_in_the_index(config, authserver, sign_in):
    warned: list[str] = []
    grant = stored(authserver, sign_in, warned.append)
    assert grant.store == "file"
    assert len(warned) == 1 and "WARNING: no system keyring here" in warned[0]
    oauth = config / "oauth2"
    assert stat.S_IMODE(oauth.stat().st_mode) == 0o700
    for name in ("accounts.json", "refresh-tokens.json"):
        assert stat.S_IMODE((oauth / name).stat().st_mode) == 0o600
    refresh = read_secret(grant).refresh_token
    assert refresh not in (oauth / "accounts.json").read_text()
    assert refresh in (oauth / "refresh-tokens.json").read_text()
    assert [g.address for g in list_grants()] == [sign_in.address]


def test_read_private_refuses_a_file_others_can_read(tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{}")
    os.chmod(key, 0o640)
    with pytest.raises(UsageError, match=r"readable by other users \(mode 640\); run `chmod 600"):
        read_private(key, "the key file")
    os.chmod(key, 0o600)
    assert read_private(key, "the key file") == "{}"


# -- presets -----------------------------------------------------------------------------
def preset(**oauth2: object) -> dict[str, object]:
    table = {"mechanisms": ["XOAUTH2"], "authorization_url": "https://idp.example/auth",
             "token_url": "https://idp.example/token", "scopes": ["mail"], **oauth2}
    return {"name": "X", "domains": ["x.example"], "login": "address",
            "imap": {"host": "imap.x.example", "port": 993, "tls": "implicit"}, "oauth2": table}


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/token", "http://localhost/token",
                                 "http://[::1]:9/token", "https://idp.corp.example/token"])
def test_preset_token_url_https_or_loopback_http(url):
    assert validate("x", preset(token_url=url)).oauth2 is not None


@pytest.mark.parametrize(("change", "message"), [
    ({"token_url": "http://idp.corp.example/token"}, "http:// only to a loopback address"),
    ({"device_authorization_url": "ftp://x/y"}, "device_authorization_url must be an https://"),
    ({"flow": "device"}, "needs a device_authorization_url"),
    ({"flow": "implicit"}, "flow must be one of device, code"),
    ({"client_secret": 7}, "'client_secret' must be a str"),
])
def test_preset_oauth2_table_is_checked(change, message):
    with pytest.raises(UsageError, match=message):
        validate("x", preset(**change))


# -- TLS to a corporate identity provider, and failures as one line ------------------
def test_https_identity_provider_trusted_with_cafile_or_ssl_cert_file(tmp_path, dovecot_as):
    ca, cert, key = make_tls(tmp_path / "tls")
    with AuthorizationServer(tls=(str(cert), str(key))) as srv:
        presets = write_presets(tmp_path / "profiles", srv, dovecot_as)
        srv.add_public_client(CLIENT_ID, SCOPES)
        home = tmp_path / "home"
        home.mkdir()
        env = job_env(home, MAILMIGRATE_PROFILES_DIR=str(presets))
        for var in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env.pop(var, None)  # only what the test gives is trusted
        for address in ("a@idp.test", "b@idp.test"):
            srv.add_user(address)

        untrusted = cli_login(env, "a@idp.test")
        assert untrusted.code == 4
        assert untrusted.err.strip() == (
            f"mailmigrate: error: TLS certificate of the authorization server 127.0.0.1:{srv.port} "
            "is not trusted; give --cafile (or set SSL_CERT_FILE) for a private CA")

        ok = cli_login(env, "a@idp.test", "--cafile", str(ca),
                       on_code=approve_on_device_page_tls(srv, "a@idp.test", ca))
        assert ok.code == 0, ok.err
        token = run_cli_env(env, "auth", "token", "a@idp.test")  # the refresh uses the stored CA
        assert token.code == 0, token.err

        by_env = cli_login({**env, "SSL_CERT_FILE": str(ca)}, "b@idp.test",
                           on_code=approve_on_device_page_tls(srv, "b@idp.test", ca))
        assert by_env.code == 0, by_env.err


def approve_on_device_page_tls(srv: AuthorizationServer, address: str, ca: Path):
    def act(user_code: str) -> None:
        requests.post(f"{srv.base}/device", data={"user_code": user_code, "username": address},
                      timeout=10, verify=str(ca))
    return act


def run_cli_env(env: dict[str, str], *args: str) -> CliResult:
    return run_cli(*args, env=env)


def test_unreachable_authorization_server_is_exit_4_in_one_line(tmp_path, dovecot_as):
    class Gone:  # a server that is not there: a free port nobody listens on
        base = f"http://127.0.0.1:{free_ports(1)[0]}"

    presets = write_presets(tmp_path / "profiles", Gone, dovecot_as)  # type: ignore[arg-type]
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli_env(job_env(home, MAILMIGRATE_PROFILES_DIR=str(presets)),
                         "auth", "login", "x@idp.test", "--no-browser")
    assert result.code == 4
    assert result.err.strip() == (f"mailmigrate: error: cannot reach the authorization server "
                                  f"{Gone.base.removeprefix('http://')} (ConnectionError); check "
                                  "the network and the preset's URLs")


def test_a_preset_without_client_id_says_so(tmp_path):
    result = run_cli_env(cli_env(MAILMIGRATE_CONFIG_DIR=str(tmp_path)), "auth", "login",
                         "me@outlook.com", "--no-browser")
    assert result.code == 2
    assert result.err.strip() == ("mailmigrate: error: the outlook preset names no OAuth2 client "
                                  "ID yet; give --client-id ID of an app you registered "
                                  "(docs/oauth2.md says how)")


def test_tenant_moves_microsoft_endpoints_off_common():
    from migrate.config.oauth.provider import provider_for

    outlook = provider_for("me@outlook.com", None).for_tenant("contoso.onmicrosoft.com")
    base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"
    assert (outlook.token_url, outlook.authorization_url, outlook.device_authorization_url) == \
        (f"{base}/token", f"{base}/authorize", f"{base}/devicecode")
    with pytest.raises(UsageError, match="the gmail preset has none"):
        provider_for("me@gmail.com", None).for_tenant("x")
