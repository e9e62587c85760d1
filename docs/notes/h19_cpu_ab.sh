#!/bin/bash
# usage: cpu_ab.sh TREE TAG N : server CPU seconds (utime+stime, from the load generator) while opening N
tree=$1; tag=$2; n=$3
LG=$(ls -t ~/.cache/wsloop-bench/loadgen-* | head -1)
cd /tmp/h19
PYTHONPATH=$tree taskset -c 0 /work/main/.venv/bin/python /work/wt/h19/stress/peers/wsloop_server.py selectors > /tmp/h19/srvc.$tag.out 2>&1 &
spid=$!
for i in $(seq 50); do grep -q PORT /tmp/h19/srvc.$tag.out && break; sleep 0.2; done
port=$(awk '/PORT/{print $2}' /tmp/h19/srvc.$tag.out)
echo "$tag $(timeout 120 taskset -c 1 $LG idle --port $port --server-pid $spid --conns $n --size 64 --timeout 60 --connect-inflight 100 <<< '' | head -1)"
kill -TERM $spid; wait $spid; echo "server rc=$?"
