import http.server
import json
import os
import socket
import struct
import threading
import time
import urllib.parse

# The test's own web server (ports 80 and 8080, and 443 with a certificate) on its own Docker network: files from /srv/files,
# /slow/NAME after a second, /redirect?to=URL, and /stats (every request seen and
# the most /slow/ ones waiting at once) for the test to check what reached it.
ROOT = "/srv/files"
lock = threading.Lock()
state = {"requests": [], "current": 0, "max_concurrent": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/stats":
            with lock:
                body = json.dumps(state).encode()
            return self.reply(200, body)
        with lock:
            state["requests"].append(self.path)
        name = url.path[1:]
        if url.path.startswith("/slow/"):
            # Counted from the request until before the answer: a client that
            # waits for an answer before its next request can never overlap here.
            with lock:
                state["current"] += 1
                state["max_concurrent"] = max(state["max_concurrent"], state["current"])
            time.sleep(1)
            with lock:
                state["current"] -= 1
            name = url.path[len("/slow/"):]
        if url.path == "/redirect":
            target = urllib.parse.parse_qs(url.query).get("to", ["/"])[0]
            return self.reply(302, b"", [("Location", target)])
        path = os.path.join(ROOT, os.path.basename(name))
        if not os.path.isfile(path):
            return self.reply(404, b"not found\n")
        with open(path, "rb") as f:
            self.reply(200, f.read())

    def reply(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


# TFTP on udp 69 (RFC 1350 read requests, octet, 512-byte blocks); requests are
# counted in /stats as "tftp:NAME".
def tftp_transfer(data, client):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.connect(client)
    for i in range(len(data) // 512 + 1):
        number = (i + 1) & 0xFFFF
        block = struct.pack("!HH", 3, number) + data[i * 512:(i + 1) * 512]
        for _ in range(5):
            s.send(block)
            try:
                if s.recv(600)[:4] == struct.pack("!HH", 4, number):
                    break
            except OSError:
                pass
        else:
            break
    s.close()


def tftp_serve():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 69))
    while True:
        packet, client = s.recvfrom(1024)
        if packet[:2] != b"\x00\x01":
            continue
        name = packet[2:].split(b"\x00")[0].decode(errors="replace")
        with lock:
            state["requests"].append("tftp:" + name)
        path = os.path.join(ROOT, os.path.basename(name))
        if not os.path.isfile(path):
            s.sendto(struct.pack("!HH", 5, 1) + b"File not found\x00", client)
            continue
        with open(path, "rb") as f:
            data = f.read()
        threading.Thread(target=tftp_transfer, args=(data, client), daemon=True).start()


threading.Thread(target=tftp_serve, daemon=True).start()

# HTTPS on 443 when the test gave a certificate (/srv/tls/leaf.pem and leaf.key).
TLS = "/srv/tls"
if os.path.isfile(os.path.join(TLS, "leaf.pem")):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(TLS, "leaf.pem"), os.path.join(TLS, "leaf.key"))
    secure = http.server.ThreadingHTTPServer(("0.0.0.0", 443), Handler)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threading.Thread(target=secure.serve_forever, daemon=True).start()

alt = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
threading.Thread(target=alt.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 80), Handler).serve_forever()
