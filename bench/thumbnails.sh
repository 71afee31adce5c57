#!/usr/bin/env bash
# Thumbnail CPU cost, side by side in one run, on the same 720p30 H.264 High input:
#   classic:    one `ffmpeg -i rtmp://... -vf fps=1/10 -update 1 out.jpg` per stream,
#               pulling from nginx-rtmp (what the SRS + FFmpeg stack does);
#   streamgate: the node's own thumbnails (one keyframe decoded per stream per 10 s),
#               with each decoder: `worker` (long-lived H.264 worker processes, the
#               default) and `ffmpeg` (one short-lived ffmpeg per keyframe).
# For streamgate it reports the decoders' CPU (the node's process tree minus the node:
# live workers plus reaped ffmpeg children) and, to include scheduling, the difference
# between a node with thumbnails on and one with them off, all fed the same streams.
#
# Usage: bench/thumbnails.sh [STREAMS=4] [SECONDS=120]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4}
WINDOW=${2:-120}
WORK=$(mktemp -d /tmp/sg-bench-thumbs.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_self() { python3 -c "import os;f=open('/proc/$1/stat').read().rsplit(')',1)[1].split();t=os.sysconf('SC_CLK_TCK');print((int(f[11])+int(f[12]))/t)"; }
# CPU of a process, its reaped children and its live descendants.
cpu_tree() { python3 - "$1" <<'PY'
import os, sys, glob
tck = os.sysconf('SC_CLK_TCK')
def tree(pid):
    try:
        f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    except FileNotFoundError:
        return 0
    total = sum(int(x) for x in f[11:15])
    for c in glob.glob(f'/proc/{pid}/task/*/children'):
        for child in open(c).read().split():
            total += tree(child)
    return total
print(tree(sys.argv[1]) / tck)
PY
}

cargo build --release --bin streamgate -q
BIN=target/release/streamgate
echo "== input: 60 s of 1280x720 30 fps H.264 High (3 Mbps, GOP 2 s) + AAC"
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \
  -c:v libx264 -profile:v high -preset veryfast -b:v 3M -maxrate 3M -bufsize 6M -g 60 -pix_fmt yuv420p \
  -c:a aac -b:a 128k -t 60 "$WORK/input.flv"

# nginx-rtmp as the classic pipeline's RTMP source.
NGX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1;
error_log $WORK/nginx/error.log warn; pid $WORK/nginx/nginx.pid;
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:$NGX_PORT; application live { live on; } } }
CONF
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" & PIDS+=($!)

start_node() { # name thumbnails_enabled decoder
  local d="$WORK/$1"; mkdir -p "$d"
  cat > "$d/sg.toml" <<CONF
[rtmp]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[database]
url = "sqlite:$d/sg.db"
[thumbnails]
enabled = $2
decoder = "$3"
dir = "$d/thumbs"
interval = "10s"
CONF
  for i in $(seq 1 "$N"); do "$BIN" --config "$d/sg.toml" channel create "s$i" --json; done > "$d/channels.json"
  "$BIN" --config "$d/sg.toml" serve > "$d/node.log" 2>&1 & PIDS+=($!)
  echo $! > "$d/pid"
  for _ in $(seq 50); do grep -q "RTMP listening" "$d/node.log" && break; sleep 0.1; done
  grep -o 'RTMP listening addr=[0-9.:]*' "$d/node.log" | sed 's/.*://' > "$d/port"
}
start_node worker true worker
start_node ffmpeg true ffmpeg
start_node off false worker
sleep 0.5

publish() { # url
  ffmpeg -nostdin -v error -re -stream_loop -1 -i "$WORK/input.flv" -c copy -f flv "$1" & PIDS+=($!)
}
for node in worker ffmpeg off; do
  port=$(cat "$WORK/$node/port")
  python3 -c "import json,sys;[print(json.loads(l)['stream_key']) for l in open('$WORK/$node/channels.json')]" |
    while read -r key; do publish "rtmp://127.0.0.1:$port/live/$key"; done
done
for i in $(seq 1 "$N"); do publish "rtmp://127.0.0.1:$NGX_PORT/live/s$i"; done
sleep 3
CLASSIC=()
for i in $(seq 1 "$N"); do
  ffmpeg -nostdin -v error -i "rtmp://127.0.0.1:$NGX_PORT/live/s$i" -vf fps=1/10 -update 1 -y "$WORK/classic_$i.jpg" &
  CLASSIC+=($!); PIDS+=($!)
done
echo "== warming up 15 s, then measuring $WINDOW s with $N streams each"
sleep 15
snapshot() { # -> "classic w_self w_tree f_self f_tree o_tree"
  local c=0
  for p in "${CLASSIC[@]}"; do c=$(python3 -c "print($c+$(cpu_self "$p"))"); done
  echo "$c $(cpu_self "$(cat "$WORK/worker/pid")") $(cpu_tree "$(cat "$WORK/worker/pid")") \
$(cpu_self "$(cat "$WORK/ffmpeg/pid")") $(cpu_tree "$(cat "$WORK/ffmpeg/pid")") $(cpu_tree "$(cat "$WORK/off/pid")")"
}
S0=$(snapshot)
sleep "$WINDOW"
S1=$(snapshot)
written="$(ls "$WORK/worker/thumbs" | wc -l) $(ls "$WORK/ffmpeg/thumbs" | wc -l)"

python3 - "$N" "$WINDOW" "$S0" "$S1" "$written" <<'PY'
import sys
n, w = int(sys.argv[1]), float(sys.argv[2])
a = [float(x) for x in sys.argv[3].split()]
b = [float(x) for x in sys.argv[4].split()]
d = [y - x for x, y in zip(a, b)]
classic, w_self, w_tree, f_self, f_tree, off_tree = d
hours = n * w / 3600.0
rows = [
    ("classic: ffmpeg per stream, fps=1/10", classic),
    ("streamgate worker: decoder processes", w_tree - w_self),
    ("streamgate worker: node on minus node off", w_tree - off_tree),
    ("streamgate ffmpeg: decoder processes", f_tree - f_self),
    ("streamgate ffmpeg: node on minus node off", f_tree - off_tree),
]
print(f"streams per setup: {n}; window: {w:.0f} s; thumbnail files (worker, ffmpeg): {sys.argv[5]}")
print(f"| {'approach':<44} | {'CPU s per stream-hour':>21} | {'vs classic':>10} |")
print(f"|{'-'*46}|{'-'*23}|{'-'*12}|")
for name, cpu in rows:
    per = cpu / hours
    ratio = f"{classic / cpu:.1f}x cheaper" if cpu > 0 and name[:7] != "classic" else "1.0x"
    print(f"| {name:<44} | {per:>21.1f} | {ratio:>10} |")
PY
