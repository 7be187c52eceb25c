"""The object service: secrets encrypted at rest and write-only, the audit trail without
secrets, and the admin tenant's built-in objects."""
from __future__ import annotations

import datetime
import json
import os
import stat

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vantage.controller.caller import system_caller
from vantage.controller.errors import InvalidInput, PreconditionFailed
from vantage.controller.objects import ADMIN_TENANT_UUID, WireOptions, builtin_uuid

WIRE = WireOptions("https://ctrl")


def _key_and_cert(passphrase: bytes | None = None, cn: str = "shop.example"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                encryption).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def caller():
    return system_caller(ADMIN_TENANT_UUID)


def _raw_rows(services) -> str:
    with services.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT body, secrets FROM objects")).all()
        audit = conn.execute(sa.text("SELECT detail FROM auditlog")).all()
    return json.dumps([list(r) for r in rows] + [list(r) for r in audit])


def test_private_key_is_encrypted_at_rest_and_write_only(services, caller):
    key, cert = _key_and_cert(b"pass-phrase")
    created = services.objects.create(caller, "sslkeyandcertificate", {
        "name": "shop", "certificate": {"certificate": cert}, "key": key,
        "key_passphrase": "pass-phrase"}, WIRE)
    assert created["key"] == "<sensitive>" and created["key_passphrase"] == "<sensitive>"
    assert created["certificate"]["subject"]["common_name"] == "shop.example"
    assert created["certificate"]["subject_alt_names"] == ["shop.example"]
    raw = _raw_rows(services)
    assert "PRIVATE KEY" not in raw and "pass-phrase" not in raw
    with services.store.begin() as tx:
        stored = tx.get(created["uuid"])
    assert services.objects.decrypted_secrets(stored) == {"key": key,
                                                          "key_passphrase": "pass-phrase"}
    # a read-modify-write round trip keeps the secrets
    updated = services.objects.replace(caller, "sslkeyandcertificate", created["uuid"],
                                       dict(created, enable_ocsp_stapling=True), WIRE)
    with services.store.begin() as tx:
        stored = tx.get(created["uuid"])
    assert services.objects.decrypted_secrets(stored)["key"] == key
    assert updated["key"] == "<sensitive>"


def test_key_must_match_certificate_and_passphrase(services, caller):
    key, cert = _key_and_cert()
    other_key, _ = _key_and_cert()
    with pytest.raises(InvalidInput, match="does not belong"):
        services.objects.create(caller, "sslkeyandcertificate", {
            "name": "x", "certificate": {"certificate": cert}, "key": other_key}, WIRE)
    locked, locked_cert = _key_and_cert(b"secret")
    with pytest.raises(InvalidInput, match="key_passphrase"):
        services.objects.create(caller, "sslkeyandcertificate", {
            "name": "x", "certificate": {"certificate": locked_cert}, "key": locked}, WIRE)
    with pytest.raises(InvalidInput, match="certificate.certificate"):
        services.objects.create(caller, "sslkeyandcertificate", {
            "name": "x", "certificate": {"certificate": "not pem"}, "key": key}, WIRE)
    with pytest.raises(InvalidInput, match="key is required"):
        services.objects.create(caller, "sslkeyandcertificate", {
            "name": "x", "certificate": {"certificate": cert}}, WIRE)


def test_cloud_password_is_write_only(services, caller):
    cloud = services.objects.create(caller, "cloud", {
        "name": "vc", "vtype": "CLOUD_VCENTER",
        "vcenter_configuration": {"vcenter_url": "vc.example", "username": "u",
                                  "password": "vc-secret-1"}}, WIRE)
    assert cloud["vcenter_configuration"]["password"] == "<sensitive>"
    assert "vc-secret-1" not in _raw_rows(services)


def test_audit_log_records_who_changed_what_without_secrets(services, caller):
    key, cert = _key_and_cert()
    obj = services.objects.create(caller, "sslkeyandcertificate", {
        "name": "shop", "certificate": {"certificate": cert}, "key": key}, WIRE)
    services.objects.patch(caller, "sslkeyandcertificate", obj["uuid"],
                           {"replace": {"enable_ocsp_stapling": True}}, WIRE)
    services.objects.delete(caller, "sslkeyandcertificate", obj["uuid"])
    count, entries = services.objects.audit_entries(caller, obj_uuid=obj["uuid"])
    assert count == 3
    assert [e["action"] for e in entries] == ["DELETE", "UPDATE", "CREATE"]
    assert entries[1]["detail"] == {"changed": {"enable_ocsp_stapling": True}}
    assert entries[2]["detail"]["secrets_set"] == ["key"]
    assert all(e["user"] == "system" for e in entries)
    assert "PRIVATE KEY" not in json.dumps(entries)


def test_patch_with_stale_if_match_is_412(services, caller):
    pool = services.objects.create(caller, "pool", {"name": "web"}, WIRE)
    services.objects.patch(caller, "pool", pool["uuid"], {"replace": {"description": "a"}}, WIRE)
    with pytest.raises(PreconditionFailed):
        services.objects.patch(caller, "pool", pool["uuid"], {"replace": {"description": "b"}},
                               WIRE, if_match=pool["_last_modified"])


def test_builtin_objects_have_fixed_uuids(services, caller):
    got = services.objects.get(caller, "applicationprofile",
                               builtin_uuid("applicationprofile", "System-HTTP"), WIRE)
    assert got["name"] == "System-HTTP"


def test_key_file_and_password_file_are_private(state_path, services):
    mode = stat.S_IMODE(os.stat(state_path / "secret.key").st_mode)
    assert mode == 0o600
