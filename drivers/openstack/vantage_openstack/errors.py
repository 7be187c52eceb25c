"""What an openstacksdk or keystoneauth exception means for the person reading the SE's or the
cloud's runtime: one CloudError with an actionable reason, and whether another try may help."""
from __future__ import annotations

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from vantage.cloud.base import CloudConfigError, CloudError
from vantage_openstack.configuration import FIELD

ROLES_HINT = "see docs/clouds/openstack.md for the roles and policies the controller's user needs"
#: HTTP statuses worth another try of an idempotent call (overload, gateway trouble)
_RETRY_STATUS = frozenset({502, 503, 504})


def transient(exc: BaseException, *, idempotent: bool = True) -> bool:
    """Worth another try: the request never reached the cloud, or (for a call that may be
    repeated safely) the cloud was briefly unavailable."""
    if isinstance(exc, (ks_exc.ConnectFailure, ks_exc.ConnectTimeout)):
        return True  # the connection was never made: nothing happened in the cloud
    if not idempotent:
        return False
    if isinstance(exc, (ks_exc.RetriableConnectionFailure, ks_exc.GatewayTimeout,
                        ks_exc.ServiceUnavailable, ks_exc.BadGateway)):
        return True
    return isinstance(exc, os_exc.HttpException) and exc.status_code in _RETRY_STATUS


def details(exc: BaseException) -> str:
    """The cloud's own message, without the URL openstacksdk wraps around it."""
    text = getattr(exc, "details", None)
    if text:
        return str(text).strip()
    message = getattr(exc, "message", None)
    return str(message or exc).strip()


def is_quota(exc: BaseException) -> bool:
    # Neutron: 409 OverQuota "Quota exceeded for resources: ['port']";
    # Nova: 403 "Quota exceeded for instances: Requested 1, but already used 10 of 10"
    return isinstance(exc, os_exc.HttpException) and exc.status_code in (403, 409, 413) \
        and "quota" in details(exc).lower()


def cloud_error(what: str, exc: BaseException, *, auth_url: str | None = None,
                attempts: int = 1) -> CloudError:
    """The CloudError for `exc`, raised while the driver was `what` ("creating port ...")."""
    if isinstance(exc, CloudError):
        return exc
    where = f"Keystone at {auth_url}" if auth_url else "Keystone"
    if isinstance(exc, ks_exc.Unauthorized) or (
            isinstance(exc, os_exc.HttpException) and exc.status_code == 401):
        return CloudConfigError(f"{FIELD}.password", f"{where} rejected the credentials: check "
                                f"{FIELD}.username, password, project_name and the domains")
    if isinstance(exc, ks_exc.SSLError):
        return CloudConfigError(f"{FIELD}.ca_certificate", f"TLS to the cloud failed while "
                                f"{what} ({exc}): set {FIELD}.ca_certificate to the CA of its "
                                "endpoints")
    if isinstance(exc, (ks_exc.EndpointNotFound, os_exc.EndpointNotFound)):
        return CloudConfigError(f"{FIELD}.region", f"the service catalog has no endpoint for "
                                f"{what} ({exc}): check {FIELD}.region and interface")
    if isinstance(exc, (ks_exc.DiscoveryFailure, os_exc.ServiceDiscoveryException)) and \
            not isinstance(exc, ks_exc.ConnectionError):
        return CloudConfigError(f"{FIELD}.auth_url", f"no Keystone v3 API found while {what}: "
                                f"{exc}")
    if isinstance(exc, ks_exc.ConnectionError):
        return CloudError(f"the cloud cannot be reached while {what} ({attempts} tries): {exc}",
                          retryable=True)
    if isinstance(exc, os_exc.ResourceTimeout):
        return CloudError(f"{what}: {exc}", retryable=True)
    if isinstance(exc, os_exc.ResourceFailure):
        return CloudError(f"{what}: {exc}")
    if isinstance(exc, os_exc.HttpException):
        text = details(exc)
        status = exc.status_code
        if is_quota(exc):
            return CloudError(f"{what}: quota exceeded ({text}): raise the project's quota or "
                              "remove unused resources")
        if status == 403:
            return CloudError(f"{what}: forbidden by the cloud's policy ({text}); {ROLES_HINT}")
        if status == 404:
            return CloudError(f"{what}: not found ({text})")
        if status == 409:
            return CloudError(f"{what}: conflict ({text})")
        return CloudError(f"{what}: HTTP {status} from the cloud ({text})",
                          retryable=status is not None and status >= 500)
    if isinstance(exc, (os_exc.SDKException, ks_exc.ClientException)):
        return CloudError(f"{what}: {exc}")
    return CloudError(f"{what}: {type(exc).__name__}: {exc}")
