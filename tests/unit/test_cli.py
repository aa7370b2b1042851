from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.security import Role, TokenError, issue_token, verify_token

SECRET = "cli-test-jwt-secret-0123456789-abcdefghijklmn"
OTHER_SECRET = "some-other-secret-0123456789-abcdefghijklmn"

runner = CliRunner()


@pytest.fixture(autouse=True)
def test_env(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "development")
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("JWT_TTL_SECONDS", "1200")


def test_issued_token_verifies_with_the_same_secret() -> None:
    result = runner.invoke(app, ["token", "issue", "--role", "coordinator", "--all-programs"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # only the token, so $(ops token issue ...) works
    principal = verify_token(SECRET, lines[0])
    assert principal.role is Role.coordinator and principal.subject == "ops"
    remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
    assert 1100 < remaining <= 1200  # JWT_TTL_SECONDS
    with pytest.raises(TokenError):
        verify_token(OTHER_SECRET, lines[0])


def test_a_coordinator_token_names_its_programs_or_is_not_minted() -> None:
    args = ["token", "issue", "--role", "coordinator", "--subject", "acct_1"]
    for scope in ([], ["--program", "p-a", "--all-programs"]):
        refused = runner.invoke(app, [*args, *scope])
        assert refused.exit_code == 2 and refused.stdout == "" and "--program" in refused.stderr
    scoped = runner.invoke(app, [*args, "--program", "p-a", "--program", "p-b"])
    assert scoped.exit_code == 0, scoped.output
    assert verify_token(SECRET, scoped.stdout.strip()).programs == {"p-a", "p-b"}
    lead = runner.invoke(app, [*args, "--all-programs"])
    assert verify_token(SECRET, lead.stdout.strip()).programs is None
    operator = runner.invoke(app, ["token", "issue", "--role", "operator", "--program", "p-a"])
    assert operator.exit_code == 2 and operator.stdout == ""


def test_issue_takes_subject_and_ttl() -> None:
    args = ["token", "issue", "--role", "operator", "--subject", "olga", "--ttl", "120"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    principal = verify_token(SECRET, result.stdout.strip())
    assert principal.subject == "olga" and principal.role is Role.operator
    assert (principal.expires_at - datetime.now(UTC)).total_seconds() <= 120


@pytest.mark.parametrize("args", [["--role", "admin"], [], ["--role", "coordinator", "--ttl", "0"]])
def test_invalid_issue_arguments_exit_non_zero(args: list[str]) -> None:
    result = runner.invoke(app, ["token", "issue", *args])
    assert result.exit_code != 0
    assert result.stdout == ""


def test_no_environment_is_a_configuration_error_naming_it(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HOLDSPACE_ENV")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))  # no scripts/up run to borrow it from
    result = runner.invoke(app, ["token", "issue", "--role", "coordinator"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "HOLDSPACE_ENV is not set" in result.stderr


def test_production_with_development_secret_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "production")
    monkeypatch.delenv("JWT_SECRET")
    result = runner.invoke(app, ["token", "issue", "--role", "coordinator"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "configuration error" in result.stderr


def test_verify_prints_subject_role_and_expiry() -> None:
    token = issue_token(SECRET, role=Role.operator, subject="olga", ttl_seconds=60)
    expires = verify_token(SECRET, token).expires_at.isoformat()
    for args, stdin in ((["token", "verify", token], None), (["token", "verify", "-"], token)):
        result = runner.invoke(app, args, input=stdin)
        assert result.exit_code == 0, result.output
        assert "subject: olga" in result.stdout
        assert "role: operator" in result.stdout
        assert f"expires: {expires}" in result.stdout


def test_verify_refuses_a_bad_token() -> None:
    token = issue_token(OTHER_SECRET, role=Role.operator, subject="olga", ttl_seconds=60)
    result = runner.invoke(app, ["token", "verify", token])
    assert result.exit_code == 1
    assert "invalid" in result.stderr and "olga" not in result.stdout


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "token" in result.output and "Usage" in result.output


def test_consent_verify_is_mounted_under_ops() -> None:
    from typer.testing import CliRunner

    from shared.cli import app

    result = CliRunner().invoke(app, ["consent", "verify", "--help"])
    assert result.exit_code == 0, result.output
    assert "--no-key" in result.output
