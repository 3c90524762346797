// Answers every TCP connection and UDP datagram with one line, on IPv4 and IPv6.
// Used by the lab's containers (UDP 53) and its "outside" namespace (all ports, via REDIRECT).
// Not socat's UDP-RECVFROM,fork: its lingering children share the listening socket and
// swallow datagrams from other peers that arrive within their -t window (seen: 1 in 6 lost).
//   node echo-server.js --udp PORT [--tcp PORT] [--reply TEXT]
"use strict";
const dgram = require("dgram");
const net = require("net");

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const reply = `${opt("--reply") || "dpa-echo"}\n`;
const udpPort = opt("--udp");
const tcpPort = opt("--tcp");

// One socket per family (v6 with ipv6Only) so a host without IPv6 still serves IPv4.
if (udpPort) {
  for (const type of ["udp4", "udp6"]) {
    const sock = dgram.createSocket(type === "udp6" ? { type, ipv6Only: true } : { type });
    sock.on("message", (_msg, peer) => sock.send(reply, peer.port, peer.address));
    sock.on("error", (e) => console.error(`${type} :${udpPort}: ${e.message}`));
    sock.bind(Number(udpPort));
  }
}
if (tcpPort) {
  for (const host of ["0.0.0.0", "::"]) {
    const srv = net.createServer((c) => {
      c.on("error", () => {});
      c.end(reply);
    });
    srv.on("error", (e) => console.error(`tcp ${host}:${tcpPort}: ${e.message}`));
    srv.listen({ port: Number(tcpPort), host, ipv6Only: host === "::" });
  }
}
