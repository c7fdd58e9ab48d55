#!/usr/bin/env bash
# Publish an event through Switchyard's HTTP bridge with a signed request,
# using curl and openssl only.
#
#   SWITCHYARD_BRIDGE=http://127.0.0.1:8090 SWITCHYARD_KEY=mykey SWITCHYARD_SECRET=... \
#       ./publish.sh com.example.topic '["hello", 42]'
#
# Prints the router's answer ({"id": ...}); exits non-zero on a refusal.
set -euo pipefail
topic=${1:?usage: publish.sh TOPIC [ARGS_JSON]}
args=${2:-[]}
base=${SWITCHYARD_BRIDGE:-http://127.0.0.1:8090}
key=${SWITCHYARD_KEY:?set SWITCHYARD_KEY}
secret=${SWITCHYARD_SECRET:?set SWITCHYARD_SECRET}

body="{\"topic\": \"$topic\", \"args\": $args}"
timestamp=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
seq=1
# seq and nonce are decimal integers (as Crossbar parses them); a signature is
# accepted once, so each request gets a fresh random nonce.
nonce=$((16#$(openssl rand -hex 6)))
# URL-safe base64 with padding of HMAC-SHA256(secret, key+timestamp+seq+nonce+body)
signature=$(printf '%s' "$key$timestamp$seq$nonce$body" |
    openssl dgst -sha256 -hmac "$secret" -binary | base64 | tr '+/' '-_')

# Percent-encode what may appear in the query values.
enc() { local s=$1; s=${s//%/%25}; s=${s//:/%3A}; s=${s//=/%3D}; s=${s//+/%2B}; s=${s//&/%26}; s=${s// /%20}; printf '%s' "$s"; }
query="key=$(enc "$key")&timestamp=$(enc "$timestamp")&seq=$seq&nonce=$nonce&signature=$(enc "$signature")"

curl --fail-with-body -sS -X POST -H 'Content-Type: application/json' \
    --data-binary "$body" "$base/publish?$query"
echo
