"""The bureau portal's accounts: users, browser sessions, API tokens and the audit table.

Tables live in the bureau database beside the reports (bureau.database, SQLite or
PostgreSQL); their schema is the migration bureau/migrations/versions/0002_accounts.py. SQL
with named parameters, the style of bureau.registry.

- users: username, role (evaluator reads; admin also enrols and revokes keys and manages
  accounts), an argon2 hash of the password (argon2-cffi), a disabled flag.
- sessions: a random token in an HttpOnly cookie; the table keeps only its SHA-256 (a copy
  of the database gives no live session), the user, the per-session CSRF token that every
  POST form carries, and the expiry.
- api_tokens: random tokens for scripts (`Authorization: Bearer`), kept as SHA-256 only,
  shown once when made.
- audit: who did what to which target and when; written for every evidence download and
  every admin action, read by admins.

Tokens are 32 random bytes, so a plain SHA-256 is enough to store them (passwords, which
people choose, get argon2). A disabled user's sessions and tokens stop working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bureau.database import Database
from bureau.errors import BureauError

ROLES = ("evaluator", "admin")
SESSION_TTL_S = 8 * 3600.0
MIN_PASSWORD = 10
TOKEN_PREFIX = "tab_"  # recognisable in a secrets scanner

class AccountError(BureauError):
    """An account operation that cannot be done; str() says why and what to do."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    disabled: bool
    created_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf_token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    username: str
    action: str
    target: str
    at: float


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError(
            f"Username {username!r}: use 1 to 64 letters, digits and . _ - @ only."
        )
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"The password must have at least {MIN_PASSWORD} characters.")


class Accounts:
    """Users, sessions, API tokens and the audit on the bureau database connection `db`."""

    def __init__(self, db: Database, hasher: PasswordHasher | None = None) -> None:
        self.db = db
        self.hasher = hasher or PasswordHasher()

    # ---- users ---------------------------------------------------------------------------

    def add_user(self, username: str, role: str, password: str) -> User:
        name = check_username(username)
        if role not in ROLES:
            raise AccountError(f"Role {role!r} is not one of {', '.join(ROLES)}.")
        check_password(password)
        if self.user(name) is not None:
            raise AccountError(f"User {name!r} exists already.")
        self.db.execute(
            "INSERT INTO users (username, role, password_hash, disabled, created_at) "
            "VALUES (:username, :role, :password_hash, 0, :created_at)",
            {"username": name, "role": role, "password_hash": self.hasher.hash(password),
             "created_at": time.time()},
        )
        user = self.user(name)
        assert user is not None
        return user

    def user(self, username: str) -> User | None:
        row = self.db.row(
            "SELECT username, role, disabled, created_at FROM users WHERE username = :username",
            {"username": username},
        )
        return User(row[0], row[1], bool(row[2]), row[3]) if row else None

    def users(self) -> list[User]:
        rows = self.db.rows(
            "SELECT username, role, disabled, created_at FROM users ORDER BY username"
        )
        return [User(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def disable(self, username: str) -> User:
        if self.user(username) is None:
            raise AccountError(f"No user {username!r}.")
        with self.db.transaction():
            self.db.execute("UPDATE users SET disabled = 1 WHERE username = :username",
                            {"username": username})
            self.db.execute("DELETE FROM sessions WHERE username = :username",
                            {"username": username})
        user = self.user(username)
        assert user is not None
        return user

    def authenticate(self, username: str, password: str) -> User | None:
        """The user when the password matches and the account is enabled, else None."""
        stored = self.db.scalar(
            "SELECT password_hash FROM users WHERE username = :username", {"username": username}
        )
        if stored is None:
            # Hash anyway, so a missing user takes as long as a wrong password.
            self.hasher.hash(password)
            return None
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(stored):
            self.db.execute(
                "UPDATE users SET password_hash = :password_hash WHERE username = :username",
                {"password_hash": self.hasher.hash(password), "username": username},
            )
        user = self.user(username)
        return user if user is not None and not user.disabled else None

    # ---- sessions ------------------------------------------------------------------------

    def open_session(self, user: User, ttl_s: float = SESSION_TTL_S) -> tuple[str, Session]:
        """A new session for `user`: (the cookie token, shown only now; the session)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(32), now + ttl_s)
        with self.db.transaction():
            self.db.execute("DELETE FROM sessions WHERE expires_at < :now", {"now": now})
            self.db.execute(
                "INSERT INTO sessions (token_sha256, username, csrf_token, created_at, "
                "expires_at) VALUES (:token_sha256, :username, :csrf_token, :created_at, "
                ":expires_at)",
                {"token_sha256": token_sha256(token), "username": user.username,
                 "csrf_token": session.csrf_token, "created_at": now,
                 "expires_at": session.expires_at},
            )
        return token, session

    def session(self, token: str) -> Session | None:
        """The live session of a cookie token (None: unknown, expired or user disabled)."""
        row = self.db.row(
            "SELECT u.username, u.role, u.disabled, u.created_at, s.csrf_token, s.expires_at "
            "FROM sessions s JOIN users u ON u.username = s.username "
            "WHERE s.token_sha256 = :token_sha256",
            {"token_sha256": token_sha256(token)},
        )
        if row is None or row[2] or row[5] < time.time():
            return None
        return Session(User(row[0], row[1], bool(row[2]), row[3]), row[4], row[5])

    def close_session(self, token: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE token_sha256 = :token_sha256",
                        {"token_sha256": token_sha256(token)})

    # ---- API tokens ----------------------------------------------------------------------

    def new_api_token(self, username: str) -> str:
        """A new API token for `username`, returned once (only its hash is kept)."""
        user = self.user(username)
        if user is None:
            raise AccountError(f"No user {username!r}.")
        if user.disabled:
            raise AccountError(f"User {username!r} is disabled.")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.db.execute(
            "INSERT INTO api_tokens (token_sha256, username, created_at) "
            "VALUES (:token_sha256, :username, :created_at)",
            {"token_sha256": token_sha256(token), "username": username,
             "created_at": time.time()},
        )
        return token

    def token_user(self, token: str) -> User | None:
        """The enabled user an API token belongs to, or None."""
        digest = token_sha256(token)
        row = self.db.row(
            "SELECT t.token_sha256, u.username, u.role, u.disabled, u.created_at "
            "FROM api_tokens t JOIN users u ON u.username = t.username "
            "WHERE t.token_sha256 = :token_sha256",
            {"token_sha256": digest},
        )
        if row is None or not hmac.compare_digest(row[0], digest) or row[3]:
            return None
        self.db.execute(
            "UPDATE api_tokens SET last_used_at = :now WHERE token_sha256 = :token_sha256",
            {"now": time.time(), "token_sha256": digest},
        )
        return User(row[1], row[2], bool(row[3]), row[4])

    # ---- audit ---------------------------------------------------------------------------

    def audit(self, username: str, action: str, target: str) -> None:
        self.db.execute(
            "INSERT INTO audit (username, action, target, at) "
            "VALUES (:username, :action, :target, :at)",
            {"username": username, "action": action, "target": target[:500], "at": time.time()},
        )

    def audit_rows(self, limit: int = 500, action: str | None = None) -> list[AuditRow]:
        """The newest audit rows first (only those of `action` when given)."""
        params: dict[str, str | int] = {"limit": limit}
        where = ""
        if action is not None:
            where, params["action"] = " WHERE action = :action", action
        rows = self.db.rows(
            f"SELECT id, username, action, target, at FROM audit{where} "
            "ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [AuditRow(*row) for row in rows]
