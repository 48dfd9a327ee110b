# Shared by scripts/build, scripts/test, scripts/demo, scripts/serve:
# install the Debian packages imgbill needs, once, on a fresh machine.

IMGBILL_PACKAGES="nginx-core nginx-dev libhiredis-dev libjansson-dev
    libssl-dev libpcre2-dev zlib1g-dev libcurl4-openssl-dev redis-server
    perl make gcc curl ca-certificates openssl"

imgbill_install_deps() {
    [ -n "${IMGBILL_NO_INSTALL:-}" ] && return 0

    local missing=() p
    for p in $IMGBILL_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}
