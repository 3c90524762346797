/**
 * The dynamic provider's pure decisions: what `check` adds and refuses, what `diff` updates or
 * replaces, and that the serialized provider finds its implementation at call time (see dynamic-load.test.ts).
 */
import { dockerPortAllowlistProvider } from "../../provider/pulumi/dynamic";
import { UNKNOWN, check, diff, ownedLines } from "../../provider/pulumi/lifecycle";

const connection = {
  host: "198.18.0.10",
  privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
};
const base = { connection, resourceName: "web", port: 8080, sources: ["198.18.1.0/24"] };

function checked(news: Record<string, unknown>): Record<string, unknown> {
  const r = check({}, news);
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

describe("check", () => {
  test("adds the derived ruleName and the exact rule lines per family for preview", () => {
    const inputs = checked(base);
    expect(inputs.ruleName).toBe("web");
    expect(inputs.rules).toEqual({
      ipv4: [
        '-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 -m comment --comment "dpa:web" -j DPA-web',
        // The docker-proxy path (IPv6 clients of IPv4-only containers end there).
        '-A INPUT ! -i lo -p tcp -m tcp --dport 8080 -m comment --comment "dpa:web" -j DPA-web',
        '-A DPA-web -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "dpa:web" -j RETURN',
        // No host read yet: Docker's default bridge stands for the bridges the apply will find.
        '-A DPA-web -i docker0 -m comment --comment "dpa:web" -j RETURN',
        '-A DPA-web -s 198.18.1.0/24 -m comment --comment "dpa:web" -j RETURN',
        '-A DPA-web -m comment --comment "dpa:web" -j DROP',
      ],
      ipv6: [
        '-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 -m comment --comment "dpa:web" -j DPA-web',
        // The docker-proxy path (IPv6 clients of IPv4-only containers end there).
        '-A INPUT ! -i lo -p tcp -m tcp --dport 8080 -m comment --comment "dpa:web" -j DPA-web',
        '-A DPA-web -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "dpa:web" -j RETURN',
        // No host read yet: Docker's default bridge stands for the bridges the apply will find.
        '-A DPA-web -i docker0 -m comment --comment "dpa:web" -j RETURN',
        '-A DPA-web -m comment --comment "dpa:web" -j DROP',
      ],
    });
  });

  test("from 100 sources of a family, the preview shows the one rule on its ipset and the set's lines, a changed source as one line", () => {
    const many = Array.from({ length: 100 }, (_, i) => `10.9.${i >> 8}.${i & 255}`);
    const rules = checked({ ...base, sources: many }).rules as { ipv4: string[]; ipv6: string[] };
    expect(rules.ipv4.filter((l) => l.startsWith("-A DPA-web -s "))).toEqual([]);
    expect(rules.ipv4).toContain(
      '-A DPA-web -m set --match-set dpa4-web src -m comment --comment "dpa:web" -j RETURN',
    );
    expect(rules.ipv4.slice(-102, -100)).toEqual([
      '-A DPA-web -m comment --comment "dpa:web" -j DROP',
      "create dpa4-web hash:net family inet",
    ]);
    expect(rules.ipv4.at(-1)).toBe("add dpa4-web 10.9.0.99");
    expect(rules.ipv6.some((l) => l.includes("dpa6-web"))).toBe(false);
    const next = checked({ ...base, sources: [...many.slice(1), "192.0.2.9"] }).rules as { ipv4: string[] };
    expect(next.ipv4.filter((l) => !rules.ipv4.includes(l))).toEqual(["add dpa4-web 192.0.2.9"]);
    expect(rules.ipv4.filter((l) => !next.ipv4.includes(l))).toEqual(["add dpa4-web 10.9.0.0"]);
  });

  test("renders the bridge exemptions for the Docker bridges the last refresh recorded, and carries them on", () => {
    const dockerBridges = { ipv4: ["br-1a2b3c4d5e6f", "docker0"], ipv6: [] };
    const r = check({ ...base, dockerBridges }, base);
    const exemptions = (lines: string[]) => lines.filter((l) => / -i \S+ .* -j RETURN$/.test(l));
    const rules = r.inputs?.rules as { ipv4: string[]; ipv6: string[] };
    expect(exemptions(rules.ipv4)).toEqual([
      '-A DPA-web -i br-1a2b3c4d5e6f -m comment --comment "dpa:web" -j RETURN',
      '-A DPA-web -i docker0 -m comment --comment "dpa:web" -j RETURN',
    ]);
    expect(exemptions(rules.ipv6)).toEqual([]);
    expect(r.inputs?.dockerBridges).toEqual(dockerBridges);
    // A recorded value that is no list of bridge names is not trusted: the default again.
    const odd = check({ ...base, dockerBridges: { ipv4: ["br-+"], ipv6: [] } }, base);
    expect(exemptions((odd.inputs?.rules as { ipv4: string[] }).ipv4)).toEqual([
      '-A DPA-web -i docker0 -m comment --comment "dpa:web" -j RETURN',
    ]);
    expect(odd.inputs?.dockerBridges).toBeUndefined();
  });

  test("with the stack the resource class adds, previews the owner line last in each chain", () => {
    const inputs = checked({ ...base, stack: "shop/prod" });
    const owner = '-A DPA-web -m comment --comment "dpa:web owner=shop/prod/web via=198.18.0.10:22"';
    const rules = inputs.rules as { ipv4: string[]; ipv6: string[] };
    expect(rules.ipv4.at(-1)).toBe(owner);
    expect(rules.ipv6.at(-1)).toBe(owner);
    // A host not known yet (another resource creates it): the rules, without the owner line.
    const pending = checked({ ...base, stack: "shop/prod", connection: { ...connection, host: UNKNOWN } });
    expect((pending.rules as { ipv4: string[] }).ipv4.at(-1)).toBe(
      '-A DPA-web -m comment --comment "dpa:web" -j DROP',
    );
  });

  test.each([
    ["sources[0]", { sources: ["198.18.1.0/33"] }],
    ["port", { port: 0 }],
    ["connection.host", { connection: { ...connection, host: "h; reboot" } }],
    ["connection.user", { connection: { ...connection, user: "root$(id)" } }],
    ["ruleName", { ruleName: "x y" }],
    ["rulesV4Path", { rulesV4Path: "/etc/iptables/rules.v4; rm -rf /" }],
  ])("refuses a bad %s with a failure on that property", (property, bad) => {
    const r = check({}, { ...base, ...bad });
    expect(r.inputs).toBeUndefined();
    expect(r.failures?.map((f) => f.property)).toContain(property);
  });

  test("never echoes a secret in a failure", () => {
    const r = check({}, { ...base, connection: { host: "198.18.0.10", password: 12345678 } });
    expect(JSON.stringify(r.failures)).not.toContain("12345678");
  });

  test("passes unknown values of a preview through without rendering rules", () => {
    const r = check({}, { ...base, sources: UNKNOWN, connection: { host: UNKNOWN } });
    expect(r.failures).toBeUndefined();
    expect(r.inputs?.rules).toBeUndefined();
  });
});

describe("diff", () => {
  test("bridge exemptions alone never make a change (they are the host's; drift is inSync: false), a declared line does", () => {
    const olds: Record<string, unknown> = { ...checked(base), inSync: true, persisted: true };
    const recorded = { ...base, dockerBridges: { ipv4: ["br-1a2b3c4d5e6f", "docker0"], ipv6: [] } };
    const withBridges = check(recorded, base).inputs!;
    expect(withBridges.rules).not.toEqual(olds.rules);
    expect(diff(olds, withBridges).changes).toBe(false);
    const moreSources = checked({ ...base, sources: ["198.18.1.0/24", "198.18.2.0/24"] });
    expect(diff(olds, moreSources).changes).toBe(true);
  });

  const olds = { ...checked(base), persisted: true };

  test("no change for the same declaration", () => {
    expect(diff(olds, checked(base))).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });

  test("an edited source list is an update", () => {
    expect(diff(olds, checked({ ...base, sources: ["198.18.2.0/24"] }))).toEqual({
      changes: true,
      replaces: [],
      deleteBeforeReplace: false,
    });
  });

  test("another host, SSH port or ruleName replaces, creating the new one first (never a window)", () => {
    expect(
      diff(olds, checked({ ...base, connection: { ...connection, host: "198.18.0.11" } })).replaces,
    ).toEqual(["connection.host"]);
    expect(diff(olds, checked({ ...base, connection: { ...connection, port: 2222 } })).replaces).toEqual([
      "connection.port",
    ]);
    const renamed = diff(olds, checked({ ...base, ruleName: "web2" }));
    expect(renamed).toEqual({ changes: true, replaces: ["ruleName"], deleteBeforeReplace: false });
  });

  test("rules that drifted on the host (refresh) make the next up update", () => {
    const drifted = { ...olds, rules: { ipv4: [], ipv6: [] } };
    expect(diff(drifted, checked(base)).changes).toBe(true);
  });

  test("a refresh that found the host off plan (e.g. fail-open FORWARD) makes the next up update", () => {
    expect(diff({ ...olds, inSync: false }, checked(base)).changes).toBe(true);
    expect(diff({ ...olds, inSync: true }, checked(base)).changes).toBe(false);
  });

  test("an unsaved state (persist failed) makes the next up update", () => {
    expect(diff({ ...olds, persisted: false }, checked(base)).changes).toBe(true);
    expect(diff({ ...olds, persisted: false }, checked({ ...base, persist: false })).changes).toBe(true);
  });
});

test("ownedLines picks our jumps then our chain from a save text, ignoring foreign and other allowlists' rules", () => {
  const save = [
    "-A DOCKER-USER -s 198.18.77.0/24 -j DROP",
    '-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 -m comment --comment "dpa:web" -j DPA-web',
    '-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 9090 -m comment --comment "dpa:api" -j DPA-api',
    '-A DPA-api -m comment --comment "dpa:api" -j DROP',
    '-A DPA-web -m comment --comment "dpa:web" -j DROP',
  ].join("\n");
  expect(ownedLines(save, "web")).toEqual([save.split("\n")[1], save.split("\n")[4]]);
  expect(ownedLines(null, "web")).toEqual([]);
});

test("the provider object holds only methods that load the implementation at call time", () => {
  expect(Object.keys(dockerPortAllowlistProvider).sort()).toEqual([
    "check",
    "create",
    "delete",
    "diff",
    "read",
    "update",
  ]);
  for (const fn of Object.values(dockerPortAllowlistProvider)) {
    const src = String(fn);
    expect(src).toContain("load(IMPLEMENTATION, process.cwd())");
    expect(src).not.toMatch(/ssh2|privateKey|process\.env/);
  }
});
