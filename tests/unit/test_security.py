import base64
import io
import json
import logging
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import structlog
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from shared.logs import configure_logging
from shared.security import (
    BlindIndexer,
    DecryptionError,
    FieldCipher,
    Principal,
    Role,
    TokenError,
    access_token_matches,
    blind_index,
    decode_key,
    hash_access_token,
    issue_token,
    new_access_token,
    normalize_email,
    require_role,
    verify_token,
)
from shared.settings import CommonSettings, ServiceSettings
from shared.tokens import ALL_PROGRAMS as ALL

SECRET = "unit-test-jwt-secret-0123456789-abcdefghijkl"
OTHER_SECRET = "another-jwt-secret-0123456789-abcdefghijklmn"
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


@pytest.fixture(autouse=True)
def test_env(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "development")
    monkeypatch.setenv("JWT_SECRET", SECRET)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def claims(**overrides) -> dict:
    now = int(datetime.now(UTC).timestamp())
    base = {
        "iss": "holdspace",
        "aud": "holdspace",
        "sub": "ann",
        "role": "coordinator",
        "iat": now,
        "exp": now + 600,
        "jti": "j-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# --------------------------------------------------------------------------- tokens


def test_token_round_trip() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = issue_token(SECRET, role=Role.operator, subject="olga", ttl_seconds=900, now=now)
    principal = verify_token(SECRET, token)
    assert principal.subject == "olga"
    assert principal.role is Role.operator
    assert principal.expires_at == now + timedelta(seconds=900)
    assert len(principal.token_id) >= 16


def test_each_token_has_its_own_id() -> None:
    a, b = (
        issue_token(SECRET, role=Role.coordinator, subject="a", programs=ALL, ttl_seconds=60)
        for _ in "ab"
    )
    assert verify_token(SECRET, a).token_id != verify_token(SECRET, b).token_id


def test_expired_token_is_refused_after_the_leeway() -> None:
    past = datetime.now(UTC) - timedelta(seconds=90)
    token = issue_token(
        SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=60, now=past
    )
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, token)


def test_token_just_past_expiry_is_within_the_leeway() -> None:
    past = datetime.now(UTC) - timedelta(seconds=63)
    token = issue_token(
        SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=60, now=past
    )
    assert verify_token(SECRET, token).subject == "ann"


def test_token_signed_with_another_secret_is_refused() -> None:
    token = issue_token(
        OTHER_SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=60
    )
    with pytest.raises(TokenError, match="invalid token"):
        verify_token(SECRET, token)


def test_tampered_payload_is_refused() -> None:
    token = issue_token(SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=60)
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["role"] = "operator"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verify_token(SECRET, f"{header}.{forged}.{signature}")


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(TokenError):
        verify_token(SECRET, token)


@pytest.mark.parametrize("override", [{"iss": "elsewhere"}, {"aud": "elsewhere"}])
def test_wrong_issuer_or_audience_is_refused(override: dict) -> None:
    token = jwt.encode(claims(**override), SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="not issued for holdspace"):
        verify_token(SECRET, token)


def test_missing_role_is_refused() -> None:
    token = jwt.encode(claims(role=None), SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="role"):
        verify_token(SECRET, token)


def test_unknown_role_is_refused() -> None:
    token = jwt.encode(claims(role="admin"), SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="unknown role"):
        verify_token(SECRET, token)


def test_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        issue_token("short", role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=60)


# ----------------------------------------------------------------- FastAPI dependency


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.state.settings = CommonSettings()

    @app.get("/coordinators")
    async def coordinators_only(principal: Principal = Depends(require_role(Role.coordinator))):
        return {"subject": principal.subject, "role": principal.role}

    @app.get("/staff")
    async def staff(principal: Principal = Depends(require_role(Role.coordinator, Role.operator))):
        return {"subject": principal.subject, "role": principal.role}

    return TestClient(app)


def bearer(role: Role, **kwargs) -> dict[str, str]:
    kwargs.setdefault("ttl_seconds", 60)
    if role is Role.coordinator:
        kwargs.setdefault("programs", ALL)
    return {"Authorization": f"Bearer {issue_token(SECRET, role=role, subject='ann', **kwargs)}"}


def test_allowed_role_gets_its_principal(client: TestClient) -> None:
    response = client.get("/coordinators", headers=bearer(Role.coordinator))
    assert response.status_code == 200
    assert response.json() == {"subject": "ann", "role": "coordinator"}


def test_route_accepts_any_of_its_roles(client: TestClient) -> None:
    assert client.get("/staff", headers=bearer(Role.operator)).json()["role"] == "operator"
    assert client.get("/staff", headers=bearer(Role.coordinator)).json()["role"] == "coordinator"


def test_other_role_is_forbidden(client: TestClient) -> None:
    response = client.get("/coordinators", headers=bearer(Role.operator))
    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic YW5uOnB3"}],
    ids=["missing", "garbage", "basic"],
)
def test_missing_or_invalid_token_is_unauthorized(client: TestClient, headers: dict) -> None:
    response = client.get("/coordinators", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_token_is_unauthorized(client: TestClient) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    response = client.get("/coordinators", headers=bearer(Role.coordinator, now=past))
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"


def test_openapi_shows_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/coordinators"]["get"]["security"] == [{"HTTPBearer": []}]


def test_refused_token_is_not_logged(client: TestClient) -> None:
    out = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=out)
    try:
        token = issue_token(
            OTHER_SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=60
        )
        response = client.get("/coordinators", headers={"Authorization": f"Bearer {token}"})
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    assert response.status_code == 401
    logged = out.getvalue()
    assert "access refused" in logged, logged
    assert token not in logged and token.split(".")[2] not in logged


# ------------------------------------------------------------------------- encryption


def cipher() -> FieldCipher:
    return FieldCipher({"k1": KEY_A}, "k1")


def test_encryption_round_trip() -> None:
    value = cipher().encrypt("ann@example.org", context="registration:email")
    assert value.startswith("v1.k1.") and value.count(".") == 3
    assert "ann@example.org" not in value
    assert cipher().decrypt(value, context="registration:email") == "ann@example.org"


def test_same_value_encrypts_differently_each_time() -> None:
    c = cipher()
    assert c.encrypt("same", context="f") != c.encrypt("same", context="f")


def test_tampered_ciphertext_is_refused() -> None:
    c = cipher()
    version, key_id, nonce, sealed = c.encrypt("ann@example.org", context="f").split(".")
    flipped = ("A" if sealed[0] != "A" else "B") + sealed[1:]
    with pytest.raises(DecryptionError, match="does not authenticate"):
        c.decrypt(".".join((version, key_id, nonce, flipped)), context="f")


def test_value_moved_to_another_field_is_refused() -> None:
    c = cipher()
    value = c.encrypt("ann@example.org", context="registration:email")
    with pytest.raises(DecryptionError):
        c.decrypt(value, context="registration:alias")


@pytest.mark.parametrize("bad", ["", "plain text", "v2.k1.a.b", "v1.k1.!!.b", "v1.k1.AAAA.AAAA"])
def test_malformed_values_are_refused(bad: str) -> None:
    with pytest.raises(DecryptionError):
        cipher().decrypt(bad, context="f")


def test_unknown_key_id_is_refused() -> None:
    value = FieldCipher({"k9": KEY_B}, "k9").encrypt("x", context="f")
    with pytest.raises(DecryptionError, match="unknown encryption key id 'k9'"):
        cipher().decrypt(value, context="f")


def test_rotation_reads_values_sealed_under_an_old_key() -> None:
    old_value = cipher().encrypt("ann@example.org", context="f")
    settings = ServiceSettings(encryption_key=b64(KEY_B), encryption_key_id="k2")
    rotated = FieldCipher.from_settings(settings, old_keys={"k1": KEY_A})
    assert rotated.decrypt(old_value, context="f") == "ann@example.org"
    new_value = rotated.encrypt("ann@example.org", context="f")
    assert rotated.key_id_of(new_value) == "k2" and rotated.key_id_of(old_value) == "k1"
    with pytest.raises(DecryptionError, match="unknown"):
        FieldCipher.from_settings(settings).decrypt(old_value, context="f")


def test_json_round_trip_and_context_binding() -> None:
    c = FieldCipher.from_settings(ServiceSettings())
    answers = {"q1": "yes", "q2": ["a", "b"], "q3": "café"}
    value = c.encrypt_json(answers, context="registration:answers")
    assert c.decrypt_json(value, context="registration:answers") == answers
    with pytest.raises(DecryptionError):
        c.decrypt_json(value, context="registration:email")


def test_decrypt_json_refuses_non_json_plaintext() -> None:
    value = cipher().encrypt("not json", context="f")
    with pytest.raises(DecryptionError, match="not JSON"):
        cipher().decrypt_json(value, context="f")


def test_cipher_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FieldCipher({"k1": b"short"}, "k1")
    with pytest.raises(ValueError, match="has no key"):
        FieldCipher({"k1": KEY_A}, "k2")
    with pytest.raises(ValueError, match="must match"):
        FieldCipher({"k.1": KEY_A}, "k.1")


def test_key_decoding_names_the_setting() -> None:
    assert decode_key(b64(KEY_A), setting="ENCRYPTION_KEY") == KEY_A
    with pytest.raises(ValueError, match="ENCRYPTION_KEY must decode to 32 bytes, got 16"):
        decode_key(b64(bytes(16)), setting="ENCRYPTION_KEY")
    with pytest.raises(ValueError, match="BLIND_INDEX_KEY is not valid base64"):
        decode_key("not base64!", setting="BLIND_INDEX_KEY")
    with pytest.raises(ValueError, match="ENCRYPTION_KEY"):
        FieldCipher.from_settings(ServiceSettings(encryption_key=b64(bytes(31))))


# ------------------------------------------------------------------------ blind index


def test_blind_index_is_stable_across_email_spellings() -> None:
    indexer = BlindIndexer(KEY_A)
    spellings = ["ann@example.org", " Ann@Example.ORG ", "ANN@EXAMPLE.ORG\n"]
    indexes = {indexer.email(s) for s in spellings}
    assert len(indexes) == 1
    (index,) = indexes
    assert len(index) == 64 and int(index, 16) >= 0
    assert index == blind_index(KEY_A, "ann@example.org", context="email")
    assert indexer.email("bob@example.org") != index


def test_blind_index_depends_on_key_and_context() -> None:
    assert BlindIndexer(KEY_A).email("ann@example.org") != BlindIndexer(KEY_B).email(
        "ann@example.org"
    )
    assert blind_index(KEY_A, "x", context="email") != blind_index(KEY_A, "x", context="alias")
    assert blind_index(KEY_A, "bc", context="a") != blind_index(KEY_A, "c", context="ab")


def test_blind_indexer_from_settings_uses_the_blind_index_key() -> None:
    settings = ServiceSettings(blind_index_key=b64(KEY_B))
    assert BlindIndexer.from_settings(settings).email("a@b.c") == BlindIndexer(KEY_B).email("a@b.c")
    assert normalize_email("  A@B.C ") == "a@b.c"


# --------------------------------------------------------------------- access tokens


def test_access_token_hash_and_compare() -> None:
    token = new_access_token()
    assert len(token) >= 43 and token != new_access_token()
    stored = hash_access_token(token)
    assert len(stored) == 64 and token not in stored
    assert access_token_matches(token, stored)
    assert not access_token_matches(new_access_token(), stored)
    assert not access_token_matches(token, stored[:-1] + ("0" if stored[-1] != "0" else "1"))
    assert not access_token_matches(token, "ünicode")


def test_a_token_that_lives_longer_than_twelve_hours_is_neither_minted_nor_accepted() -> None:
    import jwt as pyjwt

    from shared.security import MAX_TOKEN_LIFETIME_S

    with pytest.raises(ValueError, match="ttl_seconds"):
        issue_token(
            SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=30 * 24 * 3600
        )
    ok = issue_token(
        SECRET, role=Role.coordinator, subject="ann", programs=ALL, ttl_seconds=MAX_TOKEN_LIFETIME_S
    )
    assert verify_token(SECRET, ok).subject == "ann"
    # Minted by hand with the right key, for a year: refused all the same.
    claims = pyjwt.decode(ok, options={"verify_signature": False})
    claims["exp"] = claims["iat"] + 365 * 24 * 3600
    forged = pyjwt.encode(claims, SECRET.encode(), algorithm="HS256")
    with pytest.raises(TokenError, match="longer"):
        verify_token(SECRET, forged)


def test_a_rotated_key_still_opens_what_it_sealed_and_new_values_use_the_new_key() -> None:
    import base64

    from shared.security import DecryptionError, FieldCipher
    from shared.settings import ServiceSettings

    old_key = base64.b64encode(b"o" * 32).decode()
    new_key = base64.b64encode(b"n" * 32).decode()
    before = FieldCipher.from_settings(
        ServiceSettings(encryption_key=old_key, encryption_key_id="k2025")
    )
    sealed = before.encrypt("林", context="registration:name")

    rotated = ServiceSettings(
        encryption_key=new_key,
        encryption_key_id="k2026",
        encryption_retired_keys=f"k2025:{old_key}",
    )
    after = FieldCipher.from_settings(rotated)
    assert after.decrypt(sealed, context="registration:name") == "林"
    assert after.encrypt("林", context="registration:name").startswith("v1.k2026.")
    forgot = FieldCipher.from_settings(
        ServiceSettings(encryption_key=new_key, encryption_key_id="k2026")
    )
    with pytest.raises(DecryptionError, match="k2025"):
        forgot.decrypt(sealed, context="registration:name")
    with pytest.raises(ValueError, match="ENCRYPTION_RETIRED_KEYS"):
        FieldCipher.from_settings(
            ServiceSettings(encryption_key=new_key, encryption_retired_keys="no-colon")
        )
