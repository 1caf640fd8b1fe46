"""Accounts: several API keys per emulated cloud, each its own namespace.

Every cloud starts with one account, ``"default"``, whose key is
``sandbox_key(cloud)``. ``sb.add_account(cloud)`` (or ``POST S/_control/accounts``)
adds another with its own key. A cloud's auth check turns the presented key into
an ``Account`` and serves the request inside ``acting_as(account)``; its stores
stamp every resource they create with ``owner()`` and hide every resource of
another account with ``visible(...)``: a list leaves it out, and a get, stop, start
or delete of its id answers exactly what the cloud answers for an unknown id, since
the store raises its own "not found" for it. That is how the real clouds behave: an
id from someone else's account is simply not there (RunPod, Vast, Lambda and Fly
all scope every resource to the key's account or organisation).

Outside a request (a test reading ``sb.runpod.pods``) no account is acting, and the
stores show everything, so the test helpers see every account's resources.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["DEFAULT", "Account", "Accounts", "acting_as", "current", "owner", "visible"]

DEFAULT = "default"
"""The id of every cloud's first account (its key is ``sandbox_key(cloud)``)."""


@dataclass(frozen=True)
class Account:
    """One account of one emulated cloud.

    Attributes:
        key: the API key that authenticates as this account (not a secret).
        id: the account's id, ``"default"`` for the first one. RunPod's GraphQL
            ``myself { id }`` answers it.
        number: the account's numeric user id (1 for the default account), which
            Vast's ``GET /api/v0/users/current/`` answers as ``id``.
    """

    key: str
    id: str
    number: int = 1

    def __repr__(self) -> str:  # the key is a sandbox key, yet keep reprs key-free
        return f"Account(id={self.id!r}, number={self.number})"


class Accounts:
    """The accounts of one cloud: key -> ``Account`` (thread-safe)."""

    def __init__(self, cloud: str, default_key: str) -> None:
        self.cloud = cloud
        self._lock = threading.Lock()
        self.default = Account(default_key, DEFAULT, 1)
        self._by_key: dict[str, Account] = {default_key: self.default}

    def __repr__(self) -> str:
        return f"Accounts({self.cloud!r}, {[a.id for a in self.all()]})"

    def add(self, key: str | None = None) -> Account:
        """A new account; ``key`` defaults to ``sandbox-{cloud}-acct{n}-key``.

        ``ValueError`` for an empty key or one another account already uses.
        """
        with self._lock:
            number = len(self._by_key) + 1
            account_id = f"acct{number}"
            if key is None:
                key = f"sandbox-{self.cloud}-{account_id}-key"
            if not key.strip() or key != key.strip():
                raise ValueError("an account key must be a non-empty string without "
                                 "surrounding spaces")
            if key in self._by_key:
                raise ValueError(f"that key already belongs to account "
                                 f"{self._by_key[key].id!r} of {self.cloud}")
            account = Account(key, account_id, number)
            self._by_key[key] = account
            return account

    def by_key(self, key: str | None) -> Account | None:
        """The account ``key`` authenticates as, or ``None`` (the cloud answers 401)."""
        if not key:
            return None
        with self._lock:
            return self._by_key.get(key)

    def all(self) -> list[Account]:
        """Every account, the default one first."""
        with self._lock:
            return list(self._by_key.values())


_acting: contextvars.ContextVar[Account | None] = contextvars.ContextVar(
    "atlas_sandbox_account", default=None
)


@contextmanager
def acting_as(account: Account) -> Iterator[Account]:
    """Serve what runs inside as ``account`` (a cloud's auth check wraps its app in this)."""
    token = _acting.set(account)
    try:
        yield account
    finally:
        _acting.reset(token)


def current() -> Account | None:
    """The account the request being served authenticated as (``None``: no request)."""
    return _acting.get()


def owner() -> str:
    """The account id to stamp on a resource created now (``"default"`` outside requests)."""
    account = _acting.get()
    return account.id if account is not None else DEFAULT


def visible(resource_owner: str) -> bool:
    """Whether the acting account may see a resource ``resource_owner`` created.

    Everything is visible outside a request (test helpers read every account)."""
    account = _acting.get()
    return account is None or account.id == resource_owner
