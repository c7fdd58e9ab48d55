#!/usr/bin/env bash
# Starts (or stops) a private RabbitMQ broker for the queue benchmark.
#
#   bench/queue/setup-rabbitmq.sh [start]   install Debian's rabbitmq-server if missing, start a broker
#   bench/queue/setup-rabbitmq.sh stop      stop it and remove its data
#   bench/queue/setup-rabbitmq.sh status    print its PID if it runs
#
# The broker is not the system service: it runs from a fresh directory ($DIR,
# default /tmp/switchyard-bench-rabbitmq) with its own config, data, logs and
# Erlang cookie, as the `rabbitmq` user, and listens on loopback only:
#   AMQP         127.0.0.1:$RABBITMQ_BENCH_PORT        (default 17672, not 5672)
#   distribution 127.0.0.1:$RABBITMQ_BENCH_DIST_PORT   (default 37672)
#   epmd         127.0.0.1:$RABBITMQ_BENCH_EPMD_PORT   (default 14369, not 4369; a private epmd)
# No plugins are enabled (no management UI, no Prometheus listener).
# On `start` the PID of the broker's Erlang VM (beam.smp) is printed on the
# last line and written to $DIR/beam.pid; `stop` sends it SIGTERM (RabbitMQ
# shuts down cleanly on it), waits, and kills the private epmd.
#
# If the package is installed here, the system service is not started: when
# no /usr/sbin/policy-rc.d exists, one that denies service starts is put in
# place for the duration of the install and removed afterwards.
set -euo pipefail

DIR=${RABBITMQ_BENCH_DIR:-/tmp/switchyard-bench-rabbitmq}
PORT=${RABBITMQ_BENCH_PORT:-17672}
DIST_PORT=${RABBITMQ_BENCH_DIST_PORT:-37672}
EPMD_PORT=${RABBITMQ_BENCH_EPMD_PORT:-14369}
NODE=${RABBITMQ_BENCH_NODE:-swbench@localhost}
RMQ_BIN=/usr/lib/rabbitmq/bin

env_for_broker() {
    export HOME="$DIR"
    export RABBITMQ_NODENAME="$NODE"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$PORT"
    export RABBITMQ_DIST_PORT="$DIST_PORT"
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/log"
    export RABBITMQ_PID_FILE="$DIR/rabbit.pid"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT="$EPMD_PORT"
}

install_if_missing() {
    if [[ -x $RMQ_BIN/rabbitmq-server ]]; then
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "rabbitmq-server is not installed and we are not root" >&2
        exit 1
    fi
    local added_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y rabbitmq-server
    if [[ -n $added_policy ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    # Should a service manager have started it anyway, stop the system broker:
    # only the private one below is wanted.
    if command -v systemctl >/dev/null && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
        systemctl stop rabbitmq-server || true
        systemctl disable rabbitmq-server || true
    elif [[ -x /etc/init.d/rabbitmq-server ]]; then
        /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
    fi
}

beam_pid() { # the PID of the broker's VM, if it runs
    local pid
    [[ -f $DIR/beam.pid ]] || return 1
    pid=$(cat "$DIR/beam.pid")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_broker() {
    local pid
    if pid=$(beam_pid); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "broker $pid did not stop in 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ -f $DIR/launcher.pid ]]; then
        local lp
        lp=$(cat "$DIR/launcher.pid")
        if [[ -n $lp ]] && kill -0 "$lp" 2>/dev/null; then
            kill -TERM "$lp" 2>/dev/null || true
        fi
    fi
    # The private epmd (on our port only) outlives the node.
    if command -v epmd >/dev/null && ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; then
        ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    fi
    if [[ -d $DIR && $DIR == /tmp/* ]]; then
        rm -rf "$DIR"
    fi
}

start_broker() {
    install_if_missing
    if pid=$(beam_pid); then
        echo "a broker already runs from $DIR (pid $pid); stop it first" >&2
        exit 1
    fi
    if port_open "$PORT"; then
        echo "127.0.0.1:$PORT is taken by another process" >&2
        exit 1
    fi
    stop_broker # leftovers of an earlier run (epmd, old data)
    mkdir -p "$DIR/mnesia" "$DIR/log"
    : >"$DIR/rabbitmq-env.conf"
    echo '[].' >"$DIR/enabled_plugins"
    cat >"$DIR/rabbitmq.conf" <<EOF
# Generated by bench/queue/setup-rabbitmq.sh: loopback only, no plugins.
listeners.tcp.1 = 127.0.0.1:$PORT
loopback_users.guest = true
# The benchmark keeps the queue short; leave the defaults for everything that
# affects durability (queue index and message store sync as shipped).
log.console = false
log.file.level = warning
EOF
    # Erlang's cookie is read from $HOME.
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie"
    chmod 400 "$DIR/.erlang.cookie"
    chown -R rabbitmq:rabbitmq "$DIR"
    env_for_broker
    # Run as the rabbitmq user, detached from this shell (setsid) so that the
    # caller's job control does not touch it.
    setsid runuser -u rabbitmq --preserve-environment -- "$RMQ_BIN/rabbitmq-server" \
        >"$DIR/log/startup.log" 2>&1 </dev/null &
    echo $! >"$DIR/launcher.pid"
    for _ in $(seq 600); do
        if port_open "$PORT"; then
            break
        fi
        sleep 0.1
    done
    if ! port_open "$PORT"; then
        echo "the broker did not open 127.0.0.1:$PORT in 60 s; log:" >&2
        tail -30 "$DIR/log/startup.log" >&2 || true
        tail -30 "$DIR/log/"*.log >&2 || true
        stop_broker
        exit 1
    fi
    local pid=
    if [[ -f $DIR/rabbit.pid ]]; then
        pid=$(cat "$DIR/rabbit.pid")
    fi
    if [[ -z $pid ]]; then
        pid=$(pgrep -u rabbitmq -f "beam.smp.*-sname $NODE" | head -1 || true)
    fi
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        echo "cannot find the broker's beam.smp process" >&2
        stop_broker
        exit 1
    fi
    echo "$pid" >"$DIR/beam.pid"
    echo "# RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?') on amqp://127.0.0.1:$PORT (node $NODE, data $DIR)"
    echo "$pid"
}

case "${1:-start}" in
start) start_broker ;;
stop) stop_broker ;;
status)
    if pid=$(beam_pid); then echo "$pid"; else
        echo "not running" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
