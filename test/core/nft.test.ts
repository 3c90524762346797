/**
 * Our nftables table (provider/core/nft.ts) against what real nft prints: the fixtures in
 * test/core/fixtures/nftables are `nft -s list table` of the rendered tables, loaded by nft 1.0.6
 * in a throwaway namespace (the command is in that folder's README). The render must equal nft's
 * own listing in canonical form, or every plan would show a change that is none.
 */
import { readFileSync } from "fs";
import { join } from "path";
import {
  canonicalNft,
  dockerNftBridges,
  firewallBackendOf,
  planAllowlist,
  renderNftTable,
  validateAllowlist,
  verifyNft,
  withoutNftBridgeExemptions,
  type AllowlistSpec,
  type LiveState,
} from "../../provider/core";
import { compareIfnames, nftElements, nftOwner, nftText, planNft } from "../../provider/core/nft";
import { parseCidr, type Cidr } from "../../provider/core/ip";

const DIR = join(__dirname, "fixtures", "nftables");
const BRIDGES = ["docker0", "br-0123456789ab", "custombr"];
const read = (f: string) => readFileSync(join(DIR, f), "utf8");

function specOf(name: string): AllowlistSpec {
  const v = validateAllowlist(JSON.parse(read(`${name}.spec.json`)), name);
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}
const ownerOf = (name: string) => ({ name: `proj/stack/${name}`, via: "198.18.0.10:22" });

describe.each(["web", "range-origdst-reject", "ipv4-only"])("fixture %s", (name) => {
  const spec = specOf(name);
  const listing = read(`${name}.listing.txt`);
  const rendered = renderNftTable(spec, BRIDGES, ownerOf(name));

  test("the render is exactly what nft lists for it (canonical form)", () => {
    expect(canonicalNft(listing)).toEqual(rendered);
  });

  test("planning against nft's listing is in sync; against no table, one transaction that creates it", () => {
    const live = { listing, sha: "x", bridges: BRIDGES };
    expect(planNft(live, spec, name, ownerOf(name)).changes).toEqual([]);
    const fresh = planNft({ listing: null, sha: "y", bridges: BRIDGES }, spec, name, ownerOf(name));
    expect(fresh.plan?.payload).toBe(
      `table inet dpa-${name} {}\ndelete table inet dpa-${name}\n${nftText(rendered)}`,
    );
    expect(fresh.plan?.rollback).toBe(`table inet dpa-${name} {}\ndelete table inet dpa-${name}\n`);
    expect(fresh.plan).toMatchObject({ fingerprint: "y", first: true });
    expect(verifyNft(listing, rendered, name)).toEqual([]);
  });

  test("a delete drops the table and its rollback puts nft's listing back", () => {
    const gone = planNft({ listing, sha: "z", bridges: BRIDGES }, null, name, ownerOf(name));
    expect(gone.plan).toMatchObject({
      payload: `table inet dpa-${name} {}\ndelete table inet dpa-${name}\n`,
      rollback: `table inet dpa-${name} {}\ndelete table inet dpa-${name}\n${listing}`,
      first: false,
    });
    expect(gone.changes.every((c) => c.startsWith("- [nft] "))).toBe(true);
    expect(verifyNft(null, [], name)).toEqual([]);
    expect(verifyNft(listing, [], name)[0]).toContain("nft does not list what was planned");
  });
});

test("set elements: a source inside another is left out (an interval set refuses overlaps), full prefixes are bare addresses", () => {
  const c = (t: string) => parseCidr(t) as Cidr;
  expect(nftElements([c("10.1.0.0/16"), c("10.0.0.0/8"), c("198.18.1.7/32"), c("198.18.1.0/24")])).toEqual([
    "10.0.0.0/8",
    "198.18.1.0/24",
  ]);
  expect(nftElements([c("2001:db8::5/128"), c("2001:db8:1::/64")])).toEqual([
    "2001:db8::5",
    "2001:db8:1::/64",
  ]);
  expect(nftElements([c("0.0.0.0/0"), c("1.2.3.4/32")])).toEqual(["0.0.0.0/0"]);
});

test("interface names sort as nft 1.0.6 printed them", () => {
  // nft printed `iifname { "b", "zz", "baa", "aab", "abz", "zzzz" }` for the set given in another order.
  expect(["zzzz", "aab", "baa", "zz", "abz", "b"].sort(compareIfnames)).toEqual([
    "b",
    "zz",
    "baa",
    "aab",
    "abz",
    "zzzz",
  ]);
  expect(BRIDGES.slice().sort(compareIfnames)).toEqual(["docker0", "custombr", "br-0123456789ab"]);
});

test("canonical form survives nft's wrapping of long element lists", () => {
  const wrapped = "set s {\n\telements = { 10.0.0.1, 10.0.0.2,\n\t\t     10.0.0.3 }\n}\n";
  expect(canonicalNft(wrapped)).toEqual([
    "set s {",
    "elements = {",
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "}",
    "}",
  ]);
});

test("Docker's bridges come from the keys of its interface maps", () => {
  const v4 = readFileSync(join(__dirname, "fixtures", "docker29-nftables", "docker-bridges.v4.txt"), "utf8");
  expect(dockerNftBridges(v4)).toEqual(["br-0123456789ab", "custombr", "docker0"]);
});

test("the bridge exemption is the only line a preview leaves out of a comparison", () => {
  const lines = renderNftTable(specOf("web"), BRIDGES, ownerOf("web"));
  const without = withoutNftBridgeExemptions(lines);
  expect(lines.length - without.length).toBe(1);
  expect(without.join("\n")).not.toContain('iifname { "docker0"');
  expect(without).toContain('iifname != "lo" tcp dport 8080 jump allowlist');
});

test("owner names are shortened to fit nft's 128-byte comment, uniquely", () => {
  const long = { name: `p/s/${"r".repeat(150)}`, via: `${"h".repeat(60)}:22` };
  const o = nftOwner(long);
  expect(o.name.length).toBeLessThanOrEqual(56);
  expect(o.via.length).toBeLessThanOrEqual(28);
  const lines = renderNftTable({ ...specOf("web"), ruleName: "r".repeat(24) }, [], long);
  expect(lines[1].length).toBeLessThanOrEqual(128 + 'comment ""'.length);
});

describe("planAllowlist across backends", () => {
  const docker29 = read("../docker29/iptables-save.v4.txt");
  const nftHost = (listing: string | null): LiveState => ({
    ipv4: "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
    ipv6: null,
    nft: { listing, sha: "s", bridges: BRIDGES, dockerNftables: true },
  });

  test("the backend is Docker's: nftables where its tables exist and DOCKER-USER does not", () => {
    expect(firewallBackendOf(nftHost(null))).toBe("nftables");
    expect(firewallBackendOf({ ipv4: docker29, ipv6: null })).toBe("iptables");
    expect(firewallBackendOf({ ...nftHost(null), ipv4: docker29 })).toBe("iptables");
  });

  test("an nftables host gets the table and no iptables change", () => {
    const spec = specOf("web");
    const plan = planAllowlist(nftHost(null), spec, "web", { owner: ownerOf("web"), operation: "create" });
    expect(plan).toMatchObject({ backend: "nftables", blocked: false, families: {} });
    expect(plan.nft?.first).toBe(true);
    expect(plan.findings).toEqual([]);
    expect(plan.nft?.conntrack.length).toBeGreaterThan(0);
  });

  test("a host switched to iptables: the iptables rules are created and the nftables table removed after them", () => {
    const spec = specOf("web");
    const live: LiveState = {
      ipv4: docker29,
      ipv6: null,
      nft: { listing: read("web.listing.txt"), sha: "s", bridges: [], dockerNftables: false },
    };
    const plan = planAllowlist(live, spec, "web", { owner: ownerOf("web"), operation: "update" });
    expect(plan.backend).toBe("iptables");
    expect(plan.families.ipv4).toBeDefined();
    expect(plan.nft).toMatchObject({ first: false });
    expect(plan.nft?.payload).toBe("table inet dpa-web {}\ndelete table inet dpa-web\n");
  });

  test("a host switched to nftables: our iptables chain is removed in the same plan, after the table is created", () => {
    const spec = specOf("web");
    const onIptables = planAllowlist({ ipv4: docker29, ipv6: null }, spec, "web", {
      owner: ownerOf("web"),
      operation: "create",
    });
    // What an apply of that plan leaves, minus DOCKER-USER (Docker now runs nftables).
    const left = docker29.replace(/^:DOCKER-USER .*\n/m, "").replace(/^-A FORWARD -j DOCKER-USER\n/m, "");
    const applied = left.replace(
      /^COMMIT$/m,
      `:DPA-web - [0:0]\n-A DPA-web -j DROP -m comment --comment "dpa:web"\nCOMMIT`,
    );
    expect(onIptables.families.ipv4).toBeDefined();
    const plan = planAllowlist({ ...nftHost(null), ipv4: applied }, spec, "web", {
      owner: ownerOf("web"),
      operation: "update",
    });
    expect(plan.backend).toBe("nftables");
    expect(plan.nft?.first).toBe(true);
    expect(plan.changes.some((c) => c.startsWith("- [ipv4] ") && c.includes("DPA-web"))).toBe(true);
  });

  test("a table another stack holds blocks the allowlist with the owner's name and the fix", () => {
    const theirs = read("web.listing.txt").replace("proj/stack/web", "other/stack/web");
    const plan = planAllowlist(nftHost(theirs), specOf("web"), "web", {
      owner: ownerOf("web"),
      operation: "update",
    });
    expect(plan.blocked).toBe(true);
    expect(plan.nft).toBeUndefined();
    expect(plan.findings[0]).toMatchObject({ code: "owned-by-another", severity: "error" });
    expect(plan.findings[0].message).toContain(
      "nftables table inet dpa-web on this host is held by other/stack/web",
    );
  });
});
