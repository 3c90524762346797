/**
 * The live state of one host as the scripts' `report_state` prints it, and the preconditions a
 * host must meet before rules are added to it.
 *
 * Pure: text in, typed snapshot (or a HostError) out. The rules texts stay the host's byte
 * strings (core's ./text.ts); what is only ever shown to a person (a tool's error, its version)
 * becomes printable text here.
 */
import { dockerNftBridges, firewallBackendOf, type Family, type GuardReport, type LiveState } from "../core";
import { hostText } from "../core/text";
import { HostError } from "./errors";

/** Both families, in the order the host prints and applies them. */
export const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];
/** The digit the scripts use for a family (`save4`, `payload6`, `new4`...). */
export const FAMILY_DIGIT: Record<Family, "4" | "6"> = { ipv4: "4", ipv6: "6" };

/**
 * Which iptables `iptables` on the host is, as `iptables -V` names it in parentheses. (The
 * core's `Backend` names the same thing from a save header's tool name: "nft".)
 */
export type HostBackend = "nf_tables" | "legacy" | "unknown";

/** The live state of one host, as read in one round trip. */
export interface HostSnapshot {
  readonly host: string;
  readonly uid?: number;
  /** Which iptables backend `iptables` on the host is. */
  readonly backend: HostBackend;
  readonly iptablesVersion: string;
  /** `iptables-save -t filter`, or null when it failed (then `ipv4Error` says why). */
  readonly ipv4: string | null;
  readonly ipv4Error?: string;
  /** `ip6tables-save -t filter`, or null (no ip6tables, IPv6 off in the kernel...). */
  readonly ipv6: string | null;
  readonly ipv6Error?: string;
  /**
   * The DNAT lines of the nat table's DOCKER chain per family (what Docker publishes, read by
   * core's published.ts), or null where `iptables-save -t nat` failed (no ip6tables...).
   */
  readonly nat: { readonly ipv4: string | null; readonly ipv6: string | null };
  /**
   * Docker's nftables backend (no DOCKER-USER): the DNAT lines of its `nat-prerouting-and-output`
   * chain per family, or null where that chain does not exist (Docker uses iptables).
   */
  readonly nft: { readonly ipv4: string | null; readonly ipv6: string | null };
  /** Set only when this backend has no Docker chains: what the other backend has. */
  readonly otherBackend?: { readonly tool: string; readonly dockerChains: number };
  /** Count of nftables tables named like Docker's (Docker 29 nftables firewall backend). */
  readonly nftDockerTables: number;
  /**
   * Our nftables table (core's ./nft.ts) where the host has nft: its listing (null: none) and the
   * host's digest of it; undefined on a host without nft.
   */
  readonly nftTable?: { readonly listing: string | null; readonly sha: string };
  /** Docker's bridges as its nftables backend names them (core's `dockerNftBridges`). */
  readonly nftBridges: readonly string[];
  /** The jump lines of every allowlist's nftables table (core's `PublishedState.nftJumps`). */
  readonly nftJumps: string;
  readonly tools: { readonly conntrack: boolean; readonly flock: boolean };
  /**
   * `ipset save` of this allowlist's ipsets (core's ./ipset.ts; "" when there are none), where
   * ipset works on the host (the tool and the kernel's ip_set module); undefined where it does not.
   */
  readonly ipsets?: string;
  /**
   * The core's "saved"-scope fingerprint (DOCKER-USER and our chain) of the saved rules files
   * and of the live rules; "missing" when the file does not exist, "off" when persistence is off.
   */
  readonly persisted: { readonly ipv4: string; readonly ipv6: string };
  readonly liveFingerprint: { readonly ipv4: string; readonly ipv6: string };
  /** The guard on the host (core's ./guard.ts): its script, units and this allowlist's copies. */
  readonly guard: GuardReport;
  /**
   * Set when a rollback of this allowlist failed for good (the sync script's marker, see
   * `UNKNOWN_STATE_DIR` in ./scripts.ts): what it says (when, which families, the restores'
   * stderr). The rules may be half-changed until a write of this allowlist succeeds.
   */
  readonly unknownState?: string;
}

/** Sections of script output, as `parseSections` (./scripts.ts) splits them. */
export type Sections = Map<string, { header: string; body: string }>;

function kv(body: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of (body ?? "").split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) map.set(line.slice(0, i), line.slice(i + 1));
  }
  return map;
}

/** The snapshot in the sections `report_state` prints (scripts.ts). */
export function parseSnapshot(host: string, sections: Sections): HostSnapshot {
  const meta = kv(sections.get("meta")?.body);
  const other = kv(sections.get("other")?.body);
  const persisted = kv(sections.get("persisted")?.body);
  const save = (n: "4" | "6") => {
    const s = sections.get(`save${n}`);
    const ok = s !== undefined && s.header.endsWith(" rc=0");
    return {
      text: ok ? s.body : null,
      error: ok ? undefined : hostText(sections.get(`save${n}err`)?.body.trim() ?? "no output"),
    };
  };
  const nat = (n: "4" | "6") => {
    const s = sections.get(`nat${n}`);
    return s !== undefined && s.header.endsWith(" rc=0") ? s.body : null;
  };
  const s4 = save("4");
  const s6 = save("6");
  const version = hostText(meta.get("iptables") ?? "");
  const uid = Number(meta.get("uid"));
  return {
    host,
    uid: Number.isInteger(uid) ? uid : undefined,
    backend: /nf_tables/.test(version) ? "nf_tables" : /legacy/.test(version) ? "legacy" : "unknown",
    iptablesVersion: version,
    ipv4: s4.text,
    ipv4Error: s4.error,
    ipv6: s6.text,
    ipv6Error: s6.error,
    nat: { ipv4: nat("4"), ipv6: nat("6") },
    nft: { ipv4: sections.get("nftnat4")?.body ?? null, ipv6: sections.get("nftnat6")?.body ?? null },
    otherBackend: other.has("backend")
      ? { tool: hostText(other.get("backend") ?? ""), dockerChains: Number(other.get("dockerChains") ?? "0") }
      : undefined,
    nftDockerTables: Number(other.get("nftDockerTables") ?? "0"),
    ...nftTableOf(sections.get("nfttable")),
    nftBridges: dockerNftBridges(sections.get("nftbridges")?.body ?? ""),
    nftJumps: sections.get("nftjumps")?.body ?? "",
    tools: { conntrack: meta.get("tool.conntrack") === "yes", flock: meta.get("tool.flock") === "yes" },
    ...(sections.has("ipsets") ? { ipsets: sections.get("ipsets")!.body } : {}),
    persisted: { ipv4: persisted.get("v4") ?? "missing", ipv6: persisted.get("v6") ?? "missing" },
    liveFingerprint: { ipv4: persisted.get("live4") ?? "", ipv6: persisted.get("live6") ?? "" },
    guard: parseGuardReport(sections),
    ...(sections.has("unknown-state")
      ? { unknownState: hostText(sections.get("unknown-state")?.body.trim() ?? "") }
      : {}),
  };
}

/** Our nftables table from a section `nfttable rc=<n> sha=<digest>` (or `newnft rc=<n>`, no digest). */
export function nftTableOf(section: { header: string; body: string } | undefined): {
  nftTable?: { listing: string | null; sha: string };
} {
  if (section === undefined) return {};
  const rc = /(?:^| )rc=(\d+)/.exec(section.header)?.[1];
  const sha = /(?:^| )sha=([0-9a-f]+)/.exec(section.header)?.[1] ?? "";
  return { nftTable: { listing: rc === "0" && section.body !== "" ? section.body : null, sha } };
}

/** What the core plans from (core's `LiveState`): the filter tables, our ipsets and our nftables table. */
export function liveOf(snapshot: HostSnapshot): LiveState {
  const t = snapshot.nftTable;
  return {
    ipv4: snapshot.ipv4,
    ipv6: snapshot.ipv6,
    ...(snapshot.ipsets === undefined ? {} : { ipsets: snapshot.ipsets }),
    ...(t === undefined
      ? {}
      : {
          nft: {
            ...t,
            bridges: snapshot.nftBridges,
            dockerNftables: snapshot.nft.ipv4 !== null || snapshot.nft.ipv6 !== null,
          },
        }),
  };
}

/** The guard sections `report_guard` prints (guard, guardcopy4, guardcopy6); absent = nothing installed. */
export function parseGuardReport(sections: Sections): GuardReport {
  const g = kv(sections.get("guard")?.body);
  const copy = (n: "4" | "6" | "nft") => {
    const s = sections.get(`guardcopy${n}`);
    return s !== undefined && s.header.endsWith(" present") ? s.body : null;
  };
  return {
    systemd: g.get("systemd") === "yes",
    script: g.get("script") ?? "missing",
    service: g.get("service") ?? "missing",
    timer: g.get("timer") ?? "missing",
    listener: g.get("listener") ?? "missing",
    serviceEnabled: g.get("serviceEnabled") || "-",
    timerEnabled: g.get("timerEnabled") || "-",
    timerActive: g.get("timerActive") || "-",
    listenerEnabled: g.get("listenerEnabled") || "-",
    copies: { ipv4: copy("4"), ipv6: copy("6"), nft: copy("nft") },
  };
}

/** True when persistence is on and a family's saved file lags behind its live rules. */
export function needsPersist(snapshot: HostSnapshot, persist: boolean): boolean {
  return (
    persist &&
    FAMILIES.some((f) => snapshot[f] !== null && snapshot.persisted[f] !== snapshot.liveFingerprint[f])
  );
}

/**
 * Refuses hosts where rules would be inert or land in the wrong place. Called before any change
 * that adds rules (create/update); deleting and reading stay possible on a broken host.
 */
export function assertChangeable(snapshot: HostSnapshot): void {
  const host = snapshot.host;
  if (!snapshot.tools.flock) {
    throw new HostError(`flock is not installed, so changes cannot be serialized. Fix: install util-linux.`, {
      host,
      kind: "precondition",
    });
  }
  // Docker's nftables backend: the allowlist is our own nftables table (core's ./nft.ts).
  if (firewallBackendOf(liveOf(snapshot)) === "nftables") return;
  if (snapshot.ipv4 === null) {
    throw new HostError(
      `iptables-save failed (${snapshot.ipv4Error ?? "unknown error"}). Fix: install iptables and check ` +
        `that the user may run it (root, or sudo without password).`,
      { host, kind: "precondition", command: "dpa-read" },
    );
  }
  if (/^:DOCKER-USER /m.test(snapshot.ipv4)) return;
  const other = snapshot.otherBackend;
  if (other !== undefined && other.dockerChains > 0) {
    const fixTo = snapshot.backend === "nf_tables" ? "iptables-legacy" : "iptables-nft";
    throw new HostError(
      `iptables backend mismatch: \`iptables\` here is ${snapshot.backend} (${snapshot.iptablesVersion}), but ` +
        `Docker's chains (${other.dockerChains} DOCKER* chains) live in the other backend (${other.tool}). Rules ` +
        `written here would be invisible to Docker's traffic. Fix: make \`iptables\` point to the backend ` +
        `Docker uses (update-alternatives --set iptables /usr/sbin/${fixTo}; same for ip6tables) or restart ` +
        `Docker after switching.`,
      { host, kind: "precondition" },
    );
  }
  if (snapshot.nftDockerTables > 0) {
    throw new HostError(
      `DOCKER-USER does not exist and Docker's nftables tables do${snapshot.nftTable === undefined ? ", but nft cannot be run here" : " but hold no DNAT chain"}. ` +
        `Fix: install nftables (the \`nft\` tool) and check that the user may run it (root, or sudo without ` +
        `password), or start Docker so that it builds its tables.`,
      { host, kind: "precondition" },
    );
  }
  throw new HostError(
    `the iptables chain DOCKER-USER does not exist (${snapshot.iptablesVersion}). Docker creates it when ` +
      `it starts and manages iptables. Fix: start Docker (systemctl start docker) and make sure ` +
      `"iptables": false is not set in /etc/docker/daemon.json; rules added without it would never see ` +
      `traffic to published ports.`,
    { host, kind: "precondition" },
  );
}
