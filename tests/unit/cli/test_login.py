"""`vantage login` stores a token (never the password) with mode 0600; `vantage logout`
revokes it."""
import json
import stat
import subprocess
import sys


def test_login_stores_a_token_and_later_commands_use_it(cli_env, stub, vantage, tmp_path):
    cli_env.setenv("VANTAGE_PASSWORD", "secret")
    run = vantage("--url", stub.url, "--username", "admin", "login")
    assert run.rc == 0, run.err
    path = tmp_path / "config" / "vantage" / "credentials.json"
    assert f"token stored in {path}" in run.out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert "secret" not in path.read_text()
    assert stored["url"] == stub.url and stored["username"] == "admin"
    assert stored["token"] in stub.tokens
    assert stub.sessions == {}  # the login session was ended once the token was issued

    cli_env.delenv("VANTAGE_PASSWORD")
    assert vantage("pool", "create", "web").rc == 0
    create = [r for r in stub.requests if r["method"] == "POST" and r["path"] == "/api/pool"]
    assert create[-1]["headers"]["authorization"] == f"Bearer {stored['token']}"

    run = vantage("logout")
    assert run.rc == 0 and not path.exists()
    assert stub.tokens == {}
    run = vantage("pool", "list")
    assert run.rc == 1 and "no controller URL" in run.err


def test_stored_token_is_not_sent_to_another_controller(cli_env, stub, vantage, tmp_path):
    cli_env.setenv("VANTAGE_PASSWORD", "secret")
    assert vantage("--url", stub.url, "--username", "admin", "login").rc == 0
    cli_env.delenv("VANTAGE_PASSWORD")
    run = vantage("--url", "https://127.0.0.1:1", "pool", "list")
    assert run.rc == 1
    assert run.err.startswith("error: not logged in: run 'vantage login'")


def test_login_with_a_wrong_password_stores_nothing(cli_env, stub, vantage, tmp_path):
    cli_env.setenv("VANTAGE_PASSWORD", "wrong")
    run = vantage("--url", stub.url, "--username", "admin", "login")
    assert run.rc == 1
    assert run.err == "error: Invalid credentials (HTTP 401)\n"
    assert not (tmp_path / "config" / "vantage" / "credentials.json").exists()


def test_login_without_a_terminal_asks_for_the_password_variable(cli_env, stub, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "vantage.cli.app", "--url", stub.url,
                           "--username", "admin", "login"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("error: no password given and no terminal to ask on: set "
                           "VANTAGE_PASSWORD or --password\n")


def test_logout_when_not_logged_in(cli_env, vantage):
    run = vantage("logout")
    assert run.rc == 0 and run.out == "Not logged in.\n"


def test_errors_from_the_console_script_have_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path),
           "VANTAGE_URL": "https://127.0.0.1:1", "VANTAGE_USERNAME": "a",
           "VANTAGE_PASSWORD": "b"}
    proc = subprocess.run([sys.executable, "-m", "vantage.cli.app", "pool", "list"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("error: cannot connect to the controller at https://127.0.0.1:1: "
                           "Connection refused\n")
    assert proc.stdout == ""
