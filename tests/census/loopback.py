"""Loopback inside the sandbox: http.server with urllib.request, asyncio streams, UDP and IPv6 on ::1."""

import asyncio
import http.server
import socket
import socketserver
import threading
import urllib.request


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


with open("index.html", "w") as fh:
    fh.write("<h1>census</h1>")
with socketserver.TCPServer(("127.0.0.1", 0), Handler) as httpd:
    port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever)
    t.start()
    print(urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5).read())
    print(urllib.request.urlopen(f"http://localhost:{port}/index.html", timeout=5).status)
    httpd.shutdown()
    t.join()


async def main() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    print(await reader.readline())
    writer.close()
    server.close()
    await server.wait_closed()


asyncio.run(main())
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.sendto(b"dgram", udp.getsockname())
print(udp.recvfrom(100)[0])
six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
six.bind(("::1", 0))
six.listen()
c = socket.create_connection(six.getsockname()[:2])
conn, _ = six.accept()
c.sendall(b"v6")
print(conn.recv(10), socket.gethostname(), socket.getaddrinfo("localhost", 80)[0][0].name)
for s in (udp, out, six, c, conn):
    s.close()
