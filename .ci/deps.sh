#!/usr/bin/env bash
# Install the Debian packages idp needs, only when one is missing.
#   deps.sh runtime   what `make run` needs (xmlsec build dependencies for python3-saml)
#   deps.sh test      plus PostgreSQL, Redis and Chromium for the test suite
set -euo pipefail
PKGS=(pkg-config libxml2-dev libxmlsec1-dev libxmlsec1-openssl libxslt1-dev)
if [[ ${1:-runtime} == test ]]; then
  PKGS+=(postgresql redis-server xmlsec1 chromium fonts-liberation nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere than Debian (they do on our CI image): accept them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
((${#missing[@]})) || exit 0
SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt may hold the lock: wait for it instead of failing.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
