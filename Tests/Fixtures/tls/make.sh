#!/usr/bin/env bash
# Makes the TLS test fixtures in this directory (checked in; rerun to renew): a test CA; leaves
# it signs for "localhost" and 127.0.0.1 — ECDSA P-256 (good), RSA-2048, one for another host
# (wrong-host), one already expired — and a client certificate. Valid for 100 years, except
# the expired one. Needs the openssl command (OpenSSL 3).
set -euo pipefail
cd "$(dirname "$0")"
days=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -days $days -subj "/CN=Sockets test CA" -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() {  # name key-file subject-alt-names days extra-usage
    local name=$1 key=$2 san=$3 valid=$4 usage=$5
    openssl req -new -key "$key" -subj "/CN=$name" -out "$name.csr"
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$san" "$usage" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$valid" \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}
ec good.key;  leaf good good.key "DNS:localhost,IP:127.0.0.1,IP:::1" $days serverAuth
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null
leaf rsa rsa.key "DNS:localhost,IP:127.0.0.1" $days serverAuth
ec wronghost.key; leaf wronghost wronghost.key "DNS:other.example" $days serverAuth
ec expired.key; leaf expired expired.key "DNS:localhost,IP:127.0.0.1" -1 serverAuth
ec client.key; leaf client client.key "DNS:client" $days clientAuth
rm -f ca.srl
echo "made: $(ls *.pem | tr '\n' ' ')"
