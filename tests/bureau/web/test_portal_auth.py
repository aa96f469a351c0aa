"""The portal's accounts in the app: anonymous requests, login, CSRF, roles, API tokens,
disabled accounts, the audit of admin actions, the language switch."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from joserfc.jwk import OKPKey
from portal_fixtures import ADMIN, EVALUATOR, FACTORY, PASSWORD, Portal, log_in

from agent.protocol.envelope import public_jwk
from bureau.accounts import Accounts
from bureau.registry import KeyRegistry
from bureau.store import SqlReportStore
from bureau.web.i18n import STRINGS

HTML = {"Accept": "text/html"}
TEMPLATES = Path(__file__).resolve().parents[3] / "bureau" / "web" / "templates"


def _accounts(portal: Portal) -> tuple[SqlReportStore, Accounts]:
    store = SqlReportStore(portal.db)
    return store, Accounts(store.db)


def _audit(portal: Portal) -> list[tuple[str, str, str]]:
    store, accounts = _accounts(portal)
    try:
        return [(r.username, r.action, r.target) for r in accounts.audit_rows()]
    finally:
        store.close()


def test_anonymous_gets_the_login_page_or_401(client: TestClient) -> None:
    """If nobody is logged in, then a browser asking for a page is sent to /login (and
    comes back after), while the API and downloads answer 401 with a Bearer challenge; no
    page shows factory data."""
    page = client.get(f"/factories/{FACTORY}?year=2025", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=%2Ffactories%2F{FACTORY}%3Fyear%3D2025"
    for path in ("/api/factories", f"/api/factories/{FACTORY}", "/factories",
                 f"/factories/{FACTORY}/evidence.html", f"/factories/{FACTORY}/evidence.zip",
                 f"/factories/{FACTORY}/evidence.pdf", "/audit", "/admin/keys"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
        assert FACTORY not in answer.text
    login = client.get("/login", headers=HTML)
    assert login.status_code == 200 and FACTORY not in login.text
    schema = client.get("/openapi.json").json()
    assert {"/api/factories", "/api/factories/{factory_id}", "/api/reports/{report_id}",
            "/api/keys", "/api/audit"} <= set(schema["paths"])


def test_login_needs_the_password_and_the_login_form_token(client: TestClient) -> None:
    """If the password is wrong, or the form's login token is missing (a cross-site login),
    then no session cookie is set; with both right, the session opens the pages."""
    page = client.get("/login", headers=HTML)
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token is not None
    wrong = client.post("/login", data={"username": EVALUATOR, "password": "not the one!",
                                        "login_csrf": token.group(1)})
    assert wrong.status_code == 303 and "failed=1" in wrong.headers["location"]
    assert "tieragent_session" not in client.cookies
    forged = client.post("/login", data={"username": EVALUATOR, "password": PASSWORD,
                                         "login_csrf": "guessed"})
    assert forged.status_code == 403 and "tieragent_session" not in client.cookies
    log_in(client, EVALUATOR)
    cookie = client.cookies.jar
    session = next(c for c in cookie if c.name == "tieragent_session")
    assert session.has_nonstandard_attr("HttpOnly")
    assert client.get("/factories", headers=HTML).status_code == 200


def test_evaluator_cannot_enrol_and_the_refusal_is_audited(
    client: TestClient, portal: Portal
) -> None:
    """If an evaluator posts the enrol form (with a valid CSRF token) or calls the API, then
    the answer is 403, no key is enrolled, and the audit has the refusal."""
    csrf = log_in(client, EVALUATOR)
    jwk = public_jwk(OKPKey.generate_key("Ed25519"))
    form = client.post("/admin/keys/enrol", data={
        "csrf_token": csrf, "factory_id": "intruder-1", "jwk": str(jwk).replace("'", '"')})
    assert form.status_code == 403
    api = client.post("/api/keys", json={"factory_id": "intruder-1", "jwk": jwk},
                      headers={"X-CSRF-Token": csrf})
    assert api.status_code == 403
    assert client.get("/admin/keys", headers=HTML).status_code == 403
    assert client.get("/audit", headers=HTML).status_code == 403
    store = SqlReportStore(portal.db)
    assert not KeyRegistry(store.db).known_factory("intruder-1")
    store.close()
    assert (EVALUATOR, "denied", "POST /admin/keys/enrol") in _audit(portal)
    assert (EVALUATOR, "denied", "POST /api/keys") in _audit(portal)


def test_admin_post_needs_the_session_csrf_token(client: TestClient, portal: Portal) -> None:
    """If an admin's browser posts without the session's CSRF token, or with another one,
    then it is refused (403) and nothing changes; with it, the key is enrolled and the
    audit has who enrolled which key."""
    csrf = log_in(client, ADMIN)
    jwk = public_jwk(OKPKey.generate_key("Ed25519"))
    body = {"factory_id": "new-factory-7", "jwk": str(jwk).replace("'", '"')}
    assert client.post("/admin/keys/enrol", data=body).status_code == 403
    assert client.post("/admin/keys/enrol",
                       data=body | {"csrf_token": csrf[:-2] + "xx"}).status_code == 403
    store = SqlReportStore(portal.db)
    assert not KeyRegistry(store.db).known_factory("new-factory-7")
    done = client.post("/admin/keys/enrol", data=body | {"csrf_token": csrf})
    assert done.status_code == 303
    keys = KeyRegistry(store.db).enrolled("new-factory-7")
    store.close()
    assert len(keys) == 1
    assert (ADMIN, "keys.enrol", f"new-factory-7 {keys[0].kid}") in _audit(portal)
    revoke = client.post("/admin/keys/revoke", data={"kid": keys[0].kid, "csrf_token": csrf})
    assert revoke.status_code == 303
    assert (ADMIN, "keys.revoke", f"new-factory-7 {keys[0].kid}") in _audit(portal)
    listed = client.get("/admin/keys", headers=HTML).text
    assert keys[0].kid in listed and "revoked" in listed


def test_api_tokens_for_scripts(client: TestClient, portal: Portal) -> None:
    """If a script sends `Authorization: Bearer` with a token made for a user, then it reads
    the API as that user (no CSRF token needed: no cookie is involved); an admin's token can
    enrol, an evaluator's cannot; a wrong token gets 401."""
    store, accounts = _accounts(portal)
    evaluator_token = accounts.new_api_token(EVALUATOR)
    admin_token = accounts.new_api_token(ADMIN)
    stored = [row[0] for row in store.db.rows("SELECT token_sha256 FROM api_tokens")]
    store.close()
    assert evaluator_token not in stored and admin_token not in stored  # kept hashed only
    listed = client.get("/api/factories",
                        headers={"Authorization": f"Bearer {evaluator_token}"})
    assert listed.status_code == 200
    assert [row["factory_id"] for row in listed.json()] == [FACTORY]
    assert client.get("/api/factories", headers={"Authorization": "Bearer tab_nope"}
                      ).status_code == 401
    jwk = public_jwk(OKPKey.generate_key("Ed25519"))
    refused = client.post("/api/keys", json={"factory_id": "script-f", "jwk": jwk},
                          headers={"Authorization": f"Bearer {evaluator_token}"})
    assert refused.status_code == 403
    enrolled = client.post("/api/keys", json={"factory_id": "script-f", "jwk": jwk},
                           headers={"Authorization": f"Bearer {admin_token}"})
    assert enrolled.status_code == 201, enrolled.text
    audit = client.get("/api/audit", headers={"Authorization": f"Bearer {admin_token}"})
    assert {"username": ADMIN, "action": "keys.enrol"}.items() <= audit.json()[0].items()


def test_a_disabled_account_loses_its_session_and_tokens(
    client: TestClient, portal: Portal
) -> None:
    """If an admin disables an account, then its open session and its API tokens stop
    working at once, and it cannot log in again."""
    store, accounts = _accounts(portal)
    token = accounts.new_api_token(EVALUATOR)
    store.close()
    log_in(client, EVALUATOR)
    with TestClient(client.app, follow_redirects=False) as admin_client:
        csrf = log_in(admin_client, ADMIN)
        done = admin_client.post("/admin/accounts/disable",
                                 data={"username": EVALUATOR, "csrf_token": csrf})
        assert done.status_code == 303
        assert (ADMIN, "accounts.disable", EVALUATOR) in _audit(portal)
    assert client.get("/factories", headers=HTML).status_code == 303
    assert client.get("/api/factories", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401
    store, accounts = _accounts(portal)
    assert accounts.authenticate(EVALUATOR, PASSWORD) is None
    store.close()


def test_admin_adds_an_account_with_an_argon2_hash(client: TestClient, portal: Portal) -> None:
    """If an admin adds an account, then its password is stored as an argon2 hash, the new
    user can log in, and the audit has the addition; a short password is refused."""
    csrf = log_in(client, ADMIN)
    short = client.post("/admin/accounts", data={"username": "eve2", "role": "evaluator",
                                                 "password": "short", "csrf_token": csrf})
    assert short.status_code == 400
    added = client.post("/admin/accounts", data={"username": "eve2", "role": "evaluator",
                                                 "password": "long enough pass",
                                                 "csrf_token": csrf})
    assert added.status_code == 303
    store = SqlReportStore(portal.db)
    digest = store.db.scalar("SELECT password_hash FROM users WHERE username = 'eve2'")
    store.close()
    assert digest.startswith("$argon2id$") and "long enough pass" not in digest
    assert (ADMIN, "accounts.add", "eve2 evaluator") in _audit(portal)
    with TestClient(client.app, follow_redirects=False) as other:
        log_in(other, "eve2", "long enough pass")


def test_language_switch(client: TestClient) -> None:
    """If the user follows the language link, then the pages come in English, and back in
    Chinese; every string the templates ask for is in the table, in both languages."""
    log_in(client, EVALUATOR)
    chinese = client.get("/factories", headers=HTML).text
    assert "<h1>工厂</h1>" in chinese and 'href="/lang/en?next=/factories"' in chinese
    switch = client.get("/lang/en?next=/factories", headers=HTML)
    assert switch.status_code == 303 and switch.headers["location"] == "/factories"
    english = client.get("/factories", headers=HTML).text
    assert "<h1>Factories</h1>" in english
    assert client.get("/lang/xx", headers=HTML).status_code == 404
    for elsewhere in ("//evil.example/", "/%09/evil.example/", "https://evil.example/"):
        answer = client.get(f"/lang/en?next={elsewhere}", headers=HTML)
        assert answer.headers["location"] == "/factories", elsewhere
    client.get("/lang/zh?next=/factories", headers=HTML)
    assert "<h1>工厂</h1>" in client.get("/factories", headers=HTML).text
    used = set()
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        used |= set(re.findall(r'(?<![\w.])t\("([a-z_]+)"\)', text))
    assert used and used <= set(STRINGS), used - set(STRINGS)
    assert all(zh and en and zh != key for key, (zh, en) in STRINGS.items())


def test_logout_needs_csrf_and_ends_the_session(client: TestClient) -> None:
    """If the logout form comes without the session's CSRF token, then the session stays;
    with it, the session ends."""
    csrf = log_in(client, EVALUATOR)
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/factories", headers=HTML).status_code == 303
