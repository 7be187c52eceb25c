"""The REST client against an Avi-convention server on a real socket: what it sends, how it
pages, and how errors surface."""
import socket
import ssl

import pytest
import trustme

from tests.unit.client.avi_stub import AviStub
from vantage import client as vc
from vantage.client import Client


def _session_client(stub, **kw):
    return Client(stub.url, username="admin", password="secret", **kw)


def test_session_login_sends_csrf_and_referer_on_writes(stub):
    with _session_client(stub, tenant="acme", api_version="22.1.1") as c:
        c.create("pool", {"name": "web"})
    login, create = stub.requests
    assert login["path"] == "/login" and login["body"] == {"username": "admin",
                                                           "password": "secret"}
    headers = create["headers"]
    assert headers["x-csrftoken"] == next(iter(stub.sessions.values()))
    assert headers["referer"] == stub.url
    assert headers["x-avi-tenant"] == "acme"
    assert headers["x-avi-version"] == "22.1.1"
    assert "sessionid=" in headers["cookie"] and "csrftoken=" in headers["cookie"]


def test_secure_cookies_still_sent_over_plain_http(stub):
    # The stub marks both cookies Secure; the client must not lose them on http.
    with _session_client(stub) as c:
        assert c.list_page("pool")["count"] == 0
    assert stub.requests[-1]["headers"]["cookie"]


def test_token_auth_uses_bearer_and_no_cookies(stub):
    stub.tokens["tok123"] = "token-1"
    with Client(stub.url, token="tok123", tenant_uuid="tenant-1") as c:
        c.create("pool", {"name": "web"})
    req = stub.requests[-1]
    assert req["headers"]["authorization"] == "Bearer tok123"
    assert "cookie" not in req["headers"] and "x-csrftoken" not in req["headers"]
    assert req["headers"]["x-avi-tenant-uuid"] == "tenant-1"
    assert "x-avi-tenant" not in req["headers"]


def test_expired_session_logs_in_again_once(stub):
    with _session_client(stub) as c:
        c.create("pool", {"name": "a"})
        stub.expire_sessions()
        c.create("pool", {"name": "b"})
    assert [r["path"] for r in stub.requests] == ["/login", "/api/pool", "/api/pool", "/login",
                                                  "/api/pool"]
    assert {o["name"] for o in stub.objects["pool"].values()} == {"a", "b"}


def test_wrong_password_is_unauthorized_with_server_message(stub):
    with Client(stub.url, username="admin", password="nope") as c, \
            pytest.raises(vc.Unauthorized) as err:
        c.list_page("pool")
    assert err.value.status == 401
    assert str(err.value) == "Invalid credentials (HTTP 401)"


def test_list_follows_next_across_pages(stub):
    with _session_client(stub) as c:
        for i in range(7):
            c.create("pool", {"name": f"p{i}"})
        names = [o["name"] for o in c.list("pool", page_size=3)]
        limited = [o["name"] for o in c.list("pool", page_size=3, limit=4)]
    assert names == [f"p{i}" for i in range(7)]
    assert limited == ["p0", "p1", "p2", "p3"]
    pages = [r["query"].get("page") for r in stub.requests if r["method"] == "GET"]
    assert pages[:3] == [None, ["2"], ["3"]]


def test_list_rejects_page_size_over_the_cap(stub):
    with _session_client(stub) as c, \
            pytest.raises(vc.ClientError, match="page_size must be 1..200"):
        list(c.list("pool", page_size=500))


def test_crud_by_name_and_uuid(stub):
    with _session_client(stub) as c:
        created = c.create("pool", {"name": "web", "servers": []}, slug="pool-" + "1" * 8
                           + "-1111-1111-1111-" + "1" * 12)
        assert created["uuid"] == "pool-11111111-1111-1111-1111-111111111111"
        assert c.find("pool", "web")["uuid"] == created["uuid"]
        assert c.find("pool", created["uuid"])["name"] == "web"
        assert c.get_by_name("pool", "missing") is None
        updated = c.update("pool", "web", {"default_server_port": 8080})
        assert updated["default_server_port"] == 8080
        c.patch("pool", created["uuid"], add={"servers": [{"ip": {"addr": "10.0.0.1"}}]})
        assert c.get("pool", created["uuid"])["servers"] == [{"ip": {"addr": "10.0.0.1"}}]
        c.delete("pool", created["uuid"])
        with pytest.raises(vc.NotFound, match="pool 'web' not found"):
            c.find("pool", "web")
    slug_req = [r for r in stub.requests if r["method"] == "POST" and r["path"] == "/api/pool"]
    assert slug_req[0]["headers"]["slug"] == created["uuid"]


def test_stale_put_is_precondition_failed(stub):
    with _session_client(stub) as c:
        obj = c.create("pool", {"name": "web"})
        c.put("pool", obj["uuid"], {**obj, "default_server_port": 81})
        with pytest.raises(vc.PreconditionFailed) as err:
            c.put("pool", obj["uuid"], {**obj, "default_server_port": 82})
    assert err.value.status == 412 and "changed since it was read" in err.value.message


def test_patch_takes_exactly_one_operation(stub):
    with _session_client(stub) as c:
        with pytest.raises(vc.ClientError, match="exactly one"):
            c.patch("pool", "pool-x", add={"a": 1}, delete={"b": 1})
        with pytest.raises(vc.ClientError, match="exactly one"):
            c.patch("pool", "pool-x")


@pytest.mark.parametrize("status,body,cls,message", [
    (400, {"error": "servers[0].ip.addr: 'x' is not an IP address"}, vc.BadRequest,
     "servers[0].ip.addr: 'x' is not an IP address"),
    (409, {"title": "409 Conflict", "description": "pool 'web' is referenced by "
           "virtualservice 'shop'"}, vc.Conflict, ("pool 'web' is referenced by virtualservice "
     "'shop'")),
    (403, {"error": "no write access to pool"}, vc.Forbidden, "no write access to pool"),
    (500, "Internal   Server\nError", vc.ServerError, "Internal Server Error"),
    (418, None, vc.ApiError, "GET /api/pool failed: I'm a Teapot"),
])
def test_errors_carry_status_and_server_message(stub, status, body, cls, message):
    with _session_client(stub) as c:
        c.login()
        stub.fail_next.append((status, body))
        with pytest.raises(cls) as err:
            c.list_page("pool")
    assert err.value.status == status
    assert err.value.message == message
    assert str(err.value) == f"{message} (HTTP {status})"


def test_connection_refused_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with Client(f"https://127.0.0.1:{port}", token="t") as c, \
                pytest.raises(vc.ConnectionFailed) as err:
            c.list_page("pool")
    assert str(err.value) == (f"cannot connect to the controller at https://127.0.0.1:{port}: "
                              "Connection refused")


@pytest.mark.parametrize("url,message", [
    ("", "no controller URL"),
    ("ftp://x", r"is not an http\(s\) URL"),
])
def test_bad_url_is_rejected(url, message):
    with pytest.raises(vc.ClientError, match=message):
        Client(url)


def test_bare_host_means_https():
    assert Client("10.0.0.5:9443", token="t").url == "https://10.0.0.5:9443"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification_with_ca_file_and_failure_without(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with AviStub(ssl_context=ctx) as stub:
        with Client(stub.url, username="admin", password="secret", verify=str(ca_file)) as c:
            assert c.list_page("pool")["count"] == 0
        with Client(stub.url, username="admin", password="secret", verify=False) as c:
            assert c.list_page("pool")["count"] == 0
        with Client(stub.url, username="admin", password="secret") as c, \
                pytest.raises(vc.ConnectionFailed, match="TLS verification of .* failed.*--ca-file"):
            c.list_page("pool")


def test_token_issue_and_revoke(stub):
    with _session_client(stub) as c:
        issued = c.create_token()
        c.revoke_token(issued["uuid"])
    assert issued["token"] and stub.tokens == {}


def test_logout_ends_the_session(stub):
    with _session_client(stub) as c:
        c.login()
        c.logout()
        assert not c.logged_in
        c.logout()  # twice is harmless
    assert stub.sessions == {}


@pytest.mark.parametrize("kind,value,expected", [
    ("pool", "web", "/api/pool?name=web"),
    ("pool", "a b&c", "/api/pool?name=a+b%26c"),
    ("pool", "pool-11111111-1111-1111-1111-111111111111",
     "/api/pool/pool-11111111-1111-1111-1111-111111111111"),
    ("pool", "https://c/api/pool/pool-1", "https://c/api/pool/pool-1"),
])
def test_name_ref(kind, value, expected):
    assert vc.name_ref(kind, value) == expected


def test_ref_helpers():
    ref = "https://c:9443/api/pool/pool-1#web"
    assert vc.uuid_from_ref(ref) == "pool-1"
    assert vc.name_from_ref(ref) == "web"
    assert vc.name_from_ref("https://c/api/pool/pool-1") is None
