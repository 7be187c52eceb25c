"""Option groups: the names deployment tools rely on, config files, the generator listing."""
from __future__ import annotations

import pytest

from vantage.conf import build_conf
from vantage.conf.opts import list_opts


def test_stable_option_names_exist():
    names = {(group if isinstance(group, str) or group is None else group.name, opt.name)
             for group, opts in list_opts() for opt in opts}
    assert {(None, "state_path"), ("api", "bind_host"), ("api", "bind_port"),
            ("database", "connection")} <= names
    for _group, opts in list_opts():
        assert all(opt.help for opt in opts)


def test_config_file_is_read(tmp_path):
    path = tmp_path / "vantage.conf"
    path.write_text("[DEFAULT]\nstate_path = /srv/vantage\n[api]\nbind_port = 9443\n"
                    "[database]\nconnection = postgresql+psycopg://db/vantage\n")
    conf = build_conf(["--config-file", str(path)])
    assert conf.state_path == "/srv/vantage" and conf.api.bind_port == 9443
    assert conf.database.connection.startswith("postgresql")


def test_bad_values_are_refused(tmp_path):
    path = tmp_path / "vantage.conf"
    path.write_text("[api]\nbind_port = 70000\n")
    conf = build_conf(["--config-file", str(path)])
    with pytest.raises(ValueError):
        conf.api.bind_port  # noqa: B018 - the value is checked when read
