/**
 * Published ports that no allowlist polices: what `ufw-docker status` users look for. Docker's
 * DNAT rules in the nat table's DOCKER chain say what is published; the filter table's jumps into
 * any `DPA-*` chain (any allowlist, any owner, any stack) say what is policed.
 *
 * Pure functions only (no I/O). Guarantees (test/core/published.test.ts proves them, the port
 * arithmetic exhaustively against a port-by-port oracle):
 * - A port is reported only when Docker publishes it to other machines (a port published on a
 *   loopback address is not) and no jump of the path it takes covers it: DOCKER-USER's for the
 *   DNATed path (reached from FORWARD; without that jump nothing in DOCKER-USER polices), INPUT's
 *   for docker-proxy's. Jumps match the ORIGINAL destination (`--ctorigdstport`, `--ctorigdst`),
 *   so the published host port and address are what is compared, never the container's.
 * - A jump limited to one original destination covers only a port published on that address
 *   (or on addresses inside its network), never one published on every address.
 * - Part of a published range may be policed: what is left is reported, as ranges, in order.
 * - IPv6 through docker-proxy: with Docker's userland proxy (the default) a port published on
 *   every address but DNATed in IPv4 only (IPv4-only containers) is also served by docker-proxy
 *   on the host's IPv6 addresses, through INPUT. Where ip6tables works (the kernel has IPv6) and
 *   the ip6tables nat table has no DNAT for it, that path is reported (`path: "docker-proxy"`)
 *   unless an INPUT jump into a `DPA-*` chain covers it. With `"userland-proxy": false` that
 *   path does not exist; the finding says so.
 * - Docker 29's nftables backend (no DOCKER-USER: nothing of this tool can police there) publishes
 *   through its own nat chain ({@link publishedPortsNft}); those ports count like the others.
 * - iptables rules are read once by ./parse.ts; nothing here re-reads their text. nft rules are
 *   read here, by the few matches Docker writes.
 */
import { finding, type Finding } from "./findings";
import { formatCidr, parseCidr, type Cidr, type Family } from "./ip";
import { CHAIN_PREFIX, DOCKER_USER, INPUT, type PortRange, type Protocol } from "./layout";
import { getChain, isForwardJump, parseFilterTable, parseNatTable, type ParsedRule } from "./parse";

/** The nat chain in which Docker DNATs published ports (every layout, 20.10 to 29). */
export const DOCKER_NAT_CHAIN = "DOCKER";

/**
 * Where Docker 29's nftables firewall backend DNATs published ports: this chain of its tables `ip
 * docker-bridges` and `ip6 docker-bridges`.
 */
export const DOCKER_NFT_TABLE = "docker-bridges";
export const DOCKER_NFT_NAT_CHAIN = "nat-prerouting-and-output";
/**
 * The map of those tables whose keys are Docker's bridges (`"docker0" : jump
 * filter-forward-in__docker0`): what an allowlist exempts there (core's ./nft.ts).
 */
export const DOCKER_NFT_BRIDGE_MAP = "filter-forward-in-jumps";

/** One port (range) Docker publishes, from one DNAT rule of the nat table's DOCKER chain. */
export interface PublishedPort {
  readonly family: Family;
  readonly protocol: Protocol;
  /** The published host port (left side of `-p 8080:80`), or a range. */
  readonly ports: PortRange;
  /**
   * The host address it is published on (`-p 198.18.0.10:8080:80`, Docker's `-d`), without its
   * full-length mask; absent when it is published on every address.
   */
  readonly hostAddress?: string;
  /** Where Docker sends it (`--to-destination`): `172.17.0.2:80`, `[2001:db8::2]:80`. */
  readonly container: string;
}

/** A published port (or the part of its range) that no allowlist polices on one path. */
export interface UnpolicedPort extends PublishedPort {
  /**
   * `dnat`: the DNATed path (FORWARD, DOCKER-USER) of its own family. `docker-proxy`: IPv6
   * clients served by docker-proxy on the host's own sockets (INPUT), for a port Docker DNATs in
   * IPv4 only; `container` is then the IPv4 container docker-proxy forwards to.
   */
  readonly path: "dnat" | "docker-proxy";
}

/** What one host's read gives: both tables per family (null: the host gave no output). */
export interface PublishedState {
  readonly filter: { readonly ipv4: string | null; readonly ipv6: string | null };
  readonly nat: { readonly ipv4: string | null; readonly ipv6: string | null };
  /**
   * Docker's nftables backend: `nft list chain <ip|ip6> docker-bridges nat-prerouting-and-output`
   * (or only its DNAT lines), per family. Absent or null where Docker uses iptables.
   */
  readonly nft?: { readonly ipv4: string | null; readonly ipv6: string | null };
  /**
   * The jump lines of the `forward` and `input` chains of every allowlist's nftables table (any
   * owner; core's ./nft.ts), as nft lists them: what polices Docker's nftables ports.
   */
  readonly nftJumps?: string;
}

function isProtocol(p: string | undefined): p is Protocol {
  return p === "tcp" || p === "udp";
}

/** The value after `--to-destination` in a DNAT rule's target options. */
function toDestination(rule: ParsedRule): string | undefined {
  const args = rule.targetArgs ?? [];
  const i = args.indexOf("--to-destination");
  return i === -1 ? undefined : args[i + 1];
}

/** The address of a `-d`/`--ctorigdst` match, when it is one address or network of `family`. */
function cidrOf(value: string, family: Family): Cidr | undefined {
  const c = parseCidr(value);
  return c !== undefined && c.family === family ? c : undefined;
}

function isLoopback(c: Cidr): boolean {
  return c.family === "ipv4" ? c.address >> 24n === 127n : c.address === 1n && c.prefix === 128;
}

/**
 * The ports Docker publishes in one family: every `-j DNAT` rule of the nat DOCKER chain with a
 * tcp or udp port (`-A DOCKER [-d 198.18.0.10/32] ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT
 * --to-destination 172.17.0.2:80`; Docker 29 adds `! -s fe80::/10` in IPv6). `natText` is
 * `iptables-save -t nat` (or only its DNAT lines under `*nat`). Ports published on a loopback
 * address (`-p 127.0.0.1:8080:80`) are left out: other machines cannot reach them.
 */
export function publishedPorts(natText: string, family: Family): PublishedPort[] {
  const out: PublishedPort[] = [];
  for (const r of getChain(parseNatTable(natText, family), DOCKER_NAT_CHAIN)?.rules ?? []) {
    const protocol = r.protocol?.value;
    const ports = r.destinationPort;
    const container = toDestination(r);
    if (r.target !== "DNAT" || container === undefined || !isProtocol(protocol) || r.protocol!.negated)
      continue;
    if (ports === undefined || ports.negated) continue;
    const d = r.destination;
    const dst = d === undefined || d.negated ? undefined : cidrOf(d.value, family);
    if (dst !== undefined && isLoopback(dst)) continue;
    const hostAddress = hostAddressOf(dst, family);
    out.push({
      family,
      protocol,
      ports: ports.value,
      ...(hostAddress === undefined ? {} : { hostAddress }),
      container,
    });
  }
  return out;
}

/** `iptables-save` spells a host address without its full-length mask; so do nft's rules. */
function hostAddressOf(dst: Cidr | undefined, family: Family): string | undefined {
  if (dst === undefined) return undefined;
  const full = family === "ipv4" ? 32 : 128;
  return dst.prefix === full ? formatCidr(dst).replace(/\/\d+$/, "") : formatCidr(dst);
}

const NFT_PORT = /(?:^|\s)(tcp|udp) dport (\d{1,5})(?:-(\d{1,5}))?(?=\s|$)/;
const NFT_DADDR = /(?:^|\s)ip6? daddr ([0-9A-Fa-f:.]+(?:\/\d{1,3})?)(?=\s|$)/;
const NFT_DNAT = /(?:^|\s)dnat (?:ip6? )?to (\S+)/;

/**
 * The ports Docker 29's nftables backend publishes in one family: every rule of its
 * `nat-prerouting-and-output` chain with a `dnat to` and a tcp or udp `dport` (`iifname !=
 * "docker0" [ip daddr 198.18.0.10] tcp dport 8080 counter ... dnat to 172.17.0.2:80 comment
 * "DNAT"`). As {@link publishedPorts}: loopback addresses are left out; a negated address match
 * (`ip daddr != ...`) limits nothing here.
 */
export function publishedPortsNft(nftText: string, family: Family): PublishedPort[] {
  const out: PublishedPort[] = [];
  for (const line of nftText.split("\n")) {
    const port = NFT_PORT.exec(line);
    const dnat = NFT_DNAT.exec(line);
    if (port === null || dnat === null) continue;
    const daddr = NFT_DADDR.exec(line);
    const dst = daddr === null ? undefined : cidrOf(daddr[1], family);
    if (dst !== undefined && isLoopback(dst)) continue;
    const from = Number(port[2]);
    const hostAddress = hostAddressOf(dst, family);
    out.push({
      family,
      protocol: port[1] as Protocol,
      ports: { from, to: port[3] === undefined ? from : Number(port[3]) },
      ...(hostAddress === undefined ? {} : { hostAddress }),
      container: dnat[1],
    });
  }
  return out;
}

/** True when a jump limited to `limit` (absent: any destination) covers traffic to `published`. */
function destinationCovers(
  limit: string | undefined,
  published: string | undefined,
  family: Family,
): boolean {
  if (limit === undefined) return true;
  if (published === undefined) return false;
  const l = cidrOf(limit, family);
  const p = cidrOf(published, family);
  if (l === undefined || p === undefined || p.prefix < l.prefix) return false;
  const bits = BigInt((family === "ipv4" ? 32 : 128) - l.prefix);
  return p.address >> bits === l.address >> bits;
}

/** Whether a rule jumps into an allowlist's chain (any allowlist: `DPA-*`), nothing else. */
function jumpsToAllowlist(r: ParsedRule): boolean {
  return r.target !== undefined && r.target.startsWith(CHAIN_PREFIX) && r.targetArgs === undefined;
}

/**
 * The port ranges the jumps of one path cover for `p`: DOCKER-USER's (`--ctorigdstport`,
 * `--ctorigdst`) for `dnat`, INPUT's (`--dport`, `-d`: the proxy's connections are not DNATed)
 * for `docker-proxy`. A jump with a negated match, or with a source or interface limit that
 * narrows it to some clients, covers nothing here: it does not police the port for everyone.
 */
function coveringRanges(
  rules: readonly ParsedRule[],
  p: PublishedPort,
  path: UnpolicedPort["path"],
): PortRange[] {
  const out: PortRange[] = [];
  for (const r of rules) {
    if (!jumpsToAllowlist(r)) continue;
    if (r.protocol === undefined || r.protocol.negated || r.protocol.value !== p.protocol) continue;
    if (r.source !== undefined) continue;
    // Our INPUT jumps leave out the host's own connections (`! -i lo`): every other machine's pass.
    const i = r.inInterface;
    if (i !== undefined && !(path === "docker-proxy" && i.negated && i.value === "lo")) continue;
    const port = path === "dnat" ? r.ctOrigDstPort : r.destinationPort;
    const dst = path === "dnat" ? r.ctOrigDst : r.destination;
    if (port === undefined || port.negated || dst?.negated === true) continue;
    const host = path === "dnat" ? p.hostAddress : undefined;
    if (!destinationCovers(dst?.value, host, p.family)) continue;
    out.push(port.value);
  }
  return out;
}

/** The parts of `range` outside every range of `covered`, in order. */
export function uncovered(range: PortRange, covered: readonly PortRange[]): PortRange[] {
  const sorted = [...covered].sort((a, b) => a.from - b.from);
  const out: PortRange[] = [];
  let next = range.from;
  for (const c of sorted) {
    if (c.to < next) continue;
    if (c.from > range.to) break;
    if (c.from > next) out.push({ from: next, to: c.from - 1 });
    next = Math.max(next, c.to + 1);
    if (next > range.to) return out;
  }
  if (next <= range.to) out.push({ from: next, to: range.to });
  return out;
}

function same(a: PublishedPort, b: PublishedPort): boolean {
  return a.protocol === b.protocol && a.ports.from === b.ports.from && a.ports.to === b.ports.to;
}

/**
 * The published ports of one host that no allowlist polices, per family and path (see the
 * header): IPv4 first, then IPv6, each in the nat table's order.
 */
export function unpolicedPorts(state: PublishedState): UnpolicedPort[] {
  const out: UnpolicedPort[] = [];
  const of = (f: Family) => {
    const nat = state.nat[f];
    return nat === null ? [] : publishedPorts(nat, f);
  };
  const published = { ipv4: of("ipv4"), ipv6: of("ipv6") };
  const left = (p: PublishedPort, rules: readonly ParsedRule[], path: UnpolicedPort["path"]) => {
    for (const ports of uncovered(p.ports, coveringRanges(rules, p, path))) out.push({ ...p, ports, path });
  };
  for (const family of ["ipv4", "ipv6"] as const) {
    const text = state.filter[family];
    if (text === null) continue;
    const table = parseFilterTable(text, family);
    // Without FORWARD's jump to DOCKER-USER, nothing in it sees a packet (fail-open).
    const reached = (getChain(table, "FORWARD")?.rules ?? []).some(isForwardJump);
    const dockerUser = reached ? (getChain(table, DOCKER_USER)?.rules ?? []) : [];
    for (const p of published[family]) left(p, dockerUser, "dnat");
    if (family === "ipv6") {
      // docker-proxy serves IPv6 clients a port DNATed in IPv4 only, on every address.
      const input = getChain(table, INPUT)?.rules ?? [];
      for (const p of proxiedToIpv6(published)) left(p, input, "docker-proxy");
    }
  }
  // Docker's nftables backend: policed by the jumps of our nftables tables, never by DOCKER-USER.
  const nftOf = (f: Family) => {
    const text = state.nft?.[f] ?? null;
    return text === null ? [] : publishedPortsNft(text, f);
  };
  const nft = { ipv4: nftOf("ipv4"), ipv6: nftOf("ipv6") };
  const jumps = (state.nftJumps ?? "").split("\n").map((l) => l.trim());
  const nftLeft = (p: PublishedPort, path: UnpolicedPort["path"]) => {
    for (const ports of uncovered(p.ports, nftCovering(jumps, p, path))) out.push({ ...p, ports, path });
  };
  // (A family whose iptables gave nothing is left out, as above: no IPv6 on the host.)
  for (const family of ["ipv4", "ipv6"] as const) {
    if (state.filter[family] !== null) for (const p of nft[family]) nftLeft(p, "dnat");
  }
  if (state.filter.ipv6 !== null) for (const p of proxiedToIpv6(nft)) nftLeft(p, "docker-proxy");
  return out;
}

/**
 * The ports docker-proxy serves to IPv6 clients: published on every address but DNATed in IPv4
 * only (IPv4-only containers), as IPv6 ports without a host address.
 */
function proxiedToIpv6(published: {
  readonly ipv4: readonly PublishedPort[];
  readonly ipv6: readonly PublishedPort[];
}): PublishedPort[] {
  return published.ipv4
    .filter((p) => p.hostAddress === undefined && !published.ipv6.some((q) => same(p, q)))
    .map(({ hostAddress: _none, ...rest }) => ({ ...rest, family: "ipv6" as const }));
}

const NFT_FORWARD_JUMP =
  /^(?:meta nfproto (ipv4|ipv6) )?meta l4proto (tcp|udp) ct status dnat (?:ct original (ip6?) daddr (\S+) )?ct original proto-dst (\d+)(?:-(\d+))? jump allowlist$/;
const NFT_INPUT_JUMP =
  /^(?:meta nfproto (ipv4|ipv6) )?iifname != "lo" (?:(ip6?) daddr (\S+) )?(tcp|udp) dport (\d+)(?:-(\d+))? jump allowlist$/;

/** The port ranges our nftables jumps (as ./nft.ts renders them) police for `p` on `path`. */
function nftCovering(lines: readonly string[], p: PublishedPort, path: UnpolicedPort["path"]): PortRange[] {
  const out: PortRange[] = [];
  const dstFamily = (d: string | undefined): Family | undefined =>
    d === undefined ? undefined : d === "ip" ? "ipv4" : "ipv6";
  for (const line of lines) {
    const f = NFT_FORWARD_JUMP.exec(line);
    const i = f === null ? NFT_INPUT_JUMP.exec(line) : null;
    const m =
      path === "dnat" && f !== null
        ? { only: f[1], proto: f[2], dfam: f[3], dst: f[4], from: f[5], to: f[6] }
        : path === "docker-proxy" && i !== null
          ? { only: i[1], dfam: i[2], dst: i[3], proto: i[4], from: i[5], to: i[6] }
          : undefined;
    if (m === undefined || m.proto !== p.protocol) continue;
    if (m.only !== undefined && m.only !== p.family) continue;
    const df = dstFamily(m.dfam);
    if (df !== undefined && df !== p.family) continue;
    if (!destinationCovers(m.dst, path === "dnat" ? p.hostAddress : undefined, p.family)) continue;
    out.push({ from: Number(m.from), to: Number(m.to ?? m.from) });
  }
  return out;
}

/** One unpoliced port as a line: `8080/tcp ipv4 -> 172.17.0.2:80`, `... ipv6 (docker-proxy) -> ...`. */
export function unpolicedPortText(p: UnpolicedPort): string {
  const ports = p.ports.from === p.ports.to ? `${p.ports.from}` : `${p.ports.from}-${p.ports.to}`;
  const on = p.hostAddress === undefined ? "" : ` on ${p.hostAddress}`;
  const via = p.path === "docker-proxy" ? " (docker-proxy)" : "";
  return `${ports}/${p.protocol} ${p.family}${on}${via} -> ${p.container}`;
}

/**
 * A warning per family with unpoliced ports, naming them and the fix; none when every published
 * port is policed.
 */
export function unpolicedFindings(ports: readonly UnpolicedPort[]): Finding[] {
  const out: Finding[] = [];
  for (const family of ["ipv4", "ipv6"] as const) {
    const mine = ports.filter((p) => p.family === family);
    if (mine.length === 0) continue;
    const proxy = mine.some((p) => p.path === "docker-proxy")
      ? ` (docker-proxy: with Docker's userland proxy, the default, docker-proxy serves these IPv4-only ports on the host's IPv6 addresses; with "userland-proxy": false they are not reachable that way)`
      : "";
    out.push(
      finding(
        "published-port-unpoliced",
        "warning",
        family,
        `Docker publishes ${mine.length === 1 ? "a port" : `${mine.length} ports`} on this host that no allowlist polices in ${family}, so everyone who reaches the host reaches ${mine.length === 1 ? "it" : "them"}: ${mine.map(unpolicedPortText).join(", ")}${proxy}. Fix: add an allowlist for ${mine.length === 1 ? "it" : "each"} (port and protocol as shown), or unpublish ${mine.length === 1 ? "it" : "them"} (or publish on 127.0.0.1 only).`,
      ),
    );
  }
  return out;
}
