"""Where the CLI's settings come from: flags over VANTAGE_* over the stored login."""
import argparse
import json
import stat

import pytest

from vantage.cli import config
from vantage.client import ClientError


def _flags(**kw):
    base = {"url": None, "username": None, "password": None, "token": None, "tenant": None,
            "ca_file": None, "insecure": False, "timeout": None}
    base.update(kw)
    return argparse.Namespace(**base)


STORED = {"url": "https://ctrl:9443", "username": "ops", "token": "stored-token",
          "tenant": "acme", "insecure": True}


def test_flags_win_over_environment_over_stored():
    env = {"VANTAGE_URL": "https://ctrl:9443", "VANTAGE_TENANT": "envtenant"}
    s = config.resolve_settings(_flags(tenant="flagtenant"), env, STORED)
    assert s.url == "https://ctrl:9443" and s.tenant == "flagtenant"
    assert s.token == "stored-token" and s.username == "ops" and s.verify is False
    s = config.resolve_settings(_flags(), env, STORED)
    assert s.tenant == "envtenant"


def test_stored_login_applies_only_to_its_controller():
    s = config.resolve_settings(_flags(url="https://other"), {}, STORED)
    assert s.token is None and s.username is None and s.tenant is None and s.verify is True
    with pytest.raises(ClientError, match="not logged in"):
        s.client()


def test_password_login_is_preferred_when_given():
    s = config.resolve_settings(_flags(), {"VANTAGE_PASSWORD": "pw"}, STORED)
    c = s.client()
    assert c.token is None and c.username == "ops"


@pytest.mark.parametrize("value,insecure", [("1", True), ("true", True), ("0", False),
                                            ("", False)])
def test_insecure_from_environment(value, insecure):
    s = config.resolve_settings(_flags(url="https://x"), {"VANTAGE_INSECURE": value}, {})
    assert s.insecure is insecure


def test_ca_file_must_exist(tmp_path):
    s = config.resolve_settings(_flags(url="https://x", token="t"),
                                {"VANTAGE_CA_FILE": str(tmp_path / "missing.pem")}, {})
    assert s.verify == str(tmp_path / "missing.pem")
    with pytest.raises(ClientError, match="CA file .* does not exist"):
        s.client()


def test_bad_timeout_is_named():
    with pytest.raises(ClientError, match="timeout must be a number of seconds, not 'soon'"):
        config.resolve_settings(_flags(), {"VANTAGE_TIMEOUT": "soon"}, {})


def test_credentials_file_round_trip_and_mode(tmp_path):
    path = config.credentials_path({"XDG_CONFIG_HOME": str(tmp_path)})
    assert path == tmp_path / "vantage" / "credentials.json"
    assert config.load_credentials(path) == {}
    path.parent.mkdir(mode=0o755)
    path.write_text("{}")
    path.chmod(0o644)
    config.save_credentials(path, {"token": "t"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load_credentials(path) == {"token": "t"}
    assert config.remove_credentials(path) and not config.remove_credentials(path)


@pytest.mark.parametrize("content,message", [("{not json", "is not valid JSON"),
                                             (json.dumps([1]), "does not hold a JSON object")])
def test_damaged_credentials_file_is_named(tmp_path, content, message):
    path = tmp_path / "credentials.json"
    path.write_text(content)
    with pytest.raises(ClientError, match=message):
        config.load_credentials(path)
