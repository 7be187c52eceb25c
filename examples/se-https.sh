#!/usr/bin/env bash
# Writes se-https.yaml: an HTTPS virtual service on 127.0.0.1:8443 with two certificates chosen
# by SNI (shop.example.test, api.example.test), HTTP on :8080 redirected to HTTPS, a policy
# sending /api/ to a second pool, and cookie persistence on the first pool.
#
#   bash examples/se-https.sh > se-https.yaml
#   python3 examples/backend.py 9001 & python3 examples/backend.py 9002 &
#   python3 examples/backend.py 9003 &
#   vantage-se --config se-https.yaml
#   curl -k --resolve shop.example.test:8443:127.0.0.1 https://shop.example.test:8443/
#   curl -k --resolve api.example.test:8443:127.0.0.1 https://api.example.test:8443/api/x
#
# Edit the file (add a server, change a rule): vantage-se reloads it without dropping a request.
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

cert() {  # name -> PEM certificate and key, self-signed, 90 days
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
        -subj "/CN=$1" -addext "subjectAltName=DNS:$1" \
        -keyout "$dir/$1.key" -out "$dir/$1.crt" 2>/dev/null
}
indent() { sed 's/^/        /' "$1"; }

cert shop.example.test
cert api.example.test

cat <<YAML
sslkeyandcertificate:
  - name: shop-cert
    certificate:
      certificate: |
$(indent "$dir/shop.example.test.crt")
    key: |
$(indent "$dir/shop.example.test.key" | sed 's/^  //')
  - name: api-cert
    certificate:
      certificate: |
$(indent "$dir/api.example.test.crt")
    key: |
$(indent "$dir/api.example.test.key" | sed 's/^  //')

applicationpersistenceprofile:
  - name: sticky
    persistence_type: PERSISTENCE_TYPE_HTTP_COOKIE
    http_cookie_persistence_profile: {cookie_name: VSTICKY}

pool:
  - name: web
    lb_algorithm: LB_ALGORITHM_ROUND_ROBIN
    application_persistence_profile_ref: sticky
    servers:
      - {ip: {addr: 127.0.0.1}, port: 9001}
      - {ip: {addr: 127.0.0.1}, port: 9002}
  - name: api
    servers:
      - {ip: {addr: 127.0.0.1}, port: 9003}

httppolicyset:
  - name: routing
    http_request_policy:
      rules:
        - name: api-to-api-pool
          index: 1
          match: {path: {match_criteria: BEGINS_WITH, match_str: ["/api/"]}}
          switching_action: {action: HTTP_SWITCHING_SELECT_POOL, pool_ref: api}

applicationprofile:
  - name: https-only
    type: APPLICATION_PROFILE_TYPE_HTTP
    http_profile: {http_to_https: true}

vsvip:
  - name: local-vip
    vip: [{vip_id: "0", ip_address: {addr: 127.0.0.1}}]

virtualservice:
  - name: shop
    vsvip_ref: local-vip
    services: [{port: 8443, enable_ssl: true}, {port: 8080}]
    pool_ref: web
    application_profile_ref: https-only
    ssl_key_and_certificate_refs: [shop-cert, api-cert]
    http_policies: [{index: 1, http_policy_set_ref: routing}]
YAML
