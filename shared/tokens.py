"""Bearer tokens for staff: who calls (an account id), as what, over which programs, and
whether the token still stands.

- Coordinators and operators call the HTTP APIs with short-lived HS256 JWTs
  (:func:`issue_token`); routes declare who may call them with :func:`require_role`. The
  roles are distinct: an operator is not a super-coordinator.
- ``sub`` is a stable account id (``acct_...`` for a console account), never an email or a
  display name: audits and the payments maker-checker compare it.
- A coordinator's token names the programs it may see (``programs``: a list of program
  ids, or ``"*"`` for every program, a lead). :meth:`Principal.sees` is the one test the
  services apply; data of another program answers as if it did not exist (404).
- No token lives longer than :data:`MAX_TOKEN_LIFETIME_S`; its id (``jti``) and its
  subject are checked against the service's revocation list (shared/revocation.py)
  on every request.

Nothing here logs a token or key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared import metrics
from shared.errors import NotFound
from shared.logs import get_logger

log = get_logger(__name__)

ISSUER = "holdspace"
AUDIENCE = "holdspace"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 10
# No token lives longer than this, however it was minted: a leaked one stops working
# within a working day.
MAX_TOKEN_LIFETIME_S = 12 * 3600
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
# The ``programs`` claim of a coordinator who sees every program (a lead).
ALL_PROGRAMS: Literal["*"] = "*"
Programs = Collection[str] | Literal["*"]


class Role(StrEnum):
    coordinator = "coordinator"
    operator = "operator"
    # The web pages, acting for an applicant whose registration token registration has
    # just accepted: they may read and act on that one registration's payment.
    pages = "pages"


class TokenError(Exception):
    """A bearer token that must not be accepted; the message is safe to show the caller."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    role: Role
    token_id: str
    expires_at: datetime
    issued_at: datetime = datetime.min.replace(tzinfo=UTC)
    # The programs a coordinator may see; None: every program (a lead, or a role that
    # is not scoped by program).
    programs: frozenset[str] | None = None

    def sees(self, program_id: str | None) -> bool:
        """Whether this caller may read or change data of ``program_id`` (None: data that
        belongs to no known program, which only a lead sees)."""
        if self.programs is None:
            return True
        return program_id is not None and program_id in self.programs

    def require(self, program_id: str | None, field: str, message: str) -> None:
        """Refuse data of a program out of scope exactly as data that does not exist
        (404, the route's own message), so ids of other programs cannot be probed."""
        if not self.sees(program_id):
            raise NotFound(field, message)

    def program_ids(self) -> list[str] | None:
        """The programs to filter a listing by; None: do not filter."""
        return None if self.programs is None else sorted(self.programs)


def _check_secret(secret: str) -> bytes:
    raw = secret.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return raw


def _programs_claim(role: Role, programs: Programs | None) -> str | list[str] | None:
    if role is not Role.coordinator:
        if programs is not None:
            raise ValueError("only a coordinator's token names programs")
        return None
    if programs is None:
        raise ValueError("a coordinator's token names its programs (or ALL_PROGRAMS)")
    if programs == ALL_PROGRAMS:
        return ALL_PROGRAMS
    if isinstance(programs, str) or not all(isinstance(p, str) and p for p in programs):
        raise ValueError("programs must be ALL_PROGRAMS or a collection of program ids")
    return sorted(set(programs))


def issue_token(
    secret: str,
    *,
    role: Role,
    subject: str,
    ttl_seconds: int,
    programs: Programs | None = None,
    now: datetime | None = None,
) -> str:
    """Mint a token for ``subject`` acting as ``role``; a coordinator's names ``programs``.
    ``now`` is for tests and must be aware."""
    key = _check_secret(secret)
    if not 0 < ttl_seconds <= MAX_TOKEN_LIFETIME_S:
        raise ValueError(f"ttl_seconds must be from 1 to {MAX_TOKEN_LIFETIME_S}")
    if not subject:
        raise ValueError("subject must not be empty")
    issued = now or datetime.now(UTC)
    if issued.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "role": Role(role).value,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    scope = _programs_claim(Role(role), programs)
    if scope is not None:
        claims["programs"] = scope
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _scope_of(role: Role, claims: dict[str, Any]) -> frozenset[str] | None:
    if role is not Role.coordinator:
        return None
    scope = claims.get("programs")
    if scope == ALL_PROGRAMS:
        return None
    if not isinstance(scope, list) or not all(isinstance(p, str) for p in scope):
        raise TokenError("token lacks the 'programs' claim")
    return frozenset(scope)


def verify_token(secret: str, token: str) -> Principal:
    """Check signature, expiry, lifetime, issuer, audience, role and a coordinator's
    programs; raise :class:`TokenError` if any fail. Revocation is checked by
    :func:`require_role` (it needs the service's database).

    Only HS256 is accepted, so a token cannot pick its own algorithm (``none``, RS/HS confusion).
    """
    key = _check_secret(secret)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except (jwt.InvalidIssuerError, jwt.InvalidAudienceError):
        raise TokenError("token was not issued for holdspace") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError:
        raise TokenError("invalid token") from None
    if claims["exp"] - claims["iat"] > MAX_TOKEN_LIFETIME_S:
        raise TokenError("token lives longer than holdspace allows") from None
    try:
        role = Role(claims["role"])
    except ValueError:
        raise TokenError("token names an unknown role") from None
    return Principal(
        subject=claims["sub"],
        role=role,
        token_id=claims["jti"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        programs=_scope_of(role, claims),
    )


# auto_error=False: we answer 401 with WWW-Authenticate ourselves; the scheme still shows in
# OpenAPI, so the docs' "Authorize" button works.
_bearer = HTTPBearer(auto_error=False, description="Token from `ops token issue`")


def _refused(
    request: Request, code: int, reason: str, principal: Principal | None = None
) -> HTTPException:
    """The refusal, audited: one log line and one count per refused call (OWASP API5).

    Names the route and the token (its id and role, never the token itself); an
    anonymous caller is named by nothing, there being nothing to name."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    log.warning(
        "access refused",
        audit=True,
        status=code,
        reason=reason,
        method=request.method,
        route=route,
        role=principal.role.value if principal else None,
        token_id=principal.token_id if principal else None,
    )
    service = getattr(getattr(request.app.state, "settings", None), "service_name", "unknown")
    metrics.ACCESS_REFUSED.labels(service, str(code)).inc()
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return HTTPException(code, detail=reason, headers=headers)


async def _revoked(request: Request, principal: Principal) -> bool:
    """Whether the service's revocation list refuses the token. A service app
    (shared/app.py) always has one; an app without a runtime (a unit test's) has none."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return False
    from shared.revocation import RevocationList  # shared/revocation.py imports this module

    revocations = runtime.provided.get(RevocationList)
    if revocations is None:
        raise RuntimeError("this service provides no RevocationList: every token is refused")
    return await revocations.refuses(principal)


def require_role(*roles: Role) -> Callable[..., Any]:
    """A FastAPI dependency that returns the caller's :class:`Principal` if it holds a role.

    401 when the bearer token is missing, not valid or revoked, 403 when it is valid but
    its role is not one of ``roles``. Reads the secret from
    ``request.app.state.settings.jwt_secret``.
    """
    if not roles:
        raise ValueError("require_role needs at least one role")
    allowed = frozenset(Role(r) for r in roles)

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        if credentials is None:
            raise _refused(request, 401, "not authenticated")
        try:
            principal = verify_token(request.app.state.settings.jwt_secret, credentials.credentials)
        except TokenError as exc:
            raise _refused(request, 401, str(exc)) from None
        if await _revoked(request, principal):
            raise _refused(request, 401, "token revoked", principal)
        if principal.role not in allowed:
            raise _refused(request, 403, "role not allowed", principal)
        return principal

    return dependency
