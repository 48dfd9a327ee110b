# Helpers shared by the launcher scripts (sourced, not run).

imgbill_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# a free TCP port on the loopback interface, outside the ephemeral range
# that outgoing connections draw from (see scripts/lib/ImgbillPort.pm)
imgbill_free_port() {
    perl -I"$imgbill_root/scripts/lib" -MImgbillPort=free_port \
        -e 'print free_port()'
}

# wait until GET http://ADDR/ answers 200, or give up after N tenths of a second
imgbill_wait_http() {
    local addr=$1 tries=${2:-100}
    while [ "$tries" -gt 0 ]; do
        curl -fsS -o /dev/null --max-time 1 "http://$addr/" 2>/dev/null && return 0
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

# wait until redis-server at HOST:PORT answers PING
imgbill_wait_redis() {
    local host=${1%:*} port=${1##*:} tries=100
    while [ "$tries" -gt 0 ]; do
        [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}
